//! The role each route requires. Every route of the gateway is listed here;
//! a route missing from the table requires `admin` (deny by default).

use actix_web::http::Method;

use super::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Open,
    /// At least this role.
    Role(Role),
}

/// `(method, pattern, access)`; `{x}` matches one segment, `{x:.*}` one or more.
/// Exactly the served routes: a unit test in [`crate::openapi`] checks that
/// this table and the OpenAPI document list the same operations.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/", Access::Open),
    ("GET", "/health", Access::Open),
    // The API description is public, like the API's shape in any client library.
    ("GET", "/openapi.json", Access::Open),
    ("GET", "/ready", Access::Open),
    ("GET", "/dashboard", Access::Open),
    ("GET", "/dashboard/", Access::Open),
    ("GET", "/metrics", Access::Role(Role::Reader)),
    ("GET", "/v1/cluster/actors", Access::Role(Role::Reader)),
    ("GET", "/v1/cluster/events", Access::Role(Role::Reader)),
    ("GET", "/v1/cluster/nodes", Access::Role(Role::Reader)),
    ("GET", "/v1/cluster/snapshot", Access::Role(Role::Reader)),
    ("GET", "/v1/cluster/stream", Access::Role(Role::Reader)),
    (
        "POST",
        "/v1/cluster/actors/{path:.*}/restart",
        Access::Role(Role::Admin),
    ),
    (
        "POST",
        "/v1/cluster/actors/{path:.*}/kill",
        Access::Role(Role::Admin),
    ),
    ("POST", "/v1/admin/keys/reload", Access::Role(Role::Admin)),
    (
        "GET",
        "/v1/admin/telemetry/sampling",
        Access::Role(Role::Admin),
    ),
    (
        "PUT",
        "/v1/admin/telemetry/sampling",
        Access::Role(Role::Admin),
    ),
    // Raft group and replicated metadata.
    ("GET", "/v1/cluster/raft", Access::Role(Role::Reader)),
    (
        "POST",
        "/v1/cluster/raft/learners",
        Access::Role(Role::Admin),
    ),
    ("POST", "/v1/cluster/raft/voters", Access::Role(Role::Admin)),
    (
        "DELETE",
        "/v1/cluster/raft/members/{node}",
        Access::Role(Role::Admin),
    ),
    ("GET", "/v1/cluster/meta", Access::Role(Role::Reader)),
    (
        "GET",
        "/v1/cluster/meta/kv/{key}",
        Access::Role(Role::Reader),
    ),
    (
        "PUT",
        "/v1/cluster/meta/kv/{key}",
        Access::Role(Role::Writer),
    ),
    (
        "DELETE",
        "/v1/cluster/meta/kv/{key}",
        Access::Role(Role::Writer),
    ),
    // OpenAI-compatible inference.
    ("GET", "/v1/models", Access::Role(Role::Reader)),
    ("POST", "/v1/embeddings", Access::Role(Role::Reader)),
    ("POST", "/v1/chat/completions", Access::Role(Role::Reader)),
    // Devices and compute.
    ("GET", "/v1/devices", Access::Role(Role::Reader)),
    ("POST", "/v1/compute/{op}", Access::Role(Role::Reader)),
    (
        "POST",
        "/v1/compute/{op}/binary",
        Access::Role(Role::Reader),
    ),
    // Qdrant-compatible collections.
    ("GET", "/collections", Access::Role(Role::Reader)),
    ("GET", "/collections/{name}", Access::Role(Role::Reader)),
    (
        "GET",
        "/collections/{name}/exists",
        Access::Role(Role::Reader),
    ),
    ("PUT", "/collections/{name}", Access::Role(Role::Writer)),
    ("DELETE", "/collections/{name}", Access::Role(Role::Writer)),
    (
        "PUT",
        "/collections/{name}/points",
        Access::Role(Role::Writer),
    ),
    (
        "POST",
        "/collections/{name}/points/delete",
        Access::Role(Role::Writer),
    ),
    (
        "POST",
        "/collections/{name}/points",
        Access::Role(Role::Reader),
    ),
    (
        "GET",
        "/collections/{name}/points/{id}",
        Access::Role(Role::Reader),
    ),
    (
        "POST",
        "/collections/{name}/points/search",
        Access::Role(Role::Reader),
    ),
    (
        "POST",
        "/collections/{name}/points/search/batch",
        Access::Role(Role::Reader),
    ),
    (
        "POST",
        "/collections/{name}/points/query",
        Access::Role(Role::Reader),
    ),
    (
        "POST",
        "/collections/{name}/points/query/batch",
        Access::Role(Role::Reader),
    ),
    (
        "POST",
        "/collections/{name}/points/scroll",
        Access::Role(Role::Reader),
    ),
    (
        "POST",
        "/collections/{name}/points/count",
        Access::Role(Role::Reader),
    ),
];

/// A [`ROUTES`] entry split into segments once, so that the per-request
/// lookup allocates nothing per pattern (its method is the table's key).
struct Compiled {
    segs: Vec<&'static str>,
    /// Index of the `{x:.*}` segment, if any.
    tail: Option<usize>,
    /// Literal segments: more of them wins (`points/search` over `points/{id}`).
    literal: usize,
    access: Access,
}

/// [`ROUTES`] compiled, grouped by method and first path segment: a request is
/// compared with the few patterns that can match it, not the whole table.
struct Table {
    /// Method, then first segment.
    by_start:
        rustc_hash::FxHashMap<&'static str, rustc_hash::FxHashMap<&'static str, Vec<Compiled>>>,
    /// Patterns of a method whose first segment is a parameter (none today).
    by_method: rustc_hash::FxHashMap<&'static str, Vec<Compiled>>,
}

fn table() -> &'static Table {
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table {
            by_start: Default::default(),
            by_method: Default::default(),
        };
        for (method, pattern, access) in ROUTES {
            let segs: Vec<&'static str> = pattern.trim_end_matches('/').split('/').collect();
            let first = segs.get(1).copied().unwrap_or("");
            let c = Compiled {
                tail: segs.iter().position(|p| p.ends_with(":.*}")),
                literal: segs.iter().filter(|s| !s.starts_with('{')).count(),
                segs,
                access: *access,
            };
            if first.starts_with('{') {
                t.by_method.entry(method).or_default().push(c);
            } else {
                t.by_start
                    .entry(method)
                    .or_default()
                    .entry(first)
                    .or_default()
                    .push(c);
            }
        }
        t
    })
}

fn seg_matches(p: &str, s: &str) -> bool {
    p == s || (p.starts_with('{') && !s.is_empty())
}

impl Compiled {
    fn matches(&self, segs: &[&str]) -> bool {
        let pat = &self.segs;
        match self.tail {
            None => pat.len() == segs.len() && pat.iter().zip(segs).all(|(p, s)| seg_matches(p, s)),
            Some(tail) => {
                let after = &pat[tail + 1..];
                segs.len() > tail + after.len()
                    && pat[..tail].iter().zip(segs).all(|(p, s)| seg_matches(p, s))
                    && after
                        .iter()
                        .zip(&segs[segs.len() - after.len()..])
                        .all(|(p, s)| p == s || p.starts_with('{'))
            }
        }
    }
}

/// Path segments kept on the stack; longer paths (deep actor paths) take a vector.
const STACK_SEGMENTS: usize = 16;

/// The access rule for a request; unknown routes need `admin`.
pub fn required(method: &Method, path: &str) -> Access {
    let path = path.trim_end_matches('/');
    let mut buf = [""; STACK_SEGMENTS];
    let mut n = 0;
    for seg in path.split('/') {
        match buf.get_mut(n) {
            Some(slot) => *slot = seg,
            None => return required_in(method, &path.split('/').collect::<Vec<_>>()),
        }
        n += 1;
    }
    required_in(method, &buf[..n])
}

fn required_in(method: &Method, segs: &[&str]) -> Access {
    // Exact-literal patterns win over parameterised ones (e.g. `points/search` vs `points/{id}`).
    let mut best: Option<(usize, Access)> = None;
    let t = table();
    let m = method.as_str();
    let first = segs.get(1).copied().unwrap_or("");
    let candidates = t
        .by_start
        .get(m)
        .and_then(|starts| starts.get(first))
        .into_iter()
        .chain(t.by_method.get(m))
        .flatten();
    for c in candidates {
        if c.matches(segs) && best.is_none_or(|(b, _)| c.literal > b) {
            best = Some((c.literal, c.access));
        }
    }
    best.map(|(_, a)| a).unwrap_or(Access::Role(Role::Admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_paths() {
        let r = |m: &str, p: &str| required(&Method::from_bytes(m.as_bytes()).expect("method"), p);
        assert_eq!(r("GET", "/health"), Access::Open);
        assert_eq!(
            r("POST", "/v1/cluster/actors/n/vector/docs/restart"),
            Access::Role(Role::Admin)
        );
        assert_eq!(
            r("POST", "/collections/docs/points/search"),
            Access::Role(Role::Reader)
        );
        assert_eq!(
            r("PUT", "/collections/docs/points"),
            Access::Role(Role::Writer)
        );
        assert_eq!(
            r("GET", "/collections/docs/points/42"),
            Access::Role(Role::Reader)
        );
        assert_eq!(r("DELETE", "/collections/docs"), Access::Role(Role::Writer));
        assert_eq!(r("POST", "/v1/embeddings"), Access::Role(Role::Reader));
        assert_eq!(r("GET", "/something/else"), Access::Role(Role::Admin));
        assert_eq!(
            r("POST", "/v1/cluster/actors/restart"),
            Access::Role(Role::Admin)
        );
    }

    #[test]
    fn deep_paths_match_like_short_ones() {
        // More segments than fit on the stack: same rules.
        let deep = format!("/collections/docs/points/search{}", "/x".repeat(20));
        let get = Method::GET;
        assert_eq!(required(&get, &deep), Access::Role(Role::Admin));
        let actor = format!("/v1/cluster/actors/n{}/restart", "/a".repeat(30));
        assert_eq!(required(&Method::POST, &actor), Access::Role(Role::Admin));
        assert_eq!(
            required(
                &get,
                &format!("/collections/docs/points/42{}", "/".repeat(40))
            ),
            Access::Role(Role::Reader),
            "trailing slashes are trimmed before counting"
        );
    }
}
