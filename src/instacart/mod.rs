//! The Instacart Connect post-checkout API: typed models, authentication and the client.

pub mod models;
