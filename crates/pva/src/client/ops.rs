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

fn unexpected(name: &str) -> ClientError {
    ClientError::Protocol {
        name: name.to_owned(),
        message: "answer of the wrong kind".into(),
    }
}

/// Reads a channel once.
#[must_use = "a get does nothing until executed or awaited"]
pub struct GetBuilder {
    ctx: Context,
    name: String,
    request: Option<String>,
    timeout: Option<Duration>,
}

impl GetBuilder {
    /// The pvRequest text (`field(value,alarm)`); by default every field.
    pub fn request(mut self, text: impl Into<String>) -> Self {
        self.request = Some(text.into());
        self
    }

    /// Overall time limit (search, connect and get); default 5 s (`ClientConfig::timeout`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Run it.
    pub async fn exec(self) -> Result<StructValue, ClientError> {
        let req = parse_request(self.request.as_deref())?;
        match self
            .ctx
            .run_once(&self.name, req.to_value(), OpKind::Get, self.timeout, None)
            .await?
        {
            Output::Get(v) => Ok(v),
            _ => Err(unexpected(&self.name)),
        }
    }
}

impl IntoFuture for GetBuilder {
    type Output = Result<StructValue, ClientError>;
    type IntoFuture = OpFuture<StructValue>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.exec())
    }
}

/// Writes fields of a channel.
#[must_use = "a put does nothing until executed or awaited"]
pub struct PutBuilder {
    ctx: Context,
    name: String,
    request: Option<String>,
    timeout: Option<Duration>,
    fields: Vec<(String, Value)>,
}

impl PutBuilder {
    /// Set field `path` (dotted) to `value`, converted to the field's type by the server's
    /// type; an enumeration takes a choice name or an index, an array text like `[1,2]`.
    pub fn set(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((path.into(), value.into()));
        self
    }

    /// The pvRequest text; by default every field.
    pub fn request(mut self, text: impl Into<String>) -> Self {
        self.request = Some(text.into());
        self
    }

    /// Overall time limit; default 5 s (`ClientConfig::timeout`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Run it.
    pub async fn exec(self) -> Result<(), ClientError> {
        let req = parse_request(self.request.as_deref())?;
        match self
            .ctx
            .run_once(
                &self.name,
                req.to_value(),
                OpKind::Put(self.fields),
                self.timeout,
                None,
            )
            .await?
        {
            Output::Put => Ok(()),
            _ => Err(unexpected(&self.name)),
        }
    }
}

impl IntoFuture for PutBuilder {
    type Output = Result<(), ClientError>;
    type IntoFuture = OpFuture<()>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.exec())
    }
}

/// Calls a channel (RPC) with an argument structure.
#[must_use = "a call does nothing until executed or awaited"]
pub struct RpcBuilder {
    ctx: Context,
    name: String,
    arg: StructValue,
    request: Option<String>,
    timeout: Option<Duration>,
    server: Option<SocketAddr>,
}

impl RpcBuilder {
    /// Call the channel on this server, without searching for it (as pvxs's `server()`), for
    /// channels no server advertises, such as the `server` channel of pvxs servers.
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.server = Some(addr);
        self
    }

    /// The pvRequest text; by default empty.
    pub fn request(mut self, text: impl Into<String>) -> Self {
        self.request = Some(text.into());
        self
    }

    /// Overall time limit; default 5 s (`ClientConfig::timeout`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Run it; `None` when the server returned no value.
    pub async fn exec(self) -> Result<Option<Value>, ClientError> {
        let req = parse_request(self.request.as_deref())?;
        match self
            .ctx
            .run_once(
                &self.name,
                req.to_value(),
                OpKind::Rpc(self.arg),
                self.timeout,
                self.server,
            )
            .await?
        {
            Output::Rpc(v) => Ok(v),
            _ => Err(unexpected(&self.name)),
        }
    }
}

impl IntoFuture for RpcBuilder {
    type Output = Result<Option<Value>, ClientError>;
    type IntoFuture = OpFuture<Option<Value>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.exec())
    }
}

/// Asks a channel's type.
#[must_use = "an info does nothing until executed or awaited"]
pub struct InfoBuilder {
    ctx: Context,
    name: String,
    sub_field: String,
    timeout: Option<Duration>,
}

impl InfoBuilder {
    /// Only this sub-field (dotted path).
    pub fn sub_field(mut self, path: impl Into<String>) -> Self {
        self.sub_field = path.into();
        self
    }

    /// Overall time limit; default 5 s (`ClientConfig::timeout`).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Run it.
    pub async fn exec(self) -> Result<FieldDesc, ClientError> {
        let empty = parse_request(None)?.to_value();
        match self
            .ctx
            .run_once(
                &self.name,
                empty,
                OpKind::Info(self.sub_field),
                self.timeout,
                None,
            )
            .await?
        {
            Output::Info(d) => Ok(d),
            _ => Err(unexpected(&self.name)),
        }
    }
}

impl IntoFuture for InfoBuilder {
    type Output = Result<FieldDesc, ClientError>;
    type IntoFuture = OpFuture<FieldDesc>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.exec())
    }
}

impl Context {
    /// Read channel `name` once.
    pub fn get(&self, name: &str) -> GetBuilder {
        GetBuilder {
            ctx: self.clone(),
            name: name.to_owned(),
            request: None,
            timeout: None,
        }
    }

    /// Write fields of channel `name`; add them with [`PutBuilder::set`].
    pub fn put(&self, name: &str) -> PutBuilder {
        PutBuilder {
            ctx: self.clone(),
            name: name.to_owned(),
            request: None,
            timeout: None,
            fields: Vec::new(),
        }
    }

    /// Call channel `name` with `arg`.
    pub fn rpc(&self, name: &str, arg: StructValue) -> RpcBuilder {
        RpcBuilder {
            ctx: self.clone(),
            name: name.to_owned(),
            arg,
            request: None,
            timeout: None,
            server: None,
        }
    }

    /// Ask the type of channel `name`.
    pub fn info(&self, name: &str) -> InfoBuilder {
        InfoBuilder {
            ctx: self.clone(),
            name: name.to_owned(),
            sub_field: String::new(),
            timeout: None,
        }
    }
}
