//! Test support shared by integration test crates that need more than tests/api's helpers.

pub mod smtp;
