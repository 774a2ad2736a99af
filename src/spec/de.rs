//! A serde `Deserializer` over the positioned YAML tree.
//!
//! Why our own: it gives every value a position ([`Spanned`]), and it reports
//! *every* unknown key (with a did-you-mean) instead of stopping at the first,
//! by collecting them as diagnostics and skipping the key. Shape errors (a list
//! where a mapping belongs) still stop deserialization: serde cannot go on.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::yaml::{Node, NodeKind, is_null};
use crate::diag::{Diagnostic, SourceFile, Span, did_you_mean};

/// A value with the position it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

const SPANNED: &str = "$lvslab::Spanned";
const SPANNED_FIELDS: &[&str] = &["$line", "$col", "$len", "$value"];

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positioned value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut span = Span::default();
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "$line" => span.line = map.next_value()?,
                        "$col" => span.col = map.next_value()?,
                        "$len" => span.len = map.next_value()?,
                        _ => value = Some(map.next_value()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::custom("positioned value without a value"))?;
                Ok(Spanned { value, span })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}

/// A deserialization error; it takes the position of the innermost node that failed.
#[derive(Debug)]
pub struct DeError {
    pub message: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
}

impl DeError {
    fn or_span(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    pub fn into_diagnostic(self, file: &Arc<SourceFile>) -> Diagnostic {
        let mut d = Diagnostic::error(self.message);
        if let Some(span) = self.span {
            d = d.at(file, span);
        }
        if let Some(h) = self.hint {
            d = d.hint(h);
        }
        d
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            span: None,
            hint: None,
        }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            message: format!("missing key `{field}`"),
            span: None,
            hint: Some(format!("add `{field}:` here (see the topology format in README.md)")),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = match did_you_mean(variant, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("one of: {}", expected.join(", ")),
        };
        DeError {
            message: format!("unknown value `{variant}`"),
            span: None,
            hint: Some(hint),
        }
    }
}

/// Collects the non-fatal findings (unknown and duplicate keys) while deserializing.
pub struct Ctx {
    pub file: Arc<SourceFile>,
    pub diags: RefCell<Vec<Diagnostic>>,
}

pub struct De<'a> {
    pub node: &'a Node,
    pub ctx: &'a Ctx,
}

impl<'a> De<'a> {
    fn scalar(&self) -> Option<(&'a str, bool)> {
        match &self.node.kind {
            NodeKind::Scalar { value, plain } => Some((value.as_str(), *plain)),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.scalar(), Some((v, true)) if is_null(v))
    }

    fn unexpected(&self, exp: &str) -> DeError {
        DeError {
            message: format!("expected {exp}, found {}", self.node.describe()),
            span: Some(self.node.span),
            hint: None,
        }
    }

    fn int(&self) -> Result<i128, DeError> {
        match self.scalar() {
            Some((v, _)) => v.trim().parse::<i128>().map_err(|_| DeError {
                message: format!("expected an integer, found `{v}`"),
                span: Some(self.node.span),
                hint: None,
            }),
            None => Err(self.unexpected("an integer")),
        }
    }
}

macro_rules! de_int {
    ($($method:ident $visit:ident $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let n = self.int()?;
            let v = <$ty>::try_from(n).map_err(|_| DeError {
                message: format!("{n} is out of range (must fit {})", stringify!($ty)),
                span: Some(self.node.span),
                hint: None,
            })?;
            visitor.$visit::<DeError>(v).map_err(|e: DeError| e.or_span(self.node.span))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let r = match &self.node.kind {
            NodeKind::Scalar { value, plain: true } => {
                if is_null(value) {
                    visitor.visit_unit()
                } else if value == "true" || value == "false" {
                    visitor.visit_bool(value == "true")
                } else if let Ok(i) = value.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(u) = value.parse::<u64>() {
                    visitor.visit_u64(u)
                } else if let (true, Ok(f)) = (value.contains(['.', 'e']), value.parse::<f64>()) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(value)
                }
            }
            NodeKind::Scalar { value, .. } => visitor.visit_str(value),
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                ctx: self.ctx,
            }),
            NodeKind::Map(pairs) => visitor.visit_map(MapAccess {
                pairs: pairs.iter(),
                value: None,
                ctx: self.ctx,
            }),
        };
        r.map_err(|e| e.or_span(span))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(("true", _)) => visitor.visit_bool(true),
            Some(("false", _)) => visitor.visit_bool(false),
            _ => Err(self.unexpected("true or false")),
        }
    }

    de_int!(deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16, deserialize_i32 visit_i32 i32,
            deserialize_i64 visit_i64 i64, deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
            deserialize_u32 visit_u32 u32, deserialize_u64 visit_u64 u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(|(v, _)| v.trim().parse::<f64>()) {
            Some(Ok(f)) => visitor.visit_f64(f).map_err(|e: DeError| e.or_span(self.node.span)),
            _ => Err(self.unexpected("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some((v, _)) => visitor.visit_str(v).map_err(|e: DeError| e.or_span(self.node.span)),
            None => Err(self.unexpected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_unit()
        } else {
            Err(self.unexpected("nothing"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match &self.node.kind {
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
                ctx: self.ctx,
            }),
            _ if self.is_null() => visitor.visit_seq(SeqAccess {
                items: [].iter(),
                ctx: self.ctx,
            }),
            _ => Err(self.unexpected("a list")),
        }
        .map_err(|e| e.or_span(span))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match &self.node.kind {
            NodeKind::Map(pairs) => {
                check_duplicates(pairs, self.ctx);
                visitor.visit_map(MapAccess {
                    pairs: pairs.iter(),
                    value: None,
                    ctx: self.ctx,
                })
            }
            _ if self.is_null() => visitor.visit_map(MapAccess {
                pairs: [].iter(),
                value: None,
                ctx: self.ctx,
            }),
            _ => Err(self.unexpected("a mapping")),
        }
        .map_err(|e| e.or_span(span))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        if name == SPANNED {
            return visitor.visit_map(SpannedAccess {
                node: self.node,
                ctx: self.ctx,
                field: 0,
            });
        }
        let pairs = match &self.node.kind {
            NodeKind::Map(pairs) => pairs.as_slice(),
            _ if self.is_null() => &[],
            _ => return Err(self.unexpected(&format!("a mapping ({name})"))),
        };
        check_duplicates(pairs, self.ctx);
        let mut known = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let key = match &pair.0.kind {
                NodeKind::Scalar { value, .. } => value.as_str(),
                _ => "",
            };
            if fields.contains(&key) {
                // A duplicate was reported by check_duplicates; serde sees the first only.
                if !known
                    .iter()
                    .any(|(k, _): &&(Node, Node)| matches!(&k.kind, NodeKind::Scalar { value, .. } if value == key))
                {
                    known.push(pair);
                }
            } else {
                let hint = match did_you_mean(key, fields.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("valid keys here: {}", fields.join(", ")),
                };
                self.ctx.diags.borrow_mut().push(
                    Diagnostic::error(format!("unknown key `{key}` in {name}"))
                        .at(&self.ctx.file, pair.0.span)
                        .hint(hint),
                );
            }
        }
        let r = visitor.visit_map(MapAccess {
            pairs: known.into_iter(),
            value: None,
            ctx: self.ctx,
        });
        r.map_err(|e| {
            // serde reports a missing field without a position: point at the mapping.
            e.or_span(span)
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match &self.node.kind {
            NodeKind::Scalar { value, .. } => {
                // An unknown name is a diagnostic, not the end of validation:
                // it is reported, and the closest name stands in for it so the
                // rest of the file is still checked (and reported) at once.
                let known = variants.contains(&value.as_str()) || enum_aliases(name).contains(&value.as_str());
                let stand_in = match (known, variants.first()) {
                    (false, Some(first)) => {
                        let e = <DeError as de::Error>::unknown_variant(value, variants).or_span(span);
                        self.ctx.diags.borrow_mut().push(e.into_diagnostic(&self.ctx.file));
                        did_you_mean(value, variants.iter().copied()).unwrap_or(first)
                    }
                    _ => value.as_str(),
                };
                let d: de::value::StrDeserializer<DeError> = stand_in.into_deserializer();
                visitor.visit_enum(d)
            }
            NodeKind::Map(pairs) if pairs.len() == 1 => visitor.visit_enum(EnumAccess {
                key: &pairs[0].0,
                value: &pairs[0].1,
                ctx: self.ctx,
            }),
            _ => Err(self.unexpected("a name or a mapping with a single key")),
        }
        .map_err(|e| e.or_span(span))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! { i128 u128 }
}

/// The other spellings `#[serde(alias)]` accepts for the topology's enums
/// (serde's variant list names only the primary ones). Pinned by the test
/// `enum_aliases_are_accepted` in this module.
fn enum_aliases(name: &str) -> &'static [&'static str] {
    match name {
        "OsFamily" => &["ubuntu", "centos", "rocky", "almalinux", "fedora"],
        "CheckKind" => &[
            "HTTP_GET",
            "http_get",
            "TCP_CHECK",
            "tcp_check",
            "MISC_CHECK",
            "misc_check",
        ],
        "VrrpState" => &["master", "backup"],
        _ => &[],
    }
}

fn check_duplicates(pairs: &[(Node, Node)], ctx: &Ctx) {
    // A set of the keys seen: linear in the mapping's size.
    let mut seen = std::collections::HashSet::new();
    for (k, _) in pairs {
        if let NodeKind::Scalar { value, .. } = &k.kind
            && !seen.insert(value.as_str())
        {
            ctx.diags.borrow_mut().push(
                Diagnostic::error(format!("duplicate key `{value}`"))
                    .at(&ctx.file, k.span)
                    .hint("each key may appear once in a mapping; merge the two entries"),
            );
        }
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
    ctx: &'a Ctx,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(De { node, ctx: self.ctx }).map(Some),
            None => Ok(None),
        }
    }
}

/// Map entries for serde; `I` yields the (key, value) pairs to hand out.
struct MapAccess<'a, I: Iterator<Item = &'a (Node, Node)>> {
    pairs: I,
    value: Option<&'a Node>,
    ctx: &'a Ctx,
}

impl<'de, 'a, I: Iterator<Item = &'a (Node, Node)>> de::MapAccess<'de> for MapAccess<'a, I> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.pairs.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(De { node: k, ctx: self.ctx }).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(node) => seed.deserialize(De { node, ctx: self.ctx }),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
}

struct SpannedAccess<'a> {
    node: &'a Node,
    ctx: &'a Ctx,
    field: usize,
}

impl<'de> de::MapAccess<'de> for SpannedAccess<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match SPANNED_FIELDS.get(self.field) {
            Some(f) => seed.deserialize(f.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        self.field += 1;
        match self.field {
            1 => seed.deserialize(span.line.into_deserializer()),
            2 => seed.deserialize(span.col.into_deserializer()),
            3 => seed.deserialize(span.len.into_deserializer()),
            _ => seed.deserialize(De {
                node: self.node,
                ctx: self.ctx,
            }),
        }
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
    ctx: &'a Ctx,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = DeError;
    type Variant = De<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, De<'a>), DeError> {
        let v = seed.deserialize(De {
            node: self.key,
            ctx: self.ctx,
        })?;
        Ok((
            v,
            De {
                node: self.value,
                ctx: self.ctx,
            },
        ))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserializer::deserialize_unit(self, de::IgnoredAny).map(|_| ())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "variant", fields, visitor)
    }
}

/// Deserialize a positioned tree into `T`, returning the value (if its shape was
/// right) and every diagnostic found along the way.
pub fn from_node<T: for<'de> Deserialize<'de>>(node: &Node, file: &Arc<SourceFile>) -> (Option<T>, Vec<Diagnostic>) {
    let ctx = Ctx {
        file: Arc::clone(file),
        diags: RefCell::new(Vec::new()),
    };
    let result = T::deserialize(De { node, ctx: &ctx });
    let mut diags = ctx.diags.into_inner();
    match result {
        Ok(v) => (Some(v), diags),
        Err(e) => {
            diags.push(e.into_diagnostic(file));
            (None, diags)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml;

    #[derive(Debug, Deserialize)]
    #[serde(rename = "thing")]
    struct Thing {
        name: Spanned<String>,
        #[serde(default)]
        items: Vec<Spanned<i64>>,
    }

    fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> (Option<T>, Vec<Diagnostic>) {
        let file = Arc::new(SourceFile::new("t.yaml", text));
        let node = yaml::parse(&file).expect("yaml");
        from_node(&node, &file)
    }

    #[test]
    fn spans_point_at_values() {
        let (t, d) = parse::<Thing>("name: web1\nitems: [1, 22]\n");
        let t = t.unwrap();
        assert!(d.is_empty());
        assert_eq!(
            t.name.span,
            Span {
                line: 1,
                col: 6,
                len: 4
            }
        );
        assert_eq!(
            t.items[1].span,
            Span {
                line: 2,
                col: 11,
                len: 2
            }
        );
        assert_eq!(*t.items[1], 22);
    }

    #[test]
    fn every_unknown_key_is_reported_and_skipped() {
        let (t, d) = parse::<Thing>("nmae: x\nname: ok\nitemz: 1\nfoo: 2\n");
        assert_eq!(t.unwrap().name.value, "ok");
        let msgs: Vec<String> = d.iter().map(|d| d.message.clone()).collect();
        assert_eq!(
            msgs,
            [
                "unknown key `nmae` in thing",
                "unknown key `itemz` in thing",
                "unknown key `foo` in thing"
            ]
        );
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `name`?"));
        assert_eq!(d[2].hint.as_deref(), Some("valid keys here: name, items"));
    }

    #[test]
    fn aliases_and_quoted_scalars() {
        let (t, _) = parse::<Vec<Thing>>("- name: &n 'web 1'\n- name: *n\n");
        let t = t.unwrap();
        assert_eq!(t[1].name.value, "web 1");
        assert_eq!(t[1].name.span.line, 2, "an alias is positioned where it is used");
    }

    #[test]
    fn shape_errors_stop_with_a_position() {
        let (t, d) = parse::<Thing>("name: [a, b]\n");
        assert!(t.is_none());
        assert_eq!(d[0].message, "expected a string, found a list");
        let (t, d) = parse::<Thing>("name: x\nitems: [1, two]\n");
        assert!(t.is_none());
        assert_eq!(d[0].message, "expected an integer, found `two`");
        assert_eq!(d[0].location.as_ref().unwrap().1.line, 2);
    }

    #[test]
    fn enum_aliases_are_accepted() {
        use crate::spec::{CheckKind, OsFamily, VrrpState};
        for a in enum_aliases("OsFamily") {
            let (v, d) = parse::<OsFamily>(a);
            assert!(v.is_some() && d.is_empty(), "{a}: {d:?}");
        }
        for a in enum_aliases("CheckKind") {
            let (v, d) = parse::<CheckKind>(a);
            assert!(v.is_some() && d.is_empty(), "{a}: {d:?}");
        }
        for a in enum_aliases("VrrpState") {
            let (v, d) = parse::<VrrpState>(a);
            assert!(v.is_some() && d.is_empty(), "{a}: {d:?}");
        }
    }

    #[test]
    fn an_unknown_name_is_reported_and_the_rest_still_read() {
        use crate::spec::Scheduler;
        #[derive(Debug, Deserialize)]
        #[serde(rename = "svc")]
        struct Svc {
            scheduler: Spanned<Scheduler>,
            other: Spanned<Scheduler>,
            #[serde(default)]
            typo: Option<i64>,
        }
        let (t, d) = parse::<Svc>("scheduler: wrrr\nother: zzz\ntypoo: 1\n");
        let t = t.expect("read to the end");
        assert_eq!(t.typo, None);
        assert_eq!(t.scheduler.value, Scheduler::Wrr, "the closest name stands in");
        assert_eq!(t.other.value, Scheduler::Rr, "else the first");
        let msgs: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "unknown key `typoo` in svc",
                "unknown value `wrrr`",
                "unknown value `zzz`"
            ]
        );
    }
}
