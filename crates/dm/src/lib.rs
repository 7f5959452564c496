//! APS Data Management for pvabridge: a client of the DM processing web service, and an
//! embedded DM-compatible processing service that runs the same workflows on one machine.
//!
//! The client ([`DmClient`]) speaks the facility's HTTP API: login and session cookie, arguments
//! base64-encoded twice in the URL, DM's status headers and error bodies. The service
//! ([`service::start`]) serves that same API, so a workflow is tested locally through the very
//! code path that drives the facility.

#![warn(missing_docs)]

pub mod client;
pub mod encoding;
pub mod error;
pub mod model;
pub mod service;

pub use client::{
    ClientConfig, DmClient, JobQuery, JobWatch, ServicePaths, WatchEvent, WatchOptions,
};
pub use error::DmError;
pub use model::{ChildProcess, ExperimentRun, JobStatus, ProcessingJob, Stage, Workflow};
pub use service::{RunningService, ServiceConfig, ServiceError, ShutdownHandle};
