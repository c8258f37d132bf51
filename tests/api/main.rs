//! The admin API through real HTTP against a real SQLite store.

mod deliveries;
mod helpers;
mod hygiene;
mod orders;
mod startup;
mod subscribers;
