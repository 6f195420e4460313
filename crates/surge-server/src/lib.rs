//! The `surge` server: configuration, wiring of contexts to adapters, and the
//! HTTP surface. `main.rs` only parses the command line and calls in here.

pub mod auth;
pub mod backend;
pub mod config;
pub mod config_centre;
mod contexts;
pub mod dependency_guard;
pub mod error;
pub mod events;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod outbox;
pub mod readiness;
pub mod routes;
pub mod sandbox_service;
pub mod serve;
pub mod startup;
pub mod state;
pub mod switches;
pub mod telemetry;
pub mod workers;

pub use config::Settings;
pub use startup::Application;
