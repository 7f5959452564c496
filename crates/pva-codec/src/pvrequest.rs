//! pvRequest: the text form clients write (`field(a,b.c)record[queueSize=4]`) and the structure
//! that travels on the wire, in both directions.
//!
//! The structure is built as pvxs and pvAccessCPP build it: a top structure holding a `field`
//! substructure (one empty structure per selected name, nested along dotted paths; an empty
//! `field` selects everything) and, when options are given, `record` holding `_options`, a
//! structure of string members. Options written after a field name (`value[k=v]`, or the
//! whole-structure filter `_[pydistributor=...]`) go under that field as its own `_options`.

use std::fmt;
use std::sync::Arc;

use crate::types::{FieldDesc, Member, ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// One selected field: its name, options written after it, and selected sub-fields (none means
/// the whole field).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldNode {
    /// Field name (`_` is the whole-structure pseudo field used by server-side filters).
    pub name: String,
    /// `[key=value,...]` options of this field, in the order written; later keys replace earlier.
    pub options: Vec<(String, String)>,
    /// Selected sub-fields in the order first written.
    pub children: Vec<FieldNode>,
}

impl FieldNode {
    fn named(name: &str) -> Self {
        FieldNode {
            name: name.to_owned(),
            ..FieldNode::default()
        }
    }

    fn child_mut(&mut self, name: &str) -> &mut FieldNode {
        child_in(&mut self.children, name)
    }
}

/// Find or append the node called `name`.
fn child_in<'a>(nodes: &'a mut Vec<FieldNode>, name: &str) -> &'a mut FieldNode {
    let i = match nodes.iter().position(|n| n.name == name) {
        Some(i) => i,
        None => {
            nodes.push(FieldNode::named(name));
            nodes.len() - 1
        }
    };
    &mut nodes[i]
}

fn set_option(options: &mut Vec<(String, String)>, key: &str, value: &str) {
    match options.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_owned(),
        None => options.push((key.to_owned(), value.to_owned())),
    }
}

/// A parsed pvRequest: the field selection and the record options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PvRequest {
    /// Selected top-level fields; empty selects every field.
    pub fields: Vec<FieldNode>,
    /// `record[...]` options in the order written; later keys replace earlier.
    pub record_options: Vec<(String, String)>,
}

/// What was wrong with a pvRequest string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PvRequestErrorKind {
    /// A character that cannot appear where it was found.
    UnexpectedChar(char),
    /// The text ended inside a `field(...)`, `record[...]`, `[...]` or `{...}`.
    UnexpectedEnd,
    /// An option without `=` or without a key or value.
    BadOption,
    /// An empty component in a dotted field path (`a..b`, `a.`).
    EmptyName,
    /// `field` or `record` not followed by its opening bracket.
    ExpectedOpen(char),
}

/// A pvRequest parse error, with the byte position in the input where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pvRequest at position {pos}: {kind}")]
pub struct PvRequestError {
    /// Byte offset into the input.
    pub pos: usize,
    /// What was wrong.
    pub kind: PvRequestErrorKind,
}

impl fmt::Display for PvRequestErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvRequestErrorKind::UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            PvRequestErrorKind::UnexpectedEnd => write!(f, "unexpected end of input"),
            PvRequestErrorKind::BadOption => write!(f, "expected key=value"),
            PvRequestErrorKind::EmptyName => write!(f, "empty field name"),
            PvRequestErrorKind::ExpectedOpen(c) => write!(f, "expected '{c}'"),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A character cursor with positions, for error reports.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, kind: PvRequestErrorKind) -> PvRequestError {
        PvRequestError {
            pos: self.pos,
            kind,
        }
    }

    fn peek(&self) -> Option<char> {
        self.text.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn unexpected(&self) -> PvRequestError {
        match self.peek() {
            Some(c) => self.err(PvRequestErrorKind::UnexpectedChar(c)),
            None => self.err(PvRequestErrorKind::UnexpectedEnd),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), PvRequestError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// A name of `[A-Za-z0-9_]` characters; empty when none follow.
    fn name(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.bump();
        }
        self.text.get(start..self.pos).unwrap_or_default()
    }

    fn request(&mut self) -> Result<PvRequest, PvRequestError> {
        let mut req = PvRequest::default();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(req),
                Some(',') => self.bump(),
                Some(_) => {
                    let start = self.pos;
                    let word = self.name();
                    self.skip_ws();
                    match (word, self.peek()) {
                        ("field", Some('(')) => {
                            self.bump();
                            self.field_list(&mut req.fields, ')')?;
                        }
                        ("field", _) => return Err(self.err(PvRequestErrorKind::ExpectedOpen('('))),
                        ("record", Some('[')) => {
                            self.bump();
                            self.options(&mut req.record_options)?;
                        }
                        ("record", _) => {
                            return Err(self.err(PvRequestErrorKind::ExpectedOpen('[')))
                        }
                        _ => {
                            // A bare field spec is short-hand for field(spec).
                            self.pos = start;
                            self.field_spec(&mut req.fields)?;
                        }
                    }
                }
            }
        }
    }

    /// Comma-separated field specs up to `close`; empty entries are allowed, as pvxs allows.
    fn field_list(
        &mut self,
        nodes: &mut Vec<FieldNode>,
        close: char,
    ) -> Result<(), PvRequestError> {
        loop {
            self.skip_ws();
            match self.peek() {
                Some(c) if c == close => {
                    self.bump();
                    return Ok(());
                }
                Some(',') => self.bump(),
                Some(_) => {
                    self.field_spec(nodes)?;
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.bump(),
                        Some(c) if c == close => {}
                        _ => return Err(self.unexpected()),
                    }
                }
                None => return Err(self.unexpected()),
            }
        }
    }

    /// `name[opts].name[opts]{sub,list}`: a dotted path whose components may carry options,
    /// optionally followed by a braced list of sub-fields.
    fn field_spec(&mut self, nodes: &mut Vec<FieldNode>) -> Result<(), PvRequestError> {
        let name = self.name();
        if name.is_empty() {
            return Err(match self.peek() {
                Some('.') => self.err(PvRequestErrorKind::EmptyName),
                _ => self.unexpected(),
            });
        }
        let node = child_in(nodes, name);
        self.skip_ws();
        if self.peek() == Some('[') {
            self.bump();
            self.options(&mut node.options)?;
            self.skip_ws();
        }
        match self.peek() {
            Some('.') => {
                self.bump();
                self.field_spec(&mut node.children)
            }
            Some('{') => {
                self.bump();
                self.field_list(&mut node.children, '}')
            }
            _ => Ok(()),
        }
    }

    /// `key=value,...` up to `]`. Values run to the next `,` or `]` (so `group:1;set:2` is one
    /// value); a trailing comma is allowed, as pvxs allows.
    fn options(&mut self, into: &mut Vec<(String, String)>) -> Result<(), PvRequestError> {
        let mut first = true;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(']') => {
                    self.bump();
                    return Ok(());
                }
                Some(',') if !first => {
                    return Err(self.err(PvRequestErrorKind::BadOption));
                }
                None => return Err(self.unexpected()),
                Some(_) => {}
            }
            let key = self.name();
            if key.is_empty() {
                return Err(self.err(PvRequestErrorKind::BadOption));
            }
            self.expect('=').map_err(|e| PvRequestError {
                kind: PvRequestErrorKind::BadOption,
                ..e
            })?;
            self.skip_ws();
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|c| !matches!(c, ',' | ']' | '[' | '(' | ')' | '{' | '}'))
            {
                self.bump();
            }
            let value = self.text.get(start..self.pos).unwrap_or_default().trim();
            if value.is_empty() {
                return Err(self.err(PvRequestErrorKind::BadOption));
            }
            set_option(into, key, value);
            first = false;
            match self.peek() {
                Some(',') => self.bump(),
                Some(']') => {}
                _ => return Err(self.unexpected()),
            }
        }
    }
}

impl PvRequest {
    /// The request that selects every field with no options (`field()`).
    pub fn new() -> Self {
        PvRequest::default()
    }

    /// Parse pvRequest text. The empty string selects everything, like `field()`.
    pub fn parse(text: &str) -> Result<PvRequest, PvRequestError> {
        Parser { text, pos: 0 }.request()
    }

    /// Add a dotted field path to the selection.
    pub fn with_field(mut self, path: &str) -> Self {
        self.node_mut(path);
        self
    }

    /// Set a record option (`record[key=value]`).
    pub fn with_record_option(mut self, key: &str, value: impl ToString) -> Self {
        set_option(&mut self.record_options, key, &value.to_string());
        self
    }

    /// Set an option on a field (`path[key=value]`), selecting the field if needed.
    pub fn with_field_option(mut self, path: &str, key: &str, value: impl ToString) -> Self {
        if let Some(node) = self.node_mut(path) {
            set_option(&mut node.options, key, &value.to_string());
        }
        self
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut FieldNode> {
        let mut parts = path.split('.').filter(|p| !p.is_empty());
        let mut node = child_in(&mut self.fields, parts.next()?);
        for p in parts {
            node = node.child_mut(p);
        }
        Some(node)
    }

    fn node(&self, path: &str) -> Option<&FieldNode> {
        let mut nodes = &self.fields;
        let mut found = None;
        for p in path.split('.') {
            let n = nodes.iter().find(|n| n.name == p)?;
            nodes = &n.children;
            found = Some(n);
        }
        found
    }

    /// The value of a record option.
    pub fn record_option(&self, key: &str) -> Option<&str> {
        self.record_options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `record[queueSize=N]`: the monitor queue depth the client asks for.
    pub fn queue_size(&self) -> Option<u32> {
        self.record_option("queueSize")?.trim().parse().ok()
    }

    /// `record[pipeline=true]`: whether the client asks for a flow-controlled monitor.
    pub fn pipeline(&self) -> bool {
        self.record_option("pipeline")
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"))
    }

    /// The selected fields as dotted paths (the leaves of the selection); empty selects all.
    /// The `_` pseudo field of whole-structure filters selects nothing by itself.
    pub fn fields(&self) -> Vec<String> {
        fn walk(nodes: &[FieldNode], prefix: &str, out: &mut Vec<String>) {
            for n in nodes {
                let path = if prefix.is_empty() {
                    n.name.clone()
                } else {
                    format!("{prefix}.{}", n.name)
                };
                if n.children.is_empty() {
                    out.push(path);
                } else {
                    walk(&n.children, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        let selected: Vec<FieldNode> = self
            .fields
            .iter()
            .filter(|n| n.name != "_")
            .cloned()
            .collect();
        walk(&selected, "", &mut out);
        out
    }

    /// The options written after a field (`path[k=v]`); `_` names the whole-structure filter.
    pub fn field_options(&self, path: &str) -> Option<&[(String, String)]> {
        self.node(path).map(|n| n.options.as_slice())
    }

    /// One option of a field, e.g. `field_option("_", "pydistributor")`.
    pub fn field_option(&self, path: &str, key: &str) -> Option<&str> {
        self.field_options(path)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every field that carries options, as (dotted path, options).
    pub fn all_field_options(&self) -> Vec<(String, &[(String, String)])> {
        fn walk<'a>(
            nodes: &'a [FieldNode],
            prefix: &str,
            out: &mut Vec<(String, &'a [(String, String)])>,
        ) {
            for n in nodes {
                let path = if prefix.is_empty() {
                    n.name.clone()
                } else {
                    format!("{prefix}.{}", n.name)
                };
                if !n.options.is_empty() {
                    out.push((path.clone(), n.options.as_slice()));
                }
                walk(&n.children, &path, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.fields, "", &mut out);
        out
    }

    /// The pvRequest structure as pvxs sends it: `field` always present, `record._options` when
    /// there are record options.
    pub fn to_value(&self) -> StructValue {
        let mut members = vec![Member {
            name: "field".into(),
            desc: FieldDesc::Struct(Arc::new(nodes_desc(&self.fields))),
        }];
        if !self.record_options.is_empty() {
            members.push(Member {
                name: "record".into(),
                desc: FieldDesc::Struct(Arc::new(StructDesc::new(
                    "",
                    vec![options_member(&self.record_options)],
                ))),
            });
        }
        let mut v = StructValue::new(Arc::new(StructDesc::new("", members)));
        for (k, val) in &self.record_options {
            // The member exists and is a string: this cannot fail.
            let _ = v.set(&format!("record._options.{k}"), val.as_str());
        }
        fill_node_options(&mut v, "field", &self.fields);
        v
    }

    /// Read a pvRequest structure, as any peer builds it. A missing `field` selects everything;
    /// option values of any scalar type are read as text.
    pub fn from_value(v: &StructValue) -> PvRequest {
        let mut req = PvRequest::default();
        if let Some(Value::Struct(f)) = v.get("field") {
            req.fields = nodes_from(f);
        }
        if let Some(Value::Struct(o)) = v.get("record._options") {
            req.record_options = options_from(o);
        }
        req
    }
}

fn options_member(options: &[(String, String)]) -> Member {
    let members = options
        .iter()
        .map(|(k, _)| Member {
            name: k.clone(),
            desc: FieldDesc::Scalar(ScalarType::String),
        })
        .collect();
    Member {
        name: "_options".into(),
        desc: FieldDesc::Struct(Arc::new(StructDesc::new("", members))),
    }
}

fn nodes_desc(nodes: &[FieldNode]) -> StructDesc {
    let members = nodes
        .iter()
        .map(|n| {
            let mut inner = Vec::new();
            if !n.options.is_empty() {
                inner.push(options_member(&n.options));
            }
            let sub = nodes_desc(&n.children);
            inner.extend(sub.members().iter().cloned());
            Member {
                name: n.name.clone(),
                desc: FieldDesc::Struct(Arc::new(StructDesc::new("", inner))),
            }
        })
        .collect();
    StructDesc::new("", members)
}

fn fill_node_options(v: &mut StructValue, prefix: &str, nodes: &[FieldNode]) {
    for n in nodes {
        let path = format!("{prefix}.{}", n.name);
        for (k, val) in &n.options {
            // The member exists and is a string: this cannot fail.
            let _ = v.set(&format!("{path}._options.{k}"), val.as_str());
        }
        fill_node_options(v, &path, &n.children);
    }
}

fn nodes_from(s: &StructValue) -> Vec<FieldNode> {
    let mut out = Vec::new();
    for (name, v) in s.iter() {
        if let Value::Struct(sub) = v {
            if name == "_options" {
                continue;
            }
            let options = match sub.get("_options") {
                Some(Value::Struct(o)) => options_from(o),
                _ => Vec::new(),
            };
            out.push(FieldNode {
                name: name.to_owned(),
                options,
                children: nodes_from(sub),
            });
        }
    }
    out
}

fn options_from(o: &StructValue) -> Vec<(String, String)> {
    o.iter()
        .filter_map(|(k, v)| {
            let text = match v.clone().coerce(&FieldDesc::Scalar(ScalarType::String)) {
                Ok(Value::String(s)) => s,
                _ => return None,
            };
            Some((k.to_owned(), text))
        })
        .collect()
}

fn options_text(options: &[(String, String)]) -> String {
    if options.is_empty() {
        return String::new();
    }
    let items: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("[{}]", items.join(","))
}

fn join_path(prefix: &str, seg: &str) -> String {
    if prefix.is_empty() {
        seg.to_owned()
    } else {
        format!("{prefix}.{seg}")
    }
}

/// Print each leaf as a dotted path. A node's options are printed on the first path through it
/// (`pre_first`), later paths use the plain names (`pre_rest`); parsing merges them back.
fn write_nodes(
    f: &mut fmt::Formatter<'_>,
    nodes: &[FieldNode],
    pre_first: &str,
    pre_rest: &str,
    used: &mut bool,
    first_leaf: &mut bool,
) -> fmt::Result {
    for n in nodes {
        let pf = if *used { pre_rest } else { pre_first };
        let with_opts = join_path(pf, &format!("{}{}", n.name, options_text(&n.options)));
        let plain = join_path(pre_rest, &n.name);
        if n.children.is_empty() {
            if !*first_leaf {
                f.write_str(",")?;
            }
            *first_leaf = false;
            f.write_str(&with_opts)?;
        } else {
            let mut inner_used = false;
            write_nodes(
                f,
                &n.children,
                &with_opts,
                &plain,
                &mut inner_used,
                first_leaf,
            )?;
        }
        *used = true;
    }
    Ok(())
}

impl fmt::Display for PvRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field(")?;
        write_nodes(f, &self.fields, "", "", &mut false, &mut true)?;
        f.write_str(")")?;
        if !self.record_options.is_empty() {
            write!(f, "record{}", options_text(&self.record_options))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &StructValue) -> Vec<String> {
        v.iter().map(|(n, _)| n.to_owned()).collect()
    }

    #[test]
    fn field_and_record() {
        let r = PvRequest::parse("field(a,b.c)record[queueSize=4,pipeline=true]").unwrap();
        assert_eq!(r.fields(), vec!["a", "b.c"]);
        assert_eq!(r.queue_size(), Some(4));
        assert!(r.pipeline());
        assert_eq!(
            r.to_string(),
            "field(a,b.c)record[queueSize=4,pipeline=true]"
        );
        let v = r.to_value();
        assert_eq!(names(&v), vec!["field", "record"]);
        assert!(matches!(v.get("field.b.c"), Some(Value::Struct(s)) if s.fields().is_empty()));
        assert_eq!(
            v.get("record._options.queueSize"),
            Some(&Value::String("4".into()))
        );
        assert_eq!(PvRequest::from_value(&v), r);
    }

    #[test]
    fn empty_forms_select_everything() {
        for text in ["", "field()", "  ", "field(,)"] {
            let r = PvRequest::parse(text).unwrap();
            assert!(r.fields().is_empty(), "{text}");
            assert_eq!(r.to_string(), "field()");
            let v = r.to_value();
            assert_eq!(names(&v), vec!["field"]);
            assert!(matches!(v.get("field"), Some(Value::Struct(s)) if s.fields().is_empty()));
        }
        let empty = StructValue::new(Arc::new(StructDesc::new("", Vec::new())));
        assert_eq!(PvRequest::from_value(&empty), PvRequest::new());
    }

    #[test]
    fn bare_list_is_a_field_list() {
        let r = PvRequest::parse("value,alarm").unwrap();
        assert_eq!(r, PvRequest::parse("field(value,alarm)").unwrap());
        assert_eq!(r.fields(), vec!["value", "alarm"]);
    }

    #[test]
    fn repeated_parts_merge() {
        let r = PvRequest::parse("field(a,b,a.b)field(x)record[k=1]record[k=2,p=q]").unwrap();
        assert_eq!(r.fields(), vec!["a.b", "b", "x"]);
        assert_eq!(r.record_option("k"), Some("2"));
        assert_eq!(r.record_option("p"), Some("q"));
    }

    #[test]
    fn field_options_and_filters() {
        let r = PvRequest::parse("field(value[pydistributor=group:1;set:2],alarm)").unwrap();
        assert_eq!(
            r.field_option("value", "pydistributor"),
            Some("group:1;set:2")
        );
        let v = r.to_value();
        assert_eq!(
            v.get("field.value._options.pydistributor"),
            Some(&Value::String("group:1;set:2".into()))
        );
        assert_eq!(PvRequest::from_value(&v), r);
        assert_eq!(r.fields(), vec!["value", "alarm"]);

        let f = PvRequest::parse("record[queueSize=10]field(_[pydistributor=updates:1;mode:x])")
            .unwrap();
        assert!(f.fields().is_empty());
        assert_eq!(f.queue_size(), Some(10));
        assert_eq!(
            f.field_option("_", "pydistributor"),
            Some("updates:1;mode:x")
        );
        let g = PvRequest::parse("field(value)_[pydistributor=group:1;set:2]").unwrap();
        assert_eq!(g.fields(), vec!["value"]);
        assert_eq!(g.field_option("_", "pydistributor"), Some("group:1;set:2"));
        assert_eq!(PvRequest::parse(&g.to_string()).unwrap(), g);
    }

    #[test]
    fn braces_and_options_on_inner_nodes() {
        let r = PvRequest::parse("field(alarm[x=1]{severity,status},value)").unwrap();
        assert_eq!(r.fields(), vec!["alarm.severity", "alarm.status", "value"]);
        assert_eq!(r.field_option("alarm", "x"), Some("1"));
        let printed = r.to_string();
        assert_eq!(printed, "field(alarm[x=1].severity,alarm.status,value)");
        assert_eq!(PvRequest::parse(&printed).unwrap(), r);
        assert_eq!(r.all_field_options().len(), 1);
    }

    #[test]
    fn builder_matches_parser() {
        let b = PvRequest::new()
            .with_field("a")
            .with_field("b.c")
            .with_field_option("a", "k", "v")
            .with_record_option("queueSize", 4);
        assert_eq!(
            b,
            PvRequest::parse("field(a[k=v],b.c)record[queueSize=4]").unwrap()
        );
    }

    #[test]
    fn typed_options_read_as_text() {
        let desc = Arc::new(
            StructDesc::builder("")
                .structure("field", StructDesc::builder("").build())
                .structure(
                    "record",
                    StructDesc::builder("")
                        .structure(
                            "_options",
                            StructDesc::builder("")
                                .scalar("queueSize", ScalarType::I32)
                                .scalar("pipeline", ScalarType::Bool)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        );
        let mut v = StructValue::new(desc);
        v.set("record._options.queueSize", 8).unwrap();
        v.set("record._options.pipeline", true).unwrap();
        let r = PvRequest::from_value(&v);
        assert_eq!(r.queue_size(), Some(8));
        assert!(r.pipeline());
    }

    #[test]
    fn errors_have_positions() {
        for (text, pos) in [
            ("field(", 6),
            ("field(value", 11),
            ("field(value,alarm", 17),
            ("field[]", 5),
            ("record()", 6),
            ("field(!@#)", 6),
            ("record[", 7),
            ("record[key", 10),
            ("record[key=", 11),
            ("record[key=]", 11),
            ("record[,]", 7),
            ("field(a..b)", 8),
            ("field(a)x)", 9),
            ("é", 0),
        ] {
            let e = PvRequest::parse(text).unwrap_err();
            assert_eq!(e.pos, pos, "{text}: {e}");
        }
        assert!(PvRequest::parse("record[foo=bar,]").is_ok());
        assert!(PvRequest::parse("field(foo,)").is_ok());
    }
}
