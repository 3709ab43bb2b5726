//! The frames of a binary COPY stream (header, rows, trailer), read out of the bytes PostgreSQL
//! sends. Written here rather than using tokio-postgres's `BinaryCopyOutStream`: that one
//! allocates each row's field ranges and goes through `FromSql` per value, which profiled at
//! about a fifth of a snapshot's client time; the rows here go to the builders as they are.

use crate::error::{Error, Result};

/// The binary COPY signature, before the flags and the header extension.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The longest header extension accepted (PostgreSQL sends none).
const MAX_HEADER_EXTENSION: usize = 64 * 1024;

/// The longest row accepted: PostgreSQL's limit for one value is 1 GiB, and a frame that
/// claims more is refused before its bytes are gathered.
pub const MAX_ROW_BYTES: usize = 1 << 30;

/// Splits a binary COPY stream into rows, whatever pieces its bytes arrive in.
///
/// PostgreSQL sends one CopyData message per row, so a piece usually holds whole frames: those
/// are read where they lie. Only a frame cut across pieces is gathered in `pending`.
#[derive(Default)]
pub struct Frames {
    /// The start of a frame cut at the end of a piece, kept until the rest arrives.
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

impl Frames {
    /// Reads the frames of `piece`, the stream's next bytes, lending each row of `columns`
    /// fields to `row` where it lies (its field count, then each field as a length, -1 for
    /// NULL, and bytes; read them with [`fields`]). Returns the number of rows.
    pub fn feed(
        &mut self,
        columns: usize,
        piece: &[u8],
        mut row: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<usize> {
        if self.pending.is_empty() {
            let (used, rows) = self.split(columns, piece, &mut row)?;
            self.pending.extend_from_slice(&piece[used..]);
            return Ok(rows);
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(piece);
        let (used, rows) = self.split(columns, &pending, &mut row)?;
        pending.drain(..used);
        self.pending = pending;
        Ok(rows)
    }

    /// Whether the trailer was read: the stream is whole.
    pub fn ended(&self) -> bool {
        self.ended && self.pending.is_empty()
    }

    /// Reads the whole frames at the start of `bytes`: how many bytes they took, and the rows.
    fn split(
        &mut self,
        columns: usize,
        bytes: &[u8],
        row: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<(usize, usize)> {
        let (mut at, mut rows) = (0, 0);
        if !self.header_read {
            let fixed = SIGNATURE.len() + 8;
            if bytes.len() < fixed {
                return Ok((0, 0));
            }
            if &bytes[..SIGNATURE.len()] != SIGNATURE {
                return Err(malformed(
                    "the stream does not start with the binary COPY signature",
                ));
            }
            let extension = read_i32(bytes, SIGNATURE.len() + 4).unwrap_or_default();
            let extension = usize::try_from(extension)
                .ok()
                .filter(|e| *e <= MAX_HEADER_EXTENSION)
                .ok_or_else(|| malformed("header extension length out of bounds"))?;
            if bytes.len() < fixed + extension {
                return Ok((0, 0));
            }
            at = fixed + extension;
            self.header_read = true;
        }
        while at < bytes.len() {
            if self.ended {
                return Err(malformed("bytes after the trailer"));
            }
            let rest = &bytes[at..];
            let Some(count) = rest.get(0..2) else {
                break;
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.ended = true;
                at += 2;
                continue;
            }
            if usize::try_from(count).ok() != Some(columns) {
                return Err(malformed(&format!(
                    "a row of {count} fields where {columns} were expected"
                )));
            }
            let mut end = 2;
            for _ in 0..columns {
                let Some(len) = read_i32(rest, end) else {
                    return Ok((at, rows));
                };
                if len < -1 {
                    return Err(malformed(&format!("a field of length {len}")));
                }
                end += 4 + usize::try_from(len).unwrap_or(0);
                if end > MAX_ROW_BYTES {
                    return Err(malformed(&format!(
                        "a row of more than {MAX_ROW_BYTES} bytes (PostgreSQL sends at most 1 GiB per value)"
                    )));
                }
            }
            if end > rest.len() {
                break;
            }
            row(&rest[..end])?;
            rows += 1;
            at += end;
        }
        Ok((at, rows))
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
    Error::Invalid(format!("malformed binary COPY data: {what}"))
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
    /// a frame can span pieces, end one, and be followed by whole ones).
    #[test]
    fn frames_are_the_same_wherever_the_bytes_are_cut() {
        let bytes = stream();
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                let mut frames = Frames::default();
                let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
                let mut counted = 0;
                for piece in [&bytes[..first], &bytes[first..second], &bytes[second..]] {
                    counted += frames
                        .feed(2, piece, |row| {
                            rows.push(fields(row).map(|f| f.map(<[u8]>::to_vec)).collect());
                            Ok(())
                        })
                        .unwrap();
                }
                let cut = (first, second);
                assert!(frames.ended(), "cut at {cut:?}");
                assert_eq!(counted, 2, "cut at {cut:?}");
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
        assert!(
            frames
                .feed(3, &stream(), |_| Ok(()))
                .unwrap_err()
                .to_string()
                .contains("2 fields where 3")
        );
        let mut frames = Frames::default();
        assert!(
            frames
                .feed(2, b"COPY 1\n not binary at all", |_| Ok(()))
                .unwrap_err()
                .to_string()
                .contains("signature")
        );
    }

    fn header(extension: i32) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend_from_slice(&extension.to_be_bytes());
        bytes
    }

    #[test]
    fn lengths_out_of_bounds_are_refused_before_their_bytes_arrive() {
        let err = Frames::default()
            .feed(1, &header(i32::MAX), |_| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("header extension"), "{err}");
        let mut row = header(0);
        row.extend_from_slice(&1i16.to_be_bytes());
        row.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = Frames::default().feed(1, &row, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let mut row = header(0);
        row.extend_from_slice(&1i16.to_be_bytes());
        row.extend_from_slice(&(-7i32).to_be_bytes());
        let err = Frames::default().feed(1, &row, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("length -7"), "{err}");
    }
}
