//! The Raft log, vote and commit index in one redb file: every append is fsynced before
//! openraft is told it is durable.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Group, MemberId, StorageError, TypeConfig};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The redb-backed log store of one group; cheap to clone (one database handle).
pub struct LogStore<C = TypeConfig> {
    db: Arc<Database>,
    _group: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            _group: PhantomData,
        }
    }
}

impl<C> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn codec_err(e: postcard::Error) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

impl<C> LogStore<C> {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(LOGS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self {
            db: Arc::new(db),
            _group: PhantomData,
        })
    }

    /// Runs blocking redb work off the async workers (fsyncs take milliseconds).
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(write_err)?
    }

    fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StorageError> {
        let tx = db.begin_read().map_err(read_err)?;
        let t = tx.open_table(META).map_err(read_err)?;
        match t.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(postcard::from_bytes(v.value()).map_err(codec_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(
        db: &Database,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(value).map_err(codec_err)?;
        let mut tx = db.begin_write().map_err(write_err)?;
        tx.set_durability(durability).map_err(write_err)?;
        {
            let mut t = tx.open_table(META).map_err(write_err)?;
            t.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(e.saturating_add(1)),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl<C: Group> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(read_err)?;
            let t = tx.open_table(LOGS).map_err(read_err)?;
            let iter = match end {
                Some(end) if end <= start => return Ok(Vec::new()),
                Some(end) => t.range(start..end),
                None => t.range(start..),
            }
            .map_err(read_err)?;
            let mut out = Vec::new();
            for row in iter {
                let (_, v) = row.map_err(read_err)?;
                out.push(postcard::from_bytes::<C::Entry>(v.value()).map_err(codec_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl<C: Group> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        self.blocking(|db| {
            let last_purged: Option<LogId<MemberId>> = Self::get_meta(db, LAST_PURGED)?;
            let tx = db.begin_read().map_err(read_err)?;
            let t = tx.open_table(LOGS).map_err(read_err)?;
            let last = match t.last().map_err(read_err)? {
                Some((_, v)) => Some(
                    postcard::from_bytes::<C::Entry>(v.value())
                        .map_err(codec_err)?
                        .log_id,
                ),
                None => None,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last.or(last_purged),
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |db| Self::put_meta(db, VOTE, &vote, Durability::Immediate))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        self.blocking(|db| Self::get_meta(db, VOTE)).await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<MemberId>>,
    ) -> Result<(), StorageError> {
        // Not fsynced on its own: the next append's durable commit carries it, and a
        // lost commit index only means re-applying from the snapshot after a crash.
        self.blocking(move |db| Self::put_meta(db, COMMITTED, &committed, Durability::None))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MemberId>>, StorageError> {
        self.blocking(|db| Ok(Self::get_meta::<Option<LogId<MemberId>>>(db, COMMITTED)?.flatten()))
            .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|e| {
                Ok((
                    e.log_id.index,
                    postcard::to_allocvec(&e).map_err(codec_err)?,
                ))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let res = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(write_err)?;
                {
                    let mut t = tx.open_table(LOGS).map_err(write_err)?;
                    for (index, bytes) in &rows {
                        t.insert(*index, bytes.as_slice()).map_err(write_err)?;
                    }
                }
                // Default durability: the commit returns after fsync.
                tx.commit().map_err(write_err)
            })
            .await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> Result<(), StorageError> {
        let from = log_id.index;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(write_err)?;
            {
                let mut t = tx.open_table(LOGS).map_err(write_err)?;
                t.retain_in(from.., |_, _| false).map_err(write_err)?;
            }
            tx.commit().map_err(write_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let bytes = postcard::to_allocvec(&log_id).map_err(codec_err)?;
            let tx = db.begin_write().map_err(write_err)?;
            {
                let mut m = tx.open_table(META).map_err(write_err)?;
                m.insert(LAST_PURGED, bytes.as_slice()).map_err(write_err)?;
                let mut t = tx.open_table(LOGS).map_err(write_err)?;
                t.retain_in(..=log_id.index, |_, _| false)
                    .map_err(write_err)?;
            }
            tx.commit().map_err(write_err)
        })
        .await
    }
}
