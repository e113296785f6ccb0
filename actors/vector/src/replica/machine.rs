//! A replicated shard's state machine: the local [`Shard`] plus the last applied log id
//! and membership, kept in a small file beside the shard.
//!
//! Applying is idempotent in log order (an upsert replaces the whole point, a delete
//! removes it), so the applied file may lag the shard: after a crash the entries after
//! it are applied again. It never runs ahead: it is written after the shard's WAL made
//! the batch durable.

// openraft's trait signatures fix `StorageError` (224 bytes) as the error type.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_protocol::vector::{PointInput, VectorError};
use abi_raft::{Member, MemberId};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::group::{ShardEntry, ShardGroup, ShardOp};
use crate::shard::Shard;

const APPLIED_FILE: &str = "raft-applied.bin";
/// Points per upsert while installing a snapshot (bounds the WAL record size).
const INSTALL_CHUNK: usize = 1024;

type Error = StorageError<MemberId>;

/// A built snapshot: its metadata and the serialized points.
type Built = (SnapshotMeta<MemberId, Member>, Vec<u8>);

/// What the applied file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<MemberId>>,
    membership: StoredMembership<MemberId, Member>,
}

/// The state machine handed to openraft (cheap to clone: shared handles).
#[derive(Clone)]
pub struct ShardMachine {
    shard: Arc<Shard>,
    dir: PathBuf,
    applied: Arc<Mutex<Applied>>,
    current: Arc<Mutex<Option<Built>>>,
    built: Arc<Mutex<u64>>,
    /// Serializes writes of the applied file: openraft builds snapshots while it applies.
    file: Arc<Mutex<()>>,
}

fn sm_err(e: impl std::error::Error + 'static) -> Error {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> Error {
    StorageIOError::write_snapshot(None, &e).into()
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

fn vec_err(e: VectorError) -> Error {
    sm_err(Msg(e.to_string()))
}

impl ShardMachine {
    /// The state machine of the shard stored in `dir` (already opened as `shard`).
    pub fn open(shard: Arc<Shard>, dir: &Path) -> Result<Self, Error> {
        let applied = match fs::read(dir.join(APPLIED_FILE)) {
            Ok(bytes) => postcard::from_bytes(&bytes).map_err(sm_err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Applied::default(),
            Err(e) => return Err(sm_err(e)),
        };
        Ok(Self {
            shard,
            dir: dir.to_path_buf(),
            applied: Arc::new(Mutex::new(applied)),
            current: Arc::new(Mutex::new(None)),
            built: Arc::new(Mutex::new(0)),
            file: Arc::new(Mutex::new(())),
        })
    }

    /// Index of the last applied entry (0 before the first).
    pub fn applied_index(&self) -> u64 {
        self.applied.lock().last_applied.map_or(0, |l| l.index)
    }

    /// Writes the applied file atomically; `durable` adds the fsyncs (before a snapshot
    /// lets openraft purge the log behind it).
    fn save_applied(&self, a: &Applied, durable: bool) -> Result<(), Error> {
        let _one_writer = self.file.lock();
        let dir = &self.dir;
        let bytes = postcard::to_allocvec(a).map_err(sm_err)?;
        let tmp = dir.join("raft-applied.tmp");
        let mut f = fs::File::create(&tmp).map_err(sm_err)?;
        f.write_all(&bytes).map_err(sm_err)?;
        if durable {
            f.sync_all().map_err(sm_err)?;
        }
        fs::rename(&tmp, dir.join(APPLIED_FILE)).map_err(sm_err)?;
        if durable {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(sm_err)?;
        }
        Ok(())
    }

    /// Every point of the shard, serialized: the snapshot's data.
    fn dump(shard: &Shard) -> Result<Vec<u8>, Error> {
        let page = shard
            .scroll(None, usize::MAX, None, true, true)
            .map_err(vec_err)?;
        let points: Vec<PointInput> = page
            .points
            .into_iter()
            .map(|p| PointInput {
                id: p.id,
                vector: p.vector.unwrap_or_default(),
                payload_json: p.payload_json,
            })
            .collect();
        postcard::to_allocvec(&points).map_err(snap_err)
    }

    /// Builds a snapshot of the current state on a blocking thread.
    async fn snapshot_now(&self) -> Result<(SnapshotMeta<MemberId, Member>, Vec<u8>), Error> {
        let this = self.clone();
        let n = {
            let mut n = self.built.lock();
            *n += 1;
            *n
        };
        tokio::task::spawn_blocking(move || {
            // The data may run ahead of `applied` (applies go on meanwhile): replaying the
            // entries after it over the data still ends in the same state, since every
            // write replaces or removes whole points.
            let applied = this.applied.lock().clone();
            let data = Self::dump(&this.shard)?;
            // The log behind this snapshot may be purged once it is returned: the
            // applied position it stands for must survive a crash first.
            let latest = this.applied.lock().clone();
            this.save_applied(&latest, true)?;
            let snapshot_id = match applied.last_applied {
                Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
                None => format!("none-{n}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership,
                snapshot_id,
            };
            Ok((meta, data))
        })
        .await
        .map_err(snap_err)?
    }
}

impl RaftSnapshotBuilder<ShardGroup> for ShardMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ShardGroup>, Error> {
        let (meta, data) = self.snapshot_now().await?;
        *self.current.lock() = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<ShardGroup> for ShardMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<MemberId>>, StoredMembership<MemberId, Member>), Error> {
        let a = self.applied.lock();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Result<(), VectorError>>, Error>
    where
        I: IntoIterator<Item = ShardEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<ShardEntry> = entries.into_iter().collect();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(entries.len());
            let mut next = this.applied.lock().clone();
            let mut seq = None;
            for e in entries {
                next.last_applied = Some(e.log_id);
                let r = match e.payload {
                    EntryPayload::Blank => Ok(()),
                    EntryPayload::Membership(m) => {
                        next.membership = StoredMembership::new(Some(e.log_id), m);
                        Ok(())
                    }
                    EntryPayload::Normal(op) => {
                        let r = match op {
                            ShardOp::Upsert(points) => this.shard.upsert(points),
                            ShardOp::Delete(ids) => this.shard.delete(ids),
                        };
                        match r {
                            Ok(s) => {
                                seq = Some(s);
                                Ok(())
                            }
                            // Disk trouble must not be skipped: openraft stops the group and
                            // the supervisor restarts the replica, which applies it again.
                            Err(VectorError::Storage(m)) => return Err(sm_err(Msg(m))),
                            // A refused write is refused the same way on every replica.
                            Err(other) => Err(other),
                        }
                    }
                };
                out.push(r);
            }
            if let Some(s) = seq {
                this.shard.sync_to(s).map_err(vec_err)?;
            }
            *this.applied.lock() = next.clone();
            this.save_applied(&next, false)?;
            Ok(out)
        })
        .await
        .map_err(sm_err)?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemberId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let data = snapshot.into_inner();
        let points: Vec<PointInput> = postcard::from_bytes(&data).map_err(snap_err)?;
        let this = self.clone();
        let next = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let saved = next.clone();
        tokio::task::spawn_blocking(move || {
            // Replace the shard's contents: drop what the snapshot lacks, then write it.
            let keep: BTreeSet<_> = points.iter().map(|p| p.id).collect();
            let have = this
                .shard
                .scroll(None, usize::MAX, None, false, false)
                .map_err(vec_err)?;
            let stale: Vec<_> = have
                .points
                .into_iter()
                .map(|p| p.id)
                .filter(|id| !keep.contains(id))
                .collect();
            let mut seq = None;
            if !stale.is_empty() {
                seq = Some(this.shard.delete(stale).map_err(vec_err)?);
            }
            let mut points = points;
            while !points.is_empty() {
                let rest = points.split_off(points.len().min(INSTALL_CHUNK));
                seq = Some(this.shard.upsert(points).map_err(vec_err)?);
                points = rest;
            }
            if let Some(s) = seq {
                this.shard.sync_to(s).map_err(vec_err)?;
            }
            this.save_applied(&saved, true)
        })
        .await
        .map_err(snap_err)??;
        *self.applied.lock() = next;
        *self.current.lock() = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<ShardGroup>>, Error> {
        let cached = self.current.lock().clone();
        let (meta, data) = match cached {
            Some(c) => c,
            // None kept in memory (fresh start): one of the current state stands in.
            None if self.applied.lock().last_applied.is_some() => {
                let c = self.snapshot_now().await?;
                *self.current.lock() = Some(c.clone());
                c
            }
            None => return Ok(None),
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use abi_protocol::vector::{Distance, FsyncPolicy, HnswParams, PointId};
    use openraft::{CommittedLeaderId, Entry};

    use super::*;
    use crate::shard::ShardConfig;

    fn cfg() -> ShardConfig {
        ShardConfig::new(
            2,
            Distance::Euclid,
            HnswParams::default(),
            FsyncPolicy::Always,
        )
    }

    fn entry(index: u64, op: ShardOp) -> ShardEntry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
            payload: EntryPayload::Normal(op),
        }
    }

    fn points(ids: std::ops::Range<u64>) -> Vec<PointInput> {
        ids.map(|i| PointInput {
            id: PointId::Num(i),
            vector: vec![i as f32, 1.0],
            payload_json: None,
        })
        .collect()
    }

    fn ids(shard: &Shard) -> Vec<PointId> {
        let page = shard.scroll(None, usize::MAX, None, false, false);
        page.map(|p| p.points.into_iter().map(|p| p.id).collect())
            .unwrap_or_default()
    }

    fn open(dir: &Path) -> (Arc<Shard>, ShardMachine) {
        let shard = Arc::new(Shard::open(dir, cfg()).expect("shard"));
        let sm = ShardMachine::open(shard.clone(), dir).expect("machine");
        (shard, sm)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn applies_survive_reopen_and_snapshots_replace_contents() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
        let (a, mut sm) = open(&a_dir);
        let out = sm
            .apply(vec![
                entry(1, ShardOp::Upsert(points(0..10))),
                entry(2, ShardOp::Delete(vec![PointId::Num(3)])),
                // A refused write is an outcome, not a storage failure.
                entry(
                    3,
                    ShardOp::Upsert(vec![PointInput {
                        id: PointId::Num(99),
                        vector: vec![1.0],
                        payload_json: None,
                    }]),
                ),
            ])
            .await
            .expect("apply");
        assert!(
            out[0].is_ok() && out[1].is_ok() && out[2].is_err(),
            "{out:?}"
        );
        assert_eq!(a.len(), 9);
        assert_eq!(sm.applied_index(), 3);
        drop((a, sm));

        // Reopened: the shard and the applied position are back.
        let (a, mut sm) = open(&a_dir);
        assert_eq!(a.len(), 9);
        let (last, _) = sm.applied_state().await.expect("state");
        assert_eq!(last.map(|l| l.index), Some(3));

        // A replica holding stale points takes the snapshot's contents exactly.
        let snap = sm
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("some");
        let (b, mut other) = open(&b_dir);
        other
            .apply(vec![entry(1, ShardOp::Upsert(points(50..55)))])
            .await
            .expect("apply");
        other
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .expect("install");
        assert_eq!(ids(&b), ids(&a));
        assert_eq!(other.applied_index(), 3);
        drop((b, other));
        let (b, _) = open(&b_dir);
        assert_eq!(ids(&b), ids(&a), "installed contents are durable");
    }
}
