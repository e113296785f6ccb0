//! The shape of a topology file, checked key by key before deserialisation so
//! that every unknown key and wrong type is reported, not only the first.
//!
//! Keep in step with [`crate::model`] (a unit test deserialises a file that
//! uses every key).

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use crate::{Diagnostic, Diagnostics};

/// What a value must be.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// A string.
    Str,
    /// A string holding `host:port`.
    Addr,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// A non-negative integer.
    UInt,
    /// A number.
    Float,
    /// true or false.
    Bool,
    /// An array of strings.
    StrList,
    /// A table with free keys and string values.
    StrMap,
    /// A table with these keys.
    Table(&'static [Field]),
    /// An array of tables with these keys.
    TableList(&'static [Field]),
}

/// One key of a table.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Key name.
    pub name: &'static str,
    /// Expected type.
    pub ty: Ty,
    /// Must be present.
    pub required: bool,
}

const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
    }
}

const PLACEMENT: Ty = Ty::Table(&[
    opt("all", Ty::Bool),
    opt("nodes", Ty::StrList),
    opt("labels", Ty::StrMap),
]);

const DISCOVERY: &[Field] = &[
    opt("kind", Ty::Enum(&["static", "etcd", "consul"])),
    opt("seeds", Ty::StrList),
    opt("endpoints", Ty::StrList),
    opt("address", Ty::Str),
    opt("token", Ty::Str),
    opt("prefix", Ty::Str),
    opt("ttl_secs", Ty::UInt),
];

const NODE: &[Field] = &[
    req("id", Ty::Str),
    opt("listen", Ty::Addr),
    opt("http", Ty::Addr),
    opt("advertise", Ty::Addr),
    opt("data_dir", Ty::Str),
    opt("models_dir", Ty::Str),
    opt("labels", Ty::StrMap),
];

/// The whole file.
pub const TOPOLOGY: &[Field] = &[
    opt(
        "cluster",
        Ty::Table(&[opt("name", Ty::Str), opt("discovery", Ty::Table(DISCOVERY))]),
    ),
    opt("node", Ty::Table(NODE)),
    opt("nodes", Ty::TableList(NODE)),
    opt(
        "tls",
        Ty::Table(&[
            opt("dir", Ty::Str),
            opt("ca", Ty::Str),
            opt("cert", Ty::Str),
            opt("key", Ty::Str),
        ]),
    ),
    opt(
        "plugins",
        Ty::Table(&[
            opt("dirs", Ty::StrList),
            opt("require", Ty::StrList),
            opt("pins", Ty::StrMap),
        ]),
    ),
    opt(
        "supervision",
        Ty::Table(&[
            opt(
                "strategy",
                Ty::Enum(&["one_for_one", "one_for_all", "rest_for_one"]),
            ),
            opt("max_restarts", Ty::UInt),
            opt("within_secs", Ty::UInt),
            opt("backoff_initial_ms", Ty::UInt),
            opt("backoff_max_ms", Ty::UInt),
            opt("backoff_jitter", Ty::Float),
            opt("reset_after_secs", Ty::UInt),
            opt("shutdown_timeout_ms", Ty::UInt),
        ]),
    ),
    opt(
        "gateway",
        Ty::Table(&[
            opt("placement", PLACEMENT),
            opt("workers", Ty::UInt),
            opt("request_timeout_ms", Ty::UInt),
            opt("max_body_bytes", Ty::UInt),
            opt("keys_file", Ty::Str),
            opt("open_metrics", Ty::Bool),
            opt("rate_limit_per_sec", Ty::Float),
            opt("rate_limit_burst", Ty::Float),
            opt("max_concurrency", Ty::UInt),
            opt("tls_cert", Ty::Str),
            opt("tls_key", Ty::Str),
            opt("allow_plain_http", Ty::Bool),
            opt("cors_origins", Ty::StrList),
            opt(
                "jwt",
                Ty::Table(&[
                    opt("hs256_secret_file", Ty::Str),
                    opt("rs256_public_key_file", Ty::Str),
                    opt("leeway_secs", Ty::UInt),
                    opt("issuer", Ty::Str),
                    opt("audience", Ty::Str),
                    opt("role_claim", Ty::Str),
                ]),
            ),
        ]),
    ),
    opt(
        "inference",
        Ty::TableList(&[
            req("name", Ty::Str),
            req("kind", Ty::Enum(&["embedding", "chat"])),
            req("model", Ty::Str),
            opt("replicas", Ty::UInt),
            opt("max_batch", Ty::UInt),
            opt("max_wait_ms", Ty::UInt),
            opt("queue_capacity", Ty::UInt),
            opt("device", Ty::Str),
            opt("placement", PLACEMENT),
        ]),
    ),
    opt(
        "collection",
        Ty::TableList(&[
            req("name", Ty::Str),
            req("dim", Ty::UInt),
            opt("distance", Ty::Enum(&["cosine", "dot", "euclid"])),
            opt("shards", Ty::UInt),
            opt("replication", Ty::UInt),
            opt("m", Ty::UInt),
            opt("ef_construct", Ty::UInt),
            opt("ef", Ty::UInt),
            opt("embed_with", Ty::Str),
            opt("fsync", Ty::Enum(&["always", "group", "none"])),
            opt("group_commit_ms", Ty::UInt),
            opt("placement", PLACEMENT),
        ]),
    ),
    opt(
        "gpu",
        Ty::Table(&[
            opt("placement", PLACEMENT),
            opt("health_interval_secs", Ty::UInt),
        ]),
    ),
    opt(
        "raft",
        Ty::Table(&[
            req("voters", Ty::StrList),
            opt("election_timeout_ms", Ty::UInt),
            opt("heartbeat_ms", Ty::UInt),
            opt("snapshot_every", Ty::UInt),
            opt("replace_dead_after_ms", Ty::UInt),
        ]),
    ),
    opt(
        "telemetry",
        Ty::Table(&[
            opt("otlp_endpoint", Ty::Str),
            opt("prometheus", Ty::Bool),
            opt("sampling_ratio", Ty::Float),
            opt("log_format", Ty::Enum(&["text", "json"])),
            opt("queue_size", Ty::UInt),
            opt("max_export_batch_size", Ty::UInt),
            opt("service_name", Ty::Str),
        ]),
    ),
    opt(
        "membership",
        Ty::Table(&[
            opt("heartbeat_ms", Ty::UInt),
            opt("suspect_ms", Ty::UInt),
            opt("dead_ms", Ty::UInt),
        ]),
    ),
];

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    diags: &'a mut Diagnostics,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic::at_span(
            self.file,
            self.text,
            Some(span),
            message,
            hint,
        ));
    }
}

/// Checks `doc` against [`TOPOLOGY`], pushing one diagnostic per problem.
pub fn validate(file: &str, text: &str, doc: &DeTable<'_>, diags: &mut Diagnostics) {
    let mut ctx = Ctx { file, text, diags };
    table(&mut ctx, "", doc, TOPOLOGY, 0..0);
}

/// Closest known key to `key`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn table(ctx: &mut Ctx<'_>, prefix: &str, t: &DeTable<'_>, fields: &[Field], span: Range<usize>) {
    for (k, v) in t.iter() {
        let key: &str = k.get_ref();
        let full = join(prefix, key);
        match fields.iter().find(|f| f.name == key) {
            Some(f) => value(ctx, &full, v.get_ref(), f.ty, v.span()),
            None => {
                let known = fields.iter().map(|f| f.name);
                let hint = match did_you_mean(key, known) {
                    Some(s) => format!("did you mean `{}`?", join(prefix, s)),
                    None => format!(
                        "known keys here: {}",
                        fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                    ),
                };
                ctx.err(k.span(), format!("unknown key `{full}`"), Some(hint));
            }
        }
    }
    for f in fields.iter().filter(|f| f.required) {
        if t.get(f.name).is_none() {
            let where_ = if prefix.is_empty() {
                "the file".to_string()
            } else {
                format!("`{prefix}`")
            };
            ctx.err(
                span.clone(),
                format!("missing key `{}` in {where_}", join(prefix, f.name)),
                None,
            );
        }
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn value(ctx: &mut Ctx<'_>, key: &str, v: &DeValue<'_>, ty: Ty, span: Range<usize>) {
    let wrong = |ctx: &mut Ctx<'_>, expected: &str, example: &str| {
        ctx.err(
            span.clone(),
            format!("`{key}` must be {expected}, found {}", type_name(v)),
            Some(format!("for example: {key} = {example}")),
        );
    };
    match ty {
        Ty::Str => {
            if !v.is_str() {
                wrong(ctx, "a string", "\"...\"");
            }
        }
        Ty::Addr => match v.as_str() {
            Some(s) => {
                if s.parse::<std::net::SocketAddr>().is_err() {
                    ctx.err(
                        span.clone(),
                        format!("`{key}` is not a socket address: {s:?}"),
                        Some("use ip:port, e.g. \"127.0.0.1:7700\"".into()),
                    );
                }
            }
            None => wrong(ctx, "a string", "\"127.0.0.1:7700\""),
        },
        Ty::Enum(options) => match v.as_str() {
            Some(s) if options.contains(&s) => {}
            Some(s) => {
                let hint = match did_you_mean(s, options.iter().copied()) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => format!("expected one of: {}", options.join(", ")),
                };
                ctx.err(
                    span.clone(),
                    format!("`{key}` has an unknown value {s:?}"),
                    Some(hint),
                );
            }
            None => wrong(ctx, "a string", &format!("\"{}\"", options[0])),
        },
        Ty::UInt => match v.as_integer() {
            Some(i) if !i.as_str().starts_with('-') => {}
            Some(_) => ctx.err(span.clone(), format!("`{key}` must not be negative"), None),
            None => wrong(ctx, "an integer", "10"),
        },
        Ty::Float => {
            if !(v.is_float() || v.is_integer()) {
                wrong(ctx, "a number", "0.5");
            }
        }
        Ty::Bool => {
            if !v.is_bool() {
                wrong(ctx, "true or false", "true");
            }
        }
        Ty::StrList => match v.as_array() {
            Some(a) => {
                for (i, item) in a.iter().enumerate() {
                    if !item.get_ref().is_str() {
                        ctx.err(
                            item.span(),
                            format!(
                                "`{key}[{i}]` must be a string, found {}",
                                type_name(item.get_ref())
                            ),
                            None,
                        );
                    }
                }
            }
            None => wrong(ctx, "an array of strings", "[\"a\", \"b\"]"),
        },
        Ty::StrMap => match v.as_table() {
            Some(t) => {
                for (k, item) in t.iter() {
                    if !item.get_ref().is_str() {
                        ctx.err(
                            item.span(),
                            format!(
                                "`{key}.{}` must be a string, found {}",
                                k.get_ref(),
                                type_name(item.get_ref())
                            ),
                            None,
                        );
                    }
                }
            }
            None => wrong(ctx, "a table of strings", "{ zone = \"eu-1\" }"),
        },
        Ty::Table(fields) => match v.as_table() {
            Some(t) => table(ctx, key, t, fields, span.clone()),
            None => wrong(ctx, "a table", "{ ... }"),
        },
        Ty::TableList(fields) => match v.as_array() {
            Some(a) => {
                for (i, item) in a.iter().enumerate() {
                    match item.get_ref().as_table() {
                        Some(t) => table(ctx, &format!("{key}[{i}]"), t, fields, item.span()),
                        None => ctx.err(
                            item.span(),
                            format!("`{key}[{i}]` must be a table"),
                            Some(format!("write it as [[{key}]]")),
                        ),
                    }
                }
            }
            None => wrong(ctx, "an array of tables", &format!("[[{key}]]")),
        },
    }
}
