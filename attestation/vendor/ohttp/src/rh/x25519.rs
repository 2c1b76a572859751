//! veil patch: X25519 (RFC 7748) for DHKEM(X25519, HKDF-SHA256).
//!
//! Three things make it faster than going through `hpke`/`x25519-dalek`:
//!
//! - The scalar multiplications that involve a secret and a point that is not fixed
//!   (the recipient's DH, a sender's DH without a table) and the key generations run
//!   on AWS-LC (`aws-lc-rs`), whose X25519 on x86-64 is s2n-bignum's formally
//!   verified, constant-time code using BMI2/ADX: on the machine in veil's
//!   `BENCHMARKS.md` a DH takes about 60 % of the time of `curve25519-dalek`'s
//!   fastest variable-base path (its AVX2 Edwards multiplication), and making a
//!   key pair about 40 %.
//! - The recipient's public key is computed once, when the key is made, and kept
//!   beside the private key (`hpke`'s `decap` recomputes it for every message), and
//!   the sender's ephemeral public key is computed once (`hpke`'s `encap` computes it
//!   twice).
//! - A sender that seals many messages to one recipient key can precompute a table of
//!   multiples of that key ([`PublicKey::precompute`], ~30 KiB, shared by clones,
//!   `curve25519-dalek`), so that its DH is a fixed-base multiplication (faster than
//!   a variable-base one); the result is mapped back to Montgomery form with one
//!   inversion. The tests compare it with X25519 on random keys.
//!
//! AWS-LC refuses the all-zero DH output itself; the check here is kept anyway
//! (RFC 9180 §7.1.4), in constant time, on both sides and on both paths.

use std::sync::Arc;

use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use curve25519_dalek::edwards::EdwardsBasepointTable;
use curve25519_dalek::traits::BasepointTable;
use curve25519_dalek::MontgomeryPoint;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::err::{Error, Res};

/// Length of keys, encapsulated keys and DH outputs.
pub const LEN: usize = 32;

/// A private key and its public key.
#[derive(Clone)]
pub struct KeyPair {
    sk: Zeroizing<[u8; LEN]>,
    pk: [u8; LEN],
    /// The same private key in AWS-LC's form (freed, and cleansed, by AWS-LC on drop).
    key: Arc<agreement::PrivateKey>,
}

impl KeyPair {
    /// From a private key (any 32 bytes; clamped when used, as RFC 7748 says).
    pub fn from_secret(sk: Zeroizing<[u8; LEN]>) -> Res<Self> {
        let key = agreement::PrivateKey::from_private_key(&X25519, &sk[..])
            .map_err(|_| Error::Internal)?;
        let public = key.compute_public_key().map_err(|_| Error::Internal)?;
        let pk = <[u8; LEN]>::try_from(public.as_ref()).map_err(|_| Error::Internal)?;
        Ok(Self {
            sk,
            pk,
            key: Arc::new(key),
        })
    }

    /// A fresh random key pair.
    pub fn generate() -> Res<Self> {
        let mut sk = Zeroizing::new([0u8; LEN]);
        SystemRandom::new().fill(&mut sk[..])?;
        Self::from_secret(sk)
    }

    pub fn public(&self) -> &[u8; LEN] {
        &self.pk
    }

    pub fn secret_bytes(&self) -> &[u8; LEN] {
        &self.sk
    }

    /// X25519(sk, peer), refusing the all-zero output (RFC 9180 §7.1.4).
    pub fn dh(&self, peer: &[u8; LEN]) -> Res<Zeroizing<[u8; LEN]>> {
        let out = agreement::agree(
            &self.key,
            UnparsedPublicKey::new(&X25519, peer),
            Error::Hpke(::hpke::HpkeError::ValidationError),
            |shared| {
                let mut out = Zeroizing::new([0u8; LEN]);
                if shared.len() != LEN {
                    return Err(Error::Internal);
                }
                out.copy_from_slice(shared);
                Ok(out)
            },
        )?;
        refuse_zero(out)
    }
}

fn refuse_zero(out: Zeroizing<[u8; LEN]>) -> Res<Zeroizing<[u8; LEN]>> {
    if bool::from(out.ct_eq(&[0u8; LEN])) {
        return Err(Error::Hpke(::hpke::HpkeError::ValidationError));
    }
    Ok(out)
}

/// A recipient's public key, with an optional table of its multiples.
#[derive(Clone)]
pub struct PublicKey {
    bytes: [u8; LEN],
    table: Option<Arc<EdwardsBasepointTable>>,
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; LEN]) -> Self {
        Self { bytes, table: None }
    }

    pub fn bytes(&self) -> &[u8; LEN] {
        &self.bytes
    }

    /// Build the table of multiples (once; clones share it). A key off the curve (on
    /// the twist) gets none and is multiplied as before.
    pub fn precompute(&mut self) {
        if self.table.is_none() {
            if let Some(point) = MontgomeryPoint(self.bytes).to_edwards(0) {
                self.table = Some(Arc::new(EdwardsBasepointTable::create(&point)));
            }
        }
    }
}

/// The sender's half of DHKEM(X25519): a fresh ephemeral key, its public key (`enc`),
/// and X25519(ephemeral, `pk_r`), refusing the all-zero output.
pub fn ephemeral_dh(pk_r: &PublicKey) -> Res<([u8; LEN], Zeroizing<[u8; LEN]>)> {
    let eph = KeyPair::generate()?;
    let dh = match &pk_r.table {
        Some(table) => refuse_zero(Zeroizing::new(
            table.mul_base_clamped(*eph.sk).to_montgomery().to_bytes(),
        ))?,
        None => eph.dh(&pk_r.bytes)?,
    };
    Ok((eph.pk, dh))
}

/// The X25519 function of RFC 7748 §5, for the tests (through AWS-LC, like
/// [`KeyPair::dh`], but returning the all-zero output instead of refusing it).
#[cfg(test)]
fn x25519(k: &[u8; LEN], u: &[u8; LEN]) -> [u8; LEN] {
    match KeyPair::from_secret(Zeroizing::new(*k)).and_then(|kp| kp.dh(u)) {
        Ok(out) => *out,
        Err(_) => [0u8; LEN],
    }
}

/// The Montgomery ladder, for comparison in tests.
#[cfg(test)]
fn x25519_ladder(k: &[u8; LEN], u: &[u8; LEN]) -> [u8; LEN] {
    MontgomeryPoint(*u).mul_clamped(*k).to_bytes()
}

#[cfg(test)]
mod test {
    use super::{KeyPair, LEN, x25519, x25519_ladder};
    use zeroize::Zeroizing;

    fn h(s: &str) -> [u8; LEN] {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    /// RFC 7748 §5.2.
    #[test]
    fn rfc7748_vectors() {
        assert_eq!(
            x25519(
                &h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                &h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
            ),
            h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
        );
        assert_eq!(
            x25519(
                &h("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                &h("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
            ),
            h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
        );
        // The iterated test, 1000 rounds.
        let mut k = h("0900000000000000000000000000000000000000000000000000000000000000");
        let mut u = k;
        for i in 1..=1000 {
            let r = x25519(&k, &u);
            u = k;
            k = r;
            if i == 1 {
                assert_eq!(
                    k,
                    h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
                );
            }
        }
        assert_eq!(
            k,
            h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
        );
    }

    /// RFC 7748 §6.1: Alice and Bob.
    #[test]
    fn rfc7748_dh() {
        let a = KeyPair::from_secret(Zeroizing::new(h(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        )))
        .unwrap();
        let b = KeyPair::from_secret(Zeroizing::new(h(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        )))
        .unwrap();
        assert_eq!(
            a.public(),
            &h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            b.public(),
            &h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*a.dh(b.public()).unwrap(), shared);
        assert_eq!(*b.dh(a.public()).unwrap(), shared);
    }

    /// AWS-LC's X25519 and `curve25519-dalek`'s ladder agree on every kind of input
    /// (where the output is all zero, AWS-LC refuses it and `x25519` returns zero).
    #[test]
    fn aws_lc_matches_ladder() {
        use ring::rand::{SecureRandom, SystemRandom};
        let rng = SystemRandom::new();
        let mut inputs: Vec<[u8; LEN]> = Vec::new();
        // Low-order points (and their non-canonical encodings), from the curve25519
        // literature (e.g. the list in libsodium), 0, 1, p-1, p, p+1, 2^255-1.
        for s in [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
            "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
            "d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "0900000000000000000000000000000000000000000000000000000000000000",
        ] {
            inputs.push(h(s));
        }
        for _ in 0..400 {
            let mut u = [0u8; LEN];
            rng.fill(&mut u).unwrap();
            inputs.push(u);
        }
        let mut twist = 0;
        for u in &inputs {
            if curve25519_dalek::MontgomeryPoint(*u)
                .to_edwards(0)
                .is_none()
            {
                twist += 1;
            }
            for _ in 0..3 {
                let mut k = [0u8; LEN];
                rng.fill(&mut k).unwrap();
                assert_eq!(x25519(&k, u), x25519_ladder(&k, u), "u={}", hex::encode(u));
            }
        }
        // About half of all u are on the twist: inputs of both kinds were compared.
        assert!(twist > 100 && twist < inputs.len() - 100, "{twist}");
    }

    /// The sender's DH through a precomputed table equals X25519, for keys with and
    /// without torsion components, and the recipient gets the same secret.
    #[test]
    fn table_path_matches() {
        use super::{PublicKey, ephemeral_dh};
        use ring::rand::{SecureRandom, SystemRandom};
        let rng = SystemRandom::new();
        let mut tried = 0;
        while tried < 20 {
            let mut u = [0u8; LEN];
            rng.fill(&mut u).unwrap();
            u[31] &= 0x7f;
            if curve25519_dalek::MontgomeryPoint(u).to_edwards(0).is_none() {
                continue;
            }
            tried += 1;
            let mut with = PublicKey::from_bytes(u);
            with.precompute();
            assert!(with.table.is_some());
            let mut k = [0u8; LEN];
            rng.fill(&mut k).unwrap();
            let table = with.table.as_ref().unwrap();
            let via_table = curve25519_dalek::EdwardsPoint::to_montgomery_batch(&[
                curve25519_dalek::traits::BasepointTable::mul_base_clamped(&**table, k),
            ])[0]
                .to_bytes();
            assert_eq!(via_table, x25519(&k, &u));
        }
        // A real recipient: both paths agree with its decapsulation.
        let r = KeyPair::generate().unwrap();
        let mut pk = PublicKey::from_bytes(*r.public());
        for _ in 0..2 {
            let (enc, dh) = ephemeral_dh(&pk).unwrap();
            assert_eq!(*r.dh(&enc).unwrap(), *dh);
            pk.precompute();
        }
        // A point on the twist gets no table, and still works.
        let mut twist = None;
        for i in 0..=255u8 {
            let mut u = [0u8; LEN];
            u[0] = i;
            u[1] = 1;
            if curve25519_dalek::MontgomeryPoint(u).to_edwards(0).is_none() {
                twist = Some(u);
                break;
            }
        }
        let mut t = PublicKey::from_bytes(twist.unwrap());
        t.precompute();
        assert!(t.table.is_none());
        assert!(ephemeral_dh(&t).is_ok());
    }

    #[test]
    fn all_zero_output_refused() {
        let a = KeyPair::generate().unwrap();
        assert!(a.dh(&[0u8; LEN]).is_err());
        assert!(
            a.dh(&h(
                "0100000000000000000000000000000000000000000000000000000000000000"
            ))
            .is_err()
        );
        // The sender refuses it too, with or without a table.
        let mut low = super::PublicKey::from_bytes(h(
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        ));
        assert!(super::ephemeral_dh(&low).is_err());
        low.precompute();
        assert!(super::ephemeral_dh(&low).is_err());
    }
}
