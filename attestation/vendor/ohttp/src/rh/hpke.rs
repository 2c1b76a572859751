//! HPKE (RFC 9180), base mode.
//!
//! veil patch: upstream ran HPKE entirely inside the `hpke` crate, whose contexts do
//! not hand out their key and base nonce, so the symmetric work had to use its
//! `RustCrypto` AEADs and could not be done in place. Here the KEM shared secret comes
//! from `hpke`'s P-256 KEM, from `super::x25519` (DHKEM(X25519)) or from
//! `super::xwing` (X-Wing); the key schedule (RFC 9180 §5.1, HKDF-SHA256 from the same
//! `hkdf`/`sha2` crates `hpke` uses) is written out here, and the derived key and base
//! nonce feed `super::aead` (ring or AWS-LC), which seals and opens in place. Every
//! intermediate secret (shared secret, PRKs, key, base nonce, exporter secret) is wiped
//! on drop.

use std::ops::Deref;

use ::hpke as rust_hpke;
use hkdf::{Hkdf, HkdfExtract};
use hpke::kem::DhP256HkdfSha256;
use log::trace;
use rust_hpke::{
    Deserializable, HpkeError, Serializable,
    kem::{Kem as KemTrait, X25519HkdfSha256, XWing},
};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::{
    SymKey,
    aead::{Aead as AeadCtx, Mode, NONCE_LEN, TAG_LEN},
    x25519, xwing,
};
use crate::{
    Error, Res,
    crypto::{Decrypt, Encrypt},
    hpke::{Aead, Kdf, Kem},
};

/// Configuration for `Hpke`.
#[derive(Clone, Copy)]
pub struct Config {
    kem: Kem,
    kdf: Kdf,
    aead: Aead,
}

impl Config {
    pub fn new(kem: Kem, kdf: Kdf, aead: Aead) -> Self {
        Self { kem, kdf, aead }
    }

    pub fn kem(self) -> Kem {
        self.kem
    }

    pub fn kdf(self) -> Kdf {
        self.kdf
    }

    pub fn aead(self) -> Aead {
        self.aead
    }

    pub fn supported(self) -> bool {
        matches!(self.kem, Kem::X25519Sha256 | Kem::P256Sha256 | Kem::XWing)
            && self.kdf == Kdf::HkdfSha256
            && matches!(self.aead, Aead::Aes128Gcm | Aead::ChaCha20Poly1305)
    }

    /// `suite_id` of the key schedule: "HPKE" || `kem_id` || `kdf_id` || `aead_id`.
    fn suite_id(self) -> [u8; 10] {
        let mut id = [0; 10];
        id[..4].copy_from_slice(b"HPKE");
        id[4..6].copy_from_slice(&u16::from(self.kem).to_be_bytes());
        id[6..8].copy_from_slice(&u16::from(self.kdf).to_be_bytes());
        id[8..].copy_from_slice(&u16::from(self.aead).to_be_bytes());
        id
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kem: Kem::X25519Sha256,
            kdf: Kdf::HkdfSha256,
            aead: Aead::Aes128Gcm,
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum PublicKey {
    X25519(x25519::PublicKey),
    P256(<DhP256HkdfSha256 as KemTrait>::PublicKey),
    XWing(xwing::PublicKey),
}

impl PublicKey {
    #[allow(clippy::unnecessary_wraps)]
    pub fn key_data(&self) -> Res<Vec<u8>> {
        Ok(match self {
            Self::X25519(k) => Vec::from(&k.bytes()[..]),
            Self::P256(k) => Vec::from(k.to_bytes().as_slice()),
            Self::XWing(k) => Vec::from(&k.bytes()[..]),
        })
    }

    /// veil patch: precompute what makes repeated encapsulation to this key faster
    /// (see `x25519::PublicKey::precompute`, also X-Wing's X25519 half); nothing for
    /// P-256.
    pub fn precompute(&mut self) {
        match self {
            Self::X25519(k) => k.precompute(),
            Self::XWing(k) => k.precompute(),
            Self::P256(_) => {}
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if let Ok(b) = self.key_data() {
            write!(f, "PublicKey {}", hex::encode(b))
        } else {
            write!(f, "Opaque PublicKey")
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum PrivateKey {
    X25519(x25519::KeyPair),
    P256(<DhP256HkdfSha256 as KemTrait>::PrivateKey),
    XWing(xwing::PrivateKey),
}

impl PrivateKey {
    #[allow(clippy::unnecessary_wraps)]
    pub fn key_data(&self) -> Res<Vec<u8>> {
        Ok(match self {
            Self::X25519(k) => Vec::from(&k.secret_bytes()[..]),
            Self::P256(k) => Vec::from(k.to_bytes().as_slice()),
            Self::XWing(k) => Vec::from(&k.seed()[..]),
        })
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if cfg!(feature = "unsafe-print-secrets") {
            if let Ok(b) = self.key_data() {
                return write!(f, "PrivateKey {}", hex::encode(b));
            }
        }
        write!(f, "Opaque PrivateKey")
    }
}

/// The output length of HKDF-SHA256, `Nh`.
const NH: usize = 32;
/// The KEM shared secret length, `Nsecret`: 32 for every KEM offered here.
const NSECRET: usize = 32;
const HPKE_V1: &[u8] = b"HPKE-v1";
const MODE_BASE: u8 = 0;

type Secret = Zeroizing<[u8; NH]>;

/// `LabeledExtract(salt, label, ikm)` (RFC 9180 §4).
fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Secret {
    let mut ext = HkdfExtract::<Sha256>::new(Some(salt));
    ext.input_ikm(HPKE_V1);
    ext.input_ikm(suite_id);
    ext.input_ikm(label);
    ext.input_ikm(ikm);
    let (mut prk, _) = ext.finalize();
    let mut out = Zeroizing::new([0; NH]);
    out.copy_from_slice(&prk);
    prk.as_mut_slice().zeroize();
    out
}

/// `LabeledExpand(prk, label, info, L)` (RFC 9180 §4), `L = out.len()`.
fn labeled_expand(
    suite_id: &[u8],
    prk: &[u8; NH],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Res<()> {
    let len = u16::try_from(out.len())
        .map_err(|_| Error::Hpke(HpkeError::KdfOutputTooLong))?
        .to_be_bytes();
    let hkdf = Hkdf::<Sha256>::from_prk(prk).map_err(|_| Error::Internal)?;
    hkdf.expand_multi_info(&[&len, HPKE_V1, suite_id, label, info], out)
        .map_err(|_| Error::Hpke(HpkeError::KdfOutputTooLong))
}

/// `ExtractAndExpand(dh, kem_context)` of DHKEM (RFC 9180 §4.1).
fn extract_and_expand(kem: Kem, dh: &[u8], kem_context: &[&[u8]]) -> Res<Secret> {
    let mut suite_id = [0; 5];
    suite_id[..3].copy_from_slice(b"KEM");
    suite_id[3..].copy_from_slice(&u16::from(kem).to_be_bytes());
    let eae_prk = labeled_extract(&suite_id, b"", b"eae_prk", dh);
    let mut ctx = Vec::with_capacity(kem_context.iter().map(|c| c.len()).sum());
    for c in kem_context {
        ctx.extend_from_slice(c);
    }
    let mut shared_secret = Zeroizing::new([0; NSECRET]);
    labeled_expand(
        &suite_id,
        &eae_prk,
        b"shared_secret",
        &ctx,
        &mut shared_secret[..],
    )?;
    Ok(shared_secret)
}

fn copy_secret(s: &[u8]) -> Res<Secret> {
    let mut out = Zeroizing::new([0; NSECRET]);
    if s.len() != NSECRET {
        return Err(Error::Internal);
    }
    out.copy_from_slice(s);
    Ok(out)
}

/// `Encap(pkR)`: the shared secret and `enc`.
fn encap(kem: Kem, pk_r: &PublicKey) -> Res<(Secret, Vec<u8>)> {
    match (kem, pk_r) {
        (Kem::X25519Sha256, PublicKey::X25519(pk_r)) => {
            let (enc, dh) = x25519::ephemeral_dh(pk_r)?;
            let ss = extract_and_expand(kem, &dh[..], &[&enc, pk_r.bytes()])?;
            Ok((ss, enc.to_vec()))
        }
        (Kem::P256Sha256, PublicKey::P256(pk_r)) => {
            let (ss, enc) = DhP256HkdfSha256::encap(pk_r, None)?;
            Ok((copy_secret(&ss.0)?, Vec::from(enc.to_bytes().as_slice())))
        }
        (Kem::XWing, PublicKey::XWing(pk_r)) => pk_r.encap(),
        _ => Err(Error::InvalidKeyType),
    }
}

/// `Decap(enc, skR)`: the shared secret.
fn decap(kem: Kem, sk_r: &PrivateKey, enc: &[u8]) -> Res<Secret> {
    match (kem, sk_r) {
        (Kem::X25519Sha256, PrivateKey::X25519(sk_r)) => {
            let enc: &[u8; x25519::LEN] = enc.try_into().map_err(|_| {
                Error::Hpke(HpkeError::IncorrectInputLength(x25519::LEN, enc.len()))
            })?;
            let dh = sk_r.dh(enc)?;
            extract_and_expand(kem, &dh[..], &[enc, sk_r.public()])
        }
        (Kem::P256Sha256, PrivateKey::P256(sk_r)) => {
            let enc = <DhP256HkdfSha256 as KemTrait>::EncappedKey::from_bytes(enc)?;
            let ss = DhP256HkdfSha256::decap(sk_r, None, &enc)?;
            copy_secret(&ss.0)
        }
        (Kem::XWing, PrivateKey::XWing(sk_r)) => sk_r.decap(enc),
        _ => Err(Error::InvalidKeyType),
    }
}

/// An HPKE context (RFC 9180 §5.2): the AEAD with its base nonce and sequence number,
/// and the exporter secret.
struct Context {
    config: Config,
    aead: AeadCtx,
    exporter_secret: Secret,
}

impl Context {
    /// `KeyScheduleS/R(mode_base, shared_secret, info, "", "")` (RFC 9180 §5.1).
    fn key_schedule(mode: Mode, config: Config, shared_secret: &[u8], info: &[u8]) -> Res<Self> {
        if !config.supported() {
            return Err(Error::Unsupported);
        }
        let suite_id = config.suite_id();
        let psk_id_hash = labeled_extract(&suite_id, b"", b"psk_id_hash", b"");
        let info_hash = labeled_extract(&suite_id, b"", b"info_hash", info);
        let mut context = [0; 1 + 2 * NH];
        context[0] = MODE_BASE;
        context[1..=NH].copy_from_slice(&psk_id_hash[..]);
        context[1 + NH..].copy_from_slice(&info_hash[..]);
        let secret = labeled_extract(&suite_id, shared_secret, b"secret", b"");

        let nk = config.aead().n_k();
        let mut key = Zeroizing::new([0; 32]);
        labeled_expand(&suite_id, &secret, b"key", &context, &mut key[..nk])?;
        let mut base_nonce = Zeroizing::new([0; NONCE_LEN]);
        labeled_expand(
            &suite_id,
            &secret,
            b"base_nonce",
            &context,
            &mut base_nonce[..],
        )?;
        let mut exporter_secret = Zeroizing::new([0; NH]);
        labeled_expand(
            &suite_id,
            &secret,
            b"exp",
            &context,
            &mut exporter_secret[..],
        )?;
        let aead = AeadCtx::from_key_bytes(mode, config.aead(), &key[..nk], *base_nonce)?;
        Ok(Self {
            config,
            aead,
            exporter_secret,
        })
    }

    /// `Context.Export(exporter_context, L)` (RFC 9180 §5.3).
    fn export(&self, info: &[u8], len: usize) -> Res<SymKey> {
        let mut out = vec![0; len];
        labeled_expand(
            &self.config.suite_id(),
            &self.exporter_secret,
            b"sec",
            info,
            &mut out,
        )?;
        Ok(SymKey::from(out))
    }
}

pub trait Exporter {
    fn export(&self, info: &[u8], len: usize) -> Res<SymKey>;
}

#[allow(clippy::module_name_repetitions)]
pub struct HpkeS {
    context: Context,
    enc: Vec<u8>,
}

impl HpkeS {
    /// Create a new context that uses the KEM mode for sending.
    pub fn new(config: Config, pk_r: &PublicKey, info: &[u8]) -> Res<Self> {
        if !config.supported() {
            return Err(Error::InvalidKeyType);
        }
        let (shared_secret, enc) = encap(config.kem(), pk_r)?;
        let context = Context::key_schedule(Mode::Encrypt, config, &shared_secret[..], info)?;
        Ok(Self { context, enc })
    }

    pub fn config(&self) -> Config {
        self.context.config
    }

    /// Get the encapsulated KEM secret.
    #[allow(clippy::unnecessary_wraps)]
    pub fn enc(&self) -> Res<Vec<u8>> {
        Ok(self.enc.clone())
    }

    /// `Context.Seal(aad, pt)` in place: `buf` is encrypted, the tag returned.
    pub fn seal_in_place(&mut self, aad: &[u8], buf: &mut [u8]) -> Res<[u8; TAG_LEN]> {
        self.context.aead.seal_in_place(aad, buf)
    }
}

impl Encrypt for HpkeS {
    fn seal(&mut self, aad: &[u8], pt: &[u8]) -> Res<Vec<u8>> {
        self.context.aead.seal(aad, pt)
    }

    fn alg(&self) -> Aead {
        self.context.config.aead()
    }
}

impl Exporter for HpkeS {
    fn export(&self, info: &[u8], len: usize) -> Res<SymKey> {
        self.context.export(info, len)
    }
}

impl Deref for HpkeS {
    type Target = Config;
    fn deref(&self) -> &Self::Target {
        &self.context.config
    }
}

#[allow(clippy::module_name_repetitions)]
pub struct HpkeR {
    context: Context,
}

impl HpkeR {
    /// Create a new context that uses the KEM mode for receiving.
    #[allow(clippy::similar_names)]
    pub fn new(
        config: Config,
        _pk_r: &PublicKey,
        sk_r: &PrivateKey,
        enc: &[u8],
        info: &[u8],
    ) -> Res<Self> {
        if !config.supported() {
            return Err(Error::InvalidKeyType);
        }
        let shared_secret = decap(config.kem(), sk_r, enc)?;
        let context = Context::key_schedule(Mode::Decrypt, config, &shared_secret[..], info)?;
        Ok(Self { context })
    }

    pub fn config(&self) -> Config {
        self.context.config
    }

    /// `Context.Open(aad, ct)` in place: `buf` is ciphertext then tag; the plaintext
    /// is the returned prefix. On failure the ciphertext part is zeroed.
    pub fn open_in_place<'a>(&mut self, aad: &[u8], buf: &'a mut [u8]) -> Res<&'a mut [u8]> {
        self.context.aead.open_in_place(aad, buf)
    }

    pub fn decode_public_key(kem: Kem, k: &[u8]) -> Res<PublicKey> {
        Ok(match kem {
            Kem::X25519Sha256 => {
                PublicKey::X25519(x25519::PublicKey::from_bytes(k.try_into().map_err(
                    |_| Error::Hpke(HpkeError::IncorrectInputLength(x25519::LEN, k.len())),
                )?))
            }
            Kem::P256Sha256 => {
                PublicKey::P256(<DhP256HkdfSha256 as KemTrait>::PublicKey::from_bytes(k)?)
            }
            Kem::XWing => PublicKey::XWing(xwing::PublicKey::from_bytes(k)?),
        })
    }
}

impl Decrypt for HpkeR {
    fn open(&mut self, aad: &[u8], ct: &[u8]) -> Res<Vec<u8>> {
        let mut buf = ct.to_owned();
        let pt_len = self.open_in_place(aad, &mut buf)?.len();
        buf.truncate(pt_len);
        Ok(buf)
    }

    fn alg(&self) -> Aead {
        self.context.config.aead()
    }
}

impl Exporter for HpkeR {
    fn export(&self, info: &[u8], len: usize) -> Res<SymKey> {
        self.context.export(info, len)
    }
}

impl Deref for HpkeR {
    type Target = Config;
    fn deref(&self) -> &Self::Target {
        &self.context.config
    }
}

/// An X25519 key pair from `hpke`'s key types (derivation), as ours.
fn x25519_from_hpke(sk: &<X25519HkdfSha256 as KemTrait>::PrivateKey) -> Res<x25519::KeyPair> {
    let mut bytes = sk.to_bytes();
    let mut secret = Zeroizing::new([0; x25519::LEN]);
    secret.copy_from_slice(bytes.as_slice());
    bytes.as_mut_slice().zeroize();
    x25519::KeyPair::from_secret(secret)
}

/// Generate a key pair for the identified KEM.
pub fn generate_key_pair(kem: Kem) -> Res<(PrivateKey, PublicKey)> {
    let (sk, pk) = match kem {
        Kem::X25519Sha256 => {
            let kp = x25519::KeyPair::generate()?;
            let pk = *kp.public();
            (
                PrivateKey::X25519(kp),
                PublicKey::X25519(x25519::PublicKey::from_bytes(pk)),
            )
        }
        Kem::P256Sha256 => {
            let (sk, pk) = DhP256HkdfSha256::gen_keypair();
            (PrivateKey::P256(sk), PublicKey::P256(pk))
        }
        Kem::XWing => {
            let sk = xwing::PrivateKey::generate()?;
            let pk = sk.public().clone();
            (PrivateKey::XWing(sk), PublicKey::XWing(pk))
        }
    };
    trace!("Generated key pair: sk={sk:?} pk={pk:?}");
    Ok((sk, pk))
}

/// Import a key pair from the serialized private key of the identified KEM.
///
/// veil patch: the upstream crate can only generate or derive keys, which
/// makes the RFC 9458 Appendix A vector (given as a raw private key)
/// impossible to decapsulate through this crate.
pub fn import_key_pair(kem: Kem, sk: &[u8]) -> Res<(PrivateKey, PublicKey)> {
    let (sk, pk) = match kem {
        Kem::X25519Sha256 => {
            let sk = <X25519HkdfSha256 as KemTrait>::PrivateKey::from_bytes(sk)?;
            let kp = x25519_from_hpke(&sk)?;
            let pk = *kp.public();
            (
                PrivateKey::X25519(kp),
                PublicKey::X25519(x25519::PublicKey::from_bytes(pk)),
            )
        }
        Kem::P256Sha256 => {
            let sk = <DhP256HkdfSha256 as KemTrait>::PrivateKey::from_bytes(sk)?;
            let pk = DhP256HkdfSha256::sk_to_pk(&sk);
            (PrivateKey::P256(sk), PublicKey::P256(pk))
        }
        Kem::XWing => {
            let sk = xwing::PrivateKey::from_seed(sk)?;
            let pk = sk.public().clone();
            (PrivateKey::XWing(sk), PublicKey::XWing(pk))
        }
    };
    Ok((sk, pk))
}

#[allow(clippy::unnecessary_wraps)]
pub fn derive_key_pair(kem: Kem, ikm: &[u8]) -> Res<(PrivateKey, PublicKey)> {
    let (sk, pk) = match kem {
        Kem::X25519Sha256 => {
            let (sk, _) = X25519HkdfSha256::derive_keypair(ikm);
            let kp = x25519_from_hpke(&sk)?;
            let pk = *kp.public();
            (
                PrivateKey::X25519(kp),
                PublicKey::X25519(x25519::PublicKey::from_bytes(pk)),
            )
        }
        Kem::P256Sha256 => {
            let (sk, pk) = DhP256HkdfSha256::derive_keypair(ikm);
            (PrivateKey::P256(sk), PublicKey::P256(pk))
        }
        Kem::XWing => {
            // The draft's `DeriveKeyPair` (SHAKE256 `LabeledDerive`) from the `hpke`
            // crate; the seed it gives is expanded here.
            let (seed, _) = XWing::derive_keypair(ikm);
            let sk = xwing::PrivateKey::from_seed(seed.to_bytes().as_slice())?;
            let pk = sk.public().clone();
            (PrivateKey::XWing(sk), PublicKey::XWing(pk))
        }
    };
    trace!("Derived key pair: sk={sk:?} pk={pk:?}");
    Ok((sk, pk))
}

#[cfg(test)]
mod test {
    use super::{Config, HpkeR, HpkeS, generate_key_pair};
    use crate::{
        crypto::{Decrypt, Encrypt},
        hpke::{Aead, Kem},
        init,
    };

    const INFO: &[u8] = b"info";
    const AAD: &[u8] = b"aad";
    const PT: &[u8] = b"message";

    #[allow(clippy::similar_names)] // for sk_x and pk_x
    #[test]
    fn make() {
        init();
        let cfg = Config::default();
        let (sk_r, pk_r) = generate_key_pair(cfg.kem()).unwrap();
        let hpke_s = HpkeS::new(cfg, &pk_r, INFO).unwrap();
        let _hpke_r = HpkeR::new(cfg, &pk_r, &sk_r, &hpke_s.enc().unwrap(), INFO).unwrap();
    }

    #[allow(clippy::similar_names)] // for sk_x and pk_x
    fn seal_open(aead: Aead, kem: Kem) {
        // Setup
        init();
        let cfg = Config {
            kem,
            aead,
            ..Config::default()
        };
        assert!(cfg.supported());
        let (sk_r, pk_r) = generate_key_pair(cfg.kem()).unwrap();

        // Send
        let mut hpke_s = HpkeS::new(cfg, &pk_r, INFO).unwrap();
        let enc = hpke_s.enc().unwrap();
        let ct = hpke_s.seal(AAD, PT).unwrap();

        // Receive
        let mut hpke_r = HpkeR::new(cfg, &pk_r, &sk_r, &enc, INFO).unwrap();
        let pt = hpke_r.open(AAD, &ct).unwrap();
        assert_eq!(&pt[..], PT);
    }

    #[test]
    fn seal_open_gcm() {
        seal_open(Aead::Aes128Gcm, Kem::X25519Sha256);
    }

    #[test]
    fn seal_open_chacha() {
        seal_open(Aead::ChaCha20Poly1305, Kem::X25519Sha256);
    }

    #[test]
    fn seal_open_gcm_p256() {
        seal_open(Aead::Aes128Gcm, Kem::P256Sha256);
    }

    #[test]
    fn seal_open_chacha_p256() {
        seal_open(Aead::ChaCha20Poly1305, Kem::P256Sha256);
    }

    #[test]
    fn seal_open_gcm_xwing() {
        seal_open(Aead::Aes128Gcm, Kem::XWing);
    }

    #[test]
    fn seal_open_chacha_xwing() {
        seal_open(Aead::ChaCha20Poly1305, Kem::XWing);
    }

    /// The RFC 9180 Appendix A.1.1 vector (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
    /// AES-128-GCM, base mode): key schedule, first two sequence numbers, exporter.
    #[test]
    fn rfc9180_a_1_1() {
        use super::{Context, Mode, x25519};
        use zeroize::Zeroizing;
        let h = |s: &str| hex::decode(s).unwrap();
        let sk_e: [u8; 32] = h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
            .try_into()
            .unwrap();
        let sk_r: [u8; 32] = h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
            .try_into()
            .unwrap();
        let info = h("4f6465206f6e2061204772656369616e2055726e");
        let eph = x25519::KeyPair::from_secret(Zeroizing::new(sk_e)).unwrap();
        let rcp = x25519::KeyPair::from_secret(Zeroizing::new(sk_r)).unwrap();
        assert_eq!(
            eph.public().to_vec(),
            h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
        );
        assert_eq!(
            rcp.public().to_vec(),
            h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
        );
        let dh = eph.dh(rcp.public()).unwrap();
        let ss =
            super::extract_and_expand(Kem::X25519Sha256, &dh[..], &[eph.public(), rcp.public()])
                .unwrap();
        assert_eq!(
            ss.to_vec(),
            h("fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc")
        );
        let cfg = Config::default();
        let mut s = Context::key_schedule(Mode::Encrypt, cfg, &ss[..], &info).unwrap();
        let mut r = Context::key_schedule(Mode::Decrypt, cfg, &ss[..], &info).unwrap();
        assert_eq!(
            s.exporter_secret.to_vec(),
            h("45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8")
        );
        let aad0 = h("436f756e742d30");
        let pt = h("4265617574792069732074727574682c20747275746820626561757479");
        let ct0 = h(
            "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
        );
        assert_eq!(s.aead.seal(&aad0, &pt).unwrap(), ct0);
        assert_eq!(r.aead.open(&aad0, &ct0).unwrap(), pt);
        let aad1 = h("436f756e742d31");
        let ct1 = h(
            "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab251c03d0c22a56b8ca42c2063b84",
        );
        assert_eq!(s.aead.seal(&aad1, &pt).unwrap(), ct1);
        assert_eq!(r.aead.open(&aad1, &ct1).unwrap(), pt);
        assert_eq!(
            s.export(b"", 32).unwrap().as_ref().to_vec(),
            h("3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee")
        );
    }
}
