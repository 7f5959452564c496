//! One module per subcommand.

pub mod dm;
pub mod host;
pub mod version;
