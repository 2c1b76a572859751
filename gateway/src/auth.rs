//! API keys and the admin token: generation, hashing, constant-time comparison. Free of HTTP.

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use veil_attestation::bytes::Sha256Digest;

/// Every API key starts with this, so leaked keys are recognizable.
pub const KEY_PREFIX: &str = "veil_";

/// A freshly generated API key. Shown once; only its hash is stored.
pub struct NewKey {
    secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewKey(<redacted>)")
    }
}

impl NewKey {
    /// 32 random bytes, hex, after the prefix.
    pub fn generate() -> anyhow::Result<Self> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        Ok(Self {
            secret: format!("{KEY_PREFIX}{}", hex::encode(raw)),
        })
    }
    /// The key itself (to print once).
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.secret
    }
    /// The stored form.
    #[must_use]
    pub fn hash(&self) -> String {
        hash_key(&self.secret)
    }
}

/// The stored form of a key: lowercase hex SHA-256.
#[must_use]
pub fn hash_key(key: &str) -> String {
    Sha256Digest::of(key.as_bytes()).to_string()
}

/// Extracts a well-formed `veil_` key from an `Authorization` header value.
#[must_use]
pub fn bearer_key(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = rest.trim();
    let body = key.strip_prefix(KEY_PREFIX)?;
    (body.len() == 64 && body.bytes().all(|b| b.is_ascii_hexdigit())).then_some(key)
}

/// Compares two stored hashes in constant time.
#[must_use]
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The admin token, held only as a digest; compared in constant time (the digest makes the
/// comparison independent of the presented token's length).
#[derive(Clone)]
pub struct AdminToken(Sha256Digest);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// From the configured token.
    #[must_use]
    pub fn new(token: &str) -> Self {
        Self(Sha256Digest::of(token.as_bytes()))
    }
    /// Whether `presented` is the token.
    #[must_use]
    pub fn matches(&self, presented: &str) -> bool {
        self.0.ct_eq(&Sha256Digest::of(presented.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_hashed() -> anyhow::Result<()> {
        let k = NewKey::generate()?;
        assert!(k.secret().starts_with("veil_"));
        assert_eq!(k.secret().len(), 5 + 64);
        assert_eq!(k.hash(), hash_key(k.secret()));
        assert!(!format!("{k:?}").contains(k.secret()));
        let header = format!("Bearer {}", k.secret());
        assert_eq!(bearer_key(Some(&header)), Some(k.secret()));
        assert_eq!(bearer_key(Some("Bearer veil_abc")), None);
        assert_eq!(bearer_key(Some("Basic xyz")), None);
        assert_eq!(bearer_key(None), None);
        Ok(())
    }

    #[test]
    fn admin_token_matches_only_itself() {
        let t = AdminToken::new("s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches(""));
        assert!(hashes_equal("ab", "ab"));
        assert!(!hashes_equal("ab", "ac"));
    }
}
