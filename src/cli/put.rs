//! `pvabridge put NAME VALUE | NAME FIELD=VALUE...`: write a PV, like `pvxput`.

use std::process::ExitCode;

use clap::Args;
use pva_codec::Value;

use super::pvaclient::{run as run_client, RequestArg, TimeoutArg};

/// Arguments of `put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// PV name.
    pub name: String,
    /// One value for the `value` field, or `field=value` pairs (dotted field paths).
    #[arg(required = true)]
    pub values: Vec<String>,
    #[command(flatten)]
    pub timeout: TimeoutArg,
    #[command(flatten)]
    pub request: RequestArg,
}

/// The (field, value) pairs the arguments name.
pub fn fields(values: &[String]) -> Result<Vec<(String, String)>, String> {
    if let [only] = values {
        if !only.contains('=') {
            return Ok(vec![("value".into(), only.clone())]);
        }
    }
    values
        .iter()
        .map(|a| match a.split_once('=') {
            Some((f, v)) if !f.trim().is_empty() => Ok((f.trim().to_owned(), v.to_owned())),
            _ => Err(format!("'{a}' is not field=value")),
        })
        .collect()
}

/// Write the fields, then print the new value when asked to (`verbose`, -v).
pub fn run(args: PutArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    run_client("put", |ctx| async move {
        let timeout = args.timeout.get(ctx.config());
        let mut op = ctx.put(&args.name).timeout(timeout);
        for (f, v) in fields(&args.values)? {
            op = op.set(f, Value::String(v));
        }
        if let Some(r) = &args.request.request {
            op = op.request(r.clone());
        }
        op.await.map_err(|e| e.to_string())?;
        if verbose {
            let v = ctx
                .get(&args.name)
                .timeout(timeout)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{} {}",
                args.name,
                super::format::tree(&v, super::format::DEFAULT_ARRAY_LIMIT)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bare_value_goes_to_value() {
        assert_eq!(
            fields(&["5".into()]).unwrap(),
            vec![("value".into(), "5".into())]
        );
        assert_eq!(
            fields(&["a.b=1".into(), "c=x=y".into()]).unwrap(),
            vec![("a.b".into(), "1".into()), ("c".into(), "x=y".into())]
        );
        assert!(fields(&["1".into(), "2".into()]).is_err());
    }
}
