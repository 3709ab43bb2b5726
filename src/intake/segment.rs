//! Segment files of the write-ahead log: `<dir>/<seq:020>.wal`, each a sequence of frames
//! `[len u32 LE][crc32 u32 LE][payload]`, a payload being one [`Entry`]. A frame whose length or
//! checksum does not match ends the segment: it was torn by a crash before its fsync, so it was
//! never acknowledged. Also the `last-removed` file that keeps segment numbers from repeating.

use std::fs::File;
use std::path::{Path, PathBuf};

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
    /// The sender's idempotency key for this batch, if it gave one (namespaced by the receiver).
    pub key: Option<String>,
}

const LAST_REMOVED: &str = "last-removed";

/// The number of the last segment removed (0 when none was).
pub(super) fn last_removed(dir: &Path) -> Result<u64> {
    let path = dir.join(LAST_REMOVED);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            Error::Invalid(format!(
                "{} should hold a segment number, not {text:?}; delete it only if the write-ahead log folder is empty and no table has intake commits",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Records durably (write, fsync, rename, fsync the folder) that segment `seq` was removed.
pub(super) fn record_last_removed(dir: &Path, seq: u64) -> Result<()> {
    let path = dir.join(LAST_REMOVED);
    let temporary = dir.join(format!("{LAST_REMOVED}.tmp"));
    let written = std::fs::write(&temporary, seq.to_string())
        .and_then(|()| File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, &path))
        .and_then(|()| File::open(dir)?.sync_all());
    written.map_err(|e| Error::io(&path, e))
}

pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// The segments in a folder, oldest first.
pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
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

/// A frame holding `payload`.
pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of the frame at `at` and where the next frame starts, if the frame is whole.
pub(super) fn next_frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(at + 8..at + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + 8 + len))
}

/// An entry as a frame's payload.
pub(super) fn encode(entry: &Entry) -> Vec<u8> {
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
    // The key goes last: a frame written before keys existed simply ends here.
    if let Some(key) = &entry.key {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    out
}

/// The entry in a frame's payload, if it is whole.
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
    let key = match take(2) {
        Some(len) => {
            let len = u16::from_le_bytes(len.try_into().ok()?) as usize;
            Some(String::from_utf8(take(len)?.to_vec()).ok()?)
        }
        None => None,
    };
    Some(Entry {
        table,
        received_at,
        records,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize, key: Option<&str>) -> Entry {
        Entry {
            table: "logs.events".to_string(),
            received_at: 1_700_000_000_000_000 + n as i64,
            records: (0..n)
                .map(|i| format!("{{\"i\":{i}}}").into_bytes())
                .collect(),
            key: key.map(str::to_string),
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_segment() {
        let mut bytes = frame(&encode(&entry(2, None)));
        bytes.extend(frame(&encode(&entry(3, Some("k")))));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let (entries, torn) = read_segment(&path).unwrap();
        assert_eq!(entries, vec![entry(2, None)]);
        assert!(torn > 0);
    }
}
