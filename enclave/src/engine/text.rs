//! Turning generated token bytes into text pieces: incremental UTF-8 decoding that never
//! splits a character, and stop sequences that are held back while they might still
//! match, so no part of a matched stop sequence is ever emitted.

use zeroize::Zeroizing;

/// Incremental UTF-8 decoding of a byte stream.
///
/// Bytes that may still become a character are kept until the next push; a byte sequence
/// that can never be valid UTF-8 becomes U+FFFD (as `String::from_utf8_lossy` would).
#[derive(Default)]
pub struct Utf8Stream {
    pending: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Utf8Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Utf8Stream")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Utf8Stream {
    /// Appends `bytes` and writes every complete character to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = self.pending.get(start..).unwrap_or_default();
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Some(s) = rest.get(..valid).and_then(|b| std::str::from_utf8(b).ok()) {
                        out.push_str(s);
                    }
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            start += valid + bad;
                        }
                        None => {
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        let end = start.min(self.pending.len());
        self.pending.drain(..end);
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            out.push('\u{FFFD}');
            self.pending.clear();
        }
    }
}

/// Holds back text that could be the start of a stop sequence.
pub struct StopFilter {
    stops: Vec<String>,
    held: Zeroizing<String>,
}

impl std::fmt::Debug for StopFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopFilter")
            .field("stops", &self.stops.len())
            .field("held", &self.held.len())
            .finish()
    }
}

/// What [`StopFilter::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum StopState {
    /// No stop sequence matched; the text may be emitted.
    Continue,
    /// A stop sequence matched; the text is everything before it, and generation ends.
    Matched,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: Zeroizing::new(String::new()),
        }
    }

    /// Adds generated `text`; writes what can be emitted now to `out`.
    pub fn push(&mut self, text: &str, out: &mut String) -> StopState {
        if self.stops.is_empty() {
            out.push_str(text);
            return StopState::Continue;
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            out.push_str(self.held.get(..at).unwrap_or_default());
            self.held.clear();
            return StopState::Matched;
        }
        // The longest suffix of `held` that is a proper prefix of a stop sequence.
        let len = self.held.len();
        let mut keep = 0;
        for (i, _) in self.held.char_indices() {
            let suffix = self.held.get(i..).unwrap_or_default();
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep = len - i;
                break;
            }
        }
        let emit = len - keep;
        out.push_str(self.held.get(..emit).unwrap_or_default());
        self.held.drain(..emit);
        StopState::Continue
    }

    /// Ends the stream with no match: the held text is released.
    pub fn finish(&mut self, out: &mut String) {
        out.push_str(&self.held);
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_split_across_tokens_are_never_split() {
        // "é" = C3 A9, "😀" = F0 9F 98 80, "中" = E4 B8 AD; fed one byte at a time and in
        // odd groups, the output pieces are always whole characters.
        let text = "aé😀中z";
        let bytes = text.as_bytes();
        for chunk in 1..=5 {
            let mut s = Utf8Stream::default();
            let mut all = String::new();
            for piece in bytes.chunks(chunk) {
                let mut out = String::new();
                s.push(piece, &mut out);
                // Each emitted piece is valid UTF-8 by type; check it is a prefix cut at a
                // character boundary of the original.
                all.push_str(&out);
                assert!(text.starts_with(&all));
            }
            s.finish(&mut all);
            assert_eq!(all, text);
        }
    }

    #[test]
    fn incomplete_character_is_held_until_completed() {
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        s.push(&[0xF0, 0x9F], &mut out);
        assert_eq!(out, "");
        s.push(&[0x98], &mut out);
        assert_eq!(out, "");
        s.push(&[0x80, b'!'], &mut out);
        assert_eq!(out, "😀!");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        s.push(&[b'a', 0xFF, b'b', 0xC3], &mut out);
        assert_eq!(out, "a\u{FFFD}b");
        s.finish(&mut out);
        assert_eq!(out, "a\u{FFFD}b\u{FFFD}");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut emitted = Vec::new();
        for p in pieces {
            let mut out = String::new();
            let st = f.push(p, &mut out);
            emitted.push(out);
            if st == StopState::Matched {
                return (emitted, true);
            }
        }
        let mut out = String::new();
        f.finish(&mut out);
        emitted.push(out);
        (emitted, false)
    }

    #[test]
    fn stop_sequence_across_pieces_is_never_emitted() {
        let (e, m) = run(&["END"], &["abc E", "N", "D more"]);
        assert!(m);
        assert_eq!(e.concat(), "abc ");
        assert_eq!(e, vec!["abc ", "", ""]);
    }

    #[test]
    fn false_prefix_is_released() {
        let (e, m) = run(&["END"], &["abc E", "x", "yz"]);
        assert!(!m);
        assert_eq!(e, vec!["abc ", "Ex", "yz", ""]);
        let (e, m) = run(&["END"], &["xEN"]);
        assert!(!m);
        assert_eq!(e, vec!["x", "EN"]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (e, m) = run(&["world", "lo w"], &["hello world"]);
        assert!(m);
        assert_eq!(e.concat(), "hel");
        let (e, _) = run(&["", "\n\n"], &["a\n", "\nb"]);
        assert_eq!(e.concat(), "a");
    }

    #[test]
    fn multibyte_stop_sequences() {
        let (e, m) = run(&["é!"], &["caf", "é", "!"]);
        assert!(m);
        assert_eq!(e.concat(), "caf");
        let (e, m) = run(&["éa"], &["xé", "b"]);
        assert!(!m);
        assert_eq!(e.concat(), "xéb");
    }
}
