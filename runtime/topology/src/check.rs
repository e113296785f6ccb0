//! Whole-topology checks that need more than one key at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use crate::model::{InferenceKind, Placement, Topology};
use crate::schema::did_you_mean;
use crate::{Diagnostic, Diagnostics};

/// A step into the document, to find the span of a value.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    /// A table key.
    Key(&'a str),
    /// An array index.
    Index(usize),
}

/// Span of the value at `path`, or of its closest existing ancestor.
pub fn span_of(doc: &DeTable<'_>, path: &[Seg<'_>]) -> Option<Range<usize>> {
    let mut span = None;
    let mut cur: Option<&DeValue<'_>> = None;
    for (i, seg) in path.iter().enumerate() {
        let next = match (i, seg, cur) {
            (0, Seg::Key(k), _) => doc.get(*k),
            (_, Seg::Key(k), Some(v)) => v.as_table().and_then(|t| t.get(*k)),
            (_, Seg::Index(n), Some(v)) => v.as_array().and_then(|a| a.get(*n)),
            _ => None,
        };
        match next {
            Some(v) => {
                span = Some(v.span());
                cur = Some(v.get_ref());
            }
            None => break,
        }
    }
    span
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    doc: &'a DeTable<'a>,
    diags: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn err(&mut self, path: &[Seg<'_>], message: String, hint: Option<String>) {
        let span = span_of(self.doc, path);
        self.diags.push(Diagnostic::at_span(
            self.file, self.text, span, message, hint,
        ));
    }
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Runs every semantic check; `base` resolves relative paths.
pub fn semantic(
    file: &str,
    text: &str,
    doc: &DeTable<'_>,
    t: &Topology,
    base: &Path,
    diags: &mut Diagnostics,
) {
    let mut c = Checker {
        file,
        text,
        doc,
        diags,
    };

    // Nodes: one form or the other, unique ids, valid ids.
    if t.node.is_some() && !t.nodes.is_empty() {
        c.err(
            &[Seg::Key("nodes")],
            "both [node] and [[nodes]] are present".into(),
            Some("use [node] for a single node, or [[nodes]] for a cluster file and pick one with --node-id".into()),
        );
    }
    let node_paths: Vec<(Vec<Seg<'_>>, &crate::NodeSpec)> = match &t.node {
        Some(n) => vec![(vec![Seg::Key("node")], n)],
        None => t
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (vec![Seg::Key("nodes"), Seg::Index(i)], n))
            .collect(),
    };
    let mut seen = BTreeMap::new();
    for (path, n) in &node_paths {
        let mut id_path = path.clone();
        id_path.push(Seg::Key("id"));
        if let Err(e) = abi_id_check(&n.id) {
            c.err(&id_path, format!("invalid node id {:?}: {e}", n.id), None);
        }
        if seen.insert(n.id.clone(), path.clone()).is_some() {
            c.err(
                &id_path,
                format!("duplicate node id {:?}", n.id),
                Some("every node needs its own id".into()),
            );
        }
    }
    let known: BTreeSet<&str> = node_paths.iter().map(|(_, n)| n.id.as_str()).collect();

    // Port clashes between nodes (same host, same port, same protocol).
    for (i, (_, a)) in node_paths.iter().enumerate() {
        for (pj, b) in node_paths.iter().skip(i + 1) {
            if overlaps(&a.listen, &b.listen) {
                let mut p = pj.clone();
                p.push(Seg::Key("listen"));
                c.err(
                    &p,
                    format!(
                        "QUIC address {} of node {:?} clashes with node {:?}",
                        b.listen, b.id, a.id
                    ),
                    Some("give every node on one host its own port".into()),
                );
            }
            if overlaps(&a.http, &b.http) {
                let mut p = pj.clone();
                p.push(Seg::Key("http"));
                c.err(
                    &p,
                    format!(
                        "HTTP address {} of node {:?} clashes with node {:?}",
                        b.http, b.id, a.id
                    ),
                    Some("give every node on one host its own port".into()),
                );
            }
        }
    }

    // Placement names only known nodes.
    let check_placement = |c: &mut Checker<'_>, base_path: Vec<Seg<'_>>, p: &Placement| {
        for (i, n) in p.nodes.iter().enumerate() {
            if !known.contains(n.as_str()) {
                let mut path = base_path.clone();
                path.extend([Seg::Key("placement"), Seg::Key("nodes"), Seg::Index(i)]);
                let hint = match did_you_mean(n, known.iter().copied()) {
                    Some(s) => format!("did you mean {s:?}?"),
                    None if known.is_empty() => {
                        "declare the cluster's nodes with [[nodes]] to place by id".into()
                    }
                    None => format!(
                        "known nodes: {}",
                        known.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                };
                c.err(
                    &path,
                    format!("placement names unknown node {n:?}"),
                    Some(hint),
                );
            }
        }
    };
    check_placement(&mut c, vec![Seg::Key("gateway")], &t.gateway.placement);
    check_placement(&mut c, vec![Seg::Key("gpu")], &t.gpu.placement);
    for (i, p) in t.inference.iter().enumerate() {
        check_placement(
            &mut c,
            vec![Seg::Key("inference"), Seg::Index(i)],
            &p.placement,
        );
    }
    for (i, col) in t.collections.iter().enumerate() {
        check_placement(
            &mut c,
            vec![Seg::Key("collection"), Seg::Index(i)],
            &col.placement,
        );
    }
    if let Some(raft) = &t.raft {
        for (i, v) in raft.voters.iter().enumerate() {
            if !known.is_empty() && !known.contains(v.as_str()) {
                c.err(
                    &[Seg::Key("raft"), Seg::Key("voters"), Seg::Index(i)],
                    format!("raft voter {v:?} is not a declared node"),
                    did_you_mean(v, known.iter().copied()).map(|s| format!("did you mean {s:?}?")),
                );
            }
        }
    }

    // Inference pools: unique names, model paths exist, sane sizes.
    let mut names = BTreeSet::new();
    for (i, p) in t.inference.iter().enumerate() {
        let at = |k| vec![Seg::Key("inference"), Seg::Index(i), Seg::Key(k)];
        if !names.insert(p.name.as_str()) {
            c.err(
                &at("name"),
                format!("duplicate inference pool name {:?}", p.name),
                Some("pool names are model ids in the API and must be unique".into()),
            );
        }
        let model = base.join(&p.model);
        if !model.exists() {
            c.err(
                &at("model"),
                format!("model path {} does not exist", model.display()),
                Some("relative paths are resolved from the topology file's directory; fetch models with scripts/fetch-models.sh".into()),
            );
        }
        if p.replicas == 0 {
            c.err(
                &at("replicas"),
                "`replicas` must be at least 1".into(),
                None,
            );
        }
        if p.max_batch == 0 {
            c.err(
                &at("max_batch"),
                "`max_batch` must be at least 1".into(),
                None,
            );
        }
        let cuda_index = p
            .device
            .strip_prefix("cuda:")
            .map(|n| n.parse::<u32>().is_ok());
        if p.device != "cpu" && cuda_index != Some(true) {
            c.err(
                &at("device"),
                format!("unknown device {:?}", p.device),
                Some("use \"cpu\" or \"cuda:N\"".into()),
            );
        }
    }

    // Collections: unique names, sizes, embedding pool exists and embeds.
    let mut cols = BTreeSet::new();
    for (i, col) in t.collections.iter().enumerate() {
        let at = |k| vec![Seg::Key("collection"), Seg::Index(i), Seg::Key(k)];
        if !cols.insert(col.name.as_str()) {
            c.err(
                &at("name"),
                format!("duplicate collection name {:?}", col.name),
                None,
            );
        }
        if col.dim == 0 {
            c.err(&at("dim"), "`dim` must be at least 1".into(), None);
        }
        if col.shards == 0 {
            c.err(&at("shards"), "`shards` must be at least 1".into(), None);
        }
        if col.replication == 0 {
            c.err(
                &at("replication"),
                "`replication` must be at least 1".into(),
                None,
            );
        }
        if col.m == 0 || col.m > 256 {
            c.err(
                &at("m"),
                format!("`m` = {} is out of range", col.m),
                Some("HNSW m must be between 1 and 256 (16 is typical)".into()),
            );
        }
        if let Some(e) = &col.embed_with {
            match t.inference.iter().find(|p| &p.name == e) {
                None => c.err(
                    &at("embed_with"),
                    format!("`embed_with` names unknown inference pool {e:?}"),
                    did_you_mean(e, t.inference.iter().map(|p| p.name.as_str()))
                        .map(|s| format!("did you mean {s:?}?")),
                ),
                Some(p) if p.kind != InferenceKind::Embedding => c.err(
                    &at("embed_with"),
                    format!(
                        "`embed_with` pool {e:?} is a {:?} pool, not an embedding pool",
                        p.kind
                    ),
                    None,
                ),
                Some(_) => {}
            }
        }
    }

    // Plugins: directories exist, pins look like sha256.
    for (i, d) in t.plugins.dirs.iter().enumerate() {
        let dir = base.join(d);
        if !dir.is_dir() {
            c.err(
                &[Seg::Key("plugins"), Seg::Key("dirs"), Seg::Index(i)],
                format!("plugin directory {} does not exist", dir.display()),
                Some("build plugins with `cargo build --release --workspace`".into()),
            );
        }
    }
    for (name, pin) in &t.plugins.pins {
        let ok = pin
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            c.err(
                &[Seg::Key("plugins"), Seg::Key("pins"), Seg::Key(name)],
                format!("pin for {name:?} is not sha256:<64 hex digits>"),
                Some("compute it with `sha256sum FILE`".into()),
            );
        }
    }

    // Supervision and telemetry ranges.
    if !(0.0..=1.0).contains(&t.supervision.backoff_jitter) {
        c.err(
            &[Seg::Key("supervision"), Seg::Key("backoff_jitter")],
            "`backoff_jitter` must be between 0.0 and 1.0".into(),
            None,
        );
    }
    if t.supervision.within_secs == 0 {
        c.err(
            &[Seg::Key("supervision"), Seg::Key("within_secs")],
            "`within_secs` must be at least 1".into(),
            None,
        );
    }
    if !(0.0..=1.0).contains(&t.telemetry.sampling_ratio) {
        c.err(
            &[Seg::Key("telemetry"), Seg::Key("sampling_ratio")],
            "`sampling_ratio` must be between 0.0 and 1.0".into(),
            None,
        );
    }
    if t.telemetry.queue_size == 0 {
        c.err(
            &[Seg::Key("telemetry"), Seg::Key("queue_size")],
            "`queue_size` must be at least 1".into(),
            None,
        );
    }
    if t.telemetry.max_export_batch_size == 0 {
        c.err(
            &[Seg::Key("telemetry"), Seg::Key("max_export_batch_size")],
            "`max_export_batch_size` must be at least 1".into(),
            None,
        );
    }
    if let Some(e) = &t.telemetry.otlp_endpoint
        && !e.starts_with("http://")
    {
        c.err(
            &[Seg::Key("telemetry"), Seg::Key("otlp_endpoint")],
            format!("`otlp_endpoint` must be an http:// URL (OTLP over HTTP/protobuf), got `{e}`"),
            Some("e.g. \"http://127.0.0.1:4318/v1/traces\"".into()),
        );
    }
    let m = &t.membership;
    if !(m.heartbeat_ms > 0 && m.heartbeat_ms < m.suspect_ms && m.suspect_ms < m.dead_ms) {
        c.err(
            &[Seg::Key("membership")],
            "membership timing must satisfy 0 < heartbeat_ms < suspect_ms < dead_ms".into(),
            Some("e.g. heartbeat_ms = 500, suspect_ms = 1500, dead_ms = 4000".into()),
        );
    }
    if t.gateway.workers == 0 {
        c.err(
            &[Seg::Key("gateway"), Seg::Key("workers")],
            "`workers` must be at least 1".into(),
            None,
        );
    }
}

fn abi_id_check(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".into());
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(ch) => Err(format!(
            "character {ch:?} is not allowed (letters, digits, '.', '_', '-')"
        )),
        None => Ok(()),
    }
}
