//! Write-ahead log: segmented files of checksummed records, with group commit.
//!
//! Frame layout (little-endian): `len: u32 | crc32: u32 | seq: u64 | payload[len]`, where the CRC
//! covers `seq` and the payload. Segments are named after their first sequence number. On open, a
//! damaged record at the very end of the last segment is a torn write (the process died mid-append)
//! and is cut off; a damaged record with intact data after it, or a gap in sequence numbers, is
//! corruption and is reported: replay never skips a record silently.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Bytes before the payload of each record.
const HEADER: usize = 16;
/// A record larger than this is refused on write and treated as damage on read.
pub const MAX_RECORD: usize = 256 << 20;

/// What went wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("wal i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record in the middle of the log is damaged; the log cannot be replayed past it.
    #[error("wal corrupt in {segment} at byte {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged frame.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A record is larger than [`MAX_RECORD`].
    #[error("wal record of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// An earlier fsync failed; the log refuses further work (the actor must restart and replay).
    #[error("wal is poisoned after a failed fsync")]
    Poisoned,
    /// The replay callback refused a record.
    #[error("replay of record {seq} failed: {reason}")]
    Replay {
        /// Sequence number of the record.
        seq: u64,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When appended records become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync as soon as a writer asks; concurrent writers share it.
    Immediate,
    /// The first writer waits this long so that others can share its fsync.
    Group(Duration),
    /// Never fsync.
    Never,
}

/// Tuning of a log.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Roll to a new segment beyond this size.
    pub segment_bytes: u64,
    /// Durability mode.
    pub sync: SyncMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            sync: SyncMode::Immediate,
        }
    }
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
}

struct Writer {
    file: Arc<File>,
    segments: Vec<Segment>,
    size: u64,
    next_seq: u64,
}

struct SyncState {
    synced: u64,
    syncing: bool,
    poisoned: bool,
}

/// An open log, ready for appends. Thread-safe: appends are serialised, fsyncs shared.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        let Ok(first_seq) = stem.parse::<u64>() else {
            continue;
        };
        segs.push(Segment {
            first_seq,
            path: entry.path(),
        });
    }
    segs.sort_by_key(|s| s.first_seq);
    Ok(segs)
}

fn crc_of(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Callback receiving each replayed record.
pub type ReplayFn<'a> = dyn FnMut(u64, &[u8]) -> Result<(), WalError> + 'a;

/// Outcome of scanning one segment.
enum ScanEnd {
    /// Every byte was a good record.
    Clean,
    /// Damage from this offset to the end of the file (a torn tail if this is the last segment).
    TornAt(u64, String),
}

/// Reads the records of one segment, calling `f` for each; stops at the first damaged frame.
fn scan_segment(
    seg: &Segment,
    expect_seq: &mut u64,
    f: &mut ReplayFn<'_>,
) -> Result<(ScanEnd, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(&seg.path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io_err(&seg.path))?;
    let mut off = 0usize;
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        segment: seg.path.clone(),
        offset: offset as u64,
        reason,
    };
    while off < bytes.len() {
        let rest = &bytes[off..];
        if rest.len() < HEADER {
            return Ok((
                ScanEnd::TornAt(off as u64, "short header".into()),
                off as u64,
            ));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        if len > MAX_RECORD || rest.len() < HEADER + len {
            return Ok((
                ScanEnd::TornAt(
                    off as u64,
                    format!("record of {len} bytes runs past the end"),
                ),
                off as u64,
            ));
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc_of(seq, payload) != crc {
            let end = off + HEADER + len;
            if end == bytes.len() || bytes[end..].iter().all(|&b| b == 0) {
                return Ok((
                    ScanEnd::TornAt(off as u64, "checksum mismatch".into()),
                    off as u64,
                ));
            }
            return Err(corrupt(
                off,
                format!("checksum mismatch on record (seq field {seq}) followed by more data"),
            ));
        }
        if seq != *expect_seq {
            return Err(corrupt(
                off,
                format!("sequence gap: expected {}, found {seq}", *expect_seq),
            ));
        }
        f(seq, payload)?;
        *expect_seq += 1;
        off += HEADER + len;
    }
    Ok((ScanEnd::Clean, off as u64))
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replaying every record with `seq > after` through
    /// `replay` in order. A torn tail is cut; corruption is an error. `after` is the sequence
    /// number a snapshot already covers (0 for none); sequence numbers start at 1.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        after: u64,
        replay: &mut ReplayFn<'_>,
    ) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = list_segments(dir)?;
        // Replay starts at the first segment; records up to `after` are checked but not applied.
        let mut expect = segments.first().map(|s| s.first_seq).unwrap_or(after + 1);
        if expect > after + 1 {
            return Err(WalError::Corrupt {
                segment: segments[0].path.clone(),
                offset: 0,
                reason: format!(
                    "log starts at record {expect} but the snapshot covers only up to {after}"
                ),
            });
        }
        let n = segments.len();
        let mut last_size = 0;
        for (i, seg) in segments.iter().enumerate() {
            if seg.first_seq != expect {
                return Err(WalError::Corrupt {
                    segment: seg.path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at {} but {expect} was expected",
                        seg.first_seq
                    ),
                });
            }
            let mut apply = |seq: u64, p: &[u8]| if seq > after { replay(seq, p) } else { Ok(()) };
            let (end, good) = scan_segment(seg, &mut expect, &mut apply)?;
            last_size = good;
            if let ScanEnd::TornAt(off, reason) = end {
                if i + 1 != n {
                    return Err(WalError::Corrupt {
                        segment: seg.path.clone(),
                        offset: off,
                        reason: format!("{reason} in a segment that is not the last"),
                    });
                }
                tracing::warn!(segment = %seg.path.display(), offset = off, %reason, "cutting torn wal tail");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                f.set_len(off).map_err(io_err(&seg.path))?;
                f.sync_all().map_err(io_err(&seg.path))?;
            }
        }
        let next_seq = expect.max(after + 1);
        let file = if let Some(last) = segments.last() {
            OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(io_err(&last.path))?
        } else {
            let path = dir.join(segment_name(next_seq));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            sync_dir(dir)?;
            segments.push(Segment {
                first_seq: next_seq,
                path,
            });
            last_size = 0;
            f
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            opts,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                segments,
                size: last_size,
                next_seq,
            }),
            sync: Mutex::new(SyncState {
                synced: next_seq - 1,
                syncing: false,
                poisoned: false,
            }),
            synced_cv: Condvar::new(),
        })
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.writer.lock().next_seq
    }

    /// Appends one record (not yet durable: call [`Wal::sync_to`]) and returns its sequence number.
    pub fn append(&self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > MAX_RECORD {
            return Err(WalError::TooLarge(payload.len()));
        }
        if self.sync.lock().poisoned {
            return Err(WalError::Poisoned);
        }
        let mut w = self.writer.lock();
        if w.size >= self.opts.segment_bytes {
            self.roll(&mut w)?;
        }
        let seq = w.next_seq;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc_of(seq, payload).to_le_bytes());
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(payload);
        let path = &w.segments.last().expect("a segment is always open").path;
        if let Err(e) = (&*w.file).write_all(&frame) {
            // A partial frame may be on disk: poison so nothing is appended after it.
            self.sync.lock().poisoned = true;
            return Err(io_err(path)(e));
        }
        w.size += frame.len() as u64;
        w.next_seq += 1;
        Ok(seq)
    }

    /// Starts a new segment; the old one is made durable first so that sync state stays simple.
    fn roll(&self, w: &mut Writer) -> Result<(), WalError> {
        if self.opts.sync != SyncMode::Never {
            let old = &w.segments.last().expect("a segment is always open").path;
            w.file.sync_data().map_err(io_err(old))?;
        }
        let path = self.dir.join(segment_name(w.next_seq));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        w.file = Arc::new(f);
        w.segments.push(Segment {
            first_seq: w.next_seq,
            path,
        });
        w.size = 0;
        Ok(())
    }

    /// Returns once every record up to `seq` is durable under the log's [`SyncMode`]. Concurrent
    /// callers share one fsync (group commit).
    pub fn sync_to(&self, seq: u64) -> Result<(), WalError> {
        if self.opts.sync == SyncMode::Never {
            return Ok(());
        }
        let mut st = self.sync.lock();
        loop {
            if st.poisoned {
                return Err(WalError::Poisoned);
            }
            if st.synced >= seq {
                return Ok(());
            }
            if !st.syncing {
                st.syncing = true;
                break;
            }
            self.synced_cv.wait(&mut st);
        }
        drop(st);
        if let SyncMode::Group(window) = self.opts.sync {
            std::thread::sleep(window);
        }
        let (file, upto, path) = {
            let w = self.writer.lock();
            let path = w.segments.last().expect("segment").path.clone();
            (Arc::clone(&w.file), w.next_seq - 1, path)
        };
        let res = file.sync_data().map_err(io_err(&path));
        let mut st = self.sync.lock();
        st.syncing = false;
        match &res {
            Ok(()) => st.synced = st.synced.max(upto),
            Err(_) => st.poisoned = true,
        }
        self.synced_cv.notify_all();
        res
    }

    /// Drops segments whose records are all `<= upto` (covered by a snapshot). The open segment
    /// is rolled first when it holds only covered records, so that it can go too.
    pub fn truncate_through(&self, upto: u64) -> Result<usize, WalError> {
        let mut w = self.writer.lock();
        if w.next_seq - 1 <= upto && w.size > 0 {
            self.roll(&mut w)?;
        }
        let mut removed = 0;
        while w.segments.len() > 1 && w.segments[1].first_seq <= upto + 1 {
            let seg = w.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.writer.lock().segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Replayed = Vec<(u64, Vec<u8>)>;

    fn collect(dir: &Path, after: u64) -> Result<(Wal, Replayed), WalError> {
        let mut got = Vec::new();
        let wal = Wal::open(
            dir,
            WalOptions {
                segment_bytes: 200,
                sync: SyncMode::Immediate,
            },
            after,
            &mut |seq, p| {
                got.push((seq, p.to_vec()));
                Ok(())
            },
        )?;
        Ok((wal, got))
    }

    fn write_n(wal: &Wal, n: usize) {
        for i in 0..n {
            let seq = wal
                .append(format!("record-{i:04}").as_bytes())
                .expect("append");
            wal.sync_to(seq).expect("sync");
        }
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .expect("list")
            .into_iter()
            .map(|s| s.path)
            .collect()
    }

    #[test]
    fn records_survive_reopen_across_segments() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, got) = collect(tmp.path(), 0).expect("open");
        assert!(got.is_empty());
        write_n(&wal, 30);
        assert!(wal.segment_count() > 2, "segment_bytes=200 must roll");
        drop(wal);
        let (wal, got) = collect(tmp.path(), 0).expect("reopen");
        assert_eq!(got.len(), 30);
        assert_eq!(got[29], (30, b"record-0029".to_vec()));
        assert_eq!(wal.next_seq(), 31);
        // After a snapshot at 12 only 13.. are replayed.
        drop(wal);
        let (_wal, got) = collect(tmp.path(), 12).expect("reopen after");
        assert_eq!(got.first().map(|g| g.0), Some(13));
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, _) = collect(tmp.path(), 0).expect("open");
        write_n(&wal, 5);
        drop(wal);
        let last = segments(tmp.path()).pop().expect("segment");
        let len = fs::metadata(&last).expect("meta").len();
        // Chop the last record in half, as a crash mid-write would.
        OpenOptions::new()
            .write(true)
            .open(&last)
            .expect("open")
            .set_len(len - 5)
            .expect("truncate");
        let (wal, got) = collect(tmp.path(), 0).expect("torn tail is not an error");
        assert_eq!(got.len(), 4);
        assert_eq!(wal.next_seq(), 5);
        let seq = wal.append(b"after").expect("append");
        assert_eq!(seq, 5);
        wal.sync_to(seq).expect("sync");
        drop(wal);
        let (_, got) = collect(tmp.path(), 0).expect("reopen");
        assert_eq!(got.last().expect("last").1, b"after".to_vec());
    }

    #[test]
    fn garbage_last_record_is_torn_tail() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, _) = collect(tmp.path(), 0).expect("open");
        write_n(&wal, 3);
        drop(wal);
        let last = segments(tmp.path()).pop().expect("segment");
        let mut bytes = fs::read(&last).expect("read");
        let n = bytes.len();
        bytes[n - 1] ^= 0xff; // flip a payload byte of the final record
        fs::write(&last, &bytes).expect("write");
        let (_, got) = collect(tmp.path(), 0).expect("torn tail");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn corrupt_record_in_the_middle_is_reported() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, _) = collect(tmp.path(), 0).expect("open");
        write_n(&wal, 30);
        drop(wal);
        // Damage the first segment: a record with good data after it.
        let first = segments(tmp.path()).remove(0);
        let mut bytes = fs::read(&first).expect("read");
        bytes[HEADER + 2] ^= 0x55;
        fs::write(&first, &bytes).expect("write");
        let err = collect(tmp.path(), 0).expect_err("must fail");
        assert!(matches!(err, WalError::Corrupt { offset: 0, .. }), "{err}");

        // The same damage in the middle of the last segment is also corruption, not a tail.
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, _) = collect(tmp.path(), 0).expect("open");
        write_n(&wal, 3);
        drop(wal);
        let last = segments(tmp.path()).pop().expect("segment");
        let mut bytes = fs::read(&last).expect("read");
        bytes[HEADER + 1] ^= 0x01;
        fs::write(&last, &bytes).expect("write");
        let err = collect(tmp.path(), 0).expect_err("must fail");
        assert!(err.to_string().contains("followed by more data"), "{err}");
    }

    #[test]
    fn missing_segment_is_a_gap() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, _) = collect(tmp.path(), 0).expect("open");
        write_n(&wal, 30);
        drop(wal);
        let segs = segments(tmp.path());
        fs::remove_file(&segs[1]).expect("rm");
        let err = collect(tmp.path(), 0).expect_err("must fail");
        assert!(err.to_string().contains("expected"), "{err}");
    }

    #[test]
    fn truncation_after_snapshot_drops_covered_segments() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (wal, _) = collect(tmp.path(), 0).expect("open");
        write_n(&wal, 30);
        let before = wal.segment_count();
        let removed = wal.truncate_through(30).expect("truncate");
        assert_eq!(removed, before, "everything is covered");
        assert_eq!(wal.segment_count(), 1);
        write_n(&wal, 2);
        drop(wal);
        let (wal, got) = collect(tmp.path(), 30).expect("reopen");
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![31, 32]);
        assert_eq!(wal.next_seq(), 33);
        // Opening with an older snapshot than the log start is refused, not silently accepted.
        drop(wal);
        assert!(collect(tmp.path(), 5).is_err());
    }

    #[test]
    fn group_commit_shares_fsyncs_between_threads() {
        let tmp = tempfile::tempdir().expect("tmp");
        let wal = Wal::open(
            tmp.path(),
            WalOptions {
                segment_bytes: 1 << 20,
                sync: SyncMode::Group(Duration::from_millis(5)),
            },
            0,
            &mut |_, _| Ok(()),
        )
        .expect("open");
        std::thread::scope(|s| {
            for t in 0..4 {
                let wal = &wal;
                s.spawn(move || {
                    for i in 0..10 {
                        let seq = wal.append(format!("{t}-{i}").as_bytes()).expect("append");
                        wal.sync_to(seq).expect("sync");
                    }
                });
            }
        });
        assert_eq!(wal.next_seq(), 41);
        drop(wal);
        let (_, got) = collect(tmp.path(), 0).expect("reopen");
        assert_eq!(got.len(), 40);
    }
}
