//! The write-ahead log: records are appended and fsynced here before a sender is acknowledged,
//! and stay until the committer has turned them into Delta commits.
//!
//! Hand-written because what it must do is specific and small: group commit from many async
//! senders onto one fsync, segments that the committer seals and names by number (the number is
//! the exactly-once marker recorded in the Delta commit), and deletion only after that commit.
//! The WAL crates on crates.io either checkpoint through their own callbacks or are unmaintained.
//!
//! A segment `<dir>/<seq:020>.wal` is a sequence of frames `[len u32 LE][crc32 u32 LE][payload]`.
//! A frame whose length or checksum does not match ends the segment: it was torn by a crash
//! before its fsync, so it was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::{Error, Result};

/// Records of one request for one table, as the sender wrote them (JSON text each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `schema.table`.
    pub table: String,
    /// When the request arrived, microseconds since 1970 (UTC).
    pub received_at: i64,
    /// The records, each the bytes of one JSON value (possibly invalid: it is judged at commit).
    pub records: Vec<Vec<u8>>,
}

/// Appends go to one writer thread that fsyncs once for every batch of waiting appends.
enum Command {
    Append {
        frame: Vec<u8>,
        done: oneshot::Sender<std::io::Result<()>>,
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
}

impl Wal {
    /// Opens (creating) the log folder. Segments left by an earlier run stay for the committer;
    /// new appends go to a new segment after them. `commit_bytes` is the open segment's size at
    /// which [`Wal::full`] is notified.
    pub fn open(dir: &Path, commit_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let existing = segments(dir)?;
        let next = existing.last().map(|(seq, _)| seq + 1).unwrap_or(1);
        let mut pending = 0;
        for (_, path) in &existing {
            pending += std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
        }
        let pending = Arc::new(AtomicU64::new(pending));
        let full = Arc::new(Notify::new());
        let (commands, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            next,
            open: None,
            commit_bytes,
            pending: pending.clone(),
            full: full.clone(),
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
        })
    }

    /// Appends an entry; returns once it is on disk (fsynced).
    pub async fn append(&self, entry: &Entry) -> Result<()> {
        let frame = frame(&encode(entry));
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Append { frame, done })
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

    /// Deletes a segment whose entries are all committed.
    pub fn remove(&self, path: &Path) -> Result<()> {
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
        Error::Unsupported(format!(
            "the write-ahead log in {} stopped",
            self.dir.display()
        ))
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    next: u64,
    open: Option<(File, u64)>,
    commit_bytes: u64,
    pending: Arc<AtomicU64>,
    full: Arc<Notify>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut frames = Vec::new();
            let mut waiting = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { frame, done } => {
                        frames.extend_from_slice(&frame);
                        waiting.push(done);
                        if frames.len() < 32 * 1024 * 1024 {
                            next = receiver.try_recv().ok();
                        }
                    }
                    Command::Seal { done } => {
                        self.flush(&frames, waiting.drain(..));
                        frames.clear();
                        self.open = None;
                        let _ = done.send(self.next);
                        next = receiver.try_recv().ok();
                    }
                }
            }
            self.flush(&frames, waiting.into_iter());
        }
    }

    /// Writes frames and fsyncs, then answers every waiting sender.
    fn flush(
        &mut self,
        frames: &[u8],
        waiting: impl Iterator<Item = oneshot::Sender<std::io::Result<()>>>,
    ) {
        if frames.is_empty() {
            return;
        }
        let result = self.write(frames);
        if result.is_ok() {
            self.pending
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
        for done in waiting {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
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
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.next += 1;
            self.open = Some((file, 0));
        }
        let Some((file, len)) = self.open.as_mut() else {
            return Ok(());
        };
        let result = file.write_all(frames).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                *len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the torn frames off and continue in a new segment, so a later
                // acknowledged frame never sits behind a torn one.
                let _ = file.set_len(*len);
                let _ = file.sync_all();
                self.open = None;
                Err(e)
            }
        }
    }
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// The segments in a folder, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, item.path()));
    }
    out.sort();
    Ok(out)
}

/// Reads a segment's entries. Returns them and the number of bytes of a torn tail (ignored).
pub fn read_segment(path: &Path) -> Result<(Vec<Entry>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some((payload, next)) = next_frame(&bytes, at) {
        match decode(payload) {
            Some(entry) => entries.push(entry),
            None => break,
        }
        at = next;
    }
    Ok((entries, bytes.len() - at))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of the frame at `at` and where the next frame starts, if the frame is whole.
fn next_frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(at + 8..at + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + 8 + len))
}

fn encode(entry: &Entry) -> Vec<u8> {
    let size: usize = entry.records.iter().map(|r| r.len() + 4).sum();
    let mut out = Vec::with_capacity(size + entry.table.len() + 16);
    out.extend_from_slice(&(entry.table.len() as u16).to_le_bytes());
    out.extend_from_slice(entry.table.as_bytes());
    out.extend_from_slice(&entry.received_at.to_le_bytes());
    out.extend_from_slice(&(entry.records.len() as u32).to_le_bytes());
    for record in &entry.records {
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    }
    out
}

fn decode(payload: &[u8]) -> Option<Entry> {
    let mut rest = payload;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let table_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let table = String::from_utf8(take(table_len)?.to_vec()).ok()?;
    let received_at = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let mut records = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        records.push(take(len)?.to_vec());
    }
    Some(Entry {
        table,
        received_at,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        Entry {
            table: "logs.events".to_string(),
            received_at: 1_700_000_000_000_000 + n as i64,
            records: (0..n)
                .map(|i| format!("{{\"i\":{i}}}").into_bytes())
                .collect(),
        }
    }

    #[tokio::test]
    async fn appended_entries_are_read_back_after_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), u64::MAX).unwrap();
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
        wal.remove(&sealed[0].1).unwrap();
        assert_eq!(wal.pending_bytes(), 0);
    }

    #[tokio::test]
    async fn a_torn_tail_is_ignored_and_new_appends_go_to_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let wal = Wal::open(dir.path(), u64::MAX).unwrap();
            wal.append(&entry(3)).await.unwrap();
            wal.append(&entry(4)).await.unwrap();
        }
        let first = segments(dir.path()).unwrap()[0].1.clone();
        let whole = std::fs::metadata(&first).unwrap().len();
        // A crash in the middle of writing a third frame.
        let mut file = OpenOptions::new().append(true).open(&first).unwrap();
        file.write_all(&frame(&encode(&entry(5)))[..30]).unwrap();
        drop(file);

        let wal = Wal::open(dir.path(), u64::MAX).unwrap();
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

    #[test]
    fn a_flipped_byte_ends_the_segment() {
        let mut bytes = frame(&encode(&entry(2)));
        bytes.extend(frame(&encode(&entry(3))));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let (entries, torn) = read_segment(&path).unwrap();
        assert_eq!(entries, vec![entry(2)]);
        assert!(torn > 0);
    }
}
