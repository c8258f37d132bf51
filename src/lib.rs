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
pub mod poller;
pub mod simulator;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod templates;
