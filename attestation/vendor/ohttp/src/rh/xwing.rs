//! veil patch: X-Wing (draft-connolly-cfrg-xwing-kem; HPKE KEM 0x647a, as the `hpke`
//! crate's `XWing`), the post-quantum hybrid of ML-KEM-768 and X25519.
//!
//! Same keys, ciphertexts and shared secrets as the `hpke` crate's `XWing` (the tests
//! check both directions against it), done faster:
//!
//! - The private key stays the 32-byte seed of the draft, but it is expanded once, when
//!   the key is made, not on every decapsulation (the `x-wing` crate re-derives the
//!   whole ML-KEM key pair and the X25519 public key from the seed each time).
//! - ML-KEM-768 encapsulation and decapsulation run on AWS-LC (`aws-lc-rs`), about 4–5×
//!   faster than the RustCrypto `ml-kem` crate on the machines in veil's
//!   `BENCHMARKS.md`. The seed is expanded with `ml-kem` (FIPS 203 `ML-KEM.KeyGen_internal`)
//!   and the expanded decapsulation key handed to AWS-LC once.
//! - The X25519 half uses `super::x25519`: AWS-LC for the recipient's DH and for key
//!   generation, and the table of multiples of the recipient's key for the sender's DH
//!   ([`PublicKey::precompute`]).
//!
//! One deliberate difference: a ciphertext whose X25519 share makes the all-zero DH
//! output (a low-order point) is refused here, as DHKEM(X25519) refuses it
//! (RFC 7748 §6.1 allows either). Only a sender that chose such a share can cause it;
//! an honest one never does.

use std::sync::Arc;

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_768};
#[allow(deprecated)]
use ml_kem::ExpandedKeyEncoding;
use ml_kem::{FromSeed, KeyExport, MlKem768, TryKeyInit};
use ring::rand::{SecureRandom, SystemRandom};
use sha3::digest::Update;
use sha3::{Digest, Sha3_256};
use shake::{ExtendableOutput, Shake256, XofReader};
use zeroize::{Zeroize, Zeroizing};

use super::x25519;
use crate::err::{Error, Res};

/// Length of a private key (the seed).
pub const SK_LEN: usize = 32;
/// Length of a public key: ML-KEM-768's encapsulation key, then X25519's public key.
pub const PK_LEN: usize = ML_KEM_PK_LEN + x25519::LEN;
/// Length of a ciphertext (`enc`): ML-KEM-768's ciphertext, then X25519's share.
pub const CT_LEN: usize = ML_KEM_CT_LEN + x25519::LEN;

const ML_KEM_PK_LEN: usize = 1184;
const ML_KEM_CT_LEN: usize = 1088;
/// The combiner's label, `\.//^\`.
const LABEL: &[u8; 6] = b"\\.//^\\";

fn bad_key() -> Error {
    Error::Hpke(::hpke::HpkeError::ValidationError)
}

/// A recipient's public key, parsed once.
#[derive(Clone)]
pub struct PublicKey {
    bytes: Arc<[u8; PK_LEN]>,
    ml_kem: Arc<EncapsulationKey>,
    x25519: x25519::PublicKey,
}

impl PublicKey {
    /// Parse a public key; an ML-KEM key that fails FIPS 203's modulus check is refused.
    pub fn from_bytes(bytes: &[u8]) -> Res<Self> {
        let bytes: [u8; PK_LEN] = bytes.try_into().map_err(|_| {
            Error::Hpke(::hpke::HpkeError::IncorrectInputLength(PK_LEN, bytes.len()))
        })?;
        let (m, x) = bytes.split_at(ML_KEM_PK_LEN);
        // FIPS 203 §7.2's modulus check, which AWS-LC does not make on import: every
        // coefficient below q (the `ml-kem` crate checks it when it parses a key).
        <ml_kem::EncapsulationKey<MlKem768> as TryKeyInit>::new_from_slice(m)
            .map_err(|_| bad_key())?;
        let ml_kem = EncapsulationKey::new(&ML_KEM_768, m).map_err(|_| bad_key())?;
        let x: [u8; x25519::LEN] = x.try_into().map_err(|_| Error::Internal)?;
        Ok(Self {
            bytes: Arc::new(bytes),
            ml_kem: Arc::new(ml_kem),
            x25519: x25519::PublicKey::from_bytes(x),
        })
    }

    pub fn bytes(&self) -> &[u8; PK_LEN] {
        &self.bytes
    }

    /// See [`x25519::PublicKey::precompute`]: makes each encapsulation's X25519 DH a
    /// fixed-base multiplication.
    pub fn precompute(&mut self) {
        self.x25519.precompute();
    }

    /// `Encaps(pk)`: the shared secret and the ciphertext.
    pub fn encap(&self) -> Res<(Zeroizing<[u8; 32]>, Vec<u8>)> {
        let (ct_m, ss_m) = self.ml_kem.encapsulate().map_err(|_| Error::Internal)?;
        let (ct_x, ss_x) = x25519::ephemeral_dh(&self.x25519)?;
        let ss = combiner(ss_m.as_ref(), &ss_x[..], &ct_x, self.x25519.bytes());
        let mut enc = Vec::with_capacity(CT_LEN);
        enc.extend_from_slice(ct_m.as_ref());
        enc.extend_from_slice(&ct_x);
        if enc.len() != CT_LEN {
            return Err(Error::Internal);
        }
        Ok((ss, enc))
    }
}

/// A private key: the seed, and what it expands to.
#[derive(Clone)]
pub struct PrivateKey {
    seed: Zeroizing<[u8; SK_LEN]>,
    /// AWS-LC's decapsulation key (freed, and cleansed, by AWS-LC on drop).
    ml_kem: Arc<DecapsulationKey>,
    x25519: x25519::KeyPair,
    public: PublicKey,
}

impl PrivateKey {
    /// Expand a seed as the draft's `expandDecapsulationKey` does: SHAKE256 of the
    /// seed gives ML-KEM-768's 64-byte key generation seed `d || z`, then X25519's
    /// private key.
    pub fn from_seed(seed: &[u8]) -> Res<Self> {
        let seed: Zeroizing<[u8; SK_LEN]> = Zeroizing::new(seed.try_into().map_err(|_| {
            Error::Hpke(::hpke::HpkeError::IncorrectInputLength(SK_LEN, seed.len()))
        })?);
        let mut shake = Shake256::default();
        shake.update(&seed[..]);
        let mut xof = shake.finalize_xof();
        let mut ml_seed = Zeroizing::new([0u8; 64]);
        xof.read(&mut ml_seed[..]);
        let mut sk_x = Zeroizing::new([0u8; x25519::LEN]);
        xof.read(&mut sk_x[..]);

        let (dk, ek) = MlKem768::from_seed(&(*ml_seed).into());
        #[allow(deprecated)]
        let mut expanded = dk.to_expanded_bytes();
        let ml_kem = DecapsulationKey::new(&ML_KEM_768, expanded.as_slice());
        expanded.as_mut_slice().zeroize();
        let ml_kem = ml_kem.map_err(|_| Error::Internal)?;

        let x25519 = x25519::KeyPair::from_secret(sk_x)?;
        let mut pk = [0u8; PK_LEN];
        pk[..ML_KEM_PK_LEN].copy_from_slice(ek.to_bytes().as_slice());
        pk[ML_KEM_PK_LEN..].copy_from_slice(x25519.public());
        let public = PublicKey::from_bytes(&pk)?;
        Ok(Self {
            seed,
            ml_kem: Arc::new(ml_kem),
            x25519,
            public,
        })
    }

    /// A fresh random key.
    pub fn generate() -> Res<Self> {
        let mut seed = Zeroizing::new([0u8; SK_LEN]);
        SystemRandom::new().fill(&mut seed[..])?;
        Self::from_seed(&seed[..])
    }

    pub fn seed(&self) -> &[u8; SK_LEN] {
        &self.seed
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// `Decaps(sk, enc)`: the shared secret. ML-KEM's implicit rejection gives a wrong
    /// ciphertext a pseudorandom secret (the AEAD then fails); an X25519 share with an
    /// all-zero DH output is refused.
    pub fn decap(&self, enc: &[u8]) -> Res<Zeroizing<[u8; 32]>> {
        if enc.len() != CT_LEN {
            return Err(Error::Hpke(::hpke::HpkeError::IncorrectInputLength(
                CT_LEN,
                enc.len(),
            )));
        }
        let (ct_m, ct_x) = enc.split_at(ML_KEM_CT_LEN);
        let ct_x: &[u8; x25519::LEN] = ct_x.try_into().map_err(|_| Error::Internal)?;
        let ss_m = self
            .ml_kem
            .decapsulate(Ciphertext::from(ct_m))
            .map_err(|_| bad_key())?;
        let ss_x = self.x25519.dh(ct_x)?;
        Ok(combiner(
            ss_m.as_ref(),
            &ss_x[..],
            ct_x,
            self.public.x25519.bytes(),
        ))
    }
}

/// The X-Wing combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || label).
fn combiner(ss_m: &[u8], ss_x: &[u8], ct_x: &[u8], pk_x: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha3_256::new();
    Digest::update(&mut h, ss_m);
    Digest::update(&mut h, ss_x);
    Digest::update(&mut h, ct_x);
    Digest::update(&mut h, pk_x);
    Digest::update(&mut h, LABEL);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(h.finalize().as_slice());
    out
}

#[cfg(test)]
mod test {
    use ::hpke::{Deserializable, Kem as _, Serializable, kem::XWing};

    use super::{CT_LEN, PK_LEN, PrivateKey, PublicKey};

    /// Keys made from the same seed are the `hpke` crate's, and each side decapsulates
    /// what the other encapsulated to the same shared secret.
    #[test]
    fn agrees_with_the_hpke_crate() {
        for _ in 0..8 {
            let ours = PrivateKey::generate().unwrap();
            let theirs = <XWing as ::hpke::Kem>::PrivateKey::from_bytes(ours.seed()).unwrap();
            let their_pk = XWing::sk_to_pk(&theirs);
            assert_eq!(&their_pk.to_bytes()[..], &ours.public().bytes()[..]);

            // Theirs encapsulates, ours decapsulates.
            let (ss, enc) = XWing::encap(&their_pk, None).unwrap();
            let ours_ss = ours.decap(&enc.to_bytes()).unwrap();
            assert_eq!(&ss.0[..], &ours_ss[..]);

            // Ours encapsulates (with and without the table), theirs decapsulates.
            let mut pk = PublicKey::from_bytes(&their_pk.to_bytes()).unwrap();
            for _ in 0..2 {
                let (ss, enc) = pk.encap().unwrap();
                assert_eq!(enc.len(), CT_LEN);
                let enc = <XWing as ::hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
                let their_ss = XWing::decap(&theirs, None, &enc).unwrap();
                assert_eq!(&ss[..], &their_ss.0[..]);
                pk.precompute();
            }
        }
    }

    /// A tampered ciphertext yields a different secret (ML-KEM's implicit rejection),
    /// not an error or a panic; wrong lengths and a low-order X25519 share are errors.
    #[test]
    fn tampering_and_bad_lengths() {
        let sk = PrivateKey::generate().unwrap();
        let (ss, enc) = sk.public().encap().unwrap();
        assert_eq!(&sk.decap(&enc).unwrap()[..], &ss[..]);
        for i in [0, 500, 1087, 1088, 1119] {
            let mut bad = enc.clone();
            bad[i] ^= 1;
            if let Ok(other) = sk.decap(&bad) {
                assert_ne!(&other[..], &ss[..], "byte {i}");
            }
        }
        assert!(sk.decap(&enc[..CT_LEN - 1]).is_err());
        assert!(sk.decap(&[enc.as_slice(), &[0]].concat()).is_err());
        assert!(sk.decap(&[]).is_err());
        let mut low_order = enc.clone();
        low_order[1088..].copy_from_slice(&[0u8; 32]);
        assert!(sk.decap(&low_order).is_err());

        assert!(PublicKey::from_bytes(&sk.public().bytes()[..PK_LEN - 1]).is_err());
        assert!(PrivateKey::from_seed(&[0u8; 31]).is_err());
        // An ML-KEM key whose first coefficient is 4095 (> q = 3329) fails the
        // modulus check.
        let mut bad = *sk.public().bytes();
        bad[0] = 0xff;
        bad[1] |= 0x0f;
        assert!(PublicKey::from_bytes(&bad).is_err());
    }
}
