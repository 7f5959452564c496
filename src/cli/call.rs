//! `pvabridge call NAME [ARG=VALUE]...`: call a PV (RPC) with an NTURI argument, like
//! `pvxcall`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use pva_codec::{ScalarType, StructDesc, StructValue, Value};
use serde_json::json;

use super::format;
use super::pvaclient::{run as run_client, Format, ReadArgs};

/// Arguments of `call`.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// PV name.
    pub name: String,
    /// Arguments, sent as strings in the NTURI query.
    pub args: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// The NTURI argument structure of a call.
pub fn nturi(name: &str, args: &[String]) -> Result<StructValue, String> {
    let mut pairs = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => pairs.push((k.trim().to_owned(), v.to_owned())),
            _ => return Err(format!("'{a}' is not name=value")),
        }
    }
    let query = pairs
        .iter()
        .fold(StructDesc::builder(""), |b, (k, _)| {
            b.scalar(k.clone(), ScalarType::String)
        })
        .build();
    let desc = StructDesc::builder("epics:nt/NTURI:1.0")
        .scalar("scheme", ScalarType::String)
        .scalar("authority", ScalarType::String)
        .scalar("path", ScalarType::String)
        .structure("query", query)
        .build();
    let mut v = StructValue::new(Arc::new(desc));
    let fill = |v: &mut StructValue, path: &str, s: &str| {
        v.set(path, s)
            .map_err(|e| format!("argument '{path}': {e}"))
    };
    fill(&mut v, "scheme", "pva")?;
    fill(&mut v, "path", name)?;
    for (k, val) in &pairs {
        fill(&mut v, &format!("query.{k}"), val)?;
    }
    Ok(v)
}

/// Call the PV and print what it returns.
pub fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    run_client("call", |ctx| async move {
        let timeout = args.read.timeout.get(ctx.config());
        let arg = nturi(&args.name, &args.args)?;
        let mut op = ctx.rpc(&args.name, arg).timeout(timeout);
        if let Some(r) = &args.read.request.request {
            op = op.request(r.clone());
        }
        let result = op.await.map_err(|e| e.to_string())?;
        let json_out = args.read.output.format() == Format::Json;
        match (result, json_out) {
            (None, true) => println!("{}", json!({ "name": args.name, "value": null })),
            (None, false) => {}
            (Some(v), true) => println!(
                "{}",
                json!({ "name": args.name, "value": format::json(&v) })
            ),
            (Some(Value::Struct(s)), false) => {
                println!("{}", args.read.output.render(&args.name, &s, None));
            }
            (Some(v), false) => println!("{} {}", args.name, format::json(&v)),
        }
        Ok(ExitCode::SUCCESS)
    })
}
