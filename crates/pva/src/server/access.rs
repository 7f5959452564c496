//! Who may write which PV. A server given an [`AccessPolicy`] asks it before every put and RPC
//! on a channel of its sources, with the peer's "ca" credentials ([`PeerInfo`]) and the channel
//! name; a refusal goes back to that client as an error status saying why, and nothing changes.
//! Reads (get, monitor, info) are never refused.
//!
//! [`AccessRules`] is the policy of a rules file (TOML, described in `docs/access.md`):
//!
//! ```toml
//! [users]                     # user groups, used as "@acquisition"
//! acquisition = ["bluesky", "operator"]
//! [hosts]                     # host groups, used as "@beamline"
//! beamline = ["bl1-ws1", "10.54.1.*"]
//!
//! [[allow]]
//! name = "handshake commands" # optional, quoted in refusals
//! pvs = ["bdp:wf1:Command", "bdp:wf1:Request"]
//! users = ["@acquisition"]
//! hosts = ["@beamline"]       # optional: any host when absent
//! ```
//!
//! A write is allowed when some `[[allow]]` rule matches both the PV and the client; a PV that no
//! rule matches is read-only. A host entry is matched against the address the client connects
//! from: a host name is resolved to its addresses when the rules are loaded (as EPICS access
//! security does with `asUseIP`), and address patterns (`10.54.1.*`) match the address itself.
//! Only a file that says `trust_client_host = true` matches the host name the client claims.
//! The user name is what the client claims (as in EPICS Channel Access security): the rules keep
//! honest clients from writing the wrong PV, they do not stop an attacker on the network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};

use glob::{MatchOptions, Pattern};

use super::source::PeerInfo;

mod file;

/// A request that changes something on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A put (or the put of a put-get).
    Put,
    /// An RPC call.
    Rpc,
}

impl WriteKind {
    fn verb(self) -> &'static str {
        match self {
            WriteKind::Put => "put",
            WriteKind::Rpc => "rpc",
        }
    }
}

/// A write refused by an access policy, with the reason the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct AccessDenied {
    /// Who was refused what, and by which rule (or that no rule covers the PV).
    pub reason: String,
}

/// Decides whether a client may write a channel. Consulted by every connection of a server
/// before each put and RPC on a channel of its sources.
pub trait AccessPolicy: Send + Sync {
    /// May `peer` do `kind` on the channel it named `channel`?
    fn check_write(
        &self,
        peer: &PeerInfo,
        channel: &str,
        kind: WriteKind,
    ) -> Result<(), AccessDenied>;
}

/// A rules file or rule that cannot be used, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AccessError {
    /// The file, when the rules came from one.
    pub file: Option<String>,
    /// The line (from 1) of the offending text, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.problem),
            (Some(file), None) => write!(f, "{file}: {}", self.problem),
            (None, Some(line)) => write!(f, "line {line}: {}", self.problem),
            (None, None) => f.write_str(&self.problem),
        }
    }
}

/// One compiled entry and the text it was written as (a group name stays `@name`): patterns,
/// and for a host name the addresses it resolved to.
#[derive(Debug, Clone, Default)]
struct Matcher {
    written: String,
    patterns: Vec<Pattern>,
    addrs: Vec<IpAddr>,
}

/// What a rule's host entries are matched against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum HostMatch {
    /// The client's address: host names are resolved when the rules are loaded.
    #[default]
    Address,
    /// Also the host name the client claims (`trust_client_host = true`).
    ClaimedName,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    pvs: Vec<Pattern>,
    users: Vec<Matcher>,
    /// Empty: any host.
    hosts: Vec<Matcher>,
}

/// Host names compare without regard to case, as DNS does.
const HOST_MATCH: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Rule {
    fn covers(&self, channel: &str) -> bool {
        self.pvs.iter().any(|p| p.matches(channel))
    }

    fn admits(&self, peer: &PeerInfo, hosts: HostMatch) -> bool {
        let user_ok = self
            .users
            .iter()
            .flat_map(|m| &m.patterns)
            .any(|p| p.matches(&peer.user));
        let ip = peer.addr.ip();
        let ip_text = ip.to_string();
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|m| {
                m.addrs.contains(&ip)
                    || m.patterns.iter().any(|p| {
                        p.matches(&ip_text)
                            || (hosts == HostMatch::ClaimedName
                                && p.matches_with(&peer.host, HOST_MATCH))
                    })
            });
        user_ok && host_ok
    }

    fn describe(&self) -> String {
        let list = |ms: &[Matcher]| {
            ms.iter()
                .map(|m| m.written.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let hosts = if self.hosts.is_empty() {
            "any host".to_owned()
        } else {
            format!("hosts {}", list(&self.hosts))
        };
        format!(
            "rule '{}' allows users {} on {hosts}",
            self.name,
            list(&self.users)
        )
    }
}

/// Allow-rules: who may put to and call which PVs. A PV no rule matches is read-only; an
/// empty set of rules makes every PV read-only.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    rules: Vec<Rule>,
    hosts: HostMatch,
}

fn pattern(text: &str) -> Result<Pattern, String> {
    if text.is_empty() {
        return Err("an empty pattern matches nothing useful".into());
    }
    Pattern::new(text).map_err(|e| format!("bad pattern '{text}': {}", e.msg))
}

/// True when `text` can only match an address (digits, dots and glob characters).
fn is_address_pattern(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_digit() || ".*?[]-!".contains(c))
}

/// Compile one name or pattern of a `users` or `hosts` list (not a group). With
/// [`HostMatch::Address`], a host name is resolved to its addresses now, and a host name
/// pattern is refused, since it could only match a claimed name.
fn member(text: &str, kind: &str, hosts: HostMatch) -> Result<Matcher, String> {
    let mut m = Matcher {
        written: text.to_owned(),
        ..Matcher::default()
    };
    if kind == "host" && hosts == HostMatch::Address && !is_address_pattern(text) {
        if text.contains(['*', '?', '[']) {
            return Err(format!(
                "host pattern '{text}' would match the host name a client claims: name hosts \
                 (resolved to their addresses) or address patterns like 10.54.1.*, or set \
                 trust_client_host = true"
            ));
        }
        m.addrs = (text, 0)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve host '{text}': {e}"))?
            .map(|a| a.ip())
            .collect();
        if m.addrs.is_empty() {
            return Err(format!("host '{text}' has no address"));
        }
    } else {
        m.patterns.push(pattern(text)?);
    }
    Ok(m)
}

/// Compile one entry of a rule's `users` or `hosts`: a name or pattern, or `@group`.
fn matcher(
    text: &str,
    groups: &BTreeMap<String, Matcher>,
    kind: &str,
    hosts: HostMatch,
) -> Result<Matcher, String> {
    match text.strip_prefix('@') {
        Some(group) => groups
            .get(group)
            .map(|m| Matcher {
                written: text.to_owned(),
                ..m.clone()
            })
            .ok_or_else(|| {
                let known = groups.keys().map(|k| format!("@{k}")).collect::<Vec<_>>();
                if known.is_empty() {
                    format!("unknown {kind} group '@{group}': the file defines no [{kind}s] groups")
                } else {
                    format!(
                        "unknown {kind} group '@{group}' (defined: {})",
                        known.join(", ")
                    )
                }
            }),
        None => member(text, kind, hosts),
    }
}

impl AccessRules {
    /// No rules: every PV read-only. Host entries of the rules added will match the address a
    /// client connects from (host names resolved when added).
    pub fn new() -> Self {
        AccessRules::default()
    }

    /// No rules yet; host entries of the rules added will also match the host name a client
    /// claims (what a rules file asks for with `trust_client_host = true`).
    pub fn trusting_client_host() -> Self {
        AccessRules {
            hosts: HostMatch::ClaimedName,
            ..AccessRules::default()
        }
    }

    /// Allow `users` on `hosts` (any host when empty) to write the PVs matching `pvs`. Every
    /// entry is a glob pattern (`*`, `?`, `[a-z]`; no `@group` here, as groups belong to a
    /// rules file), except that a host name is resolved to its addresses unless the rules
    /// trust the host name clients claim; `name` is quoted in refusals.
    pub fn allow(
        &mut self,
        name: &str,
        pvs: &[&str],
        users: &[&str],
        hosts: &[&str],
    ) -> Result<(), AccessError> {
        let error = |problem: String| AccessError {
            file: None,
            line: None,
            problem: format!("rule '{name}': {problem}"),
        };
        if pvs.is_empty() {
            return Err(error("no PV pattern".into()));
        }
        if users.is_empty() {
            return Err(error("no user (\"*\" allows anyone)".into()));
        }
        if let Some(group) = users.iter().chain(hosts).find(|e| e.starts_with('@')) {
            return Err(error(format!(
                "'{group}': groups belong to a rules file, name the users or hosts here"
            )));
        }
        let no_groups = BTreeMap::new();
        let rule = Rule {
            name: name.to_owned(),
            pvs: pvs
                .iter()
                .map(|p| pattern(p))
                .collect::<Result<_, _>>()
                .map_err(error)?,
            users: users
                .iter()
                .map(|u| matcher(u, &no_groups, "user", self.hosts))
                .collect::<Result<_, _>>()
                .map_err(error)?,
            hosts: hosts
                .iter()
                .map(|h| matcher(h, &no_groups, "host", self.hosts))
                .collect::<Result<_, _>>()
                .map_err(error)?,
        };
        self.rules.push(rule);
        Ok(())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there is no rule (every PV is read-only).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// How a refusal names the client.
fn who(peer: &PeerInfo) -> String {
    if peer.user.is_empty() && peer.host.is_empty() {
        format!("anonymous client {}", peer.addr)
    } else {
        format!(
            "user '{}' on host '{}' ({})",
            peer.user, peer.host, peer.addr
        )
    }
}

impl AccessPolicy for AccessRules {
    fn check_write(
        &self,
        peer: &PeerInfo,
        channel: &str,
        kind: WriteKind,
    ) -> Result<(), AccessDenied> {
        let mut covering = Vec::new();
        for rule in self.rules.iter().filter(|r| r.covers(channel)) {
            if rule.admits(peer, self.hosts) {
                return Ok(());
            }
            covering.push(rule.describe());
        }
        let why = if covering.is_empty() {
            "no access rule lets anyone write this PV (it is read-only)".to_owned()
        } else {
            covering.join("; ")
        };
        Err(AccessDenied {
            reason: format!(
                "{} to '{channel}' refused for {}: {why}",
                kind.verb(),
                who(peer)
            ),
        })
    }
}

/// Rules that let each side write its own PVs and nothing else: for each `(side, user,
/// suffixes)`, the PVs prefix + suffix under every prefix are writable (put and RPC) by `user`
/// alone, from any host; every other PV stays read-only. Names and users are taken literally (no
/// patterns). The handshake's defaults are built this way from its field table
/// (`coordinator::fields::access_rules`).
pub fn writer_rules<P: AsRef<str>>(
    prefixes: &[P],
    sides: &[(&str, &str, &[&str])],
) -> Result<AccessRules, AccessError> {
    let mut rules = AccessRules::new();
    for (side, user, suffixes) in sides {
        if user.is_empty() {
            return Err(AccessError {
                file: None,
                line: None,
                problem: format!("the {side} user name is empty"),
            });
        }
        let pvs: Vec<String> = prefixes
            .iter()
            .flat_map(|prefix| {
                suffixes
                    .iter()
                    .map(move |n| Pattern::escape(&format!("{}{n}", prefix.as_ref())))
            })
            .collect();
        let pvs: Vec<&str> = pvs.iter().map(String::as_str).collect();
        let user = Pattern::escape(user);
        rules.allow(&format!("{side} writes"), &pvs, &[user.as_str()], &[])?;
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, host: &str, ip: &str) -> PeerInfo {
        PeerInfo {
            addr: format!("{ip}:40000").parse().unwrap(),
            method: if user.is_empty() { "anonymous" } else { "ca" }.into(),
            user: user.into(),
            host: host.into(),
        }
    }

    const EXAMPLE: &str = r#"
trust_client_host = true

[users]
acquisition = ["bluesky", "op-*"]
workflow = ["dmuser"]

[hosts]
beamline = ["bl1-ws*", "10.54.1.*"]

[[allow]]
name = "handshake commands"
pvs = ["bdp:wf1:Command", "bdp:wf1:Request"]
users = ["@acquisition"]
hosts = ["@beamline"]

[[allow]]
pvs = ["bdp:wf1:Ready", "bdp:wf1:Progress", "bdp:wf1:WorkflowMessage"]
users = ["@workflow", "admin"]

[[allow]]
name = "scratch"
pvs = ["scratch:*"]
users = ["*"]
"#;

    fn put(rules: &AccessRules, p: &PeerInfo, pv: &str) -> Result<(), String> {
        rules
            .check_write(p, pv, WriteKind::Put)
            .map_err(|e| e.reason)
    }

    #[test]
    fn rules_match_pvs_users_and_hosts_by_name_pattern_and_group() {
        let rules = AccessRules::from_toml(EXAMPLE).unwrap();
        assert_eq!(rules.len(), 3);
        let bluesky = peer("bluesky", "BL1-WS2", "10.0.0.9");
        assert_eq!(put(&rules, &bluesky, "bdp:wf1:Command"), Ok(()));
        let op = peer("op-jane", "elsewhere", "10.54.1.20");
        assert_eq!(put(&rules, &op, "bdp:wf1:Request"), Ok(()), "host by IP");
        let far = peer("bluesky", "laptop", "192.168.1.5");
        let e = put(&rules, &far, "bdp:wf1:Command").unwrap_err();
        assert_eq!(
            e,
            "put to 'bdp:wf1:Command' refused for user 'bluesky' on host 'laptop' \
             (192.168.1.5:40000): rule 'handshake commands' allows users @acquisition on \
             hosts @beamline"
        );
        let dm = peer("dmuser", "compute7", "10.1.1.1");
        assert_eq!(put(&rules, &dm, "bdp:wf1:Progress"), Ok(()));
        assert!(put(&rules, &dm, "bdp:wf1:Command").is_err());
        let e = put(&rules, &bluesky, "bdp:wf1:Ready").unwrap_err();
        assert!(
            e.contains("rule '#2 (line 17)' allows users @workflow, admin on any host"),
            "{e}"
        );
        let e = put(&rules, &dm, "bdp:wf1:State").unwrap_err();
        assert!(e.ends_with("no access rule lets anyone write this PV (it is read-only)"));
        let e = rules
            .check_write(&dm, "bdp:wf1:State", WriteKind::Rpc)
            .unwrap_err();
        assert!(e.reason.starts_with("rpc to 'bdp:wf1:State' refused"));
        let anonymous = peer("", "", "10.2.2.2");
        assert_eq!(put(&rules, &anonymous, "scratch:x"), Ok(()), "* is anyone");
        let e = put(&rules, &anonymous, "bdp:wf1:Ready").unwrap_err();
        assert!(e.contains("anonymous client 10.2.2.2:40000"), "{e}");
    }

    #[test]
    fn host_names_match_the_address_a_client_comes_from_not_its_claim() {
        let text = r#"
[hosts]
local = ["localhost", "10.54.1.*"]

[[allow]]
name = "from here"
pvs = ["t:*"]
users = ["*"]
hosts = ["@local"]
"#;
        let rules = AccessRules::from_toml(text).unwrap();
        let here = peer("jdoe", "somewhere-else", "127.0.0.1");
        assert_eq!(put(&rules, &here, "t:x"), Ok(()), "localhost is 127.0.0.1");
        let subnet = peer("jdoe", "any", "10.54.1.7");
        assert_eq!(put(&rules, &subnet, "t:x"), Ok(()), "an address pattern");
        let spoofed = peer("jdoe", "localhost", "10.9.9.9");
        let e = put(&rules, &spoofed, "t:x").unwrap_err();
        assert!(
            e.contains("refused for user 'jdoe' on host 'localhost' (10.9.9.9:40000)"),
            "claiming localhost from elsewhere is refused: {e}"
        );

        let trusting =
            AccessRules::from_toml(&format!("trust_client_host = true\n{text}")).unwrap();
        assert_eq!(
            put(&trusting, &spoofed, "t:x"),
            Ok(()),
            "the claim, when trusted"
        );

        let mut in_code = AccessRules::new();
        in_code
            .allow("lo", &["t:*"], &["*"], &["localhost"])
            .unwrap();
        assert_eq!(put(&in_code, &here, "t:x"), Ok(()));
        assert!(put(&in_code, &spoofed, "t:x").is_err());
        let mut trusting = AccessRules::trusting_client_host();
        trusting
            .allow("lo", &["t:*"], &["*"], &["LOCALHOST"])
            .unwrap();
        assert_eq!(put(&trusting, &spoofed, "t:x"), Ok(()));
    }

    #[test]
    fn user_names_are_case_sensitive_and_patterns_anchor() {
        let rules = AccessRules::from_toml(EXAMPLE).unwrap();
        assert!(put(
            &rules,
            &peer("Bluesky", "bl1-ws1", "1.1.1.1"),
            "bdp:wf1:Command"
        )
        .is_err());
        assert!(put(&rules, &peer("dmuser", "h", "1.1.1.1"), "bdp:wf1:Ready2").is_err());
        assert!(put(&rules, &peer("dmuser", "h", "1.1.1.1"), "xbdp:wf1:Ready").is_err());
    }

    #[test]
    fn no_rules_means_read_only() {
        let rules = AccessRules::from_toml("# nothing yet\n").unwrap();
        assert!(rules.is_empty());
        assert!(put(&rules, &peer("root", "h", "127.0.0.1"), "any").is_err());
    }

    #[test]
    fn handshake_defaults_split_the_writers() {
        let sides: [(&str, &str, &[&str]); 2] = [
            ("acquisition", "bluesky", &["Command", "Request"]),
            ("workflow", "dm*", &["Ready", "Progress", "WorkflowMessage"]),
        ];
        let rules = writer_rules(&["bdp:wf[1]:", "bdp:wf2:"], &sides).unwrap();
        let acq = peer("bluesky", "ws", "10.0.0.1");
        let wf = peer("dm*", "compute", "10.0.0.2");
        let other = peer("dmuser", "compute", "10.0.0.2");
        for pv in ["Command", "Request"] {
            assert_eq!(put(&rules, &acq, &format!("bdp:wf[1]:{pv}")), Ok(()));
            assert!(put(&rules, &wf, &format!("bdp:wf[1]:{pv}")).is_err());
        }
        for pv in ["Ready", "Progress", "WorkflowMessage"] {
            assert_eq!(put(&rules, &wf, &format!("bdp:wf[1]:{pv}")), Ok(()));
            assert!(put(&rules, &acq, &format!("bdp:wf[1]:{pv}")).is_err());
            assert!(
                put(&rules, &other, &format!("bdp:wf[1]:{pv}")).is_err(),
                "literal user"
            );
        }
        // The prefix is literal too: "[1]" is not a character class here.
        assert!(put(&rules, &acq, "bdp:wf1:Command").is_err());
        for pv in ["State", "Status", "Message", "Heartbeat", "JobId"] {
            assert!(put(&rules, &acq, &format!("bdp:wf[1]:{pv}")).is_err());
        }
        assert_eq!(put(&rules, &wf, "bdp:wf2:Ready"), Ok(()), "every prefix");
        assert!(put(&rules, &acq, "bdp:wf2:Ready").is_err());
        assert!(writer_rules(&["p:"], &[("acquisition", "", &["Command"])]).is_err());
        let e = AccessRules::new()
            .allow("r", &["p:*"], &["@ops"], &[])
            .unwrap_err();
        assert!(
            e.to_string().contains("groups belong to a rules file"),
            "{e}"
        );
    }
}
