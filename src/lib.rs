#![forbid(unsafe_code)]
//! shopper-bridge: polls Instacart Connect post-checkout messages for watched orders and fans new
//! events out to subscribers (signed webhooks), with an admin HTTP API.

pub mod admin;
pub mod bench;
pub mod channels;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod instacart;
pub mod outbox;
pub mod poller;
pub mod simulator;
pub mod startup;
pub mod store;
pub mod talkback;
pub mod telemetry;
pub mod templates;
pub mod time;

/// The `User-Agent` of every request the bridge makes (Connect, webhooks, Slack).
pub const USER_AGENT: &str = concat!("shopper-bridge/", env!("CARGO_PKG_VERSION"));
