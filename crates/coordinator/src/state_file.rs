//! The state file of a run slot: its [`SlotRecord`] as JSON, one file per prefix, written
//! atomically (a temporary file renamed over the old one), so that a bridge killed at any moment
//! leaves either the old record or the new one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::machine::SlotRecord;

/// A state file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file system refused.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not hold a slot record.
    #[error("state file {path} is not a slot record: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file belongs to another prefix.
    #[error("state file {path} is for prefix {found:?}, not {expected:?}")]
    OtherPrefix {
        /// The file.
        path: PathBuf,
        /// The prefix asked for.
        expected: String,
        /// The prefix in the file.
        found: String,
    },
}

/// The file of slot `prefix` in `dir`: the prefix with every character other than ASCII letters,
/// digits, `-` and `_` written as `%XX`, so that different prefixes never share a file.
pub fn path_for(dir: &Path, prefix: &str) -> PathBuf {
    let mut name = String::with_capacity(prefix.len() + 5);
    for byte in prefix.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name.push_str(".json");
    dir.join(name)
}

/// Read the record of `prefix`; `None` when there is no file yet.
pub fn load(dir: &Path, prefix: &str) -> Result<Option<SlotRecord>, StateFileError> {
    let path = path_for(dir, prefix);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateFileError::Io { path, source }),
    };
    let record: SlotRecord =
        serde_json::from_str(&text).map_err(|err| StateFileError::Corrupt {
            path: path.clone(),
            message: err.to_string(),
        })?;
    if record.prefix != prefix {
        return Err(StateFileError::OtherPrefix {
            path,
            expected: prefix.to_string(),
            found: record.prefix,
        });
    }
    Ok(Some(record))
}

/// Write the record, replacing the old one atomically.
pub fn save(dir: &Path, record: &SlotRecord) -> Result<(), StateFileError> {
    let path = path_for(dir, &record.prefix);
    let io = |source| StateFileError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::to_string_pretty(record).expect("a record always serializes");
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Machine, MachineConfig};

    #[test]
    fn prefixes_map_to_distinct_file_names() {
        let dir = Path::new("/d");
        assert_eq!(path_for(dir, "bdp:wf1:"), Path::new("/d/bdp%3Awf1%3A.json"));
        assert_ne!(path_for(dir, "a:b"), path_for(dir, "a_b"));
        assert_ne!(path_for(dir, "a/b"), path_for(dir, "a%2Fb"));
    }

    #[test]
    fn a_record_survives_a_round_trip_and_checks_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "p:").unwrap().is_none());
        let record = Machine::new("p:", MachineConfig::default(), 5.0)
            .record()
            .clone();
        save(dir.path(), &record).unwrap();
        save(dir.path(), &record).unwrap();
        assert_eq!(load(dir.path(), "p:").unwrap(), Some(record.clone()));
        std::fs::rename(path_for(dir.path(), "p:"), path_for(dir.path(), "q:")).unwrap();
        let err = load(dir.path(), "q:").unwrap_err();
        assert!(err.to_string().contains("not \"q:\""), "{err}");
        std::fs::write(path_for(dir.path(), "r:"), "{").unwrap();
        assert!(matches!(
            load(dir.path(), "r:"),
            Err(StateFileError::Corrupt { .. })
        ));
    }
}
