//! `pvabridge host NAME=TYPE[:VALUE] ...`: serve ad-hoc writable PVs as NTScalar,
//! NTScalarArray or NTEnum with alarm and timeStamp, until interrupted; within limits, and
//! with `--access FILE`, writable only by whom the rules file says.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use pva::server::{AccessPolicy, AccessRules, Server, ServerOptions, SharedPv, StaticSource};
use pva::ServerConfig;
use pva_codec::nt::{set_time_stamp, NtEnum, NtScalar, TimeStamp};
use pva_codec::{ScalarArray, ScalarType, Status, StructValue, Value};

/// Serve ad-hoc writable PVs.
#[derive(Args, Debug)]
#[command(after_help = "\
PV specifications are NAME=TYPE[:VALUE]:
  TYPE  bool byte short int long ubyte ushort uint ulong float double string,
        an array of any of these as TYPE[] (VALUE: comma-separated), or enum:A,B,C
        (VALUE: a choice name or index).
Examples:
  pvabridge host demo:temp=double:21.5 demo:name=string:hello
  pvabridge host demo:wave=double[]:1,2,3 demo:mode=enum:Off,On:On
  pvabridge host --access examples/access.toml bdp:wf1:Command=enum:NONE,START,ABORT
Ports come from EPICS_PVAS_SERVER_PORT / EPICS_PVA_SERVER_PORT and EPICS_PVA_BROADCAST_PORT.
Refusals (limits reached, writes denied, searches dropped) are logged on stderr, one line a
second per kind at most, counted, and summed up every 10 s while they grow and at exit.
RUST_LOG=info shows more of the server's log.")]
pub struct HostArgs {
    /// PVs to serve, as NAME=TYPE[:VALUE].
    #[arg(required = true, value_name = "NAME=TYPE[:VALUE]")]
    pvs: Vec<String>,

    /// Who may write which PV: a TOML rules file (see docs/access.md). With it, a PV that no
    /// rule lets the client write is read-only to that client; without it, every PV is
    /// writable by anyone.
    #[arg(long, env = "PVABRIDGE_ACCESS", value_name = "FILE")]
    access: Option<PathBuf>,

    #[command(flatten)]
    limits: super::limits::LimitArgs,
}

/// How often the refusal counters are checked for a summary line.
const STATS_PERIOD: Duration = Duration::from_secs(10);

/// A parsed PV specification.
#[derive(Debug, Clone, PartialEq)]
pub struct PvSpec {
    /// Channel name.
    pub name: String,
    /// The initial value, already in its normative type.
    pub value: StructValue,
}

/// Parse `NAME=TYPE[:VALUE]` into a PV with its initial value.
pub fn parse_spec(spec: &str) -> anyhow::Result<PvSpec> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("'{spec}': expected NAME=TYPE[:VALUE]"))?;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        bail!("'{spec}': the PV name must be non-empty and contain no spaces");
    }
    let mut value = if let Some(enum_spec) = rest.strip_prefix("enum:") {
        enum_value(enum_spec).with_context(|| format!("'{spec}'"))?
    } else {
        let (type_name, initial) = match rest.split_once(':') {
            Some((t, v)) => (t, Some(v)),
            None => (rest, None),
        };
        scalar_value(type_name, initial).with_context(|| format!("'{spec}'"))?
    };
    set_time_stamp(&mut value, TimeStamp::now())?;
    Ok(PvSpec {
        name: name.to_owned(),
        value,
    })
}

fn scalar_value(type_name: &str, initial: Option<&str>) -> anyhow::Result<StructValue> {
    let (base, is_array) = match type_name.strip_suffix("[]") {
        Some(b) => (b, true),
        None => (type_name, false),
    };
    let t = ScalarType::parse(base).ok_or_else(|| {
        anyhow!("unknown type '{type_name}' (bool, byte, short, int, long, ubyte, ushort, uint, ulong, float, double, string, TYPE[], enum:A,B)")
    })?;
    let mut value = if is_array {
        NtScalar::array(t).create()
    } else {
        NtScalar::new(t).create()
    };
    if let Some(text) = initial {
        let given = if is_array {
            let items = if text.is_empty() {
                Vec::new()
            } else {
                text.split(',').map(|s| s.trim().to_owned()).collect()
            };
            Value::Array(ScalarArray::String(items))
        } else {
            Value::String(text.to_owned())
        };
        value
            .set("value", given)
            .map_err(|_| anyhow!("'{text}' is not a valid {type_name}"))?;
    }
    Ok(value)
}

fn enum_value(spec: &str) -> anyhow::Result<StructValue> {
    let (choices, initial) = match spec.split_once(':') {
        Some((c, i)) => (c, Some(i)),
        None => (spec, None),
    };
    let choices: Vec<String> = choices.split(',').map(|c| c.trim().to_owned()).collect();
    if choices.iter().any(String::is_empty) {
        bail!("enum choices must be non-empty names separated by commas");
    }
    let index = match initial {
        None => 0,
        Some(i) => match choices.iter().position(|c| c == i) {
            Some(p) => p,
            None => i
                .parse::<usize>()
                .ok()
                .filter(|&n| n < choices.len())
                .ok_or_else(|| anyhow!("'{i}' is not one of the choices {choices:?}"))?,
        },
    };
    let mut value = NtEnum::create();
    value.set("value.choices", Value::Array(ScalarArray::String(choices)))?;
    value.set("value.index", index as i32)?;
    Ok(value)
}

/// Make a PV that stamps the time on every put and, for enums, refuses indexes out of range.
pub fn writable_pv(initial: StructValue) -> SharedPv {
    SharedPv::builder(initial)
        .on_put(|req| {
            let mut v = req.value.clone();
            if let (Some(Value::I32(i)), Some(Value::Array(ScalarArray::String(c)))) =
                (v.get("value.index"), v.get("value.choices"))
            {
                if *i < 0 || *i as usize >= c.len() {
                    return Err(Status::error(format!(
                        "index {i} is not one of the {} choices",
                        c.len()
                    )));
                }
            }
            set_time_stamp(&mut v, TimeStamp::now()).map_err(|e| Status::error(e.to_string()))?;
            Ok(Some(v))
        })
        .build()
}

/// Serve the PVs until Ctrl-C.
pub fn run(args: HostArgs) -> anyhow::Result<ExitCode> {
    let specs: Vec<PvSpec> = args
        .pvs
        .iter()
        .map(|s| parse_spec(s))
        .collect::<anyhow::Result<_>>()?;
    let config = ServerConfig::from_env()?;
    let access = match &args.access {
        None => None,
        Some(path) => {
            let rules = AccessRules::load(path)?;
            Some(Arc::new(rules) as Arc<dyn AccessPolicy>)
        }
    };
    let options = ServerOptions {
        limits: args.limits.limits(),
        access,
    };
    super::common::runtime()?.block_on(async move {
        let source = Arc::new(StaticSource::new());
        for spec in specs {
            source.add(spec.name, writable_pv(spec.value));
        }
        let names = pva::server::Source::names(source.as_ref());
        let server = Server::start_with(config, vec![source], options).await?;
        let list = |addrs: &[std::net::SocketAddr]| {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "pvabridge host: serving {} PV(s) on TCP {} and UDP {}: {}",
            names.len(),
            list(server.tcp_addrs()),
            list(server.udp_addrs()),
            names.join(" ")
        );
        if let Some(path) = &args.access {
            eprintln!(
                "pvabridge host: writes allowed only as {} says",
                path.display()
            );
        }
        let stats = server.stats_handle();
        let report = async {
            let mut shown = 0;
            loop {
                tokio::time::sleep(STATS_PERIOD).await;
                let now = stats.snapshot();
                if now.total_refused() != shown {
                    shown = now.total_refused();
                    eprintln!("pvabridge host: {now}");
                }
            }
        };
        tokio::select! {
            () = super::common::shutdown_signal() => {}
            () = report => {}
        }
        eprintln!("pvabridge host: stopping; {}", server.stats());
        server.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_normative_types() {
        let p = parse_spec("a:b=double:2.5").unwrap();
        assert_eq!(p.name, "a:b");
        assert_eq!(p.value.id(), "epics:nt/NTScalar:1.0");
        assert_eq!(p.value.get("value"), Some(&Value::F64(2.5)));
        let p = parse_spec("w=ushort[]:1, 2,3").unwrap();
        assert_eq!(p.value.id(), "epics:nt/NTScalarArray:1.0");
        assert_eq!(
            p.value
                .get("value")
                .and_then(Value::as_array)
                .unwrap()
                .len(),
            3
        );
        let p = parse_spec("m=enum:Off,On:On").unwrap();
        assert_eq!(p.value.get("value.index"), Some(&Value::I32(1)));
        let p = parse_spec("s=string").unwrap();
        assert_eq!(p.value.get("value"), Some(&Value::String(String::new())));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("novalue", "NAME=TYPE"),
            ("=int", "name"),
            ("x=quad", "unknown type"),
            ("x=byte:300", "not a valid byte"),
            ("x=int[]:1,z", "not a valid int[]"),
            ("x=enum:A,B:C", "not one of the choices"),
            ("x=enum:A,,B", "non-empty"),
        ] {
            let e = format!("{:#}", parse_spec(spec).unwrap_err());
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
