//! Fixed-size byte strings that print, parse and serialize as lowercase hex.

use std::fmt;

/// Error from parsing a hex newtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// The text was not hex.
    #[error("{what}: not hexadecimal")]
    NotHex {
        /// Which value was being parsed.
        what: &'static str,
    },
    /// The decoded value had the wrong length.
    #[error("{what}: expected {expected} bytes, found {found}")]
    Length {
        /// Which value was being parsed.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
}

/// Decode `text` as exactly `N` bytes of hex.
pub(crate) fn decode_fixed<const N: usize>(
    what: &'static str,
    text: &str,
) -> Result<[u8; N], HexError> {
    let bytes = hex::decode(text).map_err(|_| HexError::NotHex { what })?;
    let found = bytes.len();
    bytes.try_into().map_err(|_| HexError::Length {
        what,
        expected: N,
        found,
    })
}

/// Defines a `[u8; N]` newtype with hex `Display`, `Debug`, `FromStr` and serde.
macro_rules! hex_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Borrow the bytes.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parse from a slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::bytes::HexError> {
                let found = bytes.len();
                <[u8; $len]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| $crate::bytes::HexError::Length {
                        what: $what,
                        expected: $len,
                        found,
                    })
            }

            /// Compare with another value in constant time.
            #[must_use]
            pub fn ct_eq(&self, other: &Self) -> bool {
                subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::bytes::HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::bytes::decode_fixed::<$len>($what, s).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use hex_newtype;

hex_newtype!(
    /// A SHA-256 digest.
    Sha256Digest,
    32,
    "SHA-256 digest"
);

impl Sha256Digest {
    /// SHA-256 of `data`.
    #[must_use]
    pub fn of(data: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

hex_newtype!(
    /// A 48-byte launch measurement (SEV-SNP `MEASUREMENT`, TDX `MRTD`, or the simulated
    /// TEE's SHA-384 of its executable).
    Measurement,
    48,
    "48-byte measurement"
);

impl Measurement {
    /// SHA-384 of `data`.
    #[must_use]
    pub fn sha384_of(data: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA384, data);
        let mut out = [0u8; 48];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

/// Base64 (standard alphabet, padded) bytes in JSON; raw bytes in Rust.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl serde::Serialize for Base64Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Base64Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Sha256Digest>(), Ok(d));
        assert!(matches!(
            "abcd".parse::<Sha256Digest>(),
            Err(HexError::Length {
                expected: 32,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            "zz".parse::<Sha256Digest>(),
            Err(HexError::NotHex { .. })
        ));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Sha256Digest>(&json).unwrap(), d);
    }
}
