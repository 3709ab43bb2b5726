//! The frames of a binary COPY stream (header, rows, trailer), split out of the bytes PostgreSQL
//! sends. Written here rather than using tokio-postgres's `BinaryCopyOutStream`: that one
//! allocates each row's field ranges and goes through `FromSql` per value, which profiled at
//! about a fifth of a snapshot's client time; the rows here go to the builders as they are.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{Error, Result};

/// The binary COPY signature, before the flags and the header extension.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// One frame of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A row, already handed to the caller's function.
    Row,
    /// The trailer: no rows follow.
    End,
}

/// Bytes received and not yet split into frames.
///
/// PostgreSQL sends one CopyData message per row, so an arrival usually holds whole frames:
/// those are read where they lie (`current`, no copy). Only a frame cut across arrivals
/// is gathered in `pending`; while `pending` holds bytes, `current` is empty.
#[derive(Default)]
pub struct Frames {
    current: Bytes,
    pending: BytesMut,
    header_read: bool,
}

impl Frames {
    /// Adds bytes as they arrived (frames may span arrivals).
    pub fn push(&mut self, bytes: Bytes) {
        if self.pending.is_empty() && self.current.is_empty() {
            self.current = bytes;
            return;
        }
        if !self.current.is_empty() {
            self.pending.extend_from_slice(&self.current);
            self.current = Bytes::new();
        }
        self.pending.extend_from_slice(&bytes);
    }

    /// The bytes not yet split (one of the two buffers is always empty).
    fn buffered(&self) -> &[u8] {
        if self.pending.is_empty() {
            &self.current
        } else {
            &self.pending
        }
    }

    /// Drops the first `n` buffered bytes.
    fn advance(&mut self, n: usize) {
        if self.pending.is_empty() {
            self.current.advance(n);
        } else {
            self.pending.advance(n);
        }
    }

    /// The next whole frame of rows of `columns` fields, `None` until more bytes arrive. A row
    /// is lent to `row` (its field count, then each field as a length, -1 for NULL, and bytes;
    /// read them with [`fields`]) where it lies, rather than split off as a `Bytes` of its own:
    /// two reference-count updates per row were a tenth of a snapshot's client time.
    pub fn next(
        &mut self,
        columns: usize,
        row: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<Option<Frame>> {
        if !self.header_read {
            let buffered = self.buffered();
            let fixed = SIGNATURE.len() + 8;
            if buffered.len() < fixed {
                return Ok(None);
            }
            if &buffered[..SIGNATURE.len()] != SIGNATURE {
                return Err(malformed(
                    "the stream does not start with the binary COPY signature",
                ));
            }
            let extension = read_i32(buffered, SIGNATURE.len() + 4).unwrap_or_default();
            let extension = usize::try_from(extension)
                .map_err(|_| malformed("negative header extension length"))?;
            if buffered.len() < fixed + extension {
                return Ok(None);
            }
            self.advance(fixed + extension);
            self.header_read = true;
        }
        let buffered = self.buffered();
        let Some(count) = buffered.get(0..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            self.advance(2);
            return Ok(Some(Frame::End));
        }
        if usize::try_from(count).ok() != Some(columns) {
            return Err(malformed(&format!(
                "a row of {count} fields where {columns} were expected"
            )));
        }
        let mut end = 2;
        for _ in 0..columns {
            let Some(len) = read_i32(buffered, end) else {
                return Ok(None);
            };
            end += 4 + usize::try_from(len).unwrap_or(0);
        }
        if end > buffered.len() {
            return Ok(None);
        }
        row(&buffered[..end])?;
        self.advance(end);
        Ok(Some(Frame::Row))
    }
}

/// The fields of a row frame, in order (`None` = NULL).
#[inline]
pub fn fields(row: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut at = 2;
    std::iter::from_fn(move || {
        let len = read_i32(row, at)?;
        at += 4;
        if len < 0 {
            return Some(None);
        }
        let value = row.get(at..at + len as usize)?;
        at += len as usize;
        Some(Some(value))
    })
}

#[inline]
fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at + 4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn malformed(what: &str) -> Error {
    Error::Unsupported(format!("malformed binary COPY data: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of two rows of (int4, text): (1, 'ab'), (NULL, ''), then the trailer.
    fn stream() -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&0i32.to_be_bytes()); // flags
        s.extend_from_slice(&2i32.to_be_bytes()); // extension length
        s.extend_from_slice(b"xx");
        for (a, b) in [
            (Some(&1i32.to_be_bytes()[..]), Some(&b"ab"[..])),
            (None, Some(&b""[..])),
        ] {
            s.extend_from_slice(&2i16.to_be_bytes());
            for field in [a, b] {
                match field {
                    Some(v) => {
                        s.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        s.extend_from_slice(v);
                    }
                    None => s.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    /// Every frame and field, whatever the bytes' arrival is cut into (up to three pieces, so
    /// a frame can span arrivals, end one, and be followed by whole ones).
    #[test]
    fn frames_are_the_same_wherever_the_bytes_are_cut() {
        let bytes = stream();
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                let mut frames = Frames::default();
                let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
                let mut ended = false;
                for piece in [&bytes[..first], &bytes[first..second], &bytes[second..]] {
                    frames.push(Bytes::copy_from_slice(piece));
                    let mut keep = |row: &[u8]| {
                        rows.push(fields(row).map(|f| f.map(<[u8]>::to_vec)).collect());
                        Ok(())
                    };
                    while let Some(frame) = frames.next(2, &mut keep).unwrap() {
                        ended |= frame == Frame::End;
                    }
                }
                let cut = (first, second);
                assert!(ended && frames.buffered().is_empty(), "cut at {cut:?}");
                assert_eq!(
                    rows,
                    vec![
                        vec![Some(1i32.to_be_bytes().to_vec()), Some(b"ab".to_vec())],
                        vec![None, Some(Vec::new())],
                    ],
                    "cut at {cut:?}"
                );
            }
        }
    }

    #[test]
    fn a_row_of_the_wrong_width_or_a_foreign_stream_is_an_error() {
        let mut frames = Frames::default();
        frames.push(Bytes::from(stream()));
        assert!(
            frames
                .next(3, |_| Ok(()))
                .unwrap_err()
                .to_string()
                .contains("2 fields where 3")
        );
        let mut frames = Frames::default();
        frames.push(Bytes::from_static(b"COPY 1\n not binary at all"));
        assert!(
            frames
                .next(2, |_| Ok(()))
                .unwrap_err()
                .to_string()
                .contains("signature")
        );
    }
}
