//! Tokio PVAccess client and server over `pva-codec`.
//!
//! Protocol logic stays in sans-I/O state machines that take decoded messages and return
//! messages to send; the tokio tasks here only move bytes and run timers.

pub mod client;
pub mod config;
pub mod interfaces;
pub mod server;
pub mod squash;
pub mod transport;

pub use config::{ClientConfig, ConfigError, ServerConfig};
