//! The write-ahead log: records are appended and fsynced here before a sender is acknowledged,
//! and stay until the committer has turned them into Delta commits.
//!
//! Hand-written because what it must do is specific and small: group commit from many async
//! senders onto one fsync, segments that the committer seals and names by number (the number is
//! the exactly-once marker recorded in the Delta commit), and deletion only after that commit.
//! The WAL crates on crates.io either checkpoint through their own callbacks or are unmaintained.
//!
//! The segment files' format is in [`super::segment`].
//!
//! An entry may carry the sender's idempotency key; an append whose key was stored within the
//! dedup window is answered [`Stored::Duplicate`] without writing it again ([`super::dedup`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::dedup::{KeyFiles, Seen};
use super::disk::{Disk, FileSystem, SegmentFile};
use super::segment::{
    Entry, encode, frame, last_removed, read_segment, record_last_removed, segment_name, segments,
};
use crate::error::{Error, Result};

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The entry is on disk.
    New,
    /// An entry with the same key was stored before (a sender's retry); nothing was written.
    Duplicate,
}

/// Answers an append once its fate is durable.
type Done = oneshot::Sender<std::io::Result<Stored>>;

/// Appends go to one writer thread that fsyncs once for every batch of waiting appends.
enum Command {
    Append {
        frame: Vec<u8>,
        key: Option<(String, i64)>,
        done: Done,
    },
    /// Close the open segment; answers the number the next segment will have.
    Seal { done: oneshot::Sender<u64> },
}

/// A handle on the log; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    dir: PathBuf,
    commands: mpsc::UnboundedSender<Command>,
    pending: Arc<AtomicU64>,
    full: Arc<Notify>,
    keys: Arc<KeyFiles>,
}

impl Wal {
    /// Opens (creating) the log folder. Segments left by an earlier run stay for the committer;
    /// new appends go to a new segment after them. `commit_bytes` is the open segment's size at
    /// which [`Wal::full`] is notified; idempotency keys are remembered for `dedup_window`.
    ///
    /// Segment numbers never repeat: they are the exactly-once markers in the tables, so a
    /// number a table already records would be skipped. The next one is above every segment
    /// left, above the last one removed (kept in `last-removed`), and at least `min_next` (the
    /// caller's floor from the tables' markers, for a log folder that was lost).
    pub fn open(
        dir: &Path,
        commit_bytes: u64,
        dedup_window: Duration,
        min_next: u64,
    ) -> Result<Self> {
        Self::open_on(
            dir,
            commit_bytes,
            dedup_window,
            min_next,
            Box::new(FileSystem),
        )
    }

    /// [`Wal::open`], writing segments through `disk`.
    pub fn open_on(
        dir: &Path,
        commit_bytes: u64,
        dedup_window: Duration,
        min_next: u64,
        disk: Box<dyn Disk>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let existing = segments(dir)?;
        let next = existing
            .last()
            .map(|(seq, _)| seq + 1)
            .unwrap_or(1)
            .max(last_removed(dir)? + 1)
            .max(min_next);
        let mut pending = 0;
        for (_, path) in &existing {
            pending += std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
        }
        let window_us = i64::try_from(dedup_window.as_micros()).unwrap_or(i64::MAX);
        let keys = Arc::new(KeyFiles::new(dir, window_us));
        let now = now_us();
        let mut seen = Seen::new(window_us);
        if window_us > 0 {
            let mut known = keys.load(now)?;
            for (_, path) in &existing {
                let (entries, _) = read_segment(path)?;
                known.extend(
                    entries
                        .into_iter()
                        .filter_map(|e| Some((e.received_at, e.key?))),
                );
            }
            known.sort();
            for (at, key) in known {
                seen.insert(key, at);
            }
            seen.prune(now);
        }
        let pending = Arc::new(AtomicU64::new(pending));
        let full = Arc::new(Notify::new());
        let (commands, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            disk,
            next,
            open: None,
            commit_bytes,
            pending: pending.clone(),
            full: full.clone(),
            seen,
        };
        std::thread::Builder::new()
            .name("gamelake-wal".to_string())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::io(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            commands,
            pending,
            full,
            keys,
        })
    }

    /// Appends an entry; returns once it is on disk (fsynced), or once the earlier entry with
    /// the same key is.
    pub async fn append(&self, entry: &Entry) -> Result<Stored> {
        let frame = frame(&encode(entry)?);
        let key = entry.key.clone().map(|k| (k, entry.received_at));
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Append { frame, key, done })
            .map_err(|_| self.stopped())?;
        answer
            .await
            .map_err(|_| self.stopped())?
            .map_err(|e| Error::io(&self.dir, e))
    }

    /// Closes the open segment, so that every appended entry is in a segment numbered below the
    /// returned one.
    pub async fn seal(&self) -> Result<u64> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Seal { done })
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())
    }

    /// Closed segments numbered below `below`, oldest first.
    pub fn sealed(&self, below: u64) -> Result<Vec<(u64, PathBuf)>> {
        Ok(segments(&self.dir)?
            .into_iter()
            .filter(|(seq, _)| *seq < below)
            .collect())
    }

    /// Deletes a segment whose entries are all committed, after recording their idempotency
    /// keys (received at, key) so that a restart still knows them.
    pub fn remove(&self, path: &Path, keys: &[(i64, &str)]) -> Result<()> {
        self.keys.record(keys, now_us())?;
        if let Some(seq) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            record_last_removed(&self.dir, seq)?;
        }
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        self.pending.fetch_sub(
            len.min(self.pending.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Bytes acknowledged but not yet committed (and removed).
    pub fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Notified when the open segment reaches the commit size.
    pub fn full(&self) -> &Notify {
        &self.full
    }

    /// The log folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stopped(&self) -> Error {
        Error::Unavailable(format!(
            "the write-ahead log in {} stopped",
            self.dir.display()
        ))
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    disk: Box<dyn Disk>,
    next: u64,
    open: Option<(Box<dyn SegmentFile>, u64)>,
    commit_bytes: u64,
    pending: Arc<AtomicU64>,
    full: Arc<Notify>,
    seen: Seen,
}

/// Appends gathered for one write and fsync.
#[derive(Default)]
struct Batch {
    frames: Vec<u8>,
    waiting: Vec<(Done, Stored)>,
    keys: HashMap<String, i64>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = Batch::default();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { frame, key, done } => {
                        let repeated = key.as_ref().is_some_and(|(k, _)| {
                            self.seen.contains(k) || batch.keys.contains_key(k)
                        });
                        if repeated {
                            batch.waiting.push((done, Stored::Duplicate));
                        } else {
                            batch.frames.extend_from_slice(&frame);
                            batch.waiting.push((done, Stored::New));
                            batch.keys.extend(key);
                        }
                        if batch.frames.len() < 32 * 1024 * 1024 {
                            next = receiver.try_recv().ok();
                        }
                    }
                    Command::Seal { done } => {
                        self.flush(std::mem::take(&mut batch));
                        self.open = None;
                        let _ = done.send(self.next);
                        next = receiver.try_recv().ok();
                    }
                }
            }
            self.flush(batch);
        }
    }

    /// Writes a batch's frames and fsyncs, then answers every waiting sender. A duplicate is
    /// answered with the batch: its original is durable by then (earlier, or in this batch).
    fn flush(&mut self, batch: Batch) {
        let result = if batch.frames.is_empty() {
            Ok(())
        } else {
            self.write(&batch.frames)
        };
        if result.is_ok() {
            self.pending
                .fetch_add(batch.frames.len() as u64, Ordering::Relaxed);
            for (key, at) in batch.keys {
                self.seen.insert(key, at);
            }
            self.seen.prune(now_us());
        }
        for (done, stored) in batch.waiting {
            let _ = done.send(match &result {
                Ok(()) => Ok(stored),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
        if let Some((_, len)) = &self.open
            && *len >= self.commit_bytes
        {
            self.full.notify_one();
        }
    }

    fn write(&mut self, frames: &[u8]) -> std::io::Result<()> {
        if self.open.is_none() {
            let path = self.dir.join(segment_name(self.next));
            let file = self.disk.create(&path)?;
            self.next += 1;
            self.open = Some((file, 0));
        }
        let Some((file, len)) = self.open.as_mut() else {
            return Ok(());
        };
        // Durable before anyone is answered: the senders are acknowledged after this returns.
        let result = file.append(frames).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                *len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the torn frames off and continue in a new segment, so a later
                // acknowledged frame never sits behind a torn one.
                let _ = file.truncate(*len);
                self.open = None;
                Err(e)
            }
        }
    }
}

/// Now, in microseconds since 1970.
fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn entry(n: usize) -> Entry {
        Entry {
            table: "logs.events".to_string(),
            received_at: 1_700_000_000_000_000 + n as i64,
            records: (0..n)
                .map(|i| format!("{{\"i\":{i}}}").into_bytes())
                .collect(),
            key: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn appended_entries_are_read_back_after_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
        let appends = (1..=20).map(|n| {
            let wal = wal.clone();
            async move { wal.append(&entry(n)).await }
        });
        for result in futures::future::join_all(appends).await {
            result.unwrap();
        }
        let next = wal.seal().await.unwrap();
        let sealed = wal.sealed(next).unwrap();
        assert_eq!(sealed.len(), 1, "concurrent appends share one segment");
        let (entries, torn) = read_segment(&sealed[0].1).unwrap();
        assert_eq!(torn, 0);
        let mut sizes: Vec<usize> = entries.iter().map(|e| e.records.len()).collect();
        sizes.sort();
        assert_eq!(sizes, (1..=20).collect::<Vec<_>>());
        assert!(entries.contains(&entry(7)));
        assert_eq!(
            wal.pending_bytes(),
            std::fs::metadata(&sealed[0].1).unwrap().len()
        );
        wal.remove(&sealed[0].1, &[]).unwrap();
        assert_eq!(wal.pending_bytes(), 0);
    }

    #[tokio::test]
    async fn a_torn_tail_is_ignored_and_new_appends_go_to_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
            wal.append(&entry(3)).await.unwrap();
            wal.append(&entry(4)).await.unwrap();
        }
        let first = segments(dir.path()).unwrap()[0].1.clone();
        let whole = std::fs::metadata(&first).unwrap().len();
        // A crash in the middle of writing a third frame.
        let mut file = OpenOptions::new().append(true).open(&first).unwrap();
        file.write_all(&frame(&encode(&entry(5)).unwrap())[..30])
            .unwrap();
        drop(file);

        let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
        assert_eq!(wal.pending_bytes(), whole + 30);
        wal.append(&entry(6)).await.unwrap();
        let next = wal.seal().await.unwrap();
        let sealed = wal.sealed(next).unwrap();
        assert_eq!(sealed.len(), 2);
        let (entries, torn) = read_segment(&sealed[0].1).unwrap();
        assert_eq!((entries, torn), (vec![entry(3), entry(4)], 30));
        let (entries, _) = read_segment(&sealed[1].1).unwrap();
        assert_eq!(entries, vec![entry(6)]);
    }

    #[tokio::test]
    async fn a_repeated_key_is_stored_once_across_commit_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let keyed = |key: &str| Entry {
            key: Some(key.to_string()),
            received_at: now_us(),
            ..entry(2)
        };
        let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
        // Two senders retrying the same batch at once: one write.
        let (one, again) = (keyed("k1"), keyed("k1"));
        let (a, b) = tokio::join!(wal.append(&one), wal.append(&again));
        let mut answers = [a.unwrap(), b.unwrap()];
        answers.sort_by_key(|s| *s == Stored::Duplicate);
        assert_eq!(answers, [Stored::New, Stored::Duplicate]);
        assert_eq!(wal.append(&keyed("k2")).await.unwrap(), Stored::New);
        assert_eq!(wal.append(&entry(1)).await.unwrap(), Stored::New);
        assert_eq!(wal.append(&entry(1)).await.unwrap(), Stored::New, "no key");
        let next = wal.seal().await.unwrap();
        let (_, first) = wal.sealed(next).unwrap().remove(0);
        let (entries, _) = read_segment(&first).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].key.as_deref(), Some("k1"));
        drop(wal);

        // Restarted with the segment not yet committed: its keys are read from it.
        let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
        assert_eq!(wal.append(&keyed("k1")).await.unwrap(), Stored::Duplicate);
        let keys: Vec<(i64, &str)> = entries
            .iter()
            .filter_map(|e| Some((e.received_at, e.key.as_deref()?)))
            .collect();
        wal.remove(&first, &keys).unwrap();
        drop(wal);

        // Restarted after the commit: the keys come from the key file.
        let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
        assert_eq!(wal.append(&keyed("k2")).await.unwrap(), Stored::Duplicate);
        assert_eq!(wal.append(&keyed("k3")).await.unwrap(), Stored::New);
        drop(wal);
        // With no window, keys are not remembered.
        let wal = Wal::open(dir.path(), u64::MAX, Duration::ZERO, 0).unwrap();
        assert_eq!(wal.append(&keyed("k3")).await.unwrap(), Stored::New);
    }

    #[tokio::test]
    async fn segment_numbers_never_repeat_after_the_log_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), u64::MAX, HOUR, 0).unwrap();
        wal.append(&entry(1)).await.unwrap();
        let next = wal.seal().await.unwrap();
        let (seq, path) = wal.sealed(next).unwrap().remove(0);
        assert_eq!(seq, 1);
        wal.remove(&path, &[]).unwrap();
        drop(wal);
        // Empty folder: numbering goes on after the removed segment, or above a given floor.
        for (floor, expected) in [(0, 2), (40, 40)] {
            let wal = Wal::open(dir.path(), u64::MAX, HOUR, floor).unwrap();
            wal.append(&entry(1)).await.unwrap();
            let next = wal.seal().await.unwrap();
            let (seq, path) = wal.sealed(next).unwrap().remove(0);
            assert_eq!(seq, expected);
            wal.remove(&path, &[]).unwrap();
        }
    }

    /// A disk that loses, in a power cut, whatever was not synced: appended bytes stay in
    /// memory and reach the file only when synced.
    struct SyncedOnly;

    struct Buffered {
        file: std::fs::File,
        unsynced: Vec<u8>,
    }

    impl Disk for SyncedOnly {
        fn create(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(path)?;
            Ok(Box::new(Buffered {
                file,
                unsynced: Vec::new(),
            }))
        }
    }

    impl SegmentFile for Buffered {
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.unsynced.extend_from_slice(bytes);
            Ok(())
        }

        fn sync_data(&mut self) -> std::io::Result<()> {
            self.file.write_all(&self.unsynced)?;
            self.unsynced.clear();
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.unsynced.clear();
            self.file.set_len(len)
        }
    }

    #[tokio::test]
    async fn every_acknowledged_entry_was_synced_before_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open_on(dir.path(), u64::MAX, HOUR, 0, Box::new(SyncedOnly)).unwrap();
        let appends = (1..=30).map(|n| {
            let wal = wal.clone();
            async move { wal.append(&entry(n)).await }
        });
        for result in futures::future::join_all(appends).await {
            result.unwrap();
        }
        // A power cut now: only synced bytes are in the folder. Every acknowledged entry is.
        drop(wal);
        let mut sizes: Vec<usize> = segments(dir.path())
            .unwrap()
            .iter()
            .flat_map(|(_, path)| read_segment(path).unwrap().0)
            .map(|e| e.records.len())
            .collect();
        sizes.sort();
        assert_eq!(sizes, (1..=30).collect::<Vec<_>>());
    }
}
