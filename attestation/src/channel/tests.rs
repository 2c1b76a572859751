//! The channel's HPKE and OHTTP against independent implementations and published
//! vectors: the `hpke` crate (which veil's vendored `ohttp` no longer uses for its key
//! schedule or AEAD) opens what veil seals and derives the keys veil's responses are
//! sealed with; the RFC 9458 Appendix A and chunked-OHTTP draft examples are checked
//! end to end; and the in-place, owned-buffer entry points behave like the copying ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use hpke::aead::{AesGcm128, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem as _, OpModeR, Serializable};
use ring::aead::{AES_128_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::{AeadKind, KemKind, Limits, Request, Response, ServerKeys, Target};

fn vector(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ohttp")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hexf(v: &serde_json::Value, section: &str, field: &str) -> Vec<u8> {
    hex::decode(v[section][field].as_str().unwrap()).unwrap()
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// RFC 9458 §4.4, written out independently of `ohttp`: the response AEAD key and
/// nonce from the exported secret, `enc` and the response nonce.
fn response_key(aead: AeadKind, secret: &[u8], enc: &[u8], nonce: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nk = match aead {
        AeadKind::Aes128Gcm => 16,
        _ => 32,
    };
    let mut salt = enc.to_vec();
    salt.extend_from_slice(nonce);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(secret);
    let mut key = vec![0; nk];
    prk.expand(&[b"key"], Len(nk))
        .unwrap()
        .fill(&mut key)
        .unwrap();
    let mut iv = vec![0; 12];
    prk.expand(&[b"nonce"], Len(12))
        .unwrap()
        .fill(&mut iv)
        .unwrap();
    (key, iv)
}

/// Open an encapsulated response with `ring` directly.
fn open_response(aead: AeadKind, key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    let alg = match aead {
        AeadKind::Aes128Gcm => &AES_128_GCM,
        _ => &CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, key).ok()?);
    let mut buf = ct.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(iv).ok()?;
    let len = key.open_in_place(nonce, Aad::empty(), &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

fn info(key_id: u8, kem: u16, aead: AeadKind) -> Vec<u8> {
    let mut info = b"message/bhttp request\0".to_vec();
    info.push(key_id);
    info.extend_from_slice(&kem.to_be_bytes());
    info.extend_from_slice(&1u16.to_be_bytes());
    info.extend_from_slice(&aead.id().to_be_bytes());
    info
}

#[test]
fn rfc9458_response_derivation_matches_the_appendix() {
    let v = vector("rfc9458-appendix-a.json");
    // The `hpke` crate's receiver context on the appendix request exports the
    // appendix's response secret.
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&hexf(
        &v,
        "rfc",
        "gateway_x25519_secret_key",
    ))
    .unwrap();
    let enc = hexf(&v, "rfc", "client_ephemeral_public_key_enc");
    let ctx = hpke::setup_receiver::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &<X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap(),
        &hexf(&v, "rfc", "hpke_info"),
    )
    .unwrap();
    let mut secret = [0u8; 16];
    ctx.export(b"message/bhttp response", &mut secret).unwrap();
    assert_eq!(secret.to_vec(), hexf(&v, "rfc", "response_exported_secret"));
    // The derivation above reproduces the appendix's key and nonce, and opens its
    // encapsulated response.
    let nonce = hexf(&v, "rfc", "response_nonce");
    let (key, iv) = response_key(AeadKind::Aes128Gcm, &secret, &enc, &nonce);
    assert_eq!(key, hexf(&v, "rfc", "response_aead_key"));
    assert_eq!(iv, hexf(&v, "rfc", "response_aead_nonce"));
    let encapsulated = hexf(&v, "rfc", "encapsulated_response");
    assert_eq!(
        open_response(AeadKind::Aes128Gcm, &key, &iv, &encapsulated[16..]).unwrap(),
        hexf(&v, "rfc", "response_bhttp")
    );
}

/// One exchange through veil, checked at every step by the `hpke` crate and `ring`.
fn cross_check<A: hpke::aead::Aead, K: hpke::Kem>(
    keys: &ServerKeys,
    sk: &K::PrivateKey,
    aead: AeadKind,
) {
    let config = keys.configs().configs()[0].clone();
    let target = Target::dangerous_unverified(config.clone(), aead).unwrap();
    let mut req = Request::new("POST", "/v1/chat/completions", vec![b'q'; 3000]);
    req.headers
        .push("content-type", "application/json")
        .unwrap();
    let (sealed, pending) = target.seal_request(&req).unwrap();

    // The `hpke` crate opens veil's request.
    let enc_len = match config.kem() {
        KemKind::X25519 => 32,
        _ => 1120,
    };
    let (header, rest) = sealed.split_at(7);
    let (enc, ct) = rest.split_at(enc_len);
    assert_eq!(header[0], config.key_id());
    let mut ctx = hpke::setup_receiver::<A, HkdfSha256, K>(
        &OpModeR::Base,
        sk,
        &K::EncappedKey::from_bytes(enc).unwrap(),
        &info(config.key_id(), config.kem().id(), aead),
    )
    .unwrap();
    let plaintext = ctx.open(ct, b"").unwrap();
    let (expected, _) = keys
        .decapsulate(&target.key_id(), &sealed, &Limits::default())
        .unwrap();
    assert_eq!(&plaintext[..], &expected[..]);
    assert_eq!(plaintext.len(), 4096, "padded to its bucket");

    // veil's enclave seals a response; the `hpke` crate's exporter and the RFC 9458
    // derivation written out above open it.
    let (opened, sealer) = keys
        .open_request(&target.key_id(), &sealed, &Limits::default())
        .unwrap();
    assert_eq!(opened, req);
    let resp = Response::new(200, vec![b'r'; 1500]);
    let reply = sealer.seal(&resp).unwrap();
    let nk = if aead == AeadKind::Aes128Gcm { 16 } else { 32 };
    let mut secret = vec![0u8; nk];
    ctx.export(b"message/bhttp response", &mut secret).unwrap();
    let (nonce, ct) = reply.split_at(nk);
    let (key, iv) = response_key(aead, &secret, enc, nonce);
    let plain = open_response(aead, &key, &iv, ct).unwrap();
    assert_eq!(plain.len(), 2048);
    assert_eq!(&plain[..3], &[1, 0x40, 200], "a known-length 200 response");
    assert_eq!(pending.open(&reply).unwrap(), resp);
}

#[test]
fn hpke_crate_opens_what_veil_seals_x25519() {
    let v = vector("rfc9458-appendix-a.json");
    let sk_bytes = hexf(&v, "rfc", "gateway_x25519_secret_key");
    let keys = ServerKeys::dangerous_import(1, KemKind::X25519, &AeadKind::ALL, &sk_bytes).unwrap();
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&sk_bytes).unwrap();
    cross_check::<AesGcm128, X25519HkdfSha256>(&keys, &sk, AeadKind::Aes128Gcm);
    cross_check::<ChaCha20Poly1305, X25519HkdfSha256>(&keys, &sk, AeadKind::ChaCha20Poly1305);
}

#[test]
fn hpke_crate_opens_what_veil_seals_xwing() {
    let (sk, pk) = XWing::gen_keypair();
    let keys =
        ServerKeys::dangerous_import(2, KemKind::XWing, &AeadKind::ALL, sk.to_bytes().as_slice())
            .unwrap();
    let config = &keys.configs().configs()[0];
    assert_eq!(&config.as_bytes()[3..3 + 1216], pk.to_bytes().as_slice());
    cross_check::<AesGcm128, XWing>(&keys, &sk, AeadKind::Aes128Gcm);
    cross_check::<ChaCha20Poly1305, XWing>(&keys, &sk, AeadKind::ChaCha20Poly1305);
}

#[test]
fn chunked_draft_example_request_opens() {
    let v = vector("chunked-ohttp-draft-example.json");
    let keys = ServerKeys::dangerous_import(
        1,
        KemKind::X25519,
        &AeadKind::ALL,
        &hexf(&v, "draft", "gateway_x25519_secret_key"),
    )
    .unwrap();
    let config = &keys.configs().configs()[0];
    assert_eq!(config.as_bytes(), hexf(&v, "draft", "key_config"));
    let enc = hexf(&v, "draft", "encapsulated_request");
    let (request, _) = keys
        .open_chunked_request(&config.id(), &enc, &Limits::default())
        .unwrap();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/")
    );
    // Without its final chunk, it is a truncation.
    let final_chunk = hex::decode(
        v["draft"]["encapsulated_request_parts"]["final_chunk_zero_len_and_ciphertext"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        keys.open_chunked_request(
            &config.id(),
            &enc[..enc.len() - final_chunk.len()],
            &Limits::default()
        ),
        Err(super::ChannelError::StreamTruncated)
    ));
}

#[test]
fn owned_entry_points_match_the_copying_ones() {
    let keys = ServerKeys::generate().unwrap();
    for config in keys.configs().configs() {
        for aead in AeadKind::ALL {
            let target = Target::dangerous_unverified(config.clone(), aead).unwrap();
            for size in [0usize, 1000, 70_000] {
                let req = Request::new("POST", "/v1/embeddings", vec![7; size]);
                let (sealed, pending) = target.seal_request(&req).unwrap();
                let (a, _) = keys
                    .open_request(&target.key_id(), &sealed, &Limits::default())
                    .unwrap();
                let (b, sealer) = keys
                    .open_request_owned(&target.key_id(), sealed.clone(), &Limits::default())
                    .unwrap();
                assert_eq!(a, b);
                assert_eq!(b, req);
                let resp = Response::new(201, vec![8; size]);
                let reply = sealer.seal(&resp).unwrap();
                assert_eq!(pending.open_owned(reply).unwrap(), resp);

                // Tampered or cut: typed errors, as with the copying entry points.
                let mut bad = sealed.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(
                    keys.open_request_owned(&target.key_id(), bad, &Limits::default())
                        .is_err()
                );
                assert!(
                    keys.open_request_owned(
                        &target.key_id(),
                        sealed[..20].to_vec(),
                        &Limits {
                            max_request: 1 << 20
                        }
                    )
                    .is_err()
                );
                assert!(matches!(
                    keys.open_request_owned(
                        &target.key_id(),
                        sealed.clone(),
                        &Limits { max_request: 10 }
                    ),
                    Err(super::ChannelError::TooLarge { .. })
                ));
            }
        }
    }
}

/// The writers seal what the copying entry points seal: the enclave decapsulates the
/// same padded Binary HTTP bytes and opens the same request; the client opens the same
/// response. Hints right and wrong (the headroom fallback both ways), empty and 4 MiB
/// bodies, both KEMs and AEADs.
#[test]
fn writers_seal_what_the_copying_entry_points_seal() {
    use std::io::Write as _;

    use super::Headers;

    let keys = ServerKeys::generate().unwrap();
    let limits = Limits {
        max_request: 16 << 20,
    };
    let headers = Headers::new()
        .with("content-type", "application/json")
        .unwrap()
        .with("authorization", "Bearer CANARY")
        .unwrap();
    let body = |len: usize| -> Vec<u8> { (0..len).map(|i| (i % 253) as u8).collect() };
    for config in keys.configs().configs() {
        for aead in AeadKind::ALL {
            let target = Target::dangerous_unverified(config.clone(), aead).unwrap();
            for (hint, size) in [
                (0usize, 0usize),
                (1000, 1000),
                (10, 100),
                (100, 10),
                (0, 70_000),
                (4 << 20, 4 << 20),
            ] {
                if config.kem() == KemKind::XWing && size > 70_000 {
                    continue;
                }
                let mut req = Request::new("POST", "/v1/embeddings", body(size));
                req.headers = headers.clone();
                let (copied, _) = target.seal_request(&req).unwrap();

                let mut w = target
                    .request_writer("POST", "/v1/embeddings", headers.clone(), hint)
                    .unwrap();
                // Written in pieces, through `io::Write` and `extend_from_slice`.
                let b = body(size);
                let (first, second) = b.split_at(size / 3);
                w.write_all(first).unwrap();
                w.extend_from_slice(second);
                assert_eq!(w.len(), size);
                assert_eq!(w.body(), &b[..]);
                assert!(!format!("{w:?}").contains("CANARY"));
                let (sealed, pending) = w.seal().unwrap();
                assert_eq!(sealed.len(), copied.len(), "same bucket, same framing");

                let (ours, _) = keys
                    .decapsulate(&target.key_id(), &sealed, &limits)
                    .unwrap();
                let (theirs, _) = keys
                    .decapsulate(&target.key_id(), &copied, &limits)
                    .unwrap();
                assert!(ours[..] == theirs[..], "byte-identical plaintext");

                let (opened, sealer) = keys
                    .open_request_owned(&target.key_id(), sealed, &limits)
                    .unwrap();
                assert_eq!(opened, req);
                assert_eq!(opened.body, b);

                // The response, through a writer, opens to the response the copying
                // path would seal.
                let mut resp = Response::new(201, body(size));
                resp.headers = headers.clone();
                resp.trailers.push("veil-receipt", "r.e.c").unwrap();
                let mut w = sealer.writer(500, headers.clone(), hint).unwrap();
                w.extend_from_slice(b"discarded");
                w.clear();
                w.set_status(201).unwrap();
                w.trailers_mut().push("veil-receipt", "r.e.c").unwrap();
                w.write_all(&b).unwrap();
                assert!(!format!("{w:?}").contains("CANARY"));
                let reply = w.seal().unwrap();
                let back = pending.open_owned(reply).unwrap();
                assert_eq!(back, resp);
            }
        }
    }
}

#[test]
fn writers_refuse_bad_heads_with_typed_errors() {
    use super::{ChannelError, Headers};

    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    assert!(matches!(
        target.request_writer("GET", "no-slash", Headers::new(), 0),
        Err(ChannelError::Malformed { .. })
    ));
    assert!(matches!(
        target.request_writer("G ET", "/", Headers::new(), 0),
        Err(ChannelError::Malformed { .. })
    ));
    let (sealed, _) = target
        .seal_request(&Request::new("GET", "/", Vec::new()))
        .unwrap();
    let (_, sealer) = keys
        .open_request(&target.key_id(), &sealed, &Limits::default())
        .unwrap();
    assert!(matches!(
        sealer.writer(99, Headers::new(), 0),
        Err(ChannelError::Malformed { .. })
    ));
    let (_, sealer) = keys
        .open_request(&target.key_id(), &sealed, &Limits::default())
        .unwrap();
    let mut w = sealer.writer(200, Headers::new(), 0).unwrap();
    assert!(w.set_status(1000).is_err());
    assert!(w.is_empty());
}

/// An opened body is a view: it is not moved to the front of the buffer it was opened
/// in, and it compacts only when asked to.
#[test]
fn opened_bodies_are_views() {
    let keys = ServerKeys::generate().unwrap();
    let target =
        Target::dangerous_unverified(keys.configs().configs()[0].clone(), AeadKind::Aes128Gcm)
            .unwrap();
    let req = Request::new("POST", "/v1/embeddings", vec![5; 100_000]);
    let (sealed, pending) = target.seal_request(&req).unwrap();
    let (opened, sealer) = keys
        .open_request_owned(&target.key_id(), sealed, &Limits::default())
        .unwrap();
    assert!(
        opened.body.offset() > 39,
        "after the OHTTP prefix and the head"
    );
    assert_eq!(opened.body, vec![5; 100_000]);
    let reply = sealer.seal(&Response::new(200, vec![6; 100_000])).unwrap();
    let resp = pending.open_owned(reply).unwrap();
    assert!(resp.body.offset() > 16);
    let v = resp.body.clone().into_vec();
    assert_eq!(v, vec![6; 100_000]);
}
