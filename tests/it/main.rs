//! The service through its public interfaces, in one test binary: the admin API over real HTTP
//! on a real SQLite store, the poller against a mocked Connect API or the built-in simulator,
//! webhooks to a real verifying receiver, mail to a real SMTP server, Slack through wiremock.
//! Everything shared lives in [`harness`].

mod harness;

mod api;
mod email;
mod instacart_client;
mod simulator;
mod slack;
mod slack_two_way;
mod templates;
mod webhook_delivery;
