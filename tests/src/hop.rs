//! A recording TCP hop: relays connections to a target that can change (a restarted
//! process), and scans every byte that passes, in both directions, for patterns (the
//! canaries of a run, raw, in hex and in base64) without keeping the bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The byte patterns that reveal `secret`: itself, its hex (both cases) and its base64 at
/// the three alignments (only the characters that depend on `secret` alone).
#[must_use]
pub fn patterns(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![
        secret.to_vec(),
        hex_lower(secret).into_bytes(),
        hex_lower(secret).to_ascii_uppercase().into_bytes(),
    ];
    for pad in 0..3usize {
        let mut input = vec![0u8; pad];
        input.extend_from_slice(secret);
        let enc = base64::engine::general_purpose::STANDARD.encode(&input);
        let start = (pad * 8).div_ceil(6);
        let end = (input.len() * 8) / 6;
        if let Some(s) = enc.as_bytes().get(start..end) {
            out.push(s.to_vec());
            // URL-safe alphabet too.
            out.push(
                s.iter()
                    .map(|&c| match c {
                        b'+' => b'-',
                        b'/' => b'_',
                        c => c,
                    })
                    .collect(),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

fn hex_lower(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Counts occurrences of patterns in `haystack`.
#[must_use]
pub fn count_hits(patterns: &[Vec<u8>], haystack: &[u8]) -> u64 {
    patterns
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            haystack
                .windows(p.len())
                .filter(|w| w == &p.as_slice())
                .count() as u64
        })
        .sum()
}

/// What a hop saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Bytes relayed, both directions.
    pub bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Pattern occurrences found.
    pub hits: AtomicU64,
}

/// A running hop.
#[derive(Debug, Clone)]
pub struct Hop {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    /// What it saw.
    pub seen: Arc<Seen>,
    /// While set, connections are closed as soon as they are accepted.
    cut: Arc<AtomicBool>,
    /// The relays running, to end them when the hop is cut.
    relays: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Hop {
    /// Starts a hop on a free loopback port relaying to `target`.
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start(target: SocketAddr, patterns: Arc<Vec<Vec<u8>>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let hop = Self {
            addr: listener.local_addr()?,
            target: Arc::new(Mutex::new(target)),
            seen: Arc::new(Seen::default()),
            cut: Arc::new(AtomicBool::new(false)),
            relays: Arc::new(Mutex::new(Vec::new())),
        };
        let h = hop.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if h.cut.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let _ = inbound.set_nodelay(true);
                h.seen.connections.fetch_add(1, Ordering::Relaxed);
                let target = h.target();
                let seen = h.seen.clone();
                let patterns = patterns.clone();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return; // dropping `inbound` closes it: the client sees a reset
                    };
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let up = relay(ri, wo, seen.clone(), patterns.clone());
                    let down = relay(ro, wi, seen, patterns);
                    let _ = tokio::join!(up, down);
                });
                let mut relays = h
                    .relays
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                relays.retain(|r| !r.is_finished());
                relays.push(task.abort_handle());
            }
        });
        Ok(hop)
    }

    /// The current target.
    #[must_use]
    pub fn target(&self) -> SocketAddr {
        *self
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends new connections to `target` (a restarted process).
    pub fn retarget(&self, target: SocketAddr) {
        *self
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// Cuts the link: closes every relayed connection and refuses new ones (a network
    /// partition, or the target going away) until [`Hop::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for r in self
            .relays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            r.abort();
        }
    }

    /// Relays again after [`Hop::cut`].
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `http://ADDR`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Seen>,
    patterns: Arc<Vec<Vec<u8>>>,
) {
    let keep = patterns.iter().map(Vec::len).max().unwrap_or(1).max(1) - 1;
    // The tail of the previous read, so a pattern split across reads is still found.
    let mut window: Vec<u8> = Vec::with_capacity(keep + 16 * 1024);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { break };
        seen.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let carried = window.len();
        window.extend_from_slice(chunk);
        // Count only matches that end in the new bytes (the carried tail is shorter than
        // any pattern, so none lies wholly inside it).
        let hits = count_hits(&patterns, &window);
        let old = count_hits(&patterns, window.get(..carried).unwrap_or(&[]));
        seen.hits.fetch_add(hits - old, Ordering::Relaxed);
        if to.write_all(chunk).await.is_err() {
            break;
        }
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_find_the_secret_in_every_encoding() {
        let secret = b"VEILCANARYQX-";
        let p = patterns(secret);
        for enc in [
            secret.to_vec(),
            hex_lower(b"xxVEILCANARYQX-yy").into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(b"aVEILCANARYQX-7")
                .into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(b"abVEILCANARYQX-7")
                .into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(b"abcVEILCANARYQX-")
                .into_bytes(),
        ] {
            assert!(
                count_hits(&p, &enc) >= 1,
                "{}",
                String::from_utf8_lossy(&enc)
            );
        }
        assert_eq!(count_hits(&p, b"nothing to see here, VEILCANARY"), 0);
    }
}
