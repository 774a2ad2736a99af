//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde_yaml gives no positions for values, so the topology is first read into
//! this tree with yaml-rust2's event parser (which reports a mark for every
//! event), then deserialized into spec types by [`super::de`].

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostic, SECRET_KEYS, SecretValue, SourceFile, Span};

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    /// `plain` is true for unquoted scalars, which may be null, bool or numbers.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { value, plain: true } if is_null(value) => "nothing (null)",
            NodeKind::Scalar { .. } => "a value",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

pub fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

enum Frame {
    Seq(Span, Vec<Node>, usize, usize),
    Map(Span, Vec<Node>, usize, usize),
}

/// Deepest nesting of lists and mappings a topology may have (real ones have
/// five or six levels); deeper input is refused before it can exhaust the stack.
pub const MAX_DEPTH: usize = 64;
/// Most values a topology may have once aliases are expanded (a real one has a
/// few thousand): a few hundred bytes of nested aliases ("billion laughs") are
/// refused instead of growing without bound.
pub const MAX_NODES: usize = 200_000;
/// Most secret values a topology may hold (every message is checked against each).
pub const MAX_SECRETS: usize = 256;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes, with how many values each holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<(Node, usize)>,
    /// Values made so far, aliases expanded.
    nodes: usize,
}

fn span_of(mark: Marker, len: usize) -> Span {
    Span {
        line: mark.line() as u32,
        col: mark.col() as u32,
        len: len as u32,
    }
}

type Refusal = (String, Span, &'static str);

impl Builder {
    /// Put a finished node in its parent. `size` is how many values it holds
    /// (itself included); `new` how many of those are new to the count (1 for
    /// a scalar or a collection whose items were counted as they came, `size`
    /// for an alias, which copies its anchor).
    fn finish(&mut self, node: Node, size: usize, new: usize, anchor: usize) -> Result<(), Refusal> {
        self.nodes = self.nodes.saturating_add(new);
        if self.nodes > MAX_NODES {
            return Err((
                format!("the topology has more than {MAX_NODES} values (aliases counted as expanded)"),
                node.span,
                "a topology this large is not a lab; check for aliases (`*name`) that refer to other aliases",
            ));
        }
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            Some(Frame::Seq(_, items, _, n)) | Some(Frame::Map(_, items, _, n)) => {
                items.push(node);
                *n += size;
            }
            None => self.root = Some((node, size)),
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, span: Span) -> Result<(), Refusal> {
        if self.stack.len() >= MAX_DEPTH {
            return Err((
                format!("lists and mappings are nested more than {MAX_DEPTH} deep"),
                span,
                "a topology needs a few levels of nesting; check the indentation",
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), Refusal> {
        let tag_refusal = |span| {
            (
                "YAML tags (`!!binary`, `!name`, …) are not supported in a topology".to_string(),
                span,
                "write the value without a tag; quote it to make it text",
            )
        };
        match ev {
            Event::Scalar(value, style, anchor, tag) => {
                let quoted = matches!(style, TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted);
                let len = value.lines().next().map_or(0, |l| l.chars().count()) + if quoted { 2 } else { 0 };
                let span = span_of(mark, len);
                if tag.is_some() {
                    return Err(tag_refusal(span));
                }
                if value.contains('\0') {
                    return Err((
                        "the value contains a NUL character".into(),
                        span,
                        "no file or command lvslab writes can carry a NUL; remove the `\\0`",
                    ));
                }
                let node = Node {
                    span,
                    kind: NodeKind::Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                    },
                };
                self.finish(node, 1, 1, anchor)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) if tag.is_some() => {
                let _ = anchor;
                Err(tag_refusal(span_of(mark, 1)))
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Frame::Seq(span_of(mark, 1), Vec::new(), anchor, 1), span_of(mark, 1))
            }
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map(span_of(mark, 1), Vec::new(), anchor, 1), span_of(mark, 1))
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq(span, items, anchor, size)) => {
                    let span = items.first().map_or(span, |n| Span { len: 1, ..n.span });
                    let node = Node {
                        kind: NodeKind::Seq(items),
                        span,
                    };
                    self.finish(node, size, 1, anchor)
                }
                _ => Ok(()),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map(span, items, anchor, size)) => {
                    // A block mapping's start mark points after its first key; the first
                    // key is where a reader looks.
                    let span = items.first().map_or(span, |n| n.span);
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    let node = Node {
                        kind: NodeKind::Map(pairs),
                        span,
                    };
                    self.finish(node, size, 1, anchor)
                }
                _ => Ok(()),
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some((mut node, size)) => {
                    node.span = span_of(mark, 1);
                    self.finish(node, size, size, 0)
                }
                None => Err((
                    "alias refers to an unknown anchor".into(),
                    span_of(mark, 1),
                    "define the anchor (`&name`) before the alias (`*name`)",
                )),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {
                Ok(())
            }
        }
    }
}

/// Every scalar under a secret key (whatever its shape), so messages never show it.
fn secrets_in(node: &Node, secret: bool, out: &mut Vec<SecretValue>) {
    match &node.kind {
        NodeKind::Scalar { value, .. } if secret && !value.is_empty() => out.push(SecretValue {
            span: node.span,
            value: value.clone(),
        }),
        NodeKind::Scalar { .. } => {}
        NodeKind::Seq(items) => items.iter().for_each(|n| secrets_in(n, secret, out)),
        NodeKind::Map(pairs) => {
            for (k, v) in pairs {
                let key_is_secret =
                    matches!(&k.kind, NodeKind::Scalar { value, .. } if SECRET_KEYS.contains(&value.as_str()));
                secrets_in(k, secret, out);
                secrets_in(v, secret || key_is_secret, out);
            }
        }
    }
}

/// Parse one YAML document. An empty document is an empty mapping.
///
/// The parser is driven event by event (never recursively), with limits on
/// nesting and on the values aliases expand to, so any input is read in
/// bounded stack, time and memory.
pub fn parse(file: &Arc<SourceFile>) -> Result<Node, Diagnostic> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(&file.text);
    let mut documents = 0;
    loop {
        let (ev, mark) = match parser.next_token() {
            Ok(t) => t,
            Err(e) => {
                let m = e.marker();
                return Err(Diagnostic::error(format!("YAML syntax error: {}", e.info()))
                    .at(file, span_of(*m, 1))
                    .hint("check indentation and that every `key: value` pair is on its own line"));
            }
        };
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error("a second YAML document (after `---`)")
                        .at(file, span_of(mark, 3))
                        .hint("a topology is one document; put each lab in a file of its own"));
                }
            }
            ev => {
                if let Err((msg, span, hint)) = builder.on_event(ev, mark) {
                    return Err(Diagnostic::error(msg).at(file, span).hint(hint));
                }
            }
        }
    }
    let root = builder.root.map(|(n, _)| n);
    if let Some(root) = &root {
        let mut found = Vec::new();
        secrets_in(root, false, &mut found);
        if found.len() > MAX_SECRETS {
            let span = found[MAX_SECRETS].span;
            let _ = file.secrets.set(found);
            return Err(Diagnostic::error(format!("more than {MAX_SECRETS} secret values"))
                .at(file, span)
                .hint("a lab has a few VRRP instances, each with one auth_pass"));
        }
        let _ = file.secrets.set(found);
    }
    Ok(root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        span: Span {
            line: 1,
            col: 0,
            len: 1,
        },
    }))
}
