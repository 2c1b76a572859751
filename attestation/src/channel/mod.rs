//! The attested channel: Oblivious HTTP (RFC 9458) over Binary HTTP (RFC 9292), whole
//! and chunked (draft-ietf-ohai-chunked-ohttp), with padding.
//!
//! The enclave holds [`ServerKeys`]; clients seal to a [`Target`] made from a verified
//! enclave identity. The vendored `ohttp` crate (rust-hpke backend, patched: its own
//! HPKE key schedule, `ring`'s AEAD, in-place sealing and opening; see
//! `attestation/vendor/ohttp/VENDORED.md`) does the cryptography and the chunked framing;
//! whole messages are framed here (`message.rs`) and streamed ones with the `bhttp`
//! crate. This module chooses suites, pads, bounds sizes and turns every failure into a
//! typed [`ChannelError`] without plaintext in it.
//!
//! A whole message is written once, into the buffer that is then sealed in place, and
//! opened in place in one buffer that becomes the body of the result: a [`Body`], a
//! view of the content in that buffer (never moved to its front unless the caller asks
//! for a `Vec`, [`Body::into_vec`]). Every buffer that holds plaintext is wiped, in
//! bulk, when dropped (`plain.rs`).
//!
//! To spare even the one copy of the body into the buffer that is sealed, write the
//! body into that buffer in the first place: [`Target::request_writer`] and
//! [`ResponseSealer::writer`] give a [`RequestWriter`] / [`ResponseWriter`], made
//! knowing the message's head and the body's expected size, with headroom for the OHTTP
//! prefix and the Binary HTTP head and tailroom for the trailers, padding and tag
//! (`writer.rs`). Their `seal` seals exactly the bytes `seal_request` / `seal` would
//! for the same message.
//!
//! ```
//! use veil_attestation::channel::{AeadKind, Headers, Limits, Request, Response, ServerKeys, Target};
//!
//! let keys = ServerKeys::generate()?;                     // in the enclave
//! let config = keys.configs().configs()[0].clone();       // published, then attested
//! let target = Target::dangerous_unverified(config, AeadKind::Aes128Gcm)?;
//!
//! let (sealed, pending) = target.seal_request(&Request::new("GET", "/v1/models", vec![]))?;
//! let (request, sealer) = keys.open_request(&target.key_id(), &sealed, &Limits::default())?;
//! assert_eq!(request.path, "/v1/models");
//! let reply = sealer.seal(&Response::new(200, b"{}".to_vec()))?;
//! assert_eq!(pending.open(&reply)?.body, b"{}");
//!
//! // The same, the body written straight into the buffers that are sealed.
//! let mut w = target.request_writer("POST", "/v1/embeddings", Headers::new(), 11)?;
//! w.extend_from_slice(b"{\"input\":1}");
//! let (sealed, pending) = w.seal()?;
//! let (request, sealer) = keys.open_request(&target.key_id(), &sealed, &Limits::default())?;
//! assert_eq!(request.body, b"{\"input\":1}");
//! let mut w = sealer.writer(200, Headers::new(), 2)?;
//! w.extend_from_slice(b"{}");
//! assert_eq!(pending.open(&w.seal()?)?.body, b"{}");
//! # Ok::<(), veil_attestation::channel::ChannelError>(())
//! ```

mod body;
mod client;
mod error;
mod io;
mod keys;
mod message;
pub mod padding;
mod plain;
mod server;
#[cfg(test)]
mod tests;
mod writer;

pub use body::Body;
pub use client::{PendingChunkedResponse, PendingResponse, ResponseStream, Target};
pub use error::ChannelError;
pub use io::BoxRead;
pub use keys::{AeadKind, KemKind, KeyConfig, KeyConfigList, KeyId, ServerKeys};
pub use message::{Headers, Request, Response};
pub use server::{ChunkedResponseSealer, Limits, PADDING_FIELD, ResponseSealer};
pub use writer::{RequestWriter, ResponseWriter};

/// Media type of a whole sealed request.
pub const REQUEST_MEDIA_TYPE: &str = "message/ohttp-req";
/// Media type of a whole sealed response.
pub const RESPONSE_MEDIA_TYPE: &str = "message/ohttp-res";
/// Media type of a chunked sealed request.
pub const CHUNKED_REQUEST_MEDIA_TYPE: &str = "message/ohttp-chunked-req";
/// Media type of a chunked sealed response.
pub const CHUNKED_RESPONSE_MEDIA_TYPE: &str = "message/ohttp-chunked-res";
