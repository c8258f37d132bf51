//! The Instacart Connect post-checkout API: typed models, authentication and the client.

mod answer;
mod auth;
mod client;
mod error;
pub mod models;

pub use client::InstacartClient;
pub use error::InstacartError;
