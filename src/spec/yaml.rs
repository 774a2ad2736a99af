//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde_yaml gives no positions for values, so the topology is first read into
//! this tree with yaml-rust2's event parser (which reports a mark for every
//! event), then deserialized into spec types by [`super::de`].

use std::collections::HashMap;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostic, SourceFile, Span};

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
    Seq(Span, Vec<Node>, usize),
    Map(Span, Vec<Node>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<(String, Span)>,
}

fn span_of(mark: Marker, len: usize) -> Span {
    Span {
        line: mark.line() as u32,
        col: mark.col() as u32,
        len: len as u32,
    }
}

impl Builder {
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq(_, items, _)) | Some(Frame::Map(_, items, _)) => items.push(node),
            None => self.root = Some(node),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = matches!(style, TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted);
                let len = value.lines().next().map_or(0, |l| l.chars().count()) + if quoted { 2 } else { 0 };
                let node = Node {
                    span: span_of(mark, len),
                    kind: NodeKind::Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                    },
                };
                self.finish(node, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(span_of(mark, 1), Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(span_of(mark, 1), Vec::new(), anchor)),
            Event::SequenceEnd => {
                if let Some(Frame::Seq(span, items, anchor)) = self.stack.pop() {
                    let span = items.first().map_or(span, |n| Span { len: 1, ..n.span });
                    self.finish(
                        Node {
                            kind: NodeKind::Seq(items),
                            span,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(span, items, anchor)) = self.stack.pop() {
                    // A block mapping's start mark points after its first key; the first
                    // key is where a reader looks.
                    let span = items.first().map_or(span, |n| n.span);
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    self.finish(
                        Node {
                            kind: NodeKind::Map(pairs),
                            span,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.span = span_of(mark, 1);
                    self.finish(node, 0);
                }
                None => {
                    if self.error.is_none() {
                        self.error = Some(("alias refers to an unknown anchor".into(), span_of(mark, 1)));
                    }
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// Parse one YAML document. An empty document is an empty mapping.
pub fn parse(file: &Arc<SourceFile>) -> Result<Node, Diagnostic> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(&file.text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(Diagnostic::error(format!("YAML syntax error: {}", e.info()))
            .at(file, span_of(*m, 1))
            .hint("check indentation and that every `key: value` pair is on its own line"));
    }
    if let Some((msg, span)) = builder.error {
        return Err(Diagnostic::error(msg).at(file, span));
    }
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        span: Span {
            line: 1,
            col: 0,
            len: 1,
        },
    }))
}
