//! Where a server's channels come from: the `Source` trait and a ready `StaticSource`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use super::shared_pv::SharedPv;

/// Who is on the other end of a connection, as far as the protocol says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's socket address.
    pub addr: SocketAddr,
    /// Authentication method it chose ("anonymous" or "ca").
    pub method: String,
    /// User name it claimed ("ca"), empty otherwise.
    pub user: String,
    /// Host name it claimed ("ca"), empty otherwise.
    pub host: String,
}

/// Provides channels by name. A server asks its sources in order.
pub trait Source: Send + Sync {
    /// The PV for `name`, if this source has it.
    fn channel(&self, name: &str) -> Option<SharedPv>;
    /// Every name this source can list, for the `server` channel's `op=channels` (what
    /// `pvxlist HOST` and `pvabridge list HOST` show). A source that cannot enumerate its
    /// names (one that makes channels up on request) lists none.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A fixed map of names to shared PVs, changeable at run time.
#[derive(Default)]
pub struct StaticSource {
    pvs: RwLock<BTreeMap<String, SharedPv>>,
}

impl StaticSource {
    /// An empty source.
    pub fn new() -> Self {
        StaticSource::default()
    }

    /// Serve `pv` under `name` (replacing any PV of that name).
    pub fn add(&self, name: impl Into<String>, pv: SharedPv) {
        self.pvs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), pv);
    }

    /// Stop serving `name`.
    pub fn remove(&self, name: &str) -> Option<SharedPv> {
        self.pvs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }
}

impl Source for StaticSource {
    fn channel(&self, name: &str) -> Option<SharedPv> {
        self.pvs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn names(&self) -> Vec<String> {
        self.pvs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::PeerInfo;

    /// An anonymous peer on the loopback, for tests of what a request does.
    pub(crate) fn peer() -> PeerInfo {
        PeerInfo {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "anonymous".into(),
            user: String::new(),
            host: String::new(),
        }
    }
}
