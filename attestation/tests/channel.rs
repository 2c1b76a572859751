//! The attested channel against the RFC 9458 vector, in round trips of every size and
//! suite, and under tampering, truncation, reordering and duplication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body, hex_field, read_json, split_chunks, testdata};
use futures::executor::block_on;
use veil_attestation::channel::{
    AeadKind, ChannelError, Headers, KemKind, KeyConfig, Limits, Request, Response, ServerKeys,
    Target,
};

const SIZES: [usize; 5] = [0, 1, 1024, 64 * 1024, 4 * 1024 * 1024];

fn limits() -> Limits {
    Limits {
        max_request: 8 << 20,
    }
}

fn rfc_vector() -> serde_json::Value {
    read_json(testdata("ohttp/rfc9458-appendix-a.json"))
}

#[test]
fn rfc9458_appendix_a_request_decapsulates_to_the_appendix_bytes() {
    let v = rfc_vector();
    let sk = hex_field(&v, &["rfc", "gateway_x25519_secret_key"]);
    let keys = ServerKeys::dangerous_import(1, KemKind::X25519, &AeadKind::ALL, &sk).unwrap();
    let config = &keys.configs().configs()[0];
    // The key configuration re-encodes byte for byte and parses as the appendix says.
    assert_eq!(config.as_bytes(), hex_field(&v, &["rfc", "key_config"]));
    assert_eq!(config.key_id(), 1);
    assert_eq!(config.kem(), KemKind::X25519);
    assert_eq!(config.kem().id(), 0x0020);
    assert_eq!(
        config.aeads(),
        &[AeadKind::Aes128Gcm, AeadKind::ChaCha20Poly1305]
    );

    let enc = hex_field(&v, &["rfc", "encapsulated_request"]);
    let (plaintext, _sealer) = keys.decapsulate(&config.id(), &enc, &limits()).unwrap();
    assert_eq!(
        &plaintext[..],
        &hex_field(&v, &["rfc", "request_bhttp"])[..]
    );

    // And it parses as the appendix's request: GET https://example.com/.
    let (request, sealer) = keys.open_request(&config.id(), &enc, &limits()).unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/");
    assert!(request.body.is_empty());
    // The response we seal to it opens only for the holder of the client's HPKE context,
    // which we do not have; sealing itself must work.
    assert!(!sealer.seal(&Response::new(200, vec![])).unwrap().is_empty());
}

#[test]
fn rfc9458_request_every_byte_flip_and_truncation_is_a_typed_error() {
    let v = rfc_vector();
    let sk = hex_field(&v, &["rfc", "gateway_x25519_secret_key"]);
    let keys = ServerKeys::dangerous_import(1, KemKind::X25519, &AeadKind::ALL, &sk).unwrap();
    let id = keys.configs().configs()[0].id();
    let enc = hex_field(&v, &["rfc", "encapsulated_request"]);
    for i in 0..enc.len() {
        let mut t = enc.clone();
        t[i] ^= 0x80;
        assert!(
            keys.open_request(&id, &t, &limits()).is_err(),
            "flip at {i}"
        );
    }
    for n in 0..enc.len() {
        assert!(
            keys.open_request(&id, &enc[..n], &limits()).is_err(),
            "prefix {n}"
        );
    }
}

fn targets(keys: &ServerKeys) -> Vec<Target> {
    let mut out = Vec::new();
    for config in keys.configs().configs() {
        for aead in AeadKind::ALL {
            out.push(Target::dangerous_unverified(config.clone(), aead).unwrap());
        }
    }
    out
}

#[test]
fn whole_message_round_trips_every_size_and_suite() {
    let keys = ServerKeys::generate().unwrap();
    for target in targets(&keys) {
        for (i, &size) in SIZES.iter().enumerate() {
            let mut req = Request::new("POST", "/v1/chat/completions", body(size, i as u64 + 1));
            req.headers
                .push("content-type", "application/json")
                .unwrap();
            let (sealed, pending) = target.seal_request(&req).unwrap();
            let (opened, sealer) = keys
                .open_request(&target.key_id(), &sealed, &limits())
                .unwrap();
            assert_eq!(opened, req, "{target:?} {size}");

            let mut resp = Response::new(200, body(size, i as u64 + 100));
            resp.headers
                .push("content-type", "application/json")
                .unwrap();
            resp.trailers.push("veil-receipt", "r.s").unwrap();
            let reply = sealer.seal(&resp).unwrap();
            assert_eq!(pending.open(&reply).unwrap(), resp, "{target:?} {size}");
        }
    }
}

#[test]
fn chunked_round_trips_every_size_and_suite() {
    let keys = ServerKeys::generate().unwrap();
    for target in targets(&keys) {
        for (i, &size) in SIZES.iter().enumerate() {
            let req = Request::new("POST", "/v1/chat/completions", body(size, i as u64 + 7));
            let (sealed, pending) = target.seal_chunked_request(&req).unwrap();
            let (opened, sealer) = keys
                .open_chunked_request(&target.key_id(), &sealed, &limits())
                .unwrap();
            assert_eq!(opened, req, "{target:?} {size}");

            let mut resp = Response::new(201, body(size, i as u64 + 70));
            resp.headers
                .push("content-type", "application/octet-stream")
                .unwrap();
            resp.trailers.push("veil-receipt", "abc.def").unwrap();
            let reply = sealer.seal_whole(&resp).unwrap();
            assert_eq!(pending.open_all(reply).unwrap(), resp, "{target:?} {size}");
        }
    }
}

/// One streamed exchange: the sealed request, and the response as the list of byte
/// runs returned by the sealer (head, each event, end).
fn streamed(keys: &ServerKeys, target: &Target, events: &[&str]) -> (Vec<Vec<u8>>, Target) {
    let req = Request::new(
        "POST",
        "/v1/chat/completions",
        b"{\"stream\":true}".to_vec(),
    );
    let (sealed, _pending) = target.seal_chunked_request(&req).unwrap();
    let (_, mut sealer) = keys
        .open_chunked_request(&target.key_id(), &sealed, &limits())
        .unwrap();
    let headers = Headers::new()
        .with("content-type", "text/event-stream")
        .unwrap();
    let mut runs = vec![sealer.seal_head(200, &headers).unwrap()];
    for e in events {
        runs.push(sealer.seal_event(e.as_bytes()).unwrap());
    }
    let trailers = Headers::new().with("veil-receipt", "x.y").unwrap();
    runs.push(sealer.finish(&trailers).unwrap());
    (runs, target.clone())
}

fn stream_exchange(
    keys: &ServerKeys,
    target: &Target,
    events: &[&str],
) -> (Vec<u8>, veil_attestation::channel::PendingChunkedResponse) {
    let req = Request::new(
        "POST",
        "/v1/chat/completions",
        b"{\"stream\":true}".to_vec(),
    );
    let (sealed, pending) = target.seal_chunked_request(&req).unwrap();
    let (_, mut sealer) = keys
        .open_chunked_request(&target.key_id(), &sealed, &limits())
        .unwrap();
    let headers = Headers::new()
        .with("content-type", "text/event-stream")
        .unwrap();
    let mut out = sealer.seal_head(200, &headers).unwrap();
    for e in events {
        out.extend(sealer.seal_event(e.as_bytes()).unwrap());
    }
    let trailers = Headers::new().with("veil-receipt", "x.y").unwrap();
    out.extend(sealer.finish(&trailers).unwrap());
    (out, pending)
}

const EVENTS: [&str; 3] = [
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" there, friend\"}}]}\n\n",
    "data: [DONE]\n\n",
];

/// Remove SSE comment lines (veil's padding) from a stream's content.
fn strip_comments(content: &[u8]) -> String {
    let text = String::from_utf8(content.to_vec()).unwrap();
    text.split_inclusive('\n')
        .filter(|l| !l.starts_with(':'))
        .collect()
}

#[test]
fn streamed_events_arrive_one_by_one_and_pad_to_equal_sizes() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let (runs, _) = streamed(&keys, &target, &EVENTS);
    // Events of different lengths seal to the same size: token lengths do not show.
    assert_eq!(runs[1].len(), runs[2].len());
    assert_eq!(runs[2].len(), runs[3].len());

    let (bytes, pending) = stream_exchange(&keys, &target, &EVENTS);
    let mut stream = pending.stream(futures::io::Cursor::new(bytes)).unwrap();
    block_on(async {
        let (status, headers) = stream.head().await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers.get("content-type"), Some("text/event-stream"));
        assert_eq!(headers.get("veil-padding"), None, "padding field is hidden");
        let mut content = Vec::new();
        while let Some(piece) = stream.next_content().await.unwrap() {
            content.extend(piece);
        }
        assert_eq!(strip_comments(&content), EVENTS.concat());
        assert_eq!(stream.trailers().unwrap().get("veil-receipt"), Some("x.y"));
    });
}

#[test]
fn misuse_of_the_stream_sealer_is_an_error() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let req = Request::new("POST", "/v1/chat/completions", vec![]);
    let (sealed, _) = target.seal_chunked_request(&req).unwrap();
    let (_, mut sealer) = keys
        .open_chunked_request(&target.key_id(), &sealed, &limits())
        .unwrap();
    assert!(matches!(
        sealer.seal_event(b"data: x\n\n"),
        Err(ChannelError::Misuse(_))
    ));
    sealer.seal_head(200, &Headers::new()).unwrap();
    assert!(matches!(
        sealer.seal_event(b"data: no newline"),
        Err(ChannelError::Misuse(_))
    ));
    assert!(matches!(
        sealer.seal_head(200, &Headers::new()),
        Err(ChannelError::Misuse(_))
    ));
}

fn open_stream(
    pending: veil_attestation::channel::PendingChunkedResponse,
    bytes: Vec<u8>,
) -> Result<Response, ChannelError> {
    pending.open_all(bytes)
}

#[test]
fn every_byte_flip_of_a_streamed_response_is_detected() {
    let keys = ServerKeys::generate().unwrap();
    let target = Target::dangerous_unverified(
        keys.configs().configs()[0].clone(),
        AeadKind::ChaCha20Poly1305,
    )
    .unwrap();
    let (reference, _) = stream_exchange(&keys, &target, &EVENTS);
    for i in 0..reference.len() {
        let (mut bytes, pending) = stream_exchange(&keys, &target, &EVENTS);
        assert_eq!(bytes.len(), reference.len());
        bytes[i] ^= 0x01;
        assert!(open_stream(pending, bytes).is_err(), "flip at {i}");
    }
}

#[test]
fn truncated_reordered_duplicated_and_unfinished_streams_are_rejected() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let (reference, _) = stream_exchange(&keys, &target, &EVENTS);

    // Every truncation, including the one that drops exactly the final chunk.
    for n in 0..reference.len() {
        let (bytes, pending) = stream_exchange(&keys, &target, &EVENTS);
        assert!(
            open_stream(pending, bytes[..n].to_vec()).is_err(),
            "prefix {n}"
        );
    }

    let (bytes, pending) = stream_exchange(&keys, &target, &EVENTS);
    let (nonce, chunks) = split_chunks(&bytes, 16);
    assert_eq!(chunks.len(), EVENTS.len() + 3, "head, events, end, final");
    // Without its final chunk: the truncation attack.
    let without_final: Vec<u8> = nonce
        .iter()
        .chain(chunks[..chunks.len() - 1].iter().flatten())
        .copied()
        .collect();
    assert!(matches!(
        open_stream(pending, without_final),
        Err(ChannelError::StreamTruncated)
    ));

    let rebuild = |order: &[usize], chunks: &[Vec<u8>], nonce: &[u8]| -> Vec<u8> {
        let mut out = nonce.to_vec();
        for &i in order {
            out.extend(&chunks[i]);
        }
        out
    };
    let last = chunks.len() - 1;
    let mut swapped: Vec<usize> = (0..=last).collect();
    swapped.swap(1, 2);
    let mut duplicated: Vec<usize> = (0..=last).collect();
    duplicated.insert(2, 1);
    let mut dropped: Vec<usize> = (0..=last).collect();
    dropped.remove(2);
    for (name, order) in [
        ("reordered", swapped),
        ("duplicated", duplicated),
        ("dropped", dropped),
    ] {
        let (bytes, pending) = stream_exchange(&keys, &target, &EVENTS);
        let (nonce, chunks) = split_chunks(&bytes, 16);
        let forged = rebuild(&order, &chunks, &nonce);
        assert!(open_stream(pending, forged).is_err(), "{name}");
    }
}

#[test]
fn tampered_chunked_requests_are_rejected() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    // Big enough for several 16 KiB chunks.
    let req = Request::new("POST", "/v1/embeddings", body(40_000, 3));
    let (sealed, _) = target.seal_chunked_request(&req).unwrap();
    let id = target.key_id();
    for i in (0..sealed.len()).step_by(97).chain(0..64) {
        let mut t = sealed.clone();
        t[i] ^= 0x01;
        assert!(
            keys.open_chunked_request(&id, &t, &limits()).is_err(),
            "flip at {i}"
        );
    }
    for n in (0..sealed.len())
        .step_by(101)
        .chain(sealed.len() - 40..sealed.len())
    {
        assert!(
            keys.open_chunked_request(&id, &sealed[..n], &limits())
                .is_err(),
            "prefix {n}"
        );
    }
    let (head, chunks) = split_chunks(&sealed, 7 + 32);
    assert!(chunks.len() >= 4);
    let mut swapped = head.clone();
    for i in [1, 0].into_iter().chain(2..chunks.len()) {
        swapped.extend(&chunks[i]);
    }
    assert!(keys.open_chunked_request(&id, &swapped, &limits()).is_err());
    let mut dup = head.clone();
    for i in [0, 0].into_iter().chain(1..chunks.len()) {
        dup.extend(&chunks[i]);
    }
    assert!(keys.open_chunked_request(&id, &dup, &limits()).is_err());
    let mut unfinished = head;
    for c in &chunks[..chunks.len() - 1] {
        unfinished.extend(c);
    }
    assert!(matches!(
        keys.open_chunked_request(&id, &unfinished, &limits()),
        Err(ChannelError::StreamTruncated)
    ));
}

#[test]
fn every_byte_flip_of_a_whole_response_is_detected() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let exchange = || {
        let (sealed, pending) = target
            .seal_request(&Request::new("GET", "/v1/models", vec![]))
            .unwrap();
        let (_, sealer) = keys
            .open_request(&target.key_id(), &sealed, &limits())
            .unwrap();
        (
            sealer
                .seal(&Response::new(200, b"{\"data\":[]}".to_vec()))
                .unwrap(),
            pending,
        )
    };
    let (reference, _) = exchange();
    for i in 0..reference.len() {
        let (mut reply, pending) = exchange();
        reply[i] ^= 0x40;
        assert!(
            matches!(pending.open(&reply), Err(ChannelError::Open)),
            "flip at {i}"
        );
    }
    for n in 0..reference.len() {
        let (reply, pending) = exchange();
        assert!(pending.open(&reply[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn wrong_key_id_oversize_and_cross_config_requests_are_refused() {
    let keys = ServerKeys::generate().unwrap();
    let configs = keys.configs().configs();
    let x25519 = Target::dangerous_unverified(configs[0].clone(), AeadKind::Aes128Gcm).unwrap();
    let (sealed, _) = x25519
        .seal_request(&Request::new("GET", "/v1/models", vec![]))
        .unwrap();
    // Routed to the X-Wing configuration's id: refused, no panic.
    assert!(
        keys.open_request(&configs[1].id(), &sealed, &limits())
            .is_err()
    );
    // An id nobody holds.
    let other = ServerKeys::generate().unwrap();
    assert!(matches!(
        keys.open_request(&other.configs().configs()[0].id(), &sealed, &limits()),
        Err(ChannelError::UnknownKeyId(_))
    ));
    // A key configuration from another enclave: the request does not open here.
    let foreign =
        Target::dangerous_unverified(other.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let (sealed, _) = foreign
        .seal_request(&Request::new("GET", "/v1/models", vec![]))
        .unwrap();
    assert!(
        keys.open_request(&configs[0].id(), &sealed, &limits())
            .is_err()
    );
    // Oversize, whole and chunked.
    let small = Limits { max_request: 4096 };
    let (big, _) = x25519
        .seal_request(&Request::new("POST", "/v1/embeddings", body(10_000, 1)))
        .unwrap();
    assert!(matches!(
        keys.open_request(&x25519.key_id(), &big, &small),
        Err(ChannelError::TooLarge { .. })
    ));
    let (big, _) = x25519
        .seal_chunked_request(&Request::new("POST", "/v1/embeddings", body(10_000, 1)))
        .unwrap();
    assert!(matches!(
        block_on(keys.read_chunked_request(
            &x25519.key_id(),
            futures::io::Cursor::new(big),
            &small
        )),
        Err(ChannelError::TooLarge { limit: 4096, .. })
    ));
}

#[test]
fn sealed_sizes_are_bucketed() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let a = target
        .seal_request(&Request::new("POST", "/v1/chat/completions", body(10, 1)))
        .unwrap()
        .0;
    let b = target
        .seal_request(&Request::new("POST", "/v1/chat/completions", body(900, 1)))
        .unwrap()
        .0;
    assert_eq!(a.len(), b.len());
    // 7-byte header, 32-byte enc, 1024-byte padded message, 16-byte tag.
    assert_eq!(a.len(), 7 + 32 + 1024 + 16);
}

#[test]
fn key_config_parse_rejects_garbage_and_keeps_unknown_suites_out() {
    assert!(KeyConfig::parse(&[]).is_err());
    assert!(matches!(
        KeyConfig::parse(&[1, 0xff, 0xff]),
        Err(ChannelError::Unsupported { .. })
    ));
    let v = rfc_vector();
    let mut kc = hex_field(&v, &["rfc", "key_config"]);
    let n = kc.len();
    kc[n - 1] = 0x77; // second suite's AEAD unknown: dropped, first kept
    assert_eq!(
        KeyConfig::parse(&kc).unwrap().aeads(),
        &[AeadKind::Aes128Gcm]
    );
}

#[test]
fn every_byte_flip_of_a_small_chunked_request_is_detected() {
    let keys = ServerKeys::generate().unwrap();
    let target = Target::dangerous_unverified(
        keys.configs().configs()[0].clone(),
        AeadKind::ChaCha20Poly1305,
    )
    .unwrap();
    let req = Request::new("POST", "/v1/chat/completions", body(300, 9));
    let (sealed, _) = target.seal_chunked_request(&req).unwrap();
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x02;
        assert!(
            keys.open_chunked_request(&target.key_id(), &t, &limits())
                .is_err(),
            "flip at {i}"
        );
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn keys() -> &'static ServerKeys {
        static KEYS: OnceLock<ServerKeys> = OnceLock::new();
        KEYS.get_or_init(|| ServerKeys::generate().unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_are_errors_not_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let keys = keys();
            for c in keys.configs().configs() {
                prop_assert!(keys.open_request(&c.id(), &data, &limits()).is_err());
                prop_assert!(keys.open_chunked_request(&c.id(), &data, &limits()).is_err());
            }
            let _ = KeyConfig::parse(&data);
            let _ = veil_attestation::channel::KeyConfigList::parse(&data);
        }

        #[test]
        fn valid_header_with_arbitrary_tail_is_an_error(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let keys = keys();
            let c = &keys.configs().configs()[0];
            let mut data = vec![c.key_id(), 0x00, 0x20, 0x00, 0x01, 0x00, 0x01];
            data.extend(&tail);
            prop_assert!(keys.open_request(&c.id(), &data, &limits()).is_err());
            prop_assert!(keys.open_chunked_request(&c.id(), &data, &limits()).is_err());
        }
    }
}
