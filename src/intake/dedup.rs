//! Idempotency keys: a sender's retry of a batch that was stored but whose answer was lost
//! (a Fluentd forward `chunk` id, an HTTP `Idempotency-Key`) is recognised and not stored again.
//!
//! The writer thread of the write-ahead log keeps the keys it stored during the last `window`
//! in memory ([`Seen`]). Keys of entries still in WAL segments are read back from them at start;
//! keys of committed segments are written to key files ([`KeyFiles`]) before the segment is
//! deleted, so a restart remembers them too. A key file holds the keys received in one window-long
//! period (`<period:020>.keys`, frames like the WAL's); files older than the previous period are
//! deleted, so nothing is rewritten and the files stay bounded.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::segment::{frame, next_frame};
use crate::error::{Error, Result};

/// Keys stored within the window, with the time (µs since 1970) their entry was received.
pub struct Seen {
    window_us: i64,
    keys: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl Seen {
    /// An empty set remembering keys for `window_us` (zero: remembers nothing).
    pub fn new(window_us: i64) -> Self {
        Self {
            window_us,
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `key` was stored within the window.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Remembers a stored key.
    pub fn insert(&mut self, key: String, received_at: i64) {
        if self.window_us == 0 || self.keys.contains_key(&key) {
            return;
        }
        self.keys.insert(key.clone(), received_at);
        self.order.push_back((received_at, key));
    }

    /// Forgets keys received before the window that ends at `now_us`.
    pub fn prune(&mut self, now_us: i64) {
        let oldest = now_us - self.window_us;
        while let Some((at, _)) = self.order.front()
            && *at < oldest
        {
            if let Some((_, key)) = self.order.pop_front() {
                self.keys.remove(&key);
            }
        }
    }

    /// How many keys are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The key files of committed segments, in the WAL folder.
pub struct KeyFiles {
    dir: PathBuf,
    window_us: i64,
}

impl KeyFiles {
    /// The key files in `dir`, for a window of `window_us` (zero: none are kept).
    pub fn new(dir: &Path, window_us: i64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            window_us,
        }
    }

    /// The keys of the current and the previous period, oldest first.
    pub fn load(&self, now_us: i64) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        if self.window_us == 0 {
            return Ok(out);
        }
        for (period, path) in self.files()? {
            if period + 1 < now_us / self.window_us {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let mut at = 0;
            while let Some((payload, next)) = next_frame(&bytes, at) {
                if let Some((time, key)) = payload.split_at_checked(8)
                    && let (Ok(time), Ok(key)) = (time.try_into(), std::str::from_utf8(key))
                {
                    out.push((i64::from_le_bytes(time), key.to_string()));
                }
                at = next;
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes keys durably (fsync) to their periods' files, and deletes files too old to matter.
    pub fn record(&self, keys: &[(i64, &str)], now_us: i64) -> Result<()> {
        if self.window_us == 0 {
            return Ok(());
        }
        let mut by_period: HashMap<i64, Vec<u8>> = HashMap::new();
        for (at, key) in keys {
            let mut payload = at.to_le_bytes().to_vec();
            payload.extend_from_slice(key.as_bytes());
            by_period
                .entry(at / self.window_us)
                .or_default()
                .extend(frame(&payload));
        }
        for (period, frames) in by_period {
            let path = self.dir.join(format!("{period:020}.keys"));
            let created = !path.exists();
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            file.write_all(&frames)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(&path, e))?;
            if created {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io(&self.dir, e))?;
            }
        }
        for (period, path) in self.files()? {
            if period + 1 < now_us / self.window_us {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    fn files(&self) -> Result<Vec<(i64, PathBuf)>> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let item = item.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(period) = item
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".keys"))
                .and_then(|n| n.parse::<i64>().ok())
            {
                out.push((period, item.path()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn keys_are_forgotten_after_the_window() {
        let mut seen = Seen::new(HOUR);
        seen.insert("a".into(), 10 * HOUR);
        seen.insert("b".into(), 10 * HOUR + 5);
        seen.prune(11 * HOUR + 1);
        assert!(!seen.contains("a") && seen.contains("b"));
        seen.prune(12 * HOUR);
        assert_eq!(seen.len(), 0);
        let mut off = Seen::new(0);
        off.insert("a".into(), 0);
        assert!(!off.contains("a"));
    }

    #[test]
    fn recorded_keys_are_loaded_back_until_two_periods_have_passed() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::new(dir.path(), HOUR);
        files
            .record(&[(10 * HOUR + 1, "old"), (11 * HOUR + 2, "new")], 11 * HOUR)
            .unwrap();
        let loaded = files.load(11 * HOUR + 3).unwrap();
        assert_eq!(
            loaded,
            [(10 * HOUR + 1, "old".into()), (11 * HOUR + 2, "new".into())]
        );
        files.record(&[(12 * HOUR, "newer")], 12 * HOUR).unwrap();
        let loaded: Vec<String> = files
            .load(12 * HOUR)
            .unwrap()
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(loaded, ["new", "newer"], "period 10 is two periods old");
        assert_eq!(files.files().unwrap().len(), 2, "its file is deleted");
        // A torn frame at the end (a crash while recording) is ignored.
        let path = dir.path().join(format!("{:020}.keys", 12));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0]).unwrap();
        assert_eq!(files.load(12 * HOUR).unwrap().len(), 2);
    }
}
