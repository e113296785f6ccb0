//! Vector collections: the messages understood by the `vector` manager and its shards.
//!
//! Wire rules: plain serde types only (postcard has no self-describing values), so JSON payloads
//! travel as JSON text in a `String` and are parsed by the shard that stores them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Request;

/// Name of the manager actor under `vector` (so collections may not use it).
pub const MANAGER_NAME: &str = "api";
/// Path (under the node) of the manager actor that serves the collection-level requests.
pub const MANAGER_PATH: &str = "vector/api";

/// How two vectors are compared; the score returned follows Qdrant's conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Distance {
    /// Cosine similarity (vectors are normalised on the way in); higher is closer.
    Cosine,
    /// Raw dot product; higher is closer.
    Dot,
    /// Euclidean distance; lower is closer.
    Euclid,
}

/// How hard the write-ahead log tries before a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsyncPolicy {
    /// fsync before every acknowledgement (concurrent writers share one fsync).
    Always,
    /// Writers arriving within this many milliseconds share one fsync.
    GroupCommitMs(u32),
    /// Never fsync (benchmarks only): acknowledged writes may be lost on a crash.
    Never,
}

/// HNSW build and search parameters of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (hnsw_rs max_nb_connection); 2..=256.
    pub m: u16,
    /// Candidate list size while building.
    pub ef_construct: u32,
    /// Candidate list size while searching, when the request names none.
    pub ef: u32,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construct: 200,
            ef: 96,
        }
    }
}

/// Everything that defines a collection; persisted under the node's data_dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Name, `[A-Za-z0-9._-]`, unique per cluster.
    pub name: String,
    /// Vector dimension.
    pub dim: u32,
    /// Similarity measure.
    pub distance: Distance,
    /// Number of shards; points are routed by jump consistent hash of their id.
    pub shards: u32,
    /// Copies of each shard. Above 1 the collection is replicated through the cluster
    /// (needs `[raft]`): each shard is a Raft group of this many replicas on distinct nodes.
    pub replication: u32,
    /// Replicas that must have a write durable before it is acknowledged; 0 means a
    /// majority of `replication` (the least a replicated shard accepts).
    #[serde(default)]
    pub write_consistency: u32,
    /// Index parameters.
    pub hnsw: HnswParams,
    /// WAL durability.
    pub fsync: FsyncPolicy,
    /// Inference model used to embed text on upsert (inference issue).
    pub embed_with: Option<String>,
}

/// A point id: an unsigned integer or a UUID, as in Qdrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PointId {
    /// Integer id.
    Num(u64),
    /// UUID as its 128-bit value.
    Uuid(u128),
}

impl PointId {
    /// A stable 64-bit key used for shard routing.
    pub fn route_key(&self) -> u64 {
        match *self {
            PointId::Num(n) => n,
            // Fold both halves so UUIDs that share a prefix still spread.
            PointId::Uuid(u) => (u as u64) ^ ((u >> 64) as u64).rotate_left(17),
        }
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => {
                let h = format!("{u:032x}");
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                )
            }
        }
    }
}

/// A point to insert or replace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointInput {
    /// Its id.
    pub id: PointId,
    /// Its vector (length = collection dim, finite values).
    pub vector: Vec<f32>,
    /// Its payload as a JSON object text, or None for no payload.
    pub payload_json: Option<String>,
}

/// A stored point as returned by get, scroll and search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    /// Its id.
    pub id: PointId,
    /// The vector, when asked for.
    pub vector: Option<Vec<f32>>,
    /// The payload JSON object text, when asked for.
    pub payload_json: Option<String>,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    /// The point id.
    pub id: PointId,
    /// Similarity (cosine, dot) or distance (euclid), Qdrant style.
    pub score: f32,
    /// The vector, when asked for.
    pub vector: Option<Vec<f32>>,
    /// The payload JSON object text, when asked for.
    pub payload_json: Option<String>,
}

/// A scalar a payload field is compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MatchValue {
    /// A string (keyword) value.
    Str(String),
    /// An integer value.
    Int(i64),
    /// A boolean value.
    Bool(bool),
}

/// Numeric bounds on a payload field; a missing bound is open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
}

/// One test on one payload field (`key` may be a dotted path into nested objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    /// Field equals the value (or, for an array field, contains it).
    Match {
        /// Field path.
        key: String,
        /// Expected value.
        value: MatchValue,
    },
    /// Field equals any of the values.
    MatchAny {
        /// Field path.
        key: String,
        /// Accepted values.
        any: Vec<MatchValue>,
    },
    /// Numeric field within bounds.
    Range {
        /// Field path.
        key: String,
        /// Bounds.
        range: Range,
    },
    /// The point id is one of these.
    HasId(Vec<PointId>),
    /// A nested filter.
    Nested(Box<Filter>),
}

/// Qdrant-style boolean filter: all of `must`, at least one of `should` (if any), none of `must_not`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// All must hold.
    pub must: Vec<Condition>,
    /// At least one must hold (ignored when empty).
    pub should: Vec<Condition>,
    /// None may hold.
    pub must_not: Vec<Condition>,
}

/// Why a vector operation failed; crosses the wire typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VectorError {
    /// No collection of that name.
    #[error("collection {0:?} not found")]
    NotFound(String),
    /// Create with a name that exists.
    #[error("collection {0:?} already exists")]
    AlreadyExists(String),
    /// The request is malformed (dimension, NaN, bad parameter, bad filter...).
    #[error("{0}")]
    BadRequest(String),
    /// A shard did not answer in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// A shard is unreachable or failed.
    #[error("shard unavailable: {0}")]
    Unavailable(String),
    /// Disk or WAL trouble.
    #[error("storage error: {0}")]
    Storage(String),
    /// A write reached a replica that does not lead its shard's group; it names the
    /// leader when it knows one (the manager retries there).
    #[error("shard replica is not the leader (leader: {0:?})")]
    NotLeader(Option<String>),
}

/// Creates a collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateCollection {
    /// What to create.
    pub config: CollectionConfig,
}

/// Drops a collection and its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteCollection {
    /// Which one.
    pub name: String,
}

/// Lists collection names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListCollections;

/// Describes one collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetCollection {
    /// Which one.
    pub name: String,
}

/// A collection's config and live point count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Its configuration.
    pub config: CollectionConfig,
    /// Live points over all shards.
    pub points: u64,
}

/// Inserts or replaces points (collection level: the manager routes them to shards).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upsert {
    /// Target collection.
    pub collection: String,
    /// The points; validated as a whole before anything is written.
    pub points: Vec<PointInput>,
}

/// Deletes points by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletePoints {
    /// Target collection.
    pub collection: String,
    /// Ids to delete (missing ids are ignored).
    pub ids: Vec<PointId>,
}

/// Acknowledgement of a durable write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteAck {
    /// Highest WAL sequence number written (per shard it is monotonic).
    pub seq: u64,
}

/// Fetches points by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetPoints {
    /// Target collection.
    pub collection: String,
    /// Ids to fetch; missing ones are left out of the reply.
    pub ids: Vec<PointId>,
    /// Include payloads.
    pub with_payload: bool,
    /// Include vectors.
    pub with_vector: bool,
    /// Which replica answers (replicated collections).
    #[serde(default)]
    pub consistency: ReadConsistency,
}

/// Which replica of a replicated collection's shard answers a read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Any live replica, this node's first: the fastest; a follower may not have applied
    /// a write acknowledged a moment ago.
    #[default]
    Any,
    /// The shard group's leader, once it confirmed its leadership with a quorum: sees
    /// every write acknowledged before the read (read-your-writes and more).
    Leader,
}

/// One k-nearest-neighbour query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Query vector.
    pub vector: Vec<f32>,
    /// How many hits.
    pub limit: u32,
    /// Skip this many best hits (pagination).
    pub offset: u32,
    /// Search width; the collection default when None.
    pub ef: Option<u32>,
    /// Payload filter.
    pub filter: Option<Filter>,
    /// Include payloads.
    pub with_payload: bool,
    /// Include vectors.
    pub with_vector: bool,
    /// Only hits with a score at least this good.
    pub score_threshold: Option<f32>,
}

/// A batch of queries on one collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    /// Target collection.
    pub collection: String,
    /// The queries, answered in order.
    pub queries: Vec<SearchQuery>,
    /// Accept results from the shards that answered when some did not.
    pub allow_partial: bool,
    /// Deadline for the whole search, milliseconds.
    pub timeout_ms: u32,
    /// Which replica answers (replicated collections).
    #[serde(default)]
    pub consistency: ReadConsistency,
}

/// Hits for each query of a [`Search`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// One list per query, best first.
    pub hits: Vec<Vec<ScoredPoint>>,
    /// Shards that did not answer (only non-empty with `allow_partial`).
    pub missing_shards: Vec<u32>,
}

/// Counts points, optionally matching a filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    /// Target collection.
    pub collection: String,
    /// Optional filter.
    pub filter: Option<Filter>,
    /// Which replica answers (replicated collections).
    #[serde(default)]
    pub consistency: ReadConsistency,
}

/// Pages through points in id order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scroll {
    /// Target collection.
    pub collection: String,
    /// Start at this id (inclusive).
    pub offset: Option<PointId>,
    /// Page size.
    pub limit: u32,
    /// Optional filter.
    pub filter: Option<Filter>,
    /// Include payloads.
    pub with_payload: bool,
    /// Include vectors.
    pub with_vector: bool,
    /// Which replica answers (replicated collections).
    #[serde(default)]
    pub consistency: ReadConsistency,
}

/// One page of a scroll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrollPage {
    /// Points in id order.
    pub points: Vec<PointRecord>,
    /// Id to pass as `offset` for the next page, None at the end.
    pub next: Option<PointId>,
}

/// Asks for a snapshot now (all shards of a collection).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Target collection.
    pub collection: String,
}

/// Shard-level messages (sent by the manager to `vector/<collection>/shard-<i>`).
pub mod shard {
    use serde::{Deserialize, Serialize};

    use super::{
        Filter, PointId, PointInput, PointRecord, ScoredPoint, ScrollPage, SearchQuery,
        VectorError, WriteAck,
    };
    use crate::Request;

    /// Upsert into one shard (points already routed and validated).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardUpsert {
        /// Points of this shard.
        pub points: Vec<PointInput>,
    }
    /// Delete from one shard.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardDelete {
        /// Ids of this shard.
        pub ids: Vec<PointId>,
    }
    /// Get from one shard.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardGet {
        /// Ids of this shard.
        pub ids: Vec<PointId>,
        /// Include payloads.
        pub with_payload: bool,
        /// Include vectors.
        pub with_vector: bool,
        /// Answer only as the group's leader, after confirming it with a quorum
        /// (replicated shards; an unreplicated shard is its own leader).
        #[serde(default)]
        pub linearizable: bool,
    }
    /// Search one shard (each query asks limit + offset hits; the manager merges).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardSearch {
        /// Queries.
        pub queries: Vec<SearchQuery>,
        /// Answer only as the group's leader, after confirming it with a quorum
        /// (replicated shards; an unreplicated shard is its own leader).
        #[serde(default)]
        pub linearizable: bool,
    }
    /// Count in one shard.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardCount {
        /// Optional filter.
        pub filter: Option<Filter>,
        /// Answer only as the group's leader, after confirming it with a quorum
        /// (replicated shards; an unreplicated shard is its own leader).
        #[serde(default)]
        pub linearizable: bool,
    }
    /// Scroll one shard.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardScroll {
        /// Start id (inclusive).
        pub offset: Option<PointId>,
        /// Page size.
        pub limit: u32,
        /// Optional filter.
        pub filter: Option<Filter>,
        /// Include payloads.
        pub with_payload: bool,
        /// Include vectors.
        pub with_vector: bool,
        /// Answer only as the group's leader, after confirming it with a quorum
        /// (replicated shards; an unreplicated shard is its own leader).
        #[serde(default)]
        pub linearizable: bool,
    }
    /// Snapshot one shard now.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ShardSnapshot;

    impl Request for ShardUpsert {
        type Reply = Result<WriteAck, VectorError>;
        const TYPE: &'static str = "vector.shard.upsert";
    }
    impl Request for ShardDelete {
        type Reply = Result<WriteAck, VectorError>;
        const TYPE: &'static str = "vector.shard.delete";
    }
    impl Request for ShardGet {
        type Reply = Result<Vec<PointRecord>, VectorError>;
        const TYPE: &'static str = "vector.shard.get";
    }
    impl Request for ShardSearch {
        type Reply = Result<Vec<Vec<ScoredPoint>>, VectorError>;
        const TYPE: &'static str = "vector.shard.search";
    }
    impl Request for ShardCount {
        type Reply = Result<u64, VectorError>;
        const TYPE: &'static str = "vector.shard.count";
    }
    impl Request for ShardScroll {
        type Reply = Result<ScrollPage, VectorError>;
        const TYPE: &'static str = "vector.shard.scroll";
    }
    impl Request for ShardSnapshot {
        type Reply = Result<u64, VectorError>;
        const TYPE: &'static str = "vector.shard.snapshot";
    }
}

impl Request for CreateCollection {
    type Reply = Result<CollectionInfo, VectorError>;
    const TYPE: &'static str = "vector.create_collection";
}
impl Request for DeleteCollection {
    type Reply = Result<bool, VectorError>;
    const TYPE: &'static str = "vector.delete_collection";
}
impl Request for ListCollections {
    type Reply = Vec<String>;
    const TYPE: &'static str = "vector.list_collections";
}
impl Request for GetCollection {
    type Reply = Result<CollectionInfo, VectorError>;
    const TYPE: &'static str = "vector.get_collection";
}
impl Request for Upsert {
    type Reply = Result<WriteAck, VectorError>;
    const TYPE: &'static str = "vector.upsert";
}
impl Request for DeletePoints {
    type Reply = Result<WriteAck, VectorError>;
    const TYPE: &'static str = "vector.delete_points";
}
impl Request for GetPoints {
    type Reply = Result<Vec<PointRecord>, VectorError>;
    const TYPE: &'static str = "vector.get_points";
}
impl Request for Search {
    type Reply = Result<SearchResult, VectorError>;
    const TYPE: &'static str = "vector.search";
}
impl Request for Count {
    type Reply = Result<u64, VectorError>;
    const TYPE: &'static str = "vector.count";
}
impl Request for Scroll {
    type Reply = Result<ScrollPage, VectorError>;
    const TYPE: &'static str = "vector.scroll";
}
impl Request for Snapshot {
    type Reply = Result<u64, VectorError>;
    const TYPE: &'static str = "vector.snapshot";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_round_trips_through_postcard() {
        let s = Search {
            collection: "docs".into(),
            queries: vec![SearchQuery {
                vector: vec![1.0, 2.0],
                limit: 3,
                offset: 0,
                ef: Some(64),
                filter: Some(Filter {
                    must: vec![Condition::Range {
                        key: "price".into(),
                        range: Range {
                            gte: Some(1.5),
                            ..Range::default()
                        },
                    }],
                    should: vec![Condition::MatchAny {
                        key: "tag".into(),
                        any: vec![MatchValue::Str("a".into()), MatchValue::Int(2)],
                    }],
                    must_not: vec![Condition::HasId(vec![PointId::Uuid(7)])],
                }),
                with_payload: true,
                with_vector: false,
                score_threshold: None,
            }],
            allow_partial: false,
            timeout_ms: 1000,
            consistency: Default::default(),
        };
        let bytes = postcard::to_stdvec(&s).expect("encode");
        let back: Search = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back.queries[0].filter, s.queries[0].filter);
        assert_eq!(back.queries[0].ef, Some(64));
    }

    #[test]
    fn uuid_displays_hyphenated() {
        let id = PointId::Uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    }
}
