//! The attested channel's cost: whole-message OHTTP seal + open round trips
//! (client seals a request, enclave opens it, enclave seals a response, client opens
//! it), through the copying and the owned-buffer entry points and with each body
//! written straight into the buffer it is sealed in (`request_writer`); that last round
//! trip again with the clock stopped while the bench writes the bodies (the channel's
//! own work); the request direction split into seal and open; and the same work done
//! with raw `ring` AEAD as the yardstick, with the X25519 floor (`ring`; AWS-LC and
//! `curve25519-dalek` as the channel uses them; `curve25519-dalek` alone, as the
//! channel used it before).
//!
//! Run with `cargo bench -p veil-attestation --bench channel`; see `BENCHMARKS.md`.
//!
//! Throughput is the *body* size of one operation: for a round trip the body crosses
//! the channel twice (request and response), for the raw AEAD peer it is sealed and
//! opened twice, so round trip and peer do equal work for equal figures.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The allocator veil's binaries (`veil`, `veil-enclave`) run with, so that buffers are
/// allocated here as they are there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use veil_attestation::channel::{
    AeadKind, Headers, KemKind, Limits, Request, Response, ServerKeys, Target,
};

const KIB: usize = 1024;
const SIZES: [(usize, &str); 3] = [(KIB, "1KiB"), (64 * KIB, "64KiB"), (1024 * KIB, "1MiB")];

/// Bytes of a sealed request around its padded Binary HTTP plaintext, for X25519:
/// RFC 9458 header (key id, KEM, KDF, AEAD: 7) + `enc` (32) + AEAD tag (16).
const X25519_REQUEST_OVERHEAD: usize = 7 + 32 + 16;

fn aead_name(aead: AeadKind) -> &'static str {
    match aead {
        AeadKind::Aes128Gcm => "aes128gcm",
        _ => "chacha20poly1305",
    }
}

fn ring_alg(aead: AeadKind) -> &'static Algorithm {
    match aead {
        AeadKind::Aes128Gcm => &AES_128_GCM,
        _ => &CHACHA20_POLY1305,
    }
}

/// A body that is not all zeros (JSON-ish bytes), so nothing can shortcut it.
fn body(len: usize) -> Vec<u8> {
    b"{\"role\":\"user\",\"content\":\"0123456789abcdef\"}"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Per-size timing: enough samples to be stable, few enough to keep the whole run
/// within a few minutes on two cores.
fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, len: usize) {
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(if len >= 1024 * KIB {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(2)
    });
    g.throughput(Throughput::Bytes(len as u64));
}

/// The same round trip through the entry points that take the caller's buffer
/// (`open_request_owned`, `open_owned`): each side opens in the buffer it received,
/// which becomes the body, instead of copying it first.
fn round_trip_owned(
    keys: &ServerKeys,
    target: &Target,
    request: &Request,
    response: &Response,
    limits: &Limits,
) -> usize {
    let key_id = target.key_id();
    let (sealed, pending) = target.seal_request(request).unwrap();
    let (opened, sealer) = keys.open_request_owned(&key_id, sealed, limits).unwrap();
    debug_assert_eq!(opened.body.len(), request.body.len());
    drop(opened);
    let reply = sealer.seal(response).unwrap();
    let back = pending.open_owned(reply).unwrap();
    back.body.len()
}

/// The same round trip with each body written straight into the buffer it is sealed in
/// (`Target::request_writer`, `ResponseSealer::writer`): the bench copies each body from
/// its source into that buffer, as an application producing it there would write it,
/// and each side opens in the buffer it received (the body a view into it).
///
/// Returns the whole round trip's time and the channel's share of it: the clock stops
/// for the channel while the bench writes each body into its writer (the application
/// producing its body, which the raw AEAD peer never does: it re-seals one buffer), and
/// runs for everything the channel does: the writers' allocation, framing, padding,
/// KEM, key schedules, AEAD, parsing, and the wipe of each opened plaintext when it is
/// dropped.
fn round_trip_in_place(
    keys: &ServerKeys,
    target: &Target,
    request_body: &[u8],
    response_body: &[u8],
    limits: &Limits,
) -> (Duration, Duration) {
    let key_id = target.key_id();
    let begin = Instant::now();
    let mut w = target
        .request_writer(
            "POST",
            "/v1/chat/completions",
            Headers::new(),
            request_body.len(),
        )
        .unwrap();
    let mut app = Instant::now();
    w.extend_from_slice(request_body);
    let mut writing = app.elapsed();
    let (sealed, pending) = w.seal().unwrap();
    let (opened, sealer) = keys.open_request_owned(&key_id, sealed, limits).unwrap();
    debug_assert_eq!(opened.body.len(), request_body.len());
    drop(opened);
    let mut w = sealer
        .writer(200, Headers::new(), response_body.len())
        .unwrap();
    app = Instant::now();
    w.extend_from_slice(response_body);
    writing += app.elapsed();
    let reply = w.seal().unwrap();
    let back = pending.open_owned(reply).unwrap();
    black_box(back.body.len());
    drop(back);
    let whole = begin.elapsed();
    (whole, whole.saturating_sub(writing))
}

/// One full whole-message round trip; returns the response body length.
fn round_trip(
    keys: &ServerKeys,
    target: &Target,
    request: &Request,
    response: &Response,
    limits: &Limits,
) -> usize {
    let key_id = target.key_id();
    let (sealed, pending) = target.seal_request(request).unwrap();
    let (opened, sealer) = keys.open_request(&key_id, &sealed, limits).unwrap();
    debug_assert_eq!(opened.body.len(), request.body.len());
    drop(opened);
    let reply = sealer.seal(response).unwrap();
    let back = pending.open(&reply).unwrap();
    back.body.len()
}

fn channel(c: &mut Criterion) {
    let keys = ServerKeys::generate().unwrap();
    let configs = keys.configs().configs();
    let x25519 = configs[0].clone();
    let xwing = configs[1].clone();
    assert_eq!(x25519.kem(), KemKind::X25519);
    assert_eq!(xwing.kem(), KemKind::XWing);
    let limits = Limits::default();

    // Whole round trip: seal request, open request, seal response, open response.
    for (len, label) in SIZES {
        let mut g = c.benchmark_group("channel_round_trip");
        configure(&mut g, len);
        let request = Request::new("POST", "/v1/chat/completions", body(len));
        let response = Response::new(200, body(len));
        for aead in AeadKind::ALL {
            let target = Target::dangerous_unverified(x25519.clone(), aead).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("x25519+{}", aead_name(aead)), label),
                &len,
                |b, _| {
                    b.iter(|| black_box(round_trip(&keys, &target, &request, &response, &limits)))
                },
            );
        }
        if len == KIB {
            let target = Target::dangerous_unverified(xwing.clone(), AeadKind::Aes128Gcm).unwrap();
            g.bench_with_input(BenchmarkId::new("xwing+aes128gcm", label), &len, |b, _| {
                b.iter(|| black_box(round_trip(&keys, &target, &request, &response, &limits)))
            });
        }
        g.finish();

        let mut g = c.benchmark_group("channel_round_trip_owned");
        configure(&mut g, len);
        for aead in AeadKind::ALL {
            let target = Target::dangerous_unverified(x25519.clone(), aead).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("x25519+{}", aead_name(aead)), label),
                &len,
                |b, _| {
                    b.iter(|| {
                        black_box(round_trip_owned(
                            &keys, &target, &request, &response, &limits,
                        ))
                    })
                },
            );
        }
        g.finish();

        // The in-place round trip, timed whole and for the channel's share alone.
        let (request_body, response_body) = (body(len), body(len));
        for (group, channel_only) in [
            ("channel_round_trip_in_place", false),
            ("channel_work_in_place", true),
        ] {
            let mut g = c.benchmark_group(group);
            configure(&mut g, len);
            for aead in AeadKind::ALL {
                let target = Target::dangerous_unverified(x25519.clone(), aead).unwrap();
                g.bench_with_input(
                    BenchmarkId::new(format!("x25519+{}", aead_name(aead)), label),
                    &len,
                    |b, _| {
                        b.iter_custom(|iters| {
                            (0..iters)
                                .map(|_| {
                                    let (whole, channel) = round_trip_in_place(
                                        &keys,
                                        &target,
                                        &request_body,
                                        &response_body,
                                        &limits,
                                    );
                                    if channel_only { channel } else { whole }
                                })
                                .sum::<Duration>()
                        })
                    },
                );
            }
            g.finish();
        }
    }

    // The request direction alone: client seal, then enclave open (of one sealed
    // request, opened again every iteration; opening is stateless).
    for (len, label) in SIZES {
        let request = Request::new("POST", "/v1/chat/completions", body(len));
        let mut g = c.benchmark_group("channel_seal_request");
        configure(&mut g, len);
        for aead in AeadKind::ALL {
            let target = Target::dangerous_unverified(x25519.clone(), aead).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("x25519+{}", aead_name(aead)), label),
                &len,
                |b, _| b.iter(|| black_box(target.seal_request(&request).unwrap())),
            );
        }
        g.finish();
        let mut g = c.benchmark_group("channel_open_request");
        configure(&mut g, len);
        for aead in AeadKind::ALL {
            let target = Target::dangerous_unverified(x25519.clone(), aead).unwrap();
            let key_id = target.key_id();
            let (sealed, _pending) = target.seal_request(&request).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("x25519+{}", aead_name(aead)), label),
                &len,
                |b, _| b.iter(|| black_box(keys.open_request(&key_id, &sealed, &limits).unwrap())),
            );
        }
        g.finish();
    }

    // The peer: raw ring AEAD, in place, 2 seals + 2 opens of the body (what a round
    // trip does to it), with no key schedule, framing or padding. Then the same at the
    // padded size the channel actually encrypts, to split padding from the rest.
    for (len, label) in SIZES {
        let padded = {
            let t = Target::dangerous_unverified(x25519.clone(), AeadKind::Aes128Gcm).unwrap();
            let request = Request::new("POST", "/v1/chat/completions", body(len));
            t.seal_request(&request).unwrap().0.len() - X25519_REQUEST_OVERHEAD
        };
        for (group, n) in [
            ("raw_ring_2seal_2open", len),
            ("raw_ring_2seal_2open_padded", padded),
        ] {
            let mut g = c.benchmark_group(group);
            configure(&mut g, len);
            for aead in AeadKind::ALL {
                let key = LessSafeKey::new(
                    UnboundKey::new(ring_alg(aead), &[7u8; 32][..ring_alg(aead).key_len()])
                        .unwrap(),
                );
                let mut buf = body(n);
                let mut counter = 0u64;
                g.bench_with_input(
                    BenchmarkId::new(format!("ring_{}", aead_name(aead)), label),
                    &len,
                    |b, _| {
                        b.iter(|| {
                            for _ in 0..2 {
                                counter = counter.wrapping_add(1);
                                let mut nonce = [0u8; 12];
                                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                                let tag = key
                                    .seal_in_place_separate_tag(
                                        Nonce::assume_unique_for_key(nonce),
                                        Aad::empty(),
                                        &mut buf,
                                    )
                                    .unwrap();
                                let plain = key
                                    .open_in_place_separate_tag(
                                        Nonce::assume_unique_for_key(nonce),
                                        Aad::empty(),
                                        tag,
                                        &mut buf,
                                        0..,
                                    )
                                    .unwrap();
                                black_box(plain);
                            }
                        });
                    },
                );
            }
            g.finish();
        }
        // AES-128-GCM on AWS-LC, the same way: the channel's AES-GCM runs on AWS-LC on
        // CPUs with AVX-512 and VAES (see the vendored ohttp's `rh/aead.rs`), so this is
        // the same-library floor there.
        let mut g = c.benchmark_group("raw_aws_lc_2seal_2open");
        configure(&mut g, len);
        let key = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_128_GCM, &[7u8; 16]).unwrap(),
        );
        let mut buf = body(len);
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("aws_lc_aes128gcm", label), &len, |b, _| {
            b.iter(|| {
                for _ in 0..2 {
                    counter = counter.wrapping_add(1);
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_be_bytes());
                    let nonce = || aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
                    let tag = key
                        .seal_in_place_separate_tag(
                            nonce(),
                            aws_lc_rs::aead::Aad::empty(),
                            &mut buf,
                        )
                        .unwrap();
                    let plain = key
                        .open_in_place_separate_tag(
                            nonce(),
                            aws_lc_rs::aead::Aad::empty(),
                            tag.as_ref(),
                            &mut buf,
                        )
                        .unwrap();
                    black_box(plain);
                }
            });
        });
        g.finish();
    }
}

/// A group for a fixed-cost figure (no throughput): 20 samples, 0.5 s warm-up, 2 s.
fn fixed_cost_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g
}

/// 32 random bytes (an X25519 private key).
fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k).unwrap();
    k
}

/// The fixed-cost floor of the X25519 KEM with `ring`: what DHKEM encap + decap cannot
/// do without (client: ephemeral key and its public key, one DH; enclave: one DH). HPKE's
/// key schedule, framing and padding are not in it.
fn x25519_floor(c: &mut Criterion) {
    let rng = ring::rand::SystemRandom::new();
    let server = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
    let server_pub = UnparsedPublicKey::new(&X25519, server.compute_public_key().unwrap());
    let mut g = fixed_cost_group(c, "raw_ring_x25519_dhkem");
    g.bench_function("encap+decap", |b| {
        b.iter(|| {
            let eph = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
            let enc = eph.compute_public_key().unwrap();
            let client = agreement::agree_ephemeral(eph, &server_pub, |k| k[0]).unwrap();
            // ring has no static X25519 keys; a fresh private key costs the same DH.
            let sk = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
            let enc = UnparsedPublicKey::new(&X25519, enc.as_ref());
            let server = agreement::agree_ephemeral(sk, &enc, |k| k[0]).unwrap();
            black_box((client, server))
        });
    });
    g.finish();
}

/// The same floor the way the channel did it before it used AWS-LC (the vendored
/// `ohttp` on `curve25519-dalek` alone): the client's ephemeral public key (fixed-base,
/// precomputed tables) and its DH with the enclave's key (fixed-base too: the client's
/// `Target` keeps a table of multiples of that key), mapped back with one shared
/// inversion; the enclave's DH (variable-base, through the Edwards form).
fn x25519_floor_dalek(c: &mut Criterion) {
    use curve25519_dalek::edwards::EdwardsBasepointTable;
    use curve25519_dalek::traits::BasepointTable;
    use curve25519_dalek::{EdwardsPoint, MontgomeryPoint};
    fn dh(k: [u8; 32], u: [u8; 32]) -> [u8; 32] {
        let p = MontgomeryPoint(u);
        match p.to_edwards(0) {
            Some(e) => e.mul_clamped(k).to_montgomery().to_bytes(),
            None => p.mul_clamped(k).to_bytes(),
        }
    }
    let sk_r = random_key();
    let pk_r_point = EdwardsPoint::mul_base_clamped(sk_r);
    let table = EdwardsBasepointTable::create(&pk_r_point);
    let mut g = fixed_cost_group(c, "dalek_x25519_dhkem");
    g.bench_function("encap+decap", |b| {
        b.iter(|| {
            let sk_e = random_key();
            let pk_e = EdwardsPoint::mul_base_clamped(sk_e);
            let shared = table.mul_base_clamped(sk_e);
            let both = EdwardsPoint::to_montgomery_batch(&[pk_e, shared]);
            let server = dh(sk_r, both[0].to_bytes());
            black_box((both[1].to_bytes(), server))
        });
    });
    g.bench_function("decap", |b| {
        let enc = EdwardsPoint::mul_base_clamped(random_key())
            .to_montgomery()
            .to_bytes();
        b.iter(|| black_box(dh(sk_r, black_box(enc))));
    });
    g.finish();
}

/// The floor the way the channel does it now (`attestation/vendor/ohttp/src/rh/x25519.rs`):
/// the client's ephemeral key pair from AWS-LC, its DH through the table of multiples of
/// the enclave's key (`curve25519-dalek`, one inversion); the enclave's DH with AWS-LC.
fn x25519_floor_aws_lc(c: &mut Criterion) {
    use aws_lc_rs::agreement::{self as lc, PrivateKey, X25519 as LC_X25519};
    use curve25519_dalek::EdwardsPoint;
    use curve25519_dalek::edwards::EdwardsBasepointTable;
    use curve25519_dalek::traits::BasepointTable;
    let sk_r = random_key();
    let server = PrivateKey::from_private_key(&LC_X25519, &sk_r).unwrap();
    let table = EdwardsBasepointTable::create(&EdwardsPoint::mul_base_clamped(sk_r));
    let decap = |enc: &[u8]| {
        lc::agree(
            &server,
            lc::UnparsedPublicKey::new(&LC_X25519, enc),
            (),
            |k| Ok(k[0]),
        )
        .unwrap()
    };
    let mut g = fixed_cost_group(c, "aws_lc_x25519_dhkem");
    g.bench_function("encap+decap", |b| {
        b.iter(|| {
            let sk_e = random_key();
            let eph = PrivateKey::from_private_key(&LC_X25519, &sk_e).unwrap();
            let enc = eph.compute_public_key().unwrap();
            let client = table.mul_base_clamped(sk_e).to_montgomery().to_bytes();
            black_box((client, decap(enc.as_ref())))
        });
    });
    g.bench_function("decap", |b| {
        let enc = PrivateKey::from_private_key(&LC_X25519, &random_key())
            .unwrap()
            .compute_public_key()
            .unwrap();
        b.iter(|| black_box(decap(black_box(enc.as_ref()))));
    });
    g.finish();
}

/// The one-time cost of a `Target` (parsing the configuration, and for X25519 the
/// table of multiples of the enclave's key that makes each request's DH cheaper).
fn target_setup(c: &mut Criterion) {
    let keys = ServerKeys::generate().unwrap();
    let x25519 = keys.configs().configs()[0].clone();
    let mut g = fixed_cost_group(c, "channel_target_setup");
    g.bench_function("x25519", |b| {
        b.iter(|| {
            black_box(Target::dangerous_unverified(x25519.clone(), AeadKind::Aes128Gcm).unwrap())
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    channel,
    x25519_floor,
    x25519_floor_dalek,
    x25519_floor_aws_lc,
    target_setup
);
criterion_main!(benches);
