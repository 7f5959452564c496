//! PVAccess client.
//!
//! [`proto`] holds the protocol logic of a connection as a sans-I/O state machine; the rest is
//! a thin tokio layer: [`Context`] searches (UDP with backoff, TCP to name servers), keeps one
//! connection per server, and runs get, put, rpc, info and monitors that reconnect by
//! themselves.

mod conn;
mod context;
pub mod convert;
mod error;
mod monitor;
mod ops;
pub mod proto;
mod search;
pub mod window;

pub use context::Context;
pub use error::ClientError;
pub use monitor::{Monitor, MonitorBuilder, MonitorEvent, Update, DEFAULT_QUEUE_SIZE};
pub use ops::{GetBuilder, InfoBuilder, OpFuture, PutBuilder, RpcBuilder};
