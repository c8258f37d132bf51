//! Polling: which watched orders are due, one upstream call each, and the differ.

pub mod differ;
