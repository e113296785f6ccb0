//! The group's Prometheus series, fed from openraft's metrics channel.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome label of a proposal.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct Outcome {
    /// `ok` or the failure code.
    pub outcome: String,
}

/// Registered once per process (a restarted Raft actor reuses them).
#[derive(Clone, Debug)]
pub struct RaftMetrics {
    /// Current term (`abi_raft_term`).
    pub term: Gauge,
    /// 1 while this member leads (`abi_raft_is_leader`).
    pub is_leader: Gauge,
    /// Last applied (committed here) index (`abi_raft_commit_index`).
    pub commit_index: Gauge,
    /// Last index in the local log (`abi_raft_last_log_index`).
    pub last_log_index: Gauge,
    /// Log entries written here but not applied yet (`abi_raft_apply_lag`).
    pub apply_lag: Gauge,
    /// Times this member saw the leader change (`abi_raft_leader_changes_total`).
    pub leader_changes: Counter,
    /// Proposals handled here, by outcome (`abi_raft_proposals_total`).
    pub proposals: Family<Outcome, Counter>,
    /// Time from proposal to applied answer (`abi_raft_proposal_duration_seconds`).
    pub proposal_seconds: Histogram,
}

impl RaftMetrics {
    /// Registers the families in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            term: Gauge::default(),
            is_leader: Gauge::default(),
            commit_index: Gauge::default(),
            last_log_index: Gauge::default(),
            apply_lag: Gauge::default(),
            leader_changes: Counter::default(),
            proposals: Family::default(),
            proposal_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        };
        r.register("abi_raft_term", "Current Raft term", m.term.clone());
        r.register(
            "abi_raft_is_leader",
            "1 while this member leads the metadata group",
            m.is_leader.clone(),
        );
        r.register(
            "abi_raft_commit_index",
            "Highest log index applied on this member",
            m.commit_index.clone(),
        );
        r.register(
            "abi_raft_last_log_index",
            "Highest log index stored on this member",
            m.last_log_index.clone(),
        );
        r.register(
            "abi_raft_apply_lag",
            "Log entries stored but not yet applied on this member",
            m.apply_lag.clone(),
        );
        r.register(
            "abi_raft_leader_changes",
            "Leader changes seen by this member",
            m.leader_changes.clone(),
        );
        r.register(
            "abi_raft_proposals",
            "Metadata proposals handled by this member, by outcome",
            m.proposals.clone(),
        );
        r.register(
            "abi_raft_proposal_duration_seconds",
            "Time from a proposal to its applied answer",
            m.proposal_seconds.clone(),
        );
        m
    }
}
