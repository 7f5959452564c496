//! One-shot operations as builders: `ctx.get("pv").request("field(value)").exec().await`, or
//! simply `ctx.get("pv").await`.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use pva_codec::{FieldDesc, StructValue, Value};

use super::context::{parse_request, Context};
use super::error::ClientError;
use super::proto::{OpKind, Output};

/// A boxed operation future, so builders can be awaited directly.
pub type OpFuture<T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send>>;

/// What every one-shot builder holds: where to run, with which pvRequest, within what time.
struct Once {
    ctx: Context,
    name: String,
    request: Option<String>,
    timeout: Option<Duration>,
    server: Option<SocketAddr>,
}

impl Once {
    fn new(ctx: &Context, name: &str) -> Self {
        Once {
            ctx: ctx.clone(),
            name: name.to_owned(),
            request: None,
            timeout: None,
            server: None,
        }
    }

    /// Run `kind` and take its output with `pick`; an output of another kind is a protocol
    /// error.
    async fn run<T>(
        self,
        kind: OpKind,
        pick: impl FnOnce(Output) -> Option<T>,
    ) -> Result<T, ClientError> {
        let req = parse_request(self.request.as_deref())?;
        let out = self
            .ctx
            .run_once(&self.name, req.to_value(), kind, self.timeout, self.server)
            .await?;
        pick(out).ok_or_else(|| ClientError::Protocol {
            name: self.name,
            message: "answer of the wrong kind".into(),
        })
    }
}

/// The pvRequest and time limit setters of a builder whose [`Once`] is `self.$op`.
macro_rules! request_and_timeout {
    ($op:tt) => {
        /// The pvRequest text (`field(value,alarm)`); by default every field (for an RPC,
        /// none).
        pub fn request(mut self, text: impl Into<String>) -> Self {
            self.$op.request = Some(text.into());
            self
        }

        /// Overall time limit (search, connect and operation); default 5 s
        /// (`ClientConfig::timeout`).
        pub fn timeout(mut self, t: Duration) -> Self {
            self.$op.timeout = Some(t);
            self
        }
    };
}

/// Lets a builder be awaited directly, as its `exec`.
macro_rules! awaitable {
    ($builder:ty, $out:ty) => {
        impl IntoFuture for $builder {
            type Output = Result<$out, ClientError>;
            type IntoFuture = OpFuture<$out>;
            fn into_future(self) -> Self::IntoFuture {
                Box::pin(self.exec())
            }
        }
    };
}

/// Reads a channel once.
#[must_use = "a get does nothing until executed or awaited"]
pub struct GetBuilder(Once);

impl GetBuilder {
    request_and_timeout!(0);

    /// Run it.
    pub async fn exec(self) -> Result<StructValue, ClientError> {
        self.0
            .run(OpKind::Get, |out| match out {
                Output::Get(v) => Some(v),
                _ => None,
            })
            .await
    }
}

awaitable!(GetBuilder, StructValue);

/// Writes fields of a channel.
#[must_use = "a put does nothing until executed or awaited"]
pub struct PutBuilder {
    op: Once,
    fields: Vec<(String, Value)>,
}

impl PutBuilder {
    /// Set field `path` (dotted) to `value`, converted to the field's type by the server's
    /// type; an enumeration takes a choice name or an index, an array text like `[1,2]`.
    pub fn set(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((path.into(), value.into()));
        self
    }

    request_and_timeout!(op);

    /// Run it.
    pub async fn exec(self) -> Result<(), ClientError> {
        self.op
            .run(OpKind::Put(self.fields), |out| {
                matches!(out, Output::Put).then_some(())
            })
            .await
    }
}

awaitable!(PutBuilder, ());

/// Calls a channel (RPC) with an argument structure.
#[must_use = "a call does nothing until executed or awaited"]
pub struct RpcBuilder {
    op: Once,
    arg: StructValue,
}

impl RpcBuilder {
    /// Call the channel on this server, without searching for it (as pvxs's `server()`), for
    /// channels no server advertises, such as the `server` channel of pvxs servers.
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.op.server = Some(addr);
        self
    }

    request_and_timeout!(op);

    /// Run it; `None` when the server returned no value.
    pub async fn exec(self) -> Result<Option<Value>, ClientError> {
        self.op
            .run(OpKind::Rpc(self.arg), |out| match out {
                Output::Rpc(v) => Some(v),
                _ => None,
            })
            .await
    }
}

awaitable!(RpcBuilder, Option<Value>);

/// Asks a channel's type.
#[must_use = "an info does nothing until executed or awaited"]
pub struct InfoBuilder {
    op: Once,
    sub_field: String,
}

impl InfoBuilder {
    /// Only this sub-field (dotted path).
    pub fn sub_field(mut self, path: impl Into<String>) -> Self {
        self.sub_field = path.into();
        self
    }

    /// Overall time limit; default 5 s (`ClientConfig::timeout`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.op.timeout = Some(t);
        self
    }

    /// Run it.
    pub async fn exec(self) -> Result<FieldDesc, ClientError> {
        self.op
            .run(OpKind::Info(self.sub_field), |out| match out {
                Output::Info(d) => Some(d),
                _ => None,
            })
            .await
    }
}

awaitable!(InfoBuilder, FieldDesc);

impl Context {
    /// Read channel `name` once.
    pub fn get(&self, name: &str) -> GetBuilder {
        GetBuilder(Once::new(self, name))
    }

    /// Write fields of channel `name`; add them with [`PutBuilder::set`].
    pub fn put(&self, name: &str) -> PutBuilder {
        PutBuilder {
            op: Once::new(self, name),
            fields: Vec::new(),
        }
    }

    /// Call channel `name` with `arg`.
    pub fn rpc(&self, name: &str, arg: StructValue) -> RpcBuilder {
        RpcBuilder {
            op: Once::new(self, name),
            arg,
        }
    }

    /// Ask the type of channel `name`.
    pub fn info(&self, name: &str) -> InfoBuilder {
        InfoBuilder {
            op: Once::new(self, name),
            sub_field: String::new(),
        }
    }
}
