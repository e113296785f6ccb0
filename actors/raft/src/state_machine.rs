//! The applied cluster metadata plus its snapshots: the state lives in memory and the
//! latest snapshot in one file beside the log, so a restarted member loads the snapshot
//! and openraft replays the committed log after it.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_protocol::raft::ClusterMeta;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::types::{Entry, Member, MemberId, StorageError, TypeConfig};

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// Last log entry applied.
    pub last_applied: Option<LogId<MemberId>>,
    /// Last membership config applied.
    pub membership: StoredMembership<MemberId, Member>,
    /// The metadata itself.
    pub meta: ClusterMeta,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<MemberId, Member>,
    data: Vec<u8>,
}

/// Read access to the applied metadata for the rest of the node.
#[derive(Clone, Debug)]
pub struct MetaView {
    state: Arc<RwLock<Applied>>,
    applied: watch::Receiver<u64>,
}

impl MetaView {
    /// A copy of the applied metadata.
    pub fn meta(&self) -> ClusterMeta {
        self.state.read().meta.clone()
    }

    /// Index of the last applied entry (0 before the first).
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Changes whenever an entry is applied or a snapshot installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// The state machine handed to openraft.
#[derive(Clone, Debug)]
pub struct StateMachine {
    state: Arc<RwLock<Applied>>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    dir: PathBuf,
    applied_tx: Arc<watch::Sender<u64>>,
    snapshots_built: Arc<Mutex<u64>>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

const SNAPSHOT_FILE: &str = "snapshot.bin";

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the snapshot stored there if any.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(sm_err)?;
        let (state, current) = match fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let snap: StoredSnapshot = postcard::from_bytes(&bytes).map_err(snap_err)?;
                let state: Applied = postcard::from_bytes(&snap.data).map_err(snap_err)?;
                (state, Some(snap))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Applied::default(), None),
            Err(e) => return Err(snap_err(e)),
        };
        let index = state.last_applied.map_or(0, |l| l.index);
        let (tx, _) = watch::channel(index);
        Ok(Self {
            state: Arc::new(RwLock::new(state)),
            current: Arc::new(Mutex::new(current)),
            dir: dir.to_path_buf(),
            applied_tx: Arc::new(tx),
            snapshots_built: Arc::new(Mutex::new(0)),
        })
    }

    /// A read handle for the node's other actors.
    pub fn view(&self) -> MetaView {
        MetaView {
            state: self.state.clone(),
            applied: self.applied_tx.subscribe(),
        }
    }

    /// Writes the snapshot file atomically (temp file, fsync, rename).
    fn persist(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(snap).map_err(snap_err)?;
        let tmp = self.dir.join("snapshot.tmp");
        let mut f = fs::File::create(&tmp).map_err(snap_err)?;
        f.write_all(&bytes).map_err(snap_err)?;
        f.sync_all().map_err(snap_err)?;
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE)).map_err(snap_err)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let s = self.state.read();
            (
                postcard::to_allocvec(&*s).map_err(snap_err)?,
                s.last_applied,
                s.membership.clone(),
            )
        };
        let n = {
            let mut n = self.snapshots_built.lock();
            *n += 1;
            *n
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let this = self.clone();
        let stored = tokio::task::spawn_blocking(move || this.persist(&stored).map(|()| stored))
            .await
            .map_err(snap_err)??;
        *self.current.lock() = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<MemberId>>, StoredMembership<MemberId, Member>), StorageError> {
        let s = self.state.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Option<Vec<u8>>>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let last = {
            let mut s = self.state.write();
            for e in entries {
                s.last_applied = Some(e.log_id);
                out.push(match e.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(cmds) => cmds.iter().map(|c| s.meta.apply(c)).collect(),
                    EntryPayload::Membership(m) => {
                        s.membership = StoredMembership::new(Some(e.log_id), m);
                        Vec::new()
                    }
                });
            }
            s.last_applied.map_or(0, |l| l.index)
        };
        self.applied_tx.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MemberId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let applied: Applied = postcard::from_bytes(&data).map_err(snap_err)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let this = self.clone();
        let stored = tokio::task::spawn_blocking(move || this.persist(&stored).map(|()| stored))
            .await
            .map_err(snap_err)??;
        let index = applied.last_applied.map_or(0, |l| l.index);
        *self.state.write() = applied;
        *self.current.lock() = Some(stored);
        self.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current.lock().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
