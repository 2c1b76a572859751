use thiserror::Error;

#[derive(Error, Debug)]
pub enum Error {
    #[cfg(feature = "rust-hpke")]
    #[error("a problem occurred with the AEAD")]
    Aead,
    #[cfg(feature = "stream")]
    #[error("a stream chunk was larger than the maximum allowed size")]
    ChunkTooLarge,
    #[cfg(feature = "nss")]
    #[error("a problem occurred during cryptographic processing: {0}")]
    Crypto(#[from] crate::nss::Error),
    #[cfg(feature = "stream")]
    #[error("a stream contained data after the last chunk")]
    ExtraData,
    #[error("an error was found in the format")]
    Format,
    #[cfg(feature = "rust-hpke")]
    #[error("a problem occurred with HPKE: {0}")]
    Hpke(#[from] ::hpke::HpkeError),
    #[error("an internal error occurred")]
    Internal,
    #[error("the wrong type of key was provided for the selected KEM")]
    InvalidKeyType,
    #[error("the wrong KEM was specified")]
    InvalidKem,
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the key ID was invalid")]
    KeyId,
    #[cfg(feature = "stream")]
    #[error("the object was not ready")]
    NotReady,
    #[error("the configuration contained too many symmetric suites")]
    TooManySymmetricSuites,
    #[error("a field was truncated")]
    Truncated,
    #[error("the configuration was not supported")]
    Unsupported,
    #[cfg(feature = "stream")]
    #[error("writes are not supported after closing")]
    WriteAfterClose,
}

// veil patch: the AEAD is ring's, whose error says nothing more.
#[cfg(feature = "rust-hpke")]
impl From<ring::error::Unspecified> for Error {
    fn from(_v: ring::error::Unspecified) -> Self {
        Self::Aead
    }
}

impl From<std::num::TryFromIntError> for Error {
    fn from(_v: std::num::TryFromIntError) -> Self {
        Self::TooManySymmetricSuites
    }
}

// If this happens, it's a programming error in this crate.
impl From<std::array::TryFromSliceError> for Error {
    fn from(_v: std::array::TryFromSliceError) -> Self {
        Self::Internal
    }
}

pub type Res<T> = Result<T, Error>;
