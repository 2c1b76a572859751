//! The channel's one error type.

use super::keys::KeyId;

/// What went wrong in the attested channel.
///
/// Decryption failures are deliberately one opaque variant, [`ChannelError::Open`]:
/// which byte or which check failed is not an oracle we hand to a network peer.
/// No variant ever carries plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A key configuration (RFC 9458 §3) or a list of them (RFC 9540) was malformed.
    #[error("key configuration: {what} at offset {offset}")]
    KeyConfig {
        /// What was wrong.
        what: &'static str,
        /// Byte offset into the input where it went wrong.
        offset: usize,
    },
    /// No key configuration with this id is held here.
    #[error("no key configuration with id {0}")]
    UnknownKeyId(KeyId),
    /// The key configuration does not offer the requested algorithms.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
    },
    /// A sealed message or chunk did not open: wrong key, tampered, reordered,
    /// duplicated or truncated bytes. Deliberately says no more.
    #[error("the sealed message could not be opened")]
    Open,
    /// A chunked stream ended before its authenticated final chunk (a truncation attack,
    /// or a connection cut short).
    #[error("the sealed stream ended before its final chunk")]
    StreamTruncated,
    /// The decrypted message was not a well-formed padded Binary HTTP message.
    #[error("malformed inner message: {what}")]
    Malformed {
        /// Which part was malformed (never its content).
        what: &'static str,
    },
    /// A message or a part of it exceeded a limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The API was used out of order (for example content before the head).
    #[error("channel misuse: {0}")]
    Misuse(&'static str),
    /// Key generation or another local cryptographic operation failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

impl ChannelError {
    /// Map an `ohttp` error met while opening a whole message.
    pub(crate) fn from_open(e: &ohttp::Error) -> Self {
        match e {
            ohttp::Error::KeyId => Self::Open,
            ohttp::Error::InvalidKem | ohttp::Error::Unsupported => Self::Unsupported {
                what: "the request's KEM, KDF or AEAD",
            },
            _ => Self::Open,
        }
    }

    /// Map an I/O error from `ohttp`'s streaming state machines.
    pub(crate) fn from_stream(e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            return Self::TooLarge {
                what: "sealed stream",
                limit: 0, // the caller, which knows its limit, fills it in
            };
        }
        match e.get_ref().and_then(|i| i.downcast_ref::<ohttp::Error>()) {
            Some(ohttp::Error::Truncated) => Self::StreamTruncated,
            Some(ohttp::Error::ChunkTooLarge) => Self::TooLarge {
                what: "stream chunk",
                limit: super::padding::MAX_CHUNK,
            },
            Some(inner) => Self::from_open(inner),
            None if e.kind() == std::io::ErrorKind::UnexpectedEof => Self::StreamTruncated,
            None => Self::Open,
        }
    }
}
