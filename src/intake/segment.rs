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

/// Reads a segment's entries. Returns them and the number of bytes of a torn tail (ignored:
/// a frame cut short, or whose checksum does not match, was never acknowledged). A whole
/// frame whose entry cannot be decoded was acknowledged: that is an error naming the segment,
/// never a tail to drop.
pub fn read_segment(path: &Path) -> Result<(Vec<Entry>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (entries, torn) = entries_of(&bytes).map_err(|at| {
        Error::Internal(format!(
            "{}: the frame at byte {at} is whole but its entry cannot be read; the segment is kept (move it aside to let the intake go on, and report this)",
            path.display()
        ))
    })?;
    Ok((entries, torn))
}

/// The entries of a segment's bytes and the length of a torn tail; `Err(offset)` for a whole
/// frame that does not decode.
pub fn entries_of(bytes: &[u8]) -> std::result::Result<(Vec<Entry>, usize), usize> {
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some((payload, next)) = next_frame(bytes, at) {
        entries.push(decode(payload).ok_or(at)?);
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

/// An entry as a frame's payload; an entry whose lengths do not fit the format (a table name
/// or key over 64 KiB, a record over 4 GiB) is refused, never cut.
pub(super) fn encode(entry: &Entry) -> Result<Vec<u8>> {
    let too_long = |what: &str| {
        Error::Invalid(format!(
            "{what} is too long for the write-ahead log (table names and keys: 64 KiB, records: 4 GiB)"
        ))
    };
    let short = |len: usize, what: &str| u16::try_from(len).map_err(|_| too_long(what));
    let long = |len: usize, what: &str| u32::try_from(len).map_err(|_| too_long(what));
    let size: usize = entry.records.iter().map(|r| r.len() + 4).sum();
    let mut out = Vec::with_capacity(size + entry.table.len() + 16);
    out.extend_from_slice(&short(entry.table.len(), "the table name")?.to_le_bytes());
    out.extend_from_slice(entry.table.as_bytes());
    out.extend_from_slice(&entry.received_at.to_le_bytes());
    out.extend_from_slice(&long(entry.records.len(), "the record count")?.to_le_bytes());
    for record in &entry.records {
        out.extend_from_slice(&long(record.len(), "a record")?.to_le_bytes());
        out.extend_from_slice(record);
    }
    // The key goes last: a frame written before keys existed simply ends here.
    if let Some(key) = &entry.key {
        out.extend_from_slice(&short(key.len(), "the idempotency key")?.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    Ok(out)
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
        let mut bytes = frame(&encode(&entry(2, None)).unwrap());
        bytes.extend(frame(&encode(&entry(3, Some("k"))).unwrap()));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let (entries, torn) = read_segment(&path).unwrap();
        assert_eq!(entries, vec![entry(2, None)]);
        assert!(torn > 0);
    }

    #[test]
    fn long_keys_are_refused_whole_and_undecodable_frames_are_errors() {
        // A key over 64 KiB with non-ASCII text: refused, not cut mid-character.
        let long = "é".repeat(40_000);
        assert!(encode(&entry(1, Some(&long))).is_err());
        // A frame whose checksum holds but whose entry does not decode is never a torn tail.
        let mut payload = encode(&entry(1, None)).unwrap();
        payload.truncate(payload.len() - 3);
        let mut bytes = frame(&encode(&entry(2, None)).unwrap());
        bytes.extend(frame(&payload));
        bytes.extend(frame(&encode(&entry(3, None)).unwrap()));
        assert_eq!(
            entries_of(&bytes),
            Err(frame(&encode(&entry(2, None)).unwrap()).len())
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        std::fs::write(&path, &bytes).unwrap();
        let err = read_segment(&path).unwrap_err().to_string();
        assert!(
            err.contains("is whole but its entry cannot be read"),
            "{err}"
        );
    }
}
