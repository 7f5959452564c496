//! Reading a rules file (the TOML format in the module's documentation above): its groups and
//! `[[allow]]` entries, checked and compiled into [`AccessRules`], with every problem reported on
//! one line with the line of the file it is on.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{matcher, member, pattern, AccessError, AccessRules, HostMatch, Matcher, Rule};

/// The groups a rule may name, already checked and compiled.
#[derive(Default)]
struct Groups {
    users: BTreeMap<String, Matcher>,
    hosts: BTreeMap<String, Matcher>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    trust_client_host: bool,
    #[serde(default)]
    users: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    hosts: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    allow: Vec<Spanned<AllowEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowEntry {
    name: Option<String>,
    pvs: Vec<Spanned<String>>,
    users: Vec<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

/// A problem at byte `at` of the text (the line is worked out later).
struct Located {
    at: Option<usize>,
    problem: String,
}

fn located(at: usize, problem: impl Into<String>) -> Located {
    Located {
        at: Some(at),
        problem: problem.into(),
    }
}

fn group_members(
    kind: &str,
    name: &str,
    members: &[Spanned<String>],
    hosts: HostMatch,
) -> Result<Matcher, Located> {
    let mut group = Matcher {
        written: format!("@{name}"),
        ..Matcher::default()
    };
    for m in members {
        if m.get_ref().starts_with('@') {
            return Err(located(
                m.span().start,
                format!(
                    "{kind} group '{name}' names the group '{}': groups hold names and \
                     patterns, not other groups",
                    m.get_ref()
                ),
            ));
        }
        let one = member(m.get_ref(), kind, hosts).map_err(|p| located(m.span().start, p))?;
        group.patterns.extend(one.patterns);
        group.addrs.extend(one.addrs);
    }
    Ok(group)
}

impl AccessRules {
    /// Read a rules file.
    pub fn load(path: &Path) -> Result<Self, AccessError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AccessError {
            file: Some(file.clone()),
            line: None,
            problem: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text).map_err(|e| AccessError {
            file: Some(file),
            ..e
        })
    }

    /// Parse the text of a rules file.
    pub fn from_toml(text: &str) -> Result<Self, AccessError> {
        Self::parse(text).map_err(|l| AccessError {
            file: None,
            line: l.at.map(|at| line_of(text, at)),
            problem: l.problem,
        })
    }

    fn parse(text: &str) -> Result<Self, Located> {
        let file: RulesFile = toml::from_str(text).map_err(|e| Located {
            at: e.span().map(|s| s.start),
            problem: e.message().trim().replace('\n', " "),
        })?;
        let hosts = if file.trust_client_host {
            HostMatch::ClaimedName
        } else {
            HostMatch::Address
        };
        let mut groups = Groups::default();
        for (name, members) in &file.users {
            groups
                .users
                .insert(name.clone(), group_members("user", name, members, hosts)?);
        }
        for (name, members) in &file.hosts {
            groups
                .hosts
                .insert(name.clone(), group_members("host", name, members, hosts)?);
        }
        let mut rules = Vec::with_capacity(file.allow.len());
        for (i, entry) in file.allow.iter().enumerate() {
            let at = entry.span().start;
            let entry = entry.get_ref();
            let name = entry
                .name
                .clone()
                .unwrap_or_else(|| format!("#{} (line {})", i + 1, line_of(text, at)));
            if entry.pvs.is_empty() {
                return Err(located(at, "an [[allow]] rule with no PV in pvs"));
            }
            if entry.users.is_empty() {
                return Err(located(
                    at,
                    "an [[allow]] rule with no user in users (\"*\" allows anyone)",
                ));
            }
            let compile = |list: &[Spanned<String>],
                           f: &dyn Fn(&str) -> Result<Matcher, String>|
             -> Result<Vec<Matcher>, Located> {
                list.iter()
                    .map(|s| f(s.get_ref()).map_err(|p| located(s.span().start, p)))
                    .collect()
            };
            rules.push(Rule {
                name,
                pvs: entry
                    .pvs
                    .iter()
                    .map(|s| pattern(s.get_ref()).map_err(|p| located(s.span().start, p)))
                    .collect::<Result<_, _>>()?,
                users: compile(&entry.users, &|u| matcher(u, &groups.users, "user", hosts))?,
                hosts: compile(&entry.hosts, &|h| matcher(h, &groups.hosts, "host", hosts))?,
            });
        }
        Ok(AccessRules { rules, hosts })
    }
}

/// The line (from 1) holding byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(text: &str) -> String {
        AccessRules::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_give_one_line_errors_with_the_line() {
        for (text, want) in [
            (
                "[[allow]]\npvs = [\"a\"]\nusr = [\"b\"]\n",
                "line 3: unknown field `usr`",
            ),
            (
                "[[allow]]\npvs = [\"a\"]\n",
                "line 1: missing field `users`",
            ),
            (
                "[[allow]]\npvs = [\"a\"]\nusers = [\"@ops\"]\n",
                "line 3: unknown user group '@ops': the file defines no [users] groups",
            ),
            (
                "[users]\nops = [\"x\"]\n[[allow]]\npvs = [\"a\"]\nusers = [\"@opz\"]\n",
                "line 5: unknown user group '@opz' (defined: @ops)",
            ),
            (
                "[[allow]]\npvs = [\"a[\"]\nusers = [\"u\"]\n",
                "line 2: bad pattern 'a['",
            ),
            (
                "[[allow]]\npvs = []\nusers = [\"u\"]\n",
                "line 1: an [[allow]] rule with no PV",
            ),
            (
                "\n\n[[allow]]\npvs = [\"a\"]\nusers = []\n",
                "line 3: an [[allow]] rule with no user in users",
            ),
            (
                "[hosts]\nlab = [\"@other\"]\n",
                "line 2: host group 'lab' names the group '@other'",
            ),
            (
                "[[allow]]\npvs = \"a\"\nusers = [\"u\"]\n",
                "line 2: invalid type",
            ),
            ("[[allow]\n", "line 1:"),
            (
                "[[allow]]\npvs = [\"\"]\nusers = [\"u\"]\n",
                "line 2: an empty pattern",
            ),
        ] {
            let e = parse_error(text);
            assert!(e.starts_with(want) || e.contains(want), "{text:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{text:?}: {e}");
        }
    }

    #[test]
    fn a_file_error_names_the_file() {
        let dir = std::env::temp_dir().join(format!("pva-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, "[[allow]]\npvs = [\"a\"]\n").unwrap();
        let e = AccessRules::load(&path).unwrap_err().to_string();
        assert_eq!(e, format!("{}:1: missing field `users`", path.display()));
        let e = AccessRules::load(&dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_name_patterns_and_unknown_hosts_need_trust_or_fail_to_load() {
        let e = parse_error("[[allow]]\npvs = [\"x\"]\nusers = [\"*\"]\nhosts = [\"bl1-ws*\"]\n");
        assert!(
            e.starts_with(
                "line 4: host pattern 'bl1-ws*' would match the host name a client claims"
            ),
            "{e}"
        );
        let e = parse_error("[hosts]\nh = [\"no-such-host.invalid\"]\n");
        assert!(
            e.starts_with("line 2: cannot resolve host 'no-such-host.invalid'"),
            "{e}"
        );
    }
}
