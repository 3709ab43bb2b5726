//! msgpack values read with a bound on what they may cost in memory, for the forward protocol.
//!
//! rmpv's reader bounds how many bytes it preallocates, but not what a message expands to: a
//! 16 MiB array of one-byte `nil`s becomes 16 M values of 32 bytes each, half a gigabyte per
//! connection. No msgpack crate lets a caller bound that, so this reader (the format's markers,
//! one match) builds the same `rmpv::Value`s while charging each value its size and each string
//! its bytes against a budget, and stops as soon as the budget, or the nesting depth, runs out.

use std::io::{self, Read};

use rmpv::Value;

/// Why a value could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The stream ended before the value's first byte (a peer that closed cleanly).
    Eof,
    /// The stream failed or ended inside the value.
    Io(io::Error),
    /// The value would cost more memory than the budget allows.
    TooLarge,
    /// Arrays and maps nest deeper than allowed.
    TooDeep,
    /// A byte that starts no msgpack value (0xc1).
    Invalid(u8),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Eof => f.write_str("the stream ended"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge => f.write_str("the message expands beyond its memory budget"),
            ReadError::TooDeep => f.write_str("the message nests too deep"),
            ReadError::Invalid(b) => write!(f, "0x{b:02x} starts no msgpack value"),
        }
    }
}

/// What one value costs before its bytes: its place in a `Vec<Value>`.
const VALUE_COST: usize = std::mem::size_of::<Value>();

/// Reads one value, charging `budget` for what it builds; `depth` is how deep arrays and maps
/// may still nest.
pub fn read_value(
    rd: &mut impl Read,
    budget: &mut usize,
    depth: usize,
) -> Result<Value, ReadError> {
    let mut first = [0u8; 1];
    match rd.read(&mut first) {
        Ok(0) => return Err(ReadError::Eof),
        Ok(_) => {}
        Err(e) => return Err(ReadError::Io(e)),
    }
    value(first[0], rd, budget, depth)
}

fn value(
    marker: u8,
    rd: &mut impl Read,
    budget: &mut usize,
    depth: usize,
) -> Result<Value, ReadError> {
    charge(budget, VALUE_COST)?;
    Ok(match marker {
        0x00..=0x7f => Value::from(marker),
        0xe0..=0xff => Value::from(marker as i8),
        0x80..=0x8f => map(rd, usize::from(marker & 0x0f), budget, depth)?,
        0x90..=0x9f => array(rd, usize::from(marker & 0x0f), budget, depth)?,
        0xa0..=0xbf => string(read_bytes(rd, usize::from(marker & 0x1f), budget)?),
        0xc0 => Value::Nil,
        0xc2 => Value::Boolean(false),
        0xc3 => Value::Boolean(true),
        0xc4 => {
            let len = len8(rd)?;
            Value::Binary(read_bytes(rd, len, budget)?)
        }
        0xc5 => {
            let len = len16(rd)?;
            Value::Binary(read_bytes(rd, len, budget)?)
        }
        0xc6 => {
            let len = len32(rd)?;
            Value::Binary(read_bytes(rd, len, budget)?)
        }
        0xc7 => {
            let len = len8(rd)?;
            ext(rd, len, budget)?
        }
        0xc8 => {
            let len = len16(rd)?;
            ext(rd, len, budget)?
        }
        0xc9 => {
            let len = len32(rd)?;
            ext(rd, len, budget)?
        }
        0xca => Value::F32(f32::from_be_bytes(be(rd)?)),
        0xcb => Value::F64(f64::from_be_bytes(be(rd)?)),
        0xcc => Value::from(u8::from_be_bytes(be(rd)?)),
        0xcd => Value::from(u16::from_be_bytes(be(rd)?)),
        0xce => Value::from(u32::from_be_bytes(be(rd)?)),
        0xcf => Value::from(u64::from_be_bytes(be(rd)?)),
        0xd0 => Value::from(i8::from_be_bytes(be(rd)?)),
        0xd1 => Value::from(i16::from_be_bytes(be(rd)?)),
        0xd2 => Value::from(i32::from_be_bytes(be(rd)?)),
        0xd3 => Value::from(i64::from_be_bytes(be(rd)?)),
        0xd4 => ext(rd, 1, budget)?,
        0xd5 => ext(rd, 2, budget)?,
        0xd6 => ext(rd, 4, budget)?,
        0xd7 => ext(rd, 8, budget)?,
        0xd8 => ext(rd, 16, budget)?,
        0xd9 => {
            let len = len8(rd)?;
            string(read_bytes(rd, len, budget)?)
        }
        0xda => {
            let len = len16(rd)?;
            string(read_bytes(rd, len, budget)?)
        }
        0xdb => {
            let len = len32(rd)?;
            string(read_bytes(rd, len, budget)?)
        }
        0xdc => {
            let len = len16(rd)?;
            array(rd, len, budget, depth)?
        }
        0xdd => {
            let len = len32(rd)?;
            array(rd, len, budget, depth)?
        }
        0xde => {
            let len = len16(rd)?;
            map(rd, len, budget, depth)?
        }
        0xdf => {
            let len = len32(rd)?;
            map(rd, len, budget, depth)?
        }
        0xc1 => return Err(ReadError::Invalid(marker)),
    })
}

fn charge(budget: &mut usize, cost: usize) -> Result<(), ReadError> {
    *budget = budget.checked_sub(cost).ok_or(ReadError::TooLarge)?;
    Ok(())
}

fn be<const N: usize>(rd: &mut impl Read) -> Result<[u8; N], ReadError> {
    let mut bytes = [0u8; N];
    rd.read_exact(&mut bytes).map_err(ReadError::Io)?;
    Ok(bytes)
}

fn len8(rd: &mut impl Read) -> Result<usize, ReadError> {
    Ok(usize::from(be::<1>(rd)?[0]))
}

fn len16(rd: &mut impl Read) -> Result<usize, ReadError> {
    Ok(usize::from(u16::from_be_bytes(be(rd)?)))
}

fn len32(rd: &mut impl Read) -> Result<usize, ReadError> {
    Ok(u32::from_be_bytes(be(rd)?) as usize)
}

/// `len` bytes, charged before they are read (so a claimed length is never allocated unpaid).
fn read_bytes(rd: &mut impl Read, len: usize, budget: &mut usize) -> Result<Vec<u8>, ReadError> {
    charge(budget, len)?;
    let mut bytes = Vec::with_capacity(len);
    let read = rd
        .take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if read != len {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(bytes)
}

fn string(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        // Old senders write raw bytes as strings; the forward receiver reads both alike.
        Err(e) => Value::Binary(e.into_bytes()),
    }
}

fn ext(rd: &mut impl Read, len: usize, budget: &mut usize) -> Result<Value, ReadError> {
    let kind = i8::from_be_bytes(be(rd)?);
    Ok(Value::Ext(kind, read_bytes(rd, len, budget)?))
}

fn array(
    rd: &mut impl Read,
    len: usize,
    budget: &mut usize,
    depth: usize,
) -> Result<Value, ReadError> {
    let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
    // Grown as values arrive (each one charged), never sized by the claimed length.
    let mut items = Vec::new();
    for _ in 0..len {
        let marker = be::<1>(rd)?[0];
        items.push(value(marker, rd, budget, depth)?);
    }
    Ok(Value::Array(items))
}

fn map(
    rd: &mut impl Read,
    len: usize,
    budget: &mut usize,
    depth: usize,
) -> Result<Value, ReadError> {
    let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
    let mut pairs = Vec::new();
    for _ in 0..len {
        let key = value(be::<1>(rd)?[0], rd, budget, depth)?;
        let item = value(be::<1>(rd)?[0], rd, budget, depth)?;
        pairs.push((key, item));
    }
    Ok(Value::Map(pairs))
}

/// Finds where one msgpack value ends in bytes that arrive in pieces, without building it, so a
/// connection can gather a whole message before decoding it: each piece is scanned once, and
/// the same memory budget and depth as [`read_value`]'s are charged while scanning, so an
/// expanding message is refused before it is gathered whole.
pub struct Scanner {
    /// Items still to come in each open array or map (a map's pairs count twice), innermost last.
    open: Vec<u64>,
    /// Payload bytes of a string, binary, extension or number still to pass.
    skip: u64,
    /// The marker whose length bytes are being read, how many it needs, and those read so far.
    header: Option<(u8, usize, Vec<u8>)>,
    budget: usize,
    max_depth: usize,
}

impl Scanner {
    /// A scanner of one value costing at most `budget`, nesting at most `max_depth` deep.
    pub fn new(budget: usize, max_depth: usize) -> Self {
        Self {
            open: Vec::new(),
            skip: 0,
            header: None,
            budget,
            max_depth,
        }
    }

    /// Scans the value's next bytes: `Some(n)` when it ends `n` bytes into `piece`.
    pub fn feed(&mut self, piece: &[u8]) -> Result<Option<usize>, ReadError> {
        let mut at = 0;
        while at < piece.len() {
            if self.skip > 0 {
                let passed = self.skip.min((piece.len() - at) as u64);
                self.skip -= passed;
                at += passed as usize;
                if self.skip == 0 && self.completed() {
                    return Ok(Some(at));
                }
                continue;
            }
            if let Some((marker, needed, mut bytes)) = self.header.take() {
                let take = (needed - bytes.len()).min(piece.len() - at);
                bytes.extend_from_slice(&piece[at..at + take]);
                at += take;
                if bytes.len() < needed {
                    self.header = Some((marker, needed, bytes));
                    continue;
                }
                let len = bytes.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
                if self.started(marker, len)? {
                    return Ok(Some(at));
                }
                continue;
            }
            let marker = piece[at];
            at += 1;
            charge(&mut self.budget, VALUE_COST)?;
            let header = match marker {
                0xc4 | 0xc7 | 0xd9 => 1,
                0xc5 | 0xc8 | 0xda | 0xdc | 0xde => 2,
                0xc6 | 0xc9 | 0xdb | 0xdd | 0xdf => 4,
                _ => 0,
            };
            if header > 0 {
                self.header = Some((marker, header, Vec::with_capacity(header)));
            } else if self.started(marker, 0)? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// A value starts with `marker` (and `len`, read after it): true if the whole value ends.
    fn started(&mut self, marker: u8, len: u64) -> Result<bool, ReadError> {
        let (items, bytes): (u64, u64) = match marker {
            0x80..=0x8f => (2 * u64::from(marker & 0x0f), 0),
            0x90..=0x9f => (u64::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, u64::from(marker & 0x1f)),
            0xc4..=0xc6 | 0xd9..=0xdb => (0, len),
            // An extension's type byte, then its data.
            0xc7..=0xc9 => (0, len + 1),
            0xdc | 0xdd => (len, 0),
            0xde | 0xdf => (2 * len, 0),
            0xca | 0xce | 0xd2 => (0, 4),
            0xcb | 0xcf | 0xd3 => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xc1 => return Err(ReadError::Invalid(marker)),
            _ => (0, 0),
        };
        if matches!(marker, 0xa0..=0xbf | 0xc4..=0xc9 | 0xd9..=0xdb) {
            // What the decoder will allocate for the payload.
            charge(
                &mut self.budget,
                usize::try_from(bytes).unwrap_or(usize::MAX),
            )?;
        }
        if items > 0 {
            if self.open.len() >= self.max_depth {
                return Err(ReadError::TooDeep);
            }
            self.open.push(items);
            return Ok(false);
        }
        if bytes > 0 {
            self.skip = bytes;
            return Ok(false);
        }
        Ok(self.completed())
    }

    /// A value (scalar or container) just ended: true if that ends the outermost one.
    fn completed(&mut self) -> bool {
        loop {
            match self.open.last_mut() {
                None => return true,
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        return false;
                    }
                    self.open.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    #[test]
    fn reads_what_rmpv_writes() {
        let value = Value::Array(vec![
            Value::from("tag"),
            Value::from(-3),
            Value::from(u64::MAX),
            Value::from(1.5f64),
            Value::Binary(vec![1, 2, 3]),
            Value::Ext(0, vec![0; 8]),
            Value::Map(vec![
                (Value::from("a"), Value::Nil),
                (Value::from(7), Value::Boolean(true)),
            ]),
            Value::from("x".repeat(70_000)),
        ]);
        let mut budget = 1 << 20;
        let read = read_value(&mut encode(&value).as_slice(), &mut budget, 16).unwrap();
        assert_eq!(read, value);
    }

    #[test]
    fn the_scanner_finds_each_value_whatever_the_pieces() {
        let values = [
            Value::Array(vec![
                Value::from("tag"),
                Value::Array(vec![]),
                Value::Map(vec![(Value::from("a"), Value::Ext(0, vec![1; 8]))]),
                Value::from(-70_000),
                Value::from(2.5f64),
                Value::Binary(vec![7; 300]),
            ]),
            Value::from(3),
            Value::Map(vec![]),
        ];
        let mut stream = Vec::new();
        for value in &values {
            stream.extend(encode(value));
        }
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut ends = Vec::new();
            let mut start = 0;
            let mut scanner = Scanner::new(1 << 20, 16);
            let mut at = 0;
            while at < stream.len() {
                let end = (at + piece).min(stream.len());
                match scanner.feed(&stream[at..end]).unwrap() {
                    Some(n) => {
                        ends.push(at + n);
                        at += n;
                        start = at;
                        scanner = Scanner::new(1 << 20, 16);
                    }
                    None => at = end,
                }
            }
            assert_eq!(start, stream.len());
            let expected: Vec<usize> = values
                .iter()
                .scan(0, |end, v| {
                    *end += encode(v).len();
                    Some(*end)
                })
                .collect();
            assert_eq!(ends, expected, "pieces of {piece}");
        }
        let nils = encode(&Value::Array(vec![Value::Nil; 100_000]));
        assert!(matches!(
            Scanner::new(1 << 20, 16).feed(&nils),
            Err(ReadError::TooLarge)
        ));
    }

    #[test]
    fn expansion_depth_and_claimed_lengths_are_bounded() {
        // 100,000 nils: 100 KB on the wire, 3.2 MB as values.
        let nils = Value::Array(vec![Value::Nil; 100_000]);
        let mut budget = 1 << 20;
        let bytes = encode(&nils);
        assert!(matches!(
            read_value(&mut bytes.as_slice(), &mut budget, 16),
            Err(ReadError::TooLarge)
        ));
        let mut deep = Value::Nil;
        for _ in 0..100 {
            deep = Value::Array(vec![deep]);
        }
        let mut budget = 1 << 20;
        assert!(matches!(
            read_value(&mut encode(&deep).as_slice(), &mut budget, 32),
            Err(ReadError::TooDeep)
        ));
        // A string that claims 4 GiB in a message of six bytes.
        let mut budget = 1 << 20;
        assert!(matches!(
            read_value(
                &mut [0xdb, 0xff, 0xff, 0xff, 0xff, b'x'].as_slice(),
                &mut budget,
                8
            ),
            Err(ReadError::TooLarge)
        ));
        let mut budget = 1 << 20;
        assert!(matches!(
            read_value(&mut [].as_slice(), &mut budget, 8),
            Err(ReadError::Eof)
        ));
    }
}
