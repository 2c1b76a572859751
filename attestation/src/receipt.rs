//! Usage receipts: what the enclave signs for every request, so the gateway bills from
//! figures it cannot forge and the client can audit.
//!
//! # Canonical bytes (version 1)
//!
//! | field | bytes |
//! |-------|-------|
//! | version | 1 byte, `0x01` |
//! | request digest | 32: SHA-256 of the encapsulated request |
//! | key id | 16: [`KeyId`] of the key configuration used |
//! | model length, model | 1 byte, then 1–128 bytes of `[A-Za-z0-9._:/-]` |
//! | prompt tokens | 8, big-endian |
//! | completion tokens | 8, big-endian |
//! | status | 2, big-endian HTTP status |
//! | started at | 8, big-endian Unix milliseconds |
//! | finished at | 8, big-endian Unix milliseconds, not before started at |
//!
//! The signature is Ed25519 over `"veil/receipt/v1"` ‖ canonical bytes. The compact
//! form (an HTTP header or trailer value) is `base64url(canonical) "." base64url(sig)`
//! without padding; the JSON form spells the fields out and is verified by rebuilding
//! the canonical bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::bytes::{Sha256Digest, hex_newtype};
use crate::channel::KeyId;

hex_newtype!(
    /// An Ed25519 public key that verifies receipts.
    ReceiptPublicKey,
    32,
    "receipt public key"
);

hex_newtype!(
    /// An Ed25519 signature.
    Signature,
    64,
    "signature"
);

/// Signature domain label.
pub const RECEIPT_LABEL: &[u8] = b"veil/receipt/v1";
const VERSION: u8 = 1;
const MAX_MODEL: usize = 128;
/// The exact size of canonical bytes without the model name.
const FIXED_LEN: usize = 1 + 32 + 16 + 1 + 8 + 8 + 2 + 8 + 8;

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The encoding was malformed.
    #[error("receipt malformed: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The signature does not verify under the given key.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// Signing failed.
    #[error("receipt signing key: {0}")]
    Key(&'static str),
}

fn malformed(what: &'static str) -> ReceiptError {
    ReceiptError::Malformed { what }
}

/// A usage receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// SHA-256 of the encapsulated request, as received.
    pub request_digest: Sha256Digest,
    /// The key configuration the request was sealed to.
    pub key_id: KeyId,
    /// The model that served it.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// HTTP status of the inner response.
    pub status: u16,
    /// Start, Unix milliseconds.
    pub started_at_ms: u64,
    /// End, Unix milliseconds.
    pub finished_at_ms: u64,
}

fn valid_model(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_MODEL
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
}

impl Receipt {
    /// The canonical bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        self.check()?;
        let mut out = Vec::with_capacity(FIXED_LEN + self.model.len());
        out.push(VERSION);
        out.extend_from_slice(self.request_digest.as_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.push(u8::try_from(self.model.len()).map_err(|_| malformed("model"))?);
        out.extend_from_slice(self.model.as_bytes());
        out.extend_from_slice(&self.prompt_tokens.to_be_bytes());
        out.extend_from_slice(&self.completion_tokens.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.started_at_ms.to_be_bytes());
        out.extend_from_slice(&self.finished_at_ms.to_be_bytes());
        Ok(out)
    }

    fn check(&self) -> Result<(), ReceiptError> {
        if !valid_model(&self.model) {
            return Err(malformed("model name"));
        }
        if !(100..=599).contains(&self.status) {
            return Err(malformed("status"));
        }
        if self.finished_at_ms < self.started_at_ms {
            return Err(malformed("finished before started"));
        }
        Ok(())
    }

    /// Parse canonical bytes strictly: version, lengths, charset, no trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let mut r = Reader(bytes);
        if r.take::<1>("version")? != [VERSION] {
            return Err(malformed("unknown version"));
        }
        let request_digest = Sha256Digest(r.take("request digest")?);
        let key_id = KeyId(r.take("key id")?);
        let [model_len] = r.take::<1>("model length")?;
        let model = r.slice(usize::from(model_len), "model")?;
        let model = std::str::from_utf8(model)
            .map_err(|_| malformed("model not UTF-8"))?
            .to_owned();
        let receipt = Self {
            request_digest,
            key_id,
            model,
            prompt_tokens: u64::from_be_bytes(r.take("prompt tokens")?),
            completion_tokens: u64::from_be_bytes(r.take("completion tokens")?),
            status: u16::from_be_bytes(r.take("status")?),
            started_at_ms: u64::from_be_bytes(r.take("started at")?),
            finished_at_ms: u64::from_be_bytes(r.take("finished at")?),
        };
        if !r.0.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        receipt.check()?;
        Ok(receipt)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ReceiptError> {
        if self.0.len() < n {
            return Err(malformed(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ReceiptError> {
        let s = self.slice(N, what)?;
        <[u8; N]>::try_from(s).map_err(|_| malformed(what))
    }
}

/// A receipt with its signature. JSON: `{"receipt": {...}, "signature": "<hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// Ed25519 over `"veil/receipt/v1"` ‖ canonical bytes.
    pub signature: Signature,
}

impl SignedReceipt {
    /// Verify under `key`, over the canonical bytes rebuilt from the fields.
    pub fn verify(&self, key: &ReceiptPublicKey) -> Result<&Receipt, ReceiptError> {
        let mut msg = RECEIPT_LABEL.to_vec();
        msg.extend(self.receipt.to_bytes()?);
        UnparsedPublicKey::new(&ED25519, key.as_bytes())
            .verify(&msg, self.signature.as_bytes())
            .map_err(|_| ReceiptError::BadSignature)?;
        Ok(&self.receipt)
    }

    /// The compact form for headers and trailers.
    pub fn to_compact(&self) -> Result<String, ReceiptError> {
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(self.receipt.to_bytes()?),
            URL_SAFE_NO_PAD.encode(self.signature.as_bytes())
        ))
    }

    /// Parse the compact form (does not verify; call [`SignedReceipt::verify`]).
    pub fn parse_compact(text: &str) -> Result<Self, ReceiptError> {
        if text.len() > 1024 {
            return Err(malformed("too long"));
        }
        let (body, sig) = text.split_once('.').ok_or(malformed("missing '.'"))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| malformed("body not base64url"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| malformed("signature not base64url"))?;
        Ok(Self {
            receipt: Receipt::parse(&body)?,
            signature: Signature::from_slice(&sig).map_err(|_| malformed("signature length"))?,
        })
    }

    /// Parse the JSON form (does not verify).
    pub fn parse_json(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > 4096 {
            return Err(malformed("too long"));
        }
        let s: Self = serde_json::from_slice(bytes).map_err(|_| malformed("JSON"))?;
        s.receipt.check()?;
        Ok(s)
    }
}

/// The enclave's receipt-signing key, made in memory at boot.
pub struct ReceiptSigner {
    key: Ed25519KeyPair,
}

impl fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("public_key", &self.public_key())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ReceiptSigner {
    /// Generate a fresh key. The PKCS#8 copy is zeroized at once; `ring` keeps the key
    /// in its own type, which does not zeroize on drop (a `ring` limitation).
    pub fn generate() -> Result<Self, ReceiptError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| ReceiptError::Key("generation"))?;
        let mut bytes = pkcs8.as_ref().to_vec();
        let key = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| ReceiptError::Key("load"));
        bytes.zeroize();
        Ok(Self { key: key? })
    }

    /// The public key, published in the attestation bundle.
    #[must_use]
    pub fn public_key(&self) -> ReceiptPublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.key.public_key().as_ref());
        ReceiptPublicKey(pk)
    }

    /// Sign a receipt.
    pub fn sign(&self, receipt: Receipt) -> Result<SignedReceipt, ReceiptError> {
        let mut msg = RECEIPT_LABEL.to_vec();
        msg.extend(receipt.to_bytes()?);
        let sig = self.key.sign(&msg);
        Ok(SignedReceipt {
            receipt,
            signature: Signature::from_slice(sig.as_ref())
                .map_err(|_| ReceiptError::Key("sign"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Receipt {
        Receipt {
            request_digest: Sha256Digest::of(b"req"),
            key_id: KeyId([7; 16]),
            model: "smollm2-135m-instruct".into(),
            prompt_tokens: 12,
            completion_tokens: 34,
            status: 200,
            started_at_ms: 1_700_000_000_000,
            finished_at_ms: 1_700_000_000_250,
        }
    }

    #[test]
    fn sign_verify_compact_and_json() {
        let signer = ReceiptSigner::generate().unwrap();
        let signed = signer.sign(sample()).unwrap();
        assert_eq!(signed.verify(&signer.public_key()).unwrap(), &sample());
        let compact = signed.to_compact().unwrap();
        assert_eq!(SignedReceipt::parse_compact(&compact).unwrap(), signed);
        let json = serde_json::to_vec(&signed).unwrap();
        let back = SignedReceipt::parse_json(&json).unwrap();
        back.verify(&signer.public_key()).unwrap();
        let other = ReceiptSigner::generate().unwrap();
        assert_eq!(
            signed.verify(&other.public_key()),
            Err(ReceiptError::BadSignature)
        );
    }

    #[test]
    fn inflated_tokens_fail_verification() {
        let signer = ReceiptSigner::generate().unwrap();
        let mut signed = signer.sign(sample()).unwrap();
        signed.receipt.completion_tokens = 1;
        assert_eq!(
            signed.verify(&signer.public_key()),
            Err(ReceiptError::BadSignature)
        );
    }

    #[test]
    fn every_truncation_and_bit_flip_of_canonical_bytes() {
        let signer = ReceiptSigner::generate().unwrap();
        let signed = signer.sign(sample()).unwrap();
        let bytes = signed.receipt.to_bytes().unwrap();
        assert_eq!(bytes.len(), FIXED_LEN + sample().model.len());
        for n in 0..bytes.len() {
            assert!(Receipt::parse(&bytes[..n]).is_err(), "prefix {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(r) = Receipt::parse(&b) {
                let forged = SignedReceipt {
                    receipt: r,
                    signature: signed.signature,
                };
                assert!(forged.verify(&signer.public_key()).is_err(), "flip at {i}");
            }
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Receipt::parse(&long).is_err());
    }

    #[test]
    fn bad_models_refused() {
        for m in ["", "a b", "x\r\ny", &"m".repeat(129)] {
            let r = Receipt {
                model: m.to_owned(),
                ..sample()
            };
            assert!(r.to_bytes().is_err(), "{m:?}");
        }
    }
}
