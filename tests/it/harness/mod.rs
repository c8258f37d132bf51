//! What the tests share, written once: the app ([`spawn_app`], [`TestApp::builder`]), the admin
//! API's answers, a mocked Connect, the built-in simulator, a verifying webhook receiver, one
//! wait helper and builders for the store's types.

mod app;
mod builders;
mod connect;
mod http;
mod receiver;
mod simulator;
mod wait;

pub use app::*;
pub use builders::*;
pub use connect::*;
pub use http::*;
pub use receiver::*;
pub use simulator::*;
pub use wait::*;
