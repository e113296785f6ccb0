//! OTLP/HTTP protobuf, written straight from span records.
//!
//! Going through the OpenTelemetry SDK cost about 2 us of flusher CPU per span
//! (each record became an SDK `SpanData`, then the exporter's protobuf structs,
//! with a string per attribute key and a regrouping by resource and scope, then
//! prost encoded them). Every record of a batch shares one resource and one
//! scope, and has a handful of attributes, so the request is written here in
//! one pass, each span once and in place (its length patched in after it). The
//! layout follows
//! `opentelemetry/proto/collector/trace/v1/trace_service.proto`; the tests
//! decode it with the official `opentelemetry-proto` types.

use std::sync::Arc;

use abi_runtime::trace::{AttrValue as Value, Attributes as Attrs};
use rustc_hash::FxHashMap;

use crate::layer::{Kind, SpanRecord};

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags`: the parent's remoteness is known (always, here) / the parent is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;
/// W3C trace flags: sampled (unsampled requests make no records).
const SAMPLED: u32 = 0x01;
/// `Status.code` ERROR.
const STATUS_ERROR: u64 = 2;

/// Encodes export requests; keeps the resource and scope encoded once.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// `ResourceSpans.resource` field, tag included.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` field, tag included.
    scope: Vec<u8>,
    /// The request's head (both enclosing headers, resource and scope) of the last batch.
    head: Vec<u8>,
    /// Bytes per span of the last batch, rounded up: a new body is allocated at its
    /// likely size at once instead of growing (and being copied) several times.
    span_bytes: usize,
    /// The fixed attribute sets written before, encoded.
    attr_blocks: AttrBlocks,
}

/// Bytes a field's tag and length take at most (a one-byte tag, a ten-byte varint).
const MAX_FIELD_HEAD: usize = 11;

/// The most bytes per span a body is first allocated for.
const MAX_SPAN_ESTIMATE: usize = 4096;

impl Encoder {
    /// An encoder for spans of `resource` (attribute pairs, e.g. `service.name`)
    /// recorded by instrumentation scope `scope_name`.
    pub(crate) fn new(
        resource: &[(String, String)],
        scope_name: &str,
        scope_version: &str,
    ) -> Self {
        let mut attrs = Vec::new();
        for (k, v) in resource {
            key_value(&mut attrs, 1, k, &Value::Str(v.clone()));
        }
        let mut res = Vec::new();
        bytes(&mut res, 1, &attrs);
        let mut scope_body = Vec::new();
        string(&mut scope_body, 1, scope_name);
        string(&mut scope_body, 2, scope_version);
        let mut scope = Vec::new();
        bytes(&mut scope, 1, &scope_body);
        Self {
            resource: res,
            scope,
            head: Vec::new(),
            span_bytes: 256,
            attr_blocks: AttrBlocks::default(),
        }
    }

    /// An `ExportTraceServiceRequest` holding `records`, written into `out` (cleared
    /// first); the request is `out[start..]` for the returned `start`.
    ///
    /// Each span is written once, in place: the enclosing messages' lengths depend on
    /// every span's, so the spans go first, after room for the largest head, and the
    /// head is then written right before them.
    pub(crate) fn encode(&mut self, records: &[SpanRecord], out: &mut Vec<u8>) -> usize {
        let room = 2 * MAX_FIELD_HEAD + self.resource.len() + self.scope.len();
        out.clear();
        // A little over the last batch's span size: one allocation in the steady state.
        out.reserve(room + (records.len() + 1) * (self.span_bytes + self.span_bytes / 8));
        out.resize(room, 0);
        for r in records {
            span_field(out, r, &mut self.attr_blocks);
        }
        let spans_len = out.len() - room;
        if let Some(per_span) = spans_len.checked_div(records.len()) {
            // Capped: a batch of huge spans does not make every later body as large.
            self.span_bytes = (per_span + 1).min(MAX_SPAN_ESTIMATE);
        }
        let scope_spans_len = self.scope.len() + spans_len;
        let resource_spans_len = self.resource.len() + field_len(scope_spans_len) + scope_spans_len;
        self.head.clear();
        tag(&mut self.head, 1, LEN); // ExportTraceServiceRequest.resource_spans
        varint(&mut self.head, resource_spans_len as u64);
        self.head.extend_from_slice(&self.resource);
        tag(&mut self.head, 2, LEN); // ResourceSpans.scope_spans
        varint(&mut self.head, scope_spans_len as u64);
        self.head.extend_from_slice(&self.scope);
        let start = room - self.head.len();
        out[start..room].copy_from_slice(&self.head);
        start
    }
}

/// A `ScopeSpans.spans` field (tag, length, `Span` body), the body written in place.
fn span_field(out: &mut Vec<u8>, r: &SpanRecord, blocks: &mut AttrBlocks) {
    // Two bytes for the length: a span body is usually 128 bytes to 16 KiB.
    out.extend_from_slice(&[tag1(2, LEN), 0, 0]);
    let body = out.len();
    span(out, r, blocks);
    let len = out.len() - body;
    if (0x80..0x4000).contains(&len) {
        out[body - 2] = (len as u8) | 0x80;
        out[body - 1] = (len >> 7) as u8;
    } else if len < 0x80 {
        // One length byte: the body moves back by one.
        out[body - 2] = len as u8;
        out.copy_within(body.., body - 1);
        out.pop();
    } else {
        let mut head = Vec::with_capacity(MAX_FIELD_HEAD);
        varint(&mut head, len as u64);
        out.splice(body - 2..body, head);
    }
}

/// One `Span` message body.
///
/// Written in a few fixed-size pieces (tags, ids and times gathered on the stack)
/// rather than field by field: at a few hundred bytes a span, the per-write length
/// checks and varint loops were most of the encoding's cost.
fn span(out: &mut Vec<u8>, r: &SpanRecord, blocks: &mut AttrBlocks) {
    // trace_id (1), span_id (2), parent_span_id (4, absent for a root): bytes fields.
    let mut ids = [0u8; 38];
    ids[0] = tag1(1, LEN);
    ids[1] = 16;
    ids[2..18].copy_from_slice(&r.trace_id.to_be_bytes());
    ids[18] = tag1(2, LEN);
    ids[19] = 8;
    ids[20..28].copy_from_slice(&r.span_id.to_be_bytes());
    let mut n = 28;
    if r.parent_span_id != 0 {
        ids[28] = tag1(4, LEN);
        ids[29] = 8;
        ids[30..38].copy_from_slice(&r.parent_span_id.to_be_bytes());
        n = 38;
    }
    out.extend_from_slice(&ids[..n]);
    string(out, 5, r.name);
    // kind (6), start_time_unix_nano (7), end_time_unix_nano (8).
    let mut times = [0u8; 20];
    times[0] = tag1(6, VARINT);
    times[1] = match r.kind {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    };
    times[2] = tag1(7, FIXED64);
    times[3..11].copy_from_slice(&r.start.to_le_bytes());
    times[11] = tag1(8, FIXED64);
    times[12..20].copy_from_slice(&r.end.to_le_bytes());
    out.extend_from_slice(&times);
    blocks.write(out, &r.attributes);
    if r.error {
        // Status (15) { code (3) = ERROR }
        out.extend_from_slice(&[tag1(15, LEN), 2, tag1(3, VARINT), STATUS_ERROR as u8]);
    }
    let mut flags = SAMPLED | CONTEXT_HAS_IS_REMOTE;
    if r.parent_remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    // flags (16): a two-byte tag, then fixed32.
    let f = flags.to_le_bytes();
    let tag16 = (16 << 3) | FIXED32;
    out.extend_from_slice(&[
        (tag16 as u8) | 0x80,
        (tag16 >> 7) as u8,
        f[0],
        f[1],
        f[2],
        f[3],
    ]);
}

/// The `Span.attributes` fields of the fixed attribute sets ([`Attrs::Actor`] and
/// [`Attrs::Http`]), encoded once and copied afterwards: a node's spans repeat a few
/// such sets (one per actor and message type, one per route and status), and writing
/// their pairs anew was most of the encoder's work per span.
#[derive(Debug, Default)]
struct AttrBlocks {
    blocks: FxHashMap<AttrKey, Block>,
}

/// A fixed set by the addresses and lengths of its texts: a lookup hashes a few
/// words, not the texts. Message types, methods and routes are `'static`; a path's
/// text is held by its [`Block`], so no other text can take its address meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AttrKey {
    Actor {
        path: (usize, usize),
        message_type: (usize, usize),
    },
    Http {
        method: (usize, usize),
        route: (usize, usize),
        status: u16,
    },
}

#[derive(Debug)]
struct Block {
    bytes: Box<[u8]>,
    _path: Option<Arc<str>>,
}

/// Sets kept at most (a node has a few hundred); past it the cache starts over.
const MAX_ATTR_BLOCKS: usize = 4096;

fn text_key(s: &str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

impl AttrBlocks {
    /// Writes the attribute fields of `attrs` (field 9 of `Span`).
    fn write(&mut self, out: &mut Vec<u8>, attrs: &Attrs) {
        let (key, path) = match attrs {
            Attrs::Actor {
                path: Value::Shared(path),
                message_type,
            } => (
                AttrKey::Actor {
                    path: text_key(path),
                    message_type: text_key(message_type),
                },
                Some(path),
            ),
            Attrs::Http {
                method,
                route,
                status,
            } => (
                AttrKey::Http {
                    method: text_key(method),
                    route: text_key(route),
                    status: *status,
                },
                None,
            ),
            // Lists, and paths owned by their record: written pair by pair.
            _ => {
                attrs.for_each(|k, v| key_value(out, 9, k, v));
                return;
            }
        };
        if let Some(block) = self.blocks.get(&key) {
            out.extend_from_slice(&block.bytes);
            return;
        }
        if self.blocks.len() >= MAX_ATTR_BLOCKS {
            self.blocks.clear();
        }
        let start = out.len();
        attrs.for_each(|k, v| key_value(out, 9, k, v));
        self.blocks.insert(
            key,
            Block {
                bytes: out[start..].into(),
                _path: path.cloned(),
            },
        );
    }
}

/// The one-byte tag of field `field` (below 16) with wire type `wire`.
const fn tag1(field: u32, wire: u32) -> u8 {
    ((field << 3) | wire) as u8
}

/// A `KeyValue` field `field` (`key`, `AnyValue`).
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    // AnyValue: a oneof of one field; its body is small, so it is measured first.
    let (value_len, text) = match value {
        Value::Str(s) => (field_len(s.len()) + s.len(), Some(s.as_str())),
        Value::Static(s) => (field_len(s.len()) + s.len(), Some(*s)),
        Value::Shared(s) => (field_len(s.len()) + s.len(), Some(&**s)),
        Value::I64(i) => (1 + varint_len(*i as u64), None),
        Value::F64(_) => (1 + 8, None),
        Value::Bool(_) => (1 + 1, None),
    };
    let body_len = field_len(key.len()) + key.len() + field_len(value_len) + value_len;
    out.reserve(field_len(body_len) + body_len);
    if field < 16 && body_len < 0x80 {
        // Every length fits one byte (the common case: short keys and values).
        out.extend_from_slice(&[
            tag1(field, LEN),
            body_len as u8,
            tag1(1, LEN),
            key.len() as u8,
        ]);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&[tag1(2, LEN), value_len as u8]);
    } else {
        tag(out, field, LEN);
        varint(out, body_len as u64);
        string(out, 1, key);
        tag(out, 2, LEN);
        varint(out, value_len as u64);
    }
    match (value, text) {
        (_, Some(s)) => string(out, 1, s),
        (Value::Bool(b), _) => out.extend_from_slice(&[tag1(2, VARINT), u8::from(*b)]),
        (Value::I64(i), _) => {
            out.push(tag1(3, VARINT));
            // int64: two's complement, ten bytes when negative.
            varint(out, *i as u64);
        }
        (Value::F64(f), _) => {
            out.push(tag1(4, FIXED64));
            out.extend_from_slice(&f.to_le_bytes());
        }
        (Value::Str(_) | Value::Static(_) | Value::Shared(_), None) => {}
    }
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from((field << 3) | wire));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    if v < 0x80 {
        return 1;
    }
    // 7 bits per byte.
    (64 - v.leading_zeros() as usize).div_ceil(7)
}

/// Bytes a length-delimited field of `len` bytes of body takes before its body,
/// for fields numbered below 16 (one tag byte).
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64)
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    if field < 16 && b.len() < 0x80 {
        out.reserve(2 + b.len());
        out.extend_from_slice(&[tag1(field, LEN), b.len() as u8]);
    } else {
        tag(out, field, LEN);
        varint(out, b.len() as u64);
    }
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

#[cfg(test)]
mod tests {

    use abi_runtime::trace::Attributes;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use prost::Message as _;

    use super::*;

    fn record(i: u64, attributes: Attributes) -> SpanRecord {
        SpanRecord {
            trace_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10 + u128::from(i),
            span_id: 0x1000 + i,
            parent_span_id: if i == 0 { 0 } else { 0x1000 + i - 1 },
            parent_remote: i == 1,
            name: "gateway.request",
            kind: if i == 0 { Kind::Server } else { Kind::Internal },
            error: i == 2,
            start: 1_700_000_000_123_456_789 + i,
            end: 1_700_000_000_223_456_789 + i,
            attributes,
        }
    }

    fn decode(records: &[SpanRecord]) -> ExportTraceServiceRequest {
        let mut enc = Encoder::new(
            &[("service.name".into(), "test-svc".into())],
            "abi",
            "1.2.3",
        );
        let mut out = Vec::new();
        // Twice: the second batch must not carry anything of the first.
        enc.encode(records.get(..1).unwrap_or_default(), &mut out);
        let start = enc.encode(records, &mut out);
        ExportTraceServiceRequest::decode(&out[start..]).expect("valid OTLP protobuf")
    }

    fn value(v: &any_value::Value) -> String {
        match v {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(i) => format!("int {i}"),
            any_value::Value::DoubleValue(f) => format!("double {f}"),
            any_value::Value::BoolValue(b) => format!("bool {b}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn records_decode_as_the_spans_they_describe() {
        let records = vec![
            record(
                0,
                Attributes::Http {
                    method: "POST",
                    route: "/collections/{name}/points/search",
                    status: 200,
                },
            ),
            record(
                1,
                Attributes::Actor {
                    path: Value::Shared("n1/vector/api".into()),
                    message_type: "vector.search",
                },
            ),
            record(
                2,
                Attributes::List(vec![
                    ("neg", Value::I64(-5)),
                    ("big", Value::I64(i64::MAX)),
                    ("ratio", Value::F64(0.25)),
                    ("text", Value::Str("é".repeat(100))),
                ]),
            ),
        ];
        let req = decode(&records);
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().expect("resource");
        assert_eq!(res.attributes[0].key, "service.name");
        let service = res.attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref());
        assert_eq!(service.map(value).as_deref(), Some("test-svc"));
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("abi", "1.2.3")
        );
        assert_eq!(ss.spans.len(), 3);

        for (s, r) in ss.spans.iter().zip(&records) {
            assert_eq!(s.trace_id, r.trace_id.to_be_bytes());
            assert_eq!(s.span_id, r.span_id.to_be_bytes());
            let parent: &[u8] = if r.parent_span_id == 0 {
                &[]
            } else {
                &r.parent_span_id.to_be_bytes()
            };
            assert_eq!(s.parent_span_id, parent);
            assert_eq!(s.name, "gateway.request");
            assert_eq!(s.start_time_unix_nano, r.start);
            assert_eq!(s.end_time_unix_nano, r.end);
            let remote = if r.parent_remote { 0x200 } else { 0 };
            assert_eq!(s.flags, 0x101 | remote);
            let code = s.status.as_ref().map_or(0, |st| st.code);
            let want = if r.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            };
            assert_eq!(code, want as i32);
        }
        assert_eq!(ss.spans[0].kind, SpanKind::Server as i32);
        assert_eq!(ss.spans[1].kind, SpanKind::Internal as i32);

        let attrs = |i: usize| -> Vec<(String, String)> {
            ss.spans[i]
                .attributes
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    (kv.key.clone(), v.map(value).unwrap_or_default())
                })
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            attrs(0),
            pairs(&[
                ("http.request.method", "POST"),
                ("http.route", "/collections/{name}/points/search"),
                ("http.response.status_code", "int 200"),
            ])
        );
        assert_eq!(
            attrs(1),
            pairs(&[
                ("actor.path", "n1/vector/api"),
                ("message_type", "vector.search"),
                ("remote", "bool false"),
            ])
        );
        let long = "é".repeat(100);
        assert_eq!(
            attrs(2),
            pairs(&[
                ("neg", "int -5"),
                ("big", &format!("int {}", i64::MAX)),
                ("ratio", "double 0.25"),
                ("text", &long),
            ])
        );
    }

    #[test]
    fn lengths_either_side_of_one_varint_byte_decode() {
        // Attribute bodies of 120..140 bytes cross the one-byte length fast path.
        let records: Vec<SpanRecord> = (110..140)
            .map(|n| record(3, Attributes::List(vec![("k", Value::Str("x".repeat(n)))])))
            .collect();
        let req = decode(&records);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        for (n, s) in (110..140).zip(spans) {
            let v = s.attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref());
            assert_eq!(v.map(value), Some("x".repeat(n)), "{n}");
        }
    }

    #[test]
    fn span_bodies_of_every_length_class_decode() {
        // Bodies below 128 bytes (one length byte), in the two-byte range, and above
        // 16 KiB (three length bytes), mixed in one batch.
        let sizes = [0, 1, 60, 200, 16_300, 16_400, 70_000];
        let records: Vec<SpanRecord> = sizes
            .iter()
            .map(|&n| {
                let attrs = if n == 0 {
                    Attributes::List(Vec::new())
                } else {
                    Attributes::List(vec![("k", Value::Str("y".repeat(n)))])
                };
                let mut r = record(0, attrs);
                r.parent_span_id = 0;
                r
            })
            .collect();
        let req = decode(&records);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), sizes.len());
        for (&n, s) in sizes.iter().zip(spans) {
            assert_eq!(s.name, "gateway.request");
            assert_eq!(s.end_time_unix_nano, 1_700_000_000_223_456_789);
            let v = s
                .attributes
                .first()
                .and_then(|a| a.value.as_ref())
                .and_then(|v| v.value.as_ref())
                .map(value);
            assert_eq!(v, (n > 0).then(|| "y".repeat(n)), "{n}");
        }
        assert_eq!(
            req.resource_spans[0]
                .resource
                .as_ref()
                .map(|r| r.attributes.len()),
            Some(1),
            "the head is whole in front of the spans"
        );
    }

    #[test]
    fn an_empty_batch_is_a_valid_request() {
        let req = decode(&[]);
        assert!(
            req.resource_spans
                .iter()
                .all(|rs| rs.scope_spans.iter().all(|ss| ss.spans.is_empty()))
        );
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn fixed_attribute_sets_read_the_same_from_the_block_cache() {
        let mut enc = Encoder::new(&[], "abi", "1");
        let mut out = Vec::new();
        for round in 0..4u16 {
            // A new path text each round (the last one's may be freed): each must
            // come out as its own text, never as a cached neighbour's.
            let path: Arc<str> = format!("n1/vector/bench/shard-{round}").into();
            let records: Vec<SpanRecord> = (0..3)
                .flat_map(|i| {
                    [
                        record(
                            i,
                            Attributes::Actor {
                                path: Value::Shared(path.clone()),
                                message_type: "vector.shard.search",
                            },
                        ),
                        record(
                            i,
                            Attributes::Http {
                                method: "GET",
                                route: "/health",
                                status: 200 + round % 2 * 304,
                            },
                        ),
                        record(
                            i,
                            Attributes::Actor {
                                path: Value::Str(format!("owned/{round}")),
                                message_type: "vector.search",
                            },
                        ),
                    ]
                })
                .collect();
            drop(path);
            let start = enc.encode(&records, &mut out);
            let req = ExportTraceServiceRequest::decode(&out[start..]).expect("valid OTLP");
            let spans = &req.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len(), 9);
            for (i, s) in spans.iter().enumerate() {
                let got: Vec<String> = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                        format!("{}={}", kv.key, v.map(value).unwrap_or_default())
                    })
                    .collect();
                let want = match i % 3 {
                    0 => vec![
                        format!("actor.path=n1/vector/bench/shard-{round}"),
                        "message_type=vector.shard.search".into(),
                        "remote=bool false".into(),
                    ],
                    1 => vec![
                        "http.request.method=GET".into(),
                        "http.route=/health".into(),
                        format!("http.response.status_code=int {}", 200 + round % 2 * 304),
                    ],
                    _ => vec![
                        format!("actor.path=owned/{round}"),
                        "message_type=vector.search".into(),
                        "remote=bool false".into(),
                    ],
                };
                assert_eq!(got, want, "round {round} span {i}");
            }
        }
    }
}
