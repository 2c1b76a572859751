//! veil patch: the AEAD is `ring`'s (AES-GCM with AES-NI/VAES and (V)PCLMULQDQ,
//! ChaCha20-Poly1305 with SIMD), used in place. Upstream used the `RustCrypto`
//! `aes-gcm` and `chacha20poly1305` crates through their allocating `Aead` API.
//!
//! AES-GCM runs on AWS-LC instead (`aws-lc-rs`, already here for X25519) on CPUs where
//! AWS-LC uses its AVX-512 code (VAES, VPCLMULQDQ and AVX-512 F/DQ/IFMA/BW/VL, the test
//! AWS-LC's `crypto_gcm_avx512_enabled` makes): there it seals and opens about 1.5×
//! faster than ring's AVX2 code. Elsewhere ring's is the faster one (about 3× on a Zen 3
//! with VAES but no AVX-512), so it stays. The bytes are the same either way.

use ring::aead::{AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, LessSafeKey, UnboundKey};

use super::SymKey;
use crate::{
    crypto::{Decrypt, Encrypt},
    err::{Error, Res},
    hpke::Aead as AeadId,
};

/// All the nonces are the same length.  Exploit that.
pub const NONCE_LEN: usize = 12;
/// All the tags are the same length too.
pub const TAG_LEN: usize = 16;
const COUNTER_LEN: usize = 8;

type SequenceNumber = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Encrypt,
    Decrypt,
}

fn algorithm(id: AeadId) -> &'static ring::aead::Algorithm {
    match id {
        AeadId::Aes128Gcm => &AES_128_GCM,
        AeadId::Aes256Gcm => &AES_256_GCM,
        AeadId::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    }
}

/// Whether AES-GCM runs on AWS-LC on this CPU: where AWS-LC takes its AVX-512 path.
/// (`is_x86_feature_detected!` reads a cached word: cheap enough per key.)
fn aes_gcm_on_aws_lc() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("vaes")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512ifma")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A key of either library. AWS-LC wipes its key schedule when it frees it (its
/// `OPENSSL_free` cleanses every allocation); ring's is wiped by [`Aead`]'s `Drop`.
enum Key {
    Ring(LessSafeKey),
    AwsLc(aws_lc_rs::aead::LessSafeKey),
}

impl Key {
    fn new(algorithm: AeadId, key: &[u8]) -> Res<Self> {
        let aws_lc = match algorithm {
            AeadId::Aes128Gcm => Some(&aws_lc_rs::aead::AES_128_GCM),
            AeadId::Aes256Gcm => Some(&aws_lc_rs::aead::AES_256_GCM),
            AeadId::ChaCha20Poly1305 => None,
        };
        // Both libraries check the key length against the algorithm.
        match aws_lc {
            Some(alg) if aes_gcm_on_aws_lc() => Ok(Self::AwsLc(aws_lc_rs::aead::LessSafeKey::new(
                aws_lc_rs::aead::UnboundKey::new(alg, key).map_err(|_| Error::Aead)?,
            ))),
            _ => Ok(Self::Ring(LessSafeKey::new(UnboundKey::new(
                self::algorithm(algorithm),
                key,
            )?))),
        }
    }

    fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Res<[u8; TAG_LEN]> {
        let mut out = [0; TAG_LEN];
        match self {
            Self::Ring(k) => {
                let tag = k.seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    buf,
                )?;
                out.copy_from_slice(tag.as_ref());
            }
            Self::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                        aws_lc_rs::aead::Aad::from(aad),
                        buf,
                    )
                    .map_err(|_| Error::Aead)?;
                out.copy_from_slice(tag.as_ref());
            }
        }
        Ok(out)
    }

    /// Opens `buf` (ciphertext then tag) in place; on failure the ciphertext part of
    /// `buf` is zeroed (ring does it itself; done here for AWS-LC, whose output is then
    /// unspecified).
    fn open<'a>(&self, nonce: [u8; NONCE_LEN], aad: &[u8], buf: &'a mut [u8]) -> Res<&'a mut [u8]> {
        match self {
            Self::Ring(k) => Ok(k.open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                buf,
            )?),
            Self::AwsLc(k) => {
                let len = buf.len().saturating_sub(TAG_LEN);
                let ok = k
                    .open_in_place(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                        aws_lc_rs::aead::Aad::from(aad),
                        buf,
                    )
                    .is_ok();
                if ok {
                    Ok(&mut buf[..len])
                } else {
                    zeroize::Zeroize::zeroize(&mut buf[..len]);
                    Err(Error::Aead)
                }
            }
        }
    }
}

/// A switch-hitting AEAD that uses a selected primitive, with a nonce made from a
/// base nonce and a sequence number (RFC 9180 §5.2; RFC 9458 §4.4 uses the same
/// construction with sequence number 0).
pub struct Aead {
    mode: Mode,
    #[allow(dead_code, reason = "Used by stream feature")]
    algorithm: AeadId,
    /// Boxed: `ring`'s key schedules are large, and this wipes it where it lies.
    key: Box<Key>,
    nonce_base: [u8; NONCE_LEN],
    seq: SequenceNumber,
}

impl Aead {
    pub fn new(
        mode: Mode,
        algorithm: AeadId,
        key: &SymKey,
        nonce_base: [u8; NONCE_LEN],
    ) -> Res<Self> {
        Self::from_key_bytes(mode, algorithm, key.as_ref(), nonce_base)
    }

    pub(crate) fn from_key_bytes(
        mode: Mode,
        algorithm: AeadId,
        key: &[u8],
        nonce_base: [u8; NONCE_LEN],
    ) -> Res<Self> {
        let key = Box::new(Key::new(algorithm, key)?);
        Ok(Self {
            mode,
            algorithm,
            key,
            nonce_base,
            seq: 0,
        })
    }

    #[cfg(test)]
    #[allow(clippy::unnecessary_wraps)]
    fn import_key(_alg: AeadId, k: &[u8]) -> Res<SymKey> {
        Ok(SymKey::from(k))
    }

    fn nonce(&self, seq: SequenceNumber) -> [u8; NONCE_LEN] {
        let mut nonce = self.nonce_base;
        for (n, s) in nonce[NONCE_LEN - COUNTER_LEN..]
            .iter_mut()
            .zip(seq.to_be_bytes())
        {
            *n ^= s;
        }
        nonce
    }

    /// The next sequence number; an error, never a wrap, at the end of the space
    /// (RFC 9180 §5.2, `MessageLimitReachedError`).
    fn next_seq(&mut self) -> Res<SequenceNumber> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(Error::Internal)?;
        Ok(seq)
    }

    /// Encrypt `buf` in place and return the tag.
    pub fn seal_in_place(&mut self, aad: &[u8], buf: &mut [u8]) -> Res<[u8; TAG_LEN]> {
        if self.mode != Mode::Encrypt {
            return Err(Error::Internal);
        }
        let seq = self.next_seq()?;
        self.key.seal(self.nonce(seq), aad, buf)
    }

    /// Decrypt `buf` (ciphertext then tag) in place, with an explicit sequence number.
    /// On success, the plaintext is the returned prefix of `buf`; on failure, the
    /// part of `buf` that held ciphertext has been zeroed.
    pub fn open_seq_in_place<'a>(
        &self,
        aad: &[u8],
        seq: SequenceNumber,
        buf: &'a mut [u8],
    ) -> Res<&'a mut [u8]> {
        if self.mode != Mode::Decrypt {
            return Err(Error::Internal);
        }
        if buf.len() < TAG_LEN {
            return Err(Error::Truncated);
        }
        self.key.open(self.nonce(seq), aad, buf)
    }

    /// Decrypt `buf` in place with the next sequence number.
    pub fn open_in_place<'a>(&mut self, aad: &[u8], buf: &'a mut [u8]) -> Res<&'a mut [u8]> {
        let seq = self.next_seq()?;
        self.open_seq_in_place(aad, seq, buf)
    }

    #[allow(dead_code, reason = "Used by stream feature")]
    pub fn open_seq(&mut self, aad: &[u8], seq: SequenceNumber, ct: &[u8]) -> Res<Vec<u8>> {
        let mut buf = ct.to_vec();
        let len = self.open_seq_in_place(aad, seq, &mut buf)?.len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl Drop for Aead {
    /// `ring` does not wipe its expanded keys. Overwrite the key schedule in place with
    /// that of an all-zero key (same algorithm, so the same layout), and keep the store
    /// from being optimised away; clear the base nonce the same way. (AWS-LC wipes its
    /// own when the key is freed.)
    fn drop(&mut self) {
        if let Key::Ring(key) = &mut *self.key {
            let alg = key.algorithm();
            let zero = [0u8; 32];
            if let Ok(k) = UnboundKey::new(alg, &zero[..alg.key_len()]) {
                *key = LessSafeKey::new(k);
            }
        }
        self.nonce_base = [0; NONCE_LEN];
        std::hint::black_box(&*self.key);
        std::hint::black_box(&self.nonce_base);
    }
}

impl Decrypt for Aead {
    fn open(&mut self, aad: &[u8], ct: &[u8]) -> Res<Vec<u8>> {
        let seq = self.next_seq()?;
        self.open_seq(aad, seq, ct)
    }

    fn alg(&self) -> AeadId {
        self.algorithm
    }
}

impl Encrypt for Aead {
    fn seal(&mut self, aad: &[u8], pt: &[u8]) -> Res<Vec<u8>> {
        let mut buf = Vec::with_capacity(pt.len() + TAG_LEN);
        buf.extend_from_slice(pt);
        let tag = self.seal_in_place(aad, &mut buf)?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    fn alg(&self) -> AeadId {
        self.algorithm
    }
}

#[cfg(test)]
mod test {
    use super::SequenceNumber;
    use crate::{
        Aead, Mode, NONCE_LEN,
        crypto::{Decrypt, Encrypt},
        hpke::Aead as AeadId,
        init,
    };

    /// Check that the first invocation of encryption matches expected values.
    /// Also check decryption of the same.
    fn check0(
        algorithm: AeadId,
        key: &[u8],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        pt: &[u8],
        ct: &[u8],
    ) {
        init();
        let k = Aead::import_key(algorithm, key).unwrap();

        let mut enc = Aead::new(Mode::Encrypt, algorithm, &k, *nonce).unwrap();
        let ciphertext = enc.seal(aad, pt).unwrap();
        assert_eq!(&ciphertext[..], ct);

        let mut dec = Aead::new(Mode::Decrypt, algorithm, &k, *nonce).unwrap();
        let plaintext = dec.open(aad, ct).unwrap();
        assert_eq!(&plaintext[..], pt);
    }

    fn decrypt(
        algorithm: AeadId,
        key: &[u8],
        nonce: &[u8; NONCE_LEN],
        seq: SequenceNumber,
        aad: &[u8],
        pt: &[u8],
        ct: &[u8],
    ) {
        let k = Aead::import_key(algorithm, key).unwrap();
        let mut dec = Aead::new(Mode::Decrypt, algorithm, &k, *nonce).unwrap();
        let plaintext = dec.open_seq(aad, seq, ct).unwrap();
        assert_eq!(&plaintext[..], pt);
    }

    /// This tests the AEAD in QUIC in combination with the HKDF code.
    /// This is an AEAD-only example.
    #[test]
    fn quic_retry() {
        const KEY: &[u8] = &[
            0xbe, 0x0c, 0x69, 0x0b, 0x9f, 0x66, 0x57, 0x5a, 0x1d, 0x76, 0x6b, 0x54, 0xe3, 0x68,
            0xc8, 0x4e,
        ];
        const NONCE: &[u8; NONCE_LEN] = &[
            0x46, 0x15, 0x99, 0xd3, 0x5d, 0x63, 0x2b, 0xf2, 0x23, 0x98, 0x25, 0xbb,
        ];
        const AAD: &[u8] = &[
            0x08, 0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0xff, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x08, 0xf0, 0x67, 0xa5, 0x50, 0x2a, 0x42, 0x62, 0xb5, 0x74, 0x6f, 0x6b, 0x65,
            0x6e,
        ];
        const CT: &[u8] = &[
            0x04, 0xa2, 0x65, 0xba, 0x2e, 0xff, 0x4d, 0x82, 0x90, 0x58, 0xfb, 0x3f, 0x0f, 0x24,
            0x96, 0xba,
        ];
        check0(AeadId::Aes128Gcm, KEY, NONCE, AAD, &[], CT);
    }

    #[test]
    fn quic_server_initial() {
        const ALG: AeadId = AeadId::Aes128Gcm;
        const KEY: &[u8] = &[
            0xcf, 0x3a, 0x53, 0x31, 0x65, 0x3c, 0x36, 0x4c, 0x88, 0xf0, 0xf3, 0x79, 0xb6, 0x06,
            0x7e, 0x37,
        ];
        const NONCE_BASE: &[u8; NONCE_LEN] = &[
            0x0a, 0xc1, 0x49, 0x3c, 0xa1, 0x90, 0x58, 0x53, 0xb0, 0xbb, 0xa0, 0x3e,
        ];
        // Note that this integrates the sequence number of 1 from the example,
        // otherwise we can't use a sequence number of 0 to encrypt.
        const NONCE: &[u8; NONCE_LEN] = &[
            0x0a, 0xc1, 0x49, 0x3c, 0xa1, 0x90, 0x58, 0x53, 0xb0, 0xbb, 0xa0, 0x3f,
        ];
        const AAD: &[u8] = &[
            0xc1, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0xf0, 0x67, 0xa5, 0x50, 0x2a, 0x42, 0x62,
            0xb5, 0x00, 0x40, 0x75, 0x00, 0x01,
        ];
        const PT: &[u8] = &[
            0x02, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x40, 0x5a, 0x02, 0x00, 0x00, 0x56, 0x03,
            0x03, 0xee, 0xfc, 0xe7, 0xf7, 0xb3, 0x7b, 0xa1, 0xd1, 0x63, 0x2e, 0x96, 0x67, 0x78,
            0x25, 0xdd, 0xf7, 0x39, 0x88, 0xcf, 0xc7, 0x98, 0x25, 0xdf, 0x56, 0x6d, 0xc5, 0x43,
            0x0b, 0x9a, 0x04, 0x5a, 0x12, 0x00, 0x13, 0x01, 0x00, 0x00, 0x2e, 0x00, 0x33, 0x00,
            0x24, 0x00, 0x1d, 0x00, 0x20, 0x9d, 0x3c, 0x94, 0x0d, 0x89, 0x69, 0x0b, 0x84, 0xd0,
            0x8a, 0x60, 0x99, 0x3c, 0x14, 0x4e, 0xca, 0x68, 0x4d, 0x10, 0x81, 0x28, 0x7c, 0x83,
            0x4d, 0x53, 0x11, 0xbc, 0xf3, 0x2b, 0xb9, 0xda, 0x1a, 0x00, 0x2b, 0x00, 0x02, 0x03,
            0x04,
        ];
        const CT: &[u8] = &[
            0x5a, 0x48, 0x2c, 0xd0, 0x99, 0x1c, 0xd2, 0x5b, 0x0a, 0xac, 0x40, 0x6a, 0x58, 0x16,
            0xb6, 0x39, 0x41, 0x00, 0xf3, 0x7a, 0x1c, 0x69, 0x79, 0x75, 0x54, 0x78, 0x0b, 0xb3,
            0x8c, 0xc5, 0xa9, 0x9f, 0x5e, 0xde, 0x4c, 0xf7, 0x3c, 0x3e, 0xc2, 0x49, 0x3a, 0x18,
            0x39, 0xb3, 0xdb, 0xcb, 0xa3, 0xf6, 0xea, 0x46, 0xc5, 0xb7, 0x68, 0x4d, 0xf3, 0x54,
            0x8e, 0x7d, 0xde, 0xb9, 0xc3, 0xbf, 0x9c, 0x73, 0xcc, 0x3f, 0x3b, 0xde, 0xd7, 0x4b,
            0x56, 0x2b, 0xfb, 0x19, 0xfb, 0x84, 0x02, 0x2f, 0x8e, 0xf4, 0xcd, 0xd9, 0x37, 0x95,
            0xd7, 0x7d, 0x06, 0xed, 0xbb, 0x7a, 0xaf, 0x2f, 0x58, 0x89, 0x18, 0x50, 0xab, 0xbd,
            0xca, 0x3d, 0x20, 0x39, 0x8c, 0x27, 0x64, 0x56, 0xcb, 0xc4, 0x21, 0x58, 0x40, 0x7d,
            0xd0, 0x74, 0xee,
        ];
        check0(ALG, KEY, NONCE, AAD, PT, CT);
        decrypt(ALG, KEY, NONCE_BASE, 1, AAD, PT, CT);
    }

    #[test]
    fn quic_chacha() {
        const ALG: AeadId = AeadId::ChaCha20Poly1305;
        const KEY: &[u8] = &[
            0xc6, 0xd9, 0x8f, 0xf3, 0x44, 0x1c, 0x3f, 0xe1, 0xb2, 0x18, 0x20, 0x94, 0xf6, 0x9c,
            0xaa, 0x2e, 0xd4, 0xb7, 0x16, 0xb6, 0x54, 0x88, 0x96, 0x0a, 0x7a, 0x98, 0x49, 0x79,
            0xfb, 0x23, 0xe1, 0xc8,
        ];
        const NONCE_BASE: &[u8; NONCE_LEN] = &[
            0xe0, 0x45, 0x9b, 0x34, 0x74, 0xbd, 0xd0, 0xe4, 0x4a, 0x41, 0xc1, 0x44,
        ];
        // Note that this integrates the sequence number of 654360564 from the example,
        // otherwise we can't use a sequence number of 0 to encrypt.
        const NONCE: &[u8; NONCE_LEN] = &[
            0xe0, 0x45, 0x9b, 0x34, 0x74, 0xbd, 0xd0, 0xe4, 0x6d, 0x41, 0x7e, 0xb0,
        ];
        const AAD: &[u8] = &[0x42, 0x00, 0xbf, 0xf4];
        const PT: &[u8] = &[0x01];
        const CT: &[u8] = &[
            0x65, 0x5e, 0x5c, 0xd5, 0x5c, 0x41, 0xf6, 0x90, 0x80, 0x57, 0x5d, 0x79, 0x99, 0xc2,
            0x5a, 0x5b, 0xfb,
        ];
        check0(ALG, KEY, NONCE, AAD, PT, CT);
        // Now use the real nonce and sequence number from the example.
        decrypt(ALG, KEY, NONCE_BASE, 654_360_564, AAD, PT, CT);
    }

    #[test]
    fn seal_open_many() {
        const PT: &[u8] = b"abc";
        const ALG: AeadId = AeadId::Aes128Gcm;
        const KEY: &[u8] = &[0; 16];
        const NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

        init();
        let k = Aead::import_key(ALG, KEY).unwrap();

        let mut e = Aead::new(Mode::Encrypt, ALG, &k, NONCE).unwrap();
        let mut d = Aead::new(Mode::Decrypt, ALG, &k, NONCE).unwrap();

        for i in 1..5 {
            let ct = e.seal(&[], PT).unwrap();
            println!("ct{i}: {}", hex::encode(&ct));

            let pt = d.open(&[], &ct).unwrap();
            assert_eq!(pt, PT);
        }
    }

    /// AES-GCM on either library gives the same bytes, and each opens the other's.
    #[test]
    fn aes_gcm_on_ring_and_aws_lc_agree() {
        use super::{Key, NONCE_LEN, TAG_LEN};
        use ring::aead::{AES_128_GCM, AES_256_GCM, LessSafeKey, UnboundKey};
        for (alg, ring_alg, aws_alg, key) in [
            (
                AeadId::Aes128Gcm,
                &AES_128_GCM,
                &aws_lc_rs::aead::AES_128_GCM,
                &[3u8; 16][..],
            ),
            (
                AeadId::Aes256Gcm,
                &AES_256_GCM,
                &aws_lc_rs::aead::AES_256_GCM,
                &[5u8; 32][..],
            ),
        ] {
            let ring_key = Key::Ring(LessSafeKey::new(UnboundKey::new(ring_alg, key).unwrap()));
            let aws_key = Key::AwsLc(aws_lc_rs::aead::LessSafeKey::new(
                aws_lc_rs::aead::UnboundKey::new(aws_alg, key).unwrap(),
            ));
            for len in [0usize, 1, 15, 16, 17, 255, 4096, 65_537] {
                let pt: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let nonce = [(len % 256) as u8; NONCE_LEN];
                let (mut a, mut b) = (pt.clone(), pt.clone());
                let ta = ring_key.seal(nonce, b"aad", &mut a).unwrap();
                let tb = aws_key.seal(nonce, b"aad", &mut b).unwrap();
                assert_eq!((&a, ta), (&b, tb), "{alg:?}, {len} bytes");
                a.extend_from_slice(&ta);
                b.extend_from_slice(&tb);
                assert_eq!(aws_key.open(nonce, b"aad", &mut a).unwrap(), &pt[..]);
                assert_eq!(ring_key.open(nonce, b"aad", &mut b).unwrap(), &pt[..]);
                // A wrong tag fails on both, with the ciphertext wiped.
                for k in [&ring_key, &aws_key] {
                    let mut c = pt.clone();
                    let mut tag = k.seal(nonce, b"", &mut c).unwrap();
                    tag[TAG_LEN - 1] ^= 1;
                    c.extend_from_slice(&tag);
                    assert!(k.open(nonce, b"", &mut c).is_err());
                    assert!(c[..len].iter().all(|&x| x == 0));
                }
            }
        }
    }

    #[test]
    fn failed_open_wipes_and_errs() {
        const ALG: AeadId = AeadId::ChaCha20Poly1305;
        let k = Aead::import_key(ALG, &[9; 32]).unwrap();
        let mut e = Aead::new(Mode::Encrypt, ALG, &k, [1; NONCE_LEN]).unwrap();
        let mut d = Aead::new(Mode::Decrypt, ALG, &k, [1; NONCE_LEN]).unwrap();
        let mut ct = e.seal(b"", b"secret plaintext").unwrap();
        ct[0] ^= 1;
        assert!(d.open_in_place(b"", &mut ct).is_err());
        assert!(ct[..16].iter().all(|&b| b == 0));
        assert!(d.open_in_place(b"", &mut [0u8; 15]).is_err());
    }
}
