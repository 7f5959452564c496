//! One module per subcommand.

pub mod call;
pub mod common;
pub mod consume;
pub mod demo;
pub mod dm;
pub mod format;
pub mod get;
pub mod host;
pub mod info;
pub mod limits;
pub mod list;
pub mod monitor;
pub mod put;
pub mod pvaclient;
pub mod pyliteral;
pub mod relay;
pub mod serve;
pub mod simdet;
pub mod streaming;
pub mod version;
pub mod workflow;
pub mod workflow_consume;
pub mod workflow_report;
