//! PostgreSQL's `pgoutput` logical decoding messages (protocol version 1, tuples in binary):
//! what change capture reads from a replication slot.
//!
//! Written here because the Rust crates that decode pgoutput come with their own replication
//! client and runtime; the message format is small and fixed
//! (<https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>). Every length
//! and count is checked against the bytes present before it is used: a message is hostile until
//! read.

use crate::error::{Error, Result};

/// One column of a relation, as the Relation message describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Column name.
    pub name: String,
    /// Whether it is part of the replica identity (the key).
    pub key: bool,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub typmod: i32,
}

/// A table as the stream describes it, sent before its first change in a session and after
/// each change of its columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// The relation's OID, by which changes name it.
    pub id: u32,
    /// Schema.
    pub schema: String,
    /// Table.
    pub name: String,
    /// Replica identity: `d` default (the primary key), `n` nothing, `f` full, `i` an index.
    pub identity: u8,
    /// Columns in table order.
    pub columns: Vec<RelationColumn>,
}

/// One column's value in a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A TOASTed value the change did not touch: the stream does not carry it.
    Unchanged,
    /// The value in PostgreSQL's binary send format.
    Binary(Vec<u8>),
    /// The value as text (types without a binary form).
    Text(String),
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A transaction begins; it commits at `final_lsn`.
    Begin {
        /// LSN of the commit record.
        final_lsn: u64,
    },
    /// A transaction committed.
    Commit {
        /// LSN just past the commit record: the position to confirm once applied.
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// A table's description.
    Relation(Relation),
    /// A new row.
    Insert {
        /// Relation OID.
        relation: u32,
        /// The row.
        new: Vec<Value>,
    },
    /// A changed row; `old` is the old key (or the whole old row under REPLICA IDENTITY FULL)
    /// when the key changed or the identity is full.
    Update {
        /// Relation OID.
        relation: u32,
        /// The old key or row, when sent.
        old: Option<Vec<Value>>,
        /// The new row.
        new: Vec<Value>,
    },
    /// A deleted row: its key (or whole row under REPLICA IDENTITY FULL).
    Delete {
        /// Relation OID.
        relation: u32,
        /// The old key or row.
        old: Vec<Value>,
    },
    /// Tables emptied by TRUNCATE.
    Truncate {
        /// Relation OIDs.
        relations: Vec<u32>,
    },
    /// Messages change capture does not act on (origin, type, logical messages).
    Other,
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message> {
    let mut r = Reader { bytes, at: 0 };
    let message = match r.u8()? {
        b'B' => {
            let final_lsn = r.u64()?;
            Message::Begin { final_lsn }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            let commit_time = r.u64()? as i64;
            Message::Commit {
                end_lsn,
                commit_time,
            }
        }
        b'R' => {
            let id = r.u32()?;
            let schema = r.cstring()?;
            let name = r.cstring()?;
            let identity = r.u8()?;
            let count = r.count()?;
            let mut columns = Vec::with_capacity(count.min(1600));
            for _ in 0..count {
                let key = r.u8()? & 1 == 1;
                let name = r.cstring()?;
                let type_oid = r.u32()?;
                let typmod = r.u32()? as i32;
                columns.push(RelationColumn {
                    name,
                    key,
                    type_oid,
                    typmod,
                });
            }
            Message::Relation(Relation {
                id,
                schema,
                name,
                identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut tag = r.u8()?;
            if tag == b'K' || tag == b'O' {
                old = Some(r.tuple()?);
                tag = r.u8()?;
            }
            if tag != b'N' {
                return Err(malformed("an update without its new row"));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete {
                    relation,
                    old: r.tuple()?,
                },
                _ => return Err(malformed("a delete without its old key")),
            }
        }
        b'T' => {
            let count = r.u32()? as usize;
            let _options = r.u8()?;
            if count > r.left() / 4 {
                return Err(malformed("more truncated tables than bytes"));
            }
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_>>()?;
            Message::Truncate { relations }
        }
        _ => Message::Other,
    };
    Ok(message)
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| malformed("a field runs past the end of its message"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn expect(&mut self, tag: u8) -> Result<()> {
        if self.u8()? == tag {
            Ok(())
        } else {
            Err(malformed(&format!("expected '{}'", tag as char)))
        }
    }

    /// A column count (Int16), refused when there are fewer bytes left than columns.
    fn count(&mut self) -> Result<usize> {
        let b = self.take(2)?;
        let n = i16::from_be_bytes([b[0], b[1]]);
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.left())
            .ok_or_else(|| malformed("a column count larger than the message"))
    }

    fn cstring(&mut self) -> Result<String> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| malformed("a name without its terminating zero"))?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| malformed("a name that is not UTF-8"))?
            .to_string();
        self.at += end + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Value>> {
        let count = self.count()?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                kind @ (b'b' | b't') => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?.to_vec();
                    if kind == b'b' {
                        Value::Binary(bytes)
                    } else {
                        Value::Text(
                            String::from_utf8(bytes)
                                .map_err(|_| malformed("a text value that is not UTF-8"))?,
                        )
                    }
                }
                _ => return Err(malformed("an unknown column value kind")),
            });
        }
        Ok(values)
    }
}

fn malformed(what: &str) -> Error {
    Error::Invalid(format!("malformed pgoutput message: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(values: &[&[u8]]) -> Vec<u8> {
        let mut m = vec![b'I', 0, 0, 0, 7, b'N'];
        m.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            m.push(b'b');
            m.extend_from_slice(&(v.len() as u32).to_be_bytes());
            m.extend_from_slice(v);
        }
        m
    }

    #[test]
    fn messages_decode() {
        let m = decode(&insert(&[&5i32.to_be_bytes(), b"x"])).unwrap();
        assert_eq!(
            m,
            Message::Insert {
                relation: 7,
                new: vec![
                    Value::Binary(5i32.to_be_bytes().to_vec()),
                    Value::Binary(b"x".to_vec())
                ]
            }
        );
        let mut relation = vec![b'R', 0, 0, 0, 7];
        relation.extend_from_slice(b"public\0t\0d\0\x01\x01id\0");
        relation.extend_from_slice(&23u32.to_be_bytes());
        relation.extend_from_slice(&(-1i32).to_be_bytes());
        let Message::Relation(r) = decode(&relation).unwrap() else {
            panic!("not a relation");
        };
        assert_eq!((r.schema.as_str(), r.name.as_str()), ("public", "t"));
        assert_eq!(r.columns[0].name, "id");
        assert!(r.columns[0].key);
        let mut update = vec![b'U', 0, 0, 0, 7, b'N', 0, 2, b'u', b'n'];
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update {
                relation: 7,
                old: None,
                new: vec![Value::Unchanged, Value::Null]
            }
        );
        update[5] = b'X';
        assert!(decode(&update).is_err());
    }

    #[test]
    fn lengths_past_the_message_are_refused() {
        let mut m = insert(&[b"abc"]);
        // Claim a 4 GiB value in a message of a few bytes.
        m[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = decode(&m).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
        // A column count larger than the bytes that follow.
        let m = [b'I', 0, 0, 0, 7, b'N', 0x7f, 0xff, b'n'];
        assert!(decode(&m).unwrap_err().to_string().contains("column count"));
        // Every prefix of a good message is an error, never a panic.
        let good = insert(&[&5i32.to_be_bytes(), b"x"]);
        for end in 0..good.len() {
            assert!(decode(&good[..end]).is_err(), "prefix of {end} bytes");
        }
    }
}
