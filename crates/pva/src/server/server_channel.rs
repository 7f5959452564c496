//! The special channel `server` that pvxs servers answer and `pvxlist HOST` calls: an RPC
//! with `op=channels` returns the names every source can enumerate (an NTScalarArray of
//! strings, sorted, each once), and `op=info` the implementation and its version. Like pvxs,
//! the channel is never advertised in search replies; clients connect to the server directly.

use std::collections::BTreeSet;
use std::sync::Arc;

use pva_codec::nt::NtScalar;
use pva_codec::{ScalarArray, ScalarType, Status, StructDesc, StructValue, Value};

use super::shared_pv::SharedPv;
use super::source::Source;

/// The name of the channel.
pub const SERVER_CHANNEL: &str = "server";

/// The `server` channel of a server whose channels come from `sources`. Its value (for a get)
/// is the `op=info` answer.
pub fn server_channel(sources: Vec<Arc<dyn Source>>) -> SharedPv {
    SharedPv::builder(info())
        .on_rpc(move |argument, _peer| answer(&sources, argument))
        .build()
}

/// `{implLang, version}`, the shape of pvxs's answer to `op=info`.
fn info() -> StructValue {
    let desc = StructDesc::builder("")
        .scalar("implLang", ScalarType::String)
        .scalar("version", ScalarType::String)
        .build();
    let mut v = StructValue::new(Arc::new(desc));
    // Both members exist and are strings: these cannot fail.
    let _ = v.set("implLang", "rust");
    let _ = v.set("version", concat!("pvabridge ", env!("CARGO_PKG_VERSION")));
    v
}

/// The `op` argument, from an NTURI's `query` (as pvxs clients send it) or a plain structure.
fn op_of(argument: &Value) -> Option<&str> {
    let args = argument.as_struct()?;
    let args = match args.get("query") {
        Some(Value::Struct(query)) => query,
        _ => args,
    };
    args.get("op").and_then(Value::as_str)
}

fn answer(sources: &[Arc<dyn Source>], argument: &Value) -> Result<Value, Status> {
    match op_of(argument) {
        Some("channels") => {
            let names: BTreeSet<String> = sources.iter().flat_map(|s| s.names()).collect();
            let mut reply = NtScalar::array(ScalarType::String).create();
            reply
                .set(
                    "value",
                    Value::Array(ScalarArray::String(names.into_iter().collect())),
                )
                .map_err(|e| Status::error(e.to_string()))?;
            Ok(Value::Struct(reply))
        }
        Some("info") => Ok(Value::Struct(info())),
        Some(other) => Err(Status::error(format!(
            "unknown op '{other}': the server channel answers op=channels and op=info"
        ))),
        None => Err(Status::error(
            "no op given: the server channel answers op=channels and op=info",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::source::tests::peer;
    use crate::server::source::StaticSource;

    fn uri(op: &str) -> Value {
        let query = StructDesc::builder("")
            .scalar("op", ScalarType::String)
            .build();
        let desc = StructDesc::builder("epics:nt/NTURI:1.0")
            .scalar("scheme", ScalarType::String)
            .scalar("path", ScalarType::String)
            .structure("query", query)
            .build();
        let mut v = StructValue::new(Arc::new(desc));
        v.set("path", SERVER_CHANNEL).unwrap();
        v.set("query.op", op).unwrap();
        Value::Struct(v)
    }

    #[test]
    fn channels_lists_every_source_sorted_once() {
        let a = StaticSource::new();
        let b = StaticSource::new();
        let pv = || SharedPv::readonly(info());
        a.add("z:one", pv());
        a.add("a:two", pv());
        b.add("a:two", pv());
        b.add("m:three", pv());
        let sources: Vec<Arc<dyn Source>> = vec![Arc::new(a), Arc::new(b)];
        let channel = server_channel(sources);
        let reply = channel.rpc(&uri("channels"), &peer()).unwrap();
        let reply = reply.as_struct().unwrap();
        assert_eq!(reply.id(), "epics:nt/NTScalarArray:1.0");
        assert_eq!(
            reply.get("value"),
            Some(&Value::Array(ScalarArray::String(vec![
                "a:two".into(),
                "m:three".into(),
                "z:one".into()
            ])))
        );
    }

    #[test]
    fn info_and_errors() {
        let channel = server_channel(Vec::new());
        let reply = channel.rpc(&uri("info"), &peer()).unwrap();
        assert_eq!(
            reply.as_struct().unwrap().get("implLang"),
            Some(&Value::String("rust".into()))
        );
        let err = channel.rpc(&uri("reboot"), &peer()).unwrap_err();
        assert!(err.message.contains("unknown op 'reboot'"), "{err:?}");
        let plain = StructValue::new(Arc::new(StructDesc::builder("").build()));
        assert!(channel.rpc(&Value::Struct(plain), &peer()).is_err());
    }
}
