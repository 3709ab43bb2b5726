//! Property tests of the parsers that face the network and the disk: HTTP bodies (and their
//! gzip), the forward protocol's msgpack and messages, write-ahead log segments, and
//! PostgreSQL's binary COPY frames. Whatever the bytes: no panic, and nothing larger than its
//! bound comes out. CI runs a bounded number of cases (`PROPTEST_CASES`, 256 by default); a
//! longer run: `PROPTEST_CASES=100000 cargo nextest run fuzz`.

use std::io::Write;

use gamelake::intake::forward_message::Message;
use gamelake::intake::msgpack::read_value;
use gamelake::intake::segment::entries_of;
use gamelake::records::body::{gunzip, records};
use gamelake::sources::postgres::frames::{Frames, fields};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that are often nearly valid: random ones, or a valid sample with a few bytes changed.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |changes| {
            let mut bytes = valid.clone();
            for (at, byte) in changes {
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
            }
            bytes
        }),
    ]
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn msgpack(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).unwrap();
    bytes
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http_bodies_never_panic_and_inflate_within_the_limit(
        body in mutated(b"[{\"a\":1},{\"b\":\"x\"}]\n{\"c\":2}\n".to_vec()),
        limit in 1usize..4096,
    ) {
        let _ = records(&body);
        if let Ok(plain) = gunzip(&gzipped(&body), limit) {
            prop_assert!(plain.len() <= limit);
        }
        let _ = gunzip(&body, limit);
    }

    #[test]
    fn msgpack_never_panics_nor_exceeds_its_budget(
        bytes in mutated(msgpack(&rmpv::Value::Array(vec![
            rmpv::Value::from("game.events"),
            rmpv::Value::from(1_795_608_000),
            rmpv::Value::Map(vec![(rmpv::Value::from("player"), rmpv::Value::from(7))]),
            rmpv::Value::Map(vec![(rmpv::Value::from("chunk"), rmpv::Value::from("c1"))]),
        ]))),
        budget in 0usize..8192,
    ) {
        let mut left = budget;
        let read = read_value(&mut bytes.as_slice(), &mut left, 16);
        prop_assert!(left <= budget);
        if let Ok(value) = read {
            let mut left = budget;
            let _ = Message::parse(value, 4096, &mut left);
            prop_assert!(left <= budget);
        }
    }

    #[test]
    fn segments_never_panic(bytes in mutated({
        // Two whole frames (length, checksum, payload) as the log writes them.
        let payload = |table: &str| {
            let mut p = Vec::new();
            p.extend_from_slice(&(table.len() as u16).to_le_bytes());
            p.extend_from_slice(table.as_bytes());
            p.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&7u32.to_le_bytes());
            p.extend_from_slice(b"{\"a\":1}");
            p
        };
        let mut bytes = Vec::new();
        for table in ["logs.events", "logs.other"] {
            let p = payload(table);
            bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
            bytes.extend_from_slice(&p);
        }
        bytes
    })) {
        let _ = entries_of(&bytes);
    }

    #[test]
    fn copy_frames_never_panic_whatever_the_pieces(
        bytes in mutated({
            let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
            b.extend_from_slice(&0i32.to_be_bytes());
            b.extend_from_slice(&0i32.to_be_bytes());
            for value in [Some(&b"abc"[..]), None] {
                b.extend_from_slice(&2i16.to_be_bytes());
                for field in [value, Some(&b"\0\0\0\x07"[..])] {
                    match field {
                        Some(v) => {
                            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            b.extend_from_slice(v);
                        }
                        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                }
            }
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b
        }),
        cut in 1usize..64,
    ) {
        let mut frames = Frames::default();
        for piece in bytes.chunks(cut) {
            let fed = frames.feed(2, piece, |row| {
                for field in fields(row) {
                    let _ = field.map(<[u8]>::len);
                }
                Ok(())
            });
            if fed.is_err() {
                break;
            }
        }
    }
}
