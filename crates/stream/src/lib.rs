//! Detector streams over PVAccess: the NTNDArray frame model, a simulated detector, a relay
//! that fans a stream out to many consumers (or distributes it over them), and a consumer
//! that accounts for every frame.
//!
//! Frames are never copied on their way through: the pixel array of a received frame shares
//! the bytes of the message it came in, and the relay hands those same bytes to every
//! consumer.

pub mod accounting;
pub mod ad_sim;
pub mod codec;
pub mod consumer;
pub mod frame;
pub mod relay;
pub mod simdet;
pub mod stats;

pub use accounting::{Books, Counts, Latency, LatencySummary, Ledger, Origin, Verdict};
pub use frame::{Frame, FrameError, FrameMeta};

/// Why a stream could not run.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The PVAccess client failed.
    #[error(transparent)]
    Client(#[from] pva::client::ClientError),
    /// The PVAccess server could not start.
    #[error(transparent)]
    Server(#[from] pva::server::ServerError),
    /// A configuration value is out of range.
    #[error("{0}")]
    Config(String),
    /// A frame could not be built.
    #[error("cannot build a frame: {0}")]
    Build(#[from] pva_codec::nt::NtError),
}
