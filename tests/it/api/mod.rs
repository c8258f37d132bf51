//! The service through its public interfaces: the admin API over real HTTP on a real SQLite
//! store, the poller against a mocked Connect API, and webhooks to real receivers.

mod deliveries;
mod hygiene;
mod messages;
mod orders;
mod pipeline;
mod polling;
mod startup;
mod subscribers;
mod talkback_policy;
