//! Key configurations (RFC 9458 §3), their lists (`application/ohttp-keys`, RFC 9540),
//! veil's routing identifier for them, and the enclave's private keys.

use ohttp::hpke::{Aead, Kdf, Kem};
use std::fmt;

use super::ChannelError;
use crate::bytes::hex_newtype;

hex_newtype!(
    /// veil's routing identifier for a key configuration: the first 16 bytes of SHA-256
    /// over the configuration's RFC 9458 §3 encoding, shown as lowercase hex. Clients send
    /// it in the `Veil-Key-Id` header; any OHTTP client can compute it.
    KeyId,
    16,
    "key id"
);

impl KeyId {
    /// The identifier of an encoded key configuration.
    #[must_use]
    pub fn of(encoded_config: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, encoded_config);
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.as_ref()[..16]);
        Self(id)
    }
}

/// The KEMs veil offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KemKind {
    /// DHKEM(X25519, HKDF-SHA256), 0x0020: what every OHTTP client supports.
    X25519,
    /// X-Wing (ML-KEM-768 + X25519 hybrid), 0x647a: post-quantum protection against
    /// harvest-now-decrypt-later.
    XWing,
}

impl KemKind {
    /// The HPKE KEM identifier.
    #[must_use]
    pub fn id(self) -> u16 {
        u16::from(self.to_ohttp())
    }

    fn to_ohttp(self) -> Kem {
        match self {
            Self::X25519 => Kem::X25519Sha256,
            Self::XWing => Kem::XWing,
        }
    }

    fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0020 => Some(Self::X25519),
            0x647a => Some(Self::XWing),
            _ => None,
        }
    }

    /// Public key length in bytes.
    #[must_use]
    pub fn public_key_len(self) -> usize {
        match self {
            Self::X25519 => 32,
            Self::XWing => 1216,
        }
    }
}

/// The AEADs veil offers (always with HKDF-SHA256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AeadKind {
    /// AES-128-GCM, 0x0001.
    Aes128Gcm,
    /// ChaCha20-Poly1305, 0x0003.
    ChaCha20Poly1305,
}

impl AeadKind {
    /// Both, in veil's order of preference.
    pub const ALL: [Self; 2] = [Self::Aes128Gcm, Self::ChaCha20Poly1305];

    /// The HPKE AEAD identifier.
    #[must_use]
    pub fn id(self) -> u16 {
        u16::from(self.to_ohttp())
    }

    pub(crate) fn to_ohttp(self) -> Aead {
        match self {
            Self::Aes128Gcm => Aead::Aes128Gcm,
            Self::ChaCha20Poly1305 => Aead::ChaCha20Poly1305,
        }
    }

    fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Self::Aes128Gcm),
            0x0003 => Some(Self::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// HKDF-SHA256, the only KDF veil offers.
const KDF_HKDF_SHA256: u16 = 0x0001;

/// One key configuration, parsed strictly from its RFC 9458 §3 encoding.
///
/// ```text
/// HPKE Symmetric Algorithms { HPKE KDF ID (16), HPKE AEAD ID (16) }
/// Key Config {
///   Key Identifier (8), HPKE KEM ID (16), HPKE Public Key (Npk * 8),
///   HPKE Symmetric Algorithms Length (16) = 4..65532, multiple of 4,
///   HPKE Symmetric Algorithms (32) ...,
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    encoded: Vec<u8>,
    id: KeyId,
    key_id: u8,
    kem: KemKind,
    suites: Vec<AeadKind>,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("id", &self.id.to_string())
            .field("key_id", &self.key_id)
            .field("kem", &self.kem)
            .field("suites", &self.suites)
            .finish()
    }
}

impl KeyConfig {
    /// Parse one encoded key configuration. Unknown KEMs are [`ChannelError::Unsupported`];
    /// suites with unknown KDFs or AEADs are skipped, and a configuration left with none
    /// is unsupported. Trailing bytes are an error.
    pub fn parse(encoded: &[u8]) -> Result<Self, ChannelError> {
        let err = |what, offset| ChannelError::KeyConfig { what, offset };
        let (&key_id, rest) = encoded.split_first().ok_or(err("missing key id", 0))?;
        let kem_id = be16(rest).ok_or(err("truncated KEM id", 1))?;
        let kem = KemKind::from_id(kem_id).ok_or(ChannelError::Unsupported { what: "KEM" })?;
        let npk = kem.public_key_len();
        let after_pk = 3usize.saturating_add(npk);
        let sym_len_bytes = encoded
            .get(after_pk..)
            .and_then(be16)
            .ok_or(err("truncated public key or algorithms length", 3))?;
        let sym_len = usize::from(sym_len_bytes);
        if sym_len == 0 || sym_len % 4 != 0 {
            return Err(err(
                "algorithms length not a positive multiple of 4",
                after_pk,
            ));
        }
        let sym_start = after_pk.saturating_add(2);
        let sym_end = sym_start.saturating_add(sym_len);
        let sym = encoded
            .get(sym_start..sym_end)
            .ok_or(err("truncated symmetric algorithms", sym_start))?;
        if encoded.len() != sym_end {
            return Err(err("trailing bytes", sym_end));
        }
        let mut suites = Vec::new();
        for pair in sym.chunks_exact(4) {
            let (kdf, aead) = (be16(pair), pair.get(2..).and_then(be16));
            if let (Some(KDF_HKDF_SHA256), Some(aead)) = (kdf, aead.and_then(AeadKind::from_id))
                && !suites.contains(&aead)
            {
                suites.push(aead);
            }
        }
        if suites.is_empty() {
            return Err(ChannelError::Unsupported {
                what: "every symmetric suite of the key configuration",
            });
        }
        Ok(Self {
            id: KeyId::of(encoded),
            encoded: encoded.to_vec(),
            key_id,
            kem,
            suites,
        })
    }

    /// The RFC 9458 encoding, exactly as received or generated.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// veil's routing identifier ([`KeyId`]).
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The one-byte RFC 9458 key identifier.
    #[must_use]
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The KEM.
    #[must_use]
    pub fn kem(&self) -> KemKind {
        self.kem
    }

    /// The supported AEADs offered, in the server's order.
    #[must_use]
    pub fn aeads(&self) -> &[AeadKind] {
        &self.suites
    }

    /// This configuration re-encoded to offer only `aead`: how a client makes the
    /// `ohttp` crate (which always takes the first suite) use the suite it chose. The HPKE
    /// `info` covers key id, KEM, KDF and AEAD only, so the server sees no difference.
    pub(crate) fn restricted_to(&self, aead: AeadKind) -> Result<Vec<u8>, ChannelError> {
        if !self.suites.contains(&aead) {
            return Err(ChannelError::Unsupported {
                what: "the requested AEAD for this key configuration",
            });
        }
        let head_len = 3usize.saturating_add(self.kem.public_key_len());
        let head = self.encoded.get(..head_len).ok_or(ChannelError::Misuse(
            "key configuration shorter than its KEM",
        ))?;
        let mut out = Vec::with_capacity(head_len.saturating_add(6));
        out.extend_from_slice(head);
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&KDF_HKDF_SHA256.to_be_bytes());
        out.extend_from_slice(&aead.id().to_be_bytes());
        Ok(out)
    }
}

fn be16(b: &[u8]) -> Option<u16> {
    match b {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// A list of key configurations as `application/ohttp-keys` (RFC 9540 §3): each
/// configuration preceded by its length as a 16-bit integer.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfigList {
    encoded: Vec<u8>,
    configs: Vec<KeyConfig>,
}

impl fmt::Debug for KeyConfigList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.configs).finish()
    }
}

impl KeyConfigList {
    /// The media type, for `Content-Type`.
    pub const MEDIA_TYPE: &'static str = "application/ohttp-keys";

    /// Parse a list. Unlike RFC 9540's "ignore what you do not support", veil's lists are
    /// produced by veil and bound into attestation evidence, so every entry must parse.
    pub fn parse(encoded: &[u8]) -> Result<Self, ChannelError> {
        let mut configs = Vec::new();
        let mut offset = 0usize;
        while offset < encoded.len() {
            let rest = encoded.get(offset..).unwrap_or_default();
            let len = usize::from(be16(rest).ok_or(ChannelError::KeyConfig {
                what: "truncated list entry length",
                offset,
            })?);
            let start = offset.saturating_add(2);
            let end = start.saturating_add(len);
            let entry = encoded.get(start..end).ok_or(ChannelError::KeyConfig {
                what: "list entry longer than the list",
                offset,
            })?;
            configs.push(KeyConfig::parse(entry).map_err(|e| match e {
                ChannelError::KeyConfig { what, offset: o } => ChannelError::KeyConfig {
                    what,
                    offset: o.saturating_add(start),
                },
                other => other,
            })?);
            offset = end;
        }
        if configs.is_empty() {
            return Err(ChannelError::KeyConfig {
                what: "empty list",
                offset: 0,
            });
        }
        Ok(Self {
            encoded: encoded.to_vec(),
            configs,
        })
    }

    fn from_configs(configs: Vec<KeyConfig>) -> Result<Self, ChannelError> {
        let mut encoded = Vec::new();
        for c in &configs {
            let len = u16::try_from(c.encoded.len()).map_err(|_| ChannelError::TooLarge {
                what: "key configuration",
                limit: usize::from(u16::MAX),
            })?;
            encoded.extend_from_slice(&len.to_be_bytes());
            encoded.extend_from_slice(&c.encoded);
        }
        Ok(Self { encoded, configs })
    }

    /// The `application/ohttp-keys` encoding.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The configurations, in order.
    #[must_use]
    pub fn configs(&self) -> &[KeyConfig] {
        &self.configs
    }

    /// The configuration with this routing identifier.
    #[must_use]
    pub fn get(&self, id: &KeyId) -> Option<&KeyConfig> {
        self.configs.iter().find(|c| c.id.ct_eq(id))
    }
}

/// The enclave's HPKE private keys and their public key configurations.
///
/// Generated in memory and never serialized: no `Clone`, no `Serialize`, a redacted
/// `Debug`. The private keys live inside `ohttp`/`hpke`, whose key types zeroize on drop.
pub struct ServerKeys {
    list: KeyConfigList,
    servers: Vec<(KeyId, ohttp::Server)>,
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeys")
            .field("configs", &self.list)
            .field("private_keys", &"<redacted>")
            .finish()
    }
}

fn suites(aeads: &[AeadKind]) -> Vec<ohttp::SymmetricSuite> {
    aeads
        .iter()
        .map(|a| ohttp::SymmetricSuite::new(Kdf::HkdfSha256, a.to_ohttp()))
        .collect()
}

impl ServerKeys {
    /// Generate fresh keys: key id 0 with X25519 and key id 1 with X-Wing, each offering
    /// AES-128-GCM and ChaCha20-Poly1305 with HKDF-SHA256.
    pub fn generate() -> Result<Self, ChannelError> {
        let mut configs = Vec::new();
        for (key_id, kem) in [(0u8, KemKind::X25519), (1u8, KemKind::XWing)] {
            let config = ohttp::KeyConfig::new(key_id, kem.to_ohttp(), suites(&AeadKind::ALL))
                .map_err(|_| ChannelError::Crypto("HPKE key generation"))?;
            configs.push(config);
        }
        Self::from_ohttp(configs)
    }

    /// Build from a serialized private key. For test vectors and the dangerous corners of
    /// development only: an enclave generates its keys with [`ServerKeys::generate`].
    pub fn dangerous_import(
        key_id: u8,
        kem: KemKind,
        aeads: &[AeadKind],
        private_key: &[u8],
    ) -> Result<Self, ChannelError> {
        let config = ohttp::KeyConfig::import(key_id, kem.to_ohttp(), suites(aeads), private_key)
            .map_err(|_| ChannelError::Crypto("HPKE private key import"))?;
        Self::from_ohttp(vec![config])
    }

    fn from_ohttp(configs: Vec<ohttp::KeyConfig>) -> Result<Self, ChannelError> {
        let mut parsed = Vec::new();
        let mut servers = Vec::new();
        for config in configs {
            let encoded = config
                .encode()
                .map_err(|_| ChannelError::Crypto("key configuration encoding"))?;
            let kc = KeyConfig::parse(&encoded)?;
            let server =
                ohttp::Server::new(config).map_err(|_| ChannelError::Crypto("OHTTP server"))?;
            servers.push((kc.id, server));
            parsed.push(kc);
        }
        Ok(Self {
            list: KeyConfigList::from_configs(parsed)?,
            servers,
        })
    }

    /// The public configurations, as served at `/.well-known/ohttp-gateway`.
    #[must_use]
    pub fn configs(&self) -> &KeyConfigList {
        &self.list
    }

    pub(crate) fn server(&self, id: &KeyId) -> Result<&ohttp::Server, ChannelError> {
        self.servers
            .iter()
            .find(|(k, _)| k.ct_eq(id))
            .map(|(_, s)| s)
            .ok_or(ChannelError::UnknownKeyId(*id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_list_round_trips_and_ids_match() {
        let keys = ServerKeys::generate().unwrap();
        let list = KeyConfigList::parse(keys.configs().as_bytes()).unwrap();
        assert_eq!(&list, keys.configs());
        assert_eq!(list.configs().len(), 2);
        assert_eq!(list.configs()[0].kem(), KemKind::X25519);
        assert_eq!(list.configs()[1].kem(), KemKind::XWing);
        for c in list.configs() {
            assert_eq!(c.id(), KeyId::of(c.as_bytes()));
            assert_eq!(c.aeads(), &AeadKind::ALL);
            assert!(keys.server(&c.id()).is_ok());
        }
    }

    #[test]
    fn every_truncation_of_a_list_is_an_error() {
        let keys = ServerKeys::generate().unwrap();
        let bytes = keys.configs().as_bytes();
        let first_end = 2 + keys.configs().configs()[0].as_bytes().len();
        for n in 0..bytes.len() {
            match KeyConfigList::parse(&bytes[..n]) {
                // Cut exactly between entries: a shorter, valid list.
                Ok(l) if n == first_end => assert_eq!(l.configs().len(), 1),
                other => assert!(other.is_err(), "prefix {n}"),
            }
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(KeyConfigList::parse(&long).is_err());
    }

    #[test]
    fn restricted_config_offers_one_suite() {
        let keys = ServerKeys::generate().unwrap();
        let c = &keys.configs().configs()[0];
        let r = KeyConfig::parse(&c.restricted_to(AeadKind::ChaCha20Poly1305).unwrap()).unwrap();
        assert_eq!(r.aeads(), &[AeadKind::ChaCha20Poly1305]);
        assert_eq!(r.key_id(), c.key_id());
    }
}
