//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

/// `../shared/testdata` beside the checkout.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(rel)
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn hex_field(v: &serde_json::Value, path: &[&str]) -> Vec<u8> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    hex::decode(cur.as_str().unwrap_or_else(|| panic!("missing {path:?}"))).unwrap()
}

/// Deterministic filler bytes (xorshift), so bodies are not all zeros.
pub fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Split an encapsulated chunked message after `header_len` bytes into its chunks,
/// each returned with its length prefix. The final chunk (length 0) runs to the end.
pub fn split_chunks(bytes: &[u8], header_len: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (head, mut rest) = bytes.split_at(header_len);
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let first = rest[0];
        let n = 1usize << (first >> 6);
        let mut len = u64::from(first & 0x3f);
        for b in &rest[1..n] {
            len = (len << 8) | u64::from(*b);
        }
        let total = if len == 0 {
            rest.len()
        } else {
            n + len as usize
        };
        chunks.push(rest[..total].to_vec());
        rest = &rest[total..];
    }
    (head.to_vec(), chunks)
}
