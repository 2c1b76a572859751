//! The client's side: seal requests to a chosen key configuration, open responses
//! (whole, or streamed as they arrive).

use futures::executor::block_on;
use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::body::Body;
use super::io::{BoxRead, SharedRead, Sink};
use super::keys::{AeadKind, KeyConfig, KeyId};
use super::message::{Headers, Request, Response, final_status};
use super::plain::{PlainBuf, wipe};
use super::{ChannelError, padding};
use crate::verify::{EnclaveIdentity, Verified};

/// A key configuration and AEAD to seal to.
///
/// Made from a [`Verified`] [`EnclaveIdentity`]: a key that did not pass attestation
/// verification does not type-check, except through the explicitly dangerous
/// [`Target::dangerous_unverified`].
///
/// Making one parses the configuration once and, for X25519, precomputes a table of
/// multiples of the enclave's public key (about 1.4 ms and 30 KiB, next to the far
/// larger cost of verifying the attestation it comes from), which makes every request
/// sealed with it about 40 µs cheaper. Make one per enclave key and reuse it.
#[derive(Clone)]
pub struct Target {
    config: KeyConfig,
    aead: AeadKind,
    /// `ohttp`'s sender for `config` restricted to `aead`, parsed once and with its
    /// precomputation done (for X25519, a table of multiples of the enclave's key, so
    /// that each request's DH is a fixed-base multiplication); cloned per request.
    client: ohttp::ClientRequest,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("config", &self.config)
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

type OpenStream = Box<dyn FnOnce(BoxRead) -> Result<BoxRead, ChannelError> + Send>;

impl Target {
    /// Seal to the verified enclave's key configuration `key_id` with `aead`.
    pub fn new(
        identity: &Verified<EnclaveIdentity>,
        key_id: &KeyId,
        aead: AeadKind,
    ) -> Result<Self, ChannelError> {
        let config = identity
            .key_configs()
            .get(key_id)
            .ok_or(ChannelError::UnknownKeyId(*key_id))?;
        Self::checked(config.clone(), aead)
    }

    /// Seal to the verified enclave's preferred key configuration: X-Wing (post-quantum
    /// hybrid) when offered, else the first, with AES-128-GCM when offered.
    pub fn preferred(identity: &Verified<EnclaveIdentity>) -> Result<Self, ChannelError> {
        let configs = identity.key_configs().configs();
        let config = configs
            .iter()
            .find(|c| c.kem() == super::KemKind::XWing)
            .or_else(|| configs.first())
            .ok_or(ChannelError::Unsupported {
                what: "an empty key configuration list",
            })?;
        let aead = config
            .aeads()
            .first()
            .copied()
            .ok_or(ChannelError::Unsupported { what: "AEAD" })?;
        Self::checked(config.clone(), aead)
    }

    /// Seal to a key configuration that nobody verified. For test vectors, fuzzing and
    /// benchmarks; never for real traffic.
    pub fn dangerous_unverified(config: KeyConfig, aead: AeadKind) -> Result<Self, ChannelError> {
        Self::checked(config, aead)
    }

    fn checked(config: KeyConfig, aead: AeadKind) -> Result<Self, ChannelError> {
        let encoded = config.restricted_to(aead)?;
        let mut client = ohttp::ClientRequest::from_encoded_config(&encoded)
            .map_err(|_| ChannelError::Crypto("OHTTP client setup"))?;
        client.precompute();
        Ok(Self {
            config,
            aead,
            client,
        })
    }

    /// The routing identifier to send as `Veil-Key-Id`.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.config.id()
    }

    /// The AEAD in use.
    #[must_use]
    pub fn aead(&self) -> AeadKind {
        self.aead
    }

    pub(super) fn ohttp_client(&self) -> Result<ohttp::ClientRequest, ChannelError> {
        Ok(self.client.clone())
    }

    /// Seal `request` as a whole message (`message/ohttp-req`).
    ///
    /// The padded Binary HTTP message is written once, into a buffer with room for the
    /// OHTTP header before it and the AEAD tag after it, and sealed there in place: the
    /// buffer becomes the encapsulated request, and no plaintext copy is left behind.
    pub fn seal_request(
        &self,
        request: &Request,
    ) -> Result<(Vec<u8>, PendingResponse), ChannelError> {
        let client = self.ohttp_client()?;
        let mut buf = request.encode_padded(
            bhttp::Mode::KnownLength,
            client.encapsulation_prefix_len(),
            client.tag_len(),
        )?;
        let inner = client
            .encapsulate_in_place(&mut buf)
            .map_err(|_| ChannelError::Crypto("request encapsulation"))?;
        Ok((buf.into_sealed(), PendingResponse { inner }))
    }

    /// Seal `request` as a chunked message (`message/ohttp-chunked-req`), for a response
    /// that streams back.
    pub fn seal_chunked_request(
        &self,
        request: &Request,
    ) -> Result<(Vec<u8>, PendingChunkedResponse), ChannelError> {
        let plaintext = request.to_padded_bhttp(bhttp::Mode::IndeterminateLength)?;
        let sink = Sink::default();
        let mut writer = self
            .ohttp_client()?
            .encapsulate_stream(sink.clone())
            .map_err(|_| ChannelError::Crypto("request encapsulation"))?;
        block_on(async {
            writer.write_all(&plaintext).await?;
            writer.close().await
        })
        .map_err(|e| ChannelError::from_stream(&e))?;
        let encapsulated = sink.take();
        let open: OpenStream = Box::new(move |src: BoxRead| {
            let reader = writer
                .response(src)
                .map_err(|_| ChannelError::Crypto("chunked response setup"))?;
            Ok(Box::pin(reader) as BoxRead)
        });
        Ok((encapsulated, PendingChunkedResponse { open }))
    }
}

/// Opens the response to a whole-message request.
pub struct PendingResponse {
    pub(super) inner: ohttp::ClientResponse,
}

impl std::fmt::Debug for PendingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingResponse(<redacted>)")
    }
}

impl PendingResponse {
    /// Open `message/ohttp-res` bytes.
    ///
    /// They are copied once, opened in place, and parsed there; that buffer becomes the
    /// response's body (a [`super::Body`] view of the content in it).
    pub fn open(self, encapsulated: &[u8]) -> Result<Response, ChannelError> {
        let mut buf = PlainBuf::copy_of(encapsulated);
        let range = self
            .inner
            .decapsulate_in_place(&mut buf)
            .map_err(|e| ChannelError::from_open(&e))?;
        Response::from_plaintext(buf, range)
    }

    /// [`PendingResponse::open`] on an encapsulated response the caller owns: it is
    /// opened in place in that buffer, which becomes the response's body (a view), so
    /// the response is never copied. The buffer is wiped on failure.
    pub fn open_owned(self, encapsulated: Vec<u8>) -> Result<Response, ChannelError> {
        let mut buf = PlainBuf::from(encapsulated);
        let range = self
            .inner
            .decapsulate_in_place(&mut buf)
            .map_err(|e| ChannelError::from_open(&e))?;
        Response::from_plaintext(buf, range)
    }
}

/// Opens the streamed response to a chunked request.
pub struct PendingChunkedResponse {
    open: OpenStream,
}

impl std::fmt::Debug for PendingChunkedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingChunkedResponse(<redacted>)")
    }
}

impl PendingChunkedResponse {
    /// Read the response from `src` as it arrives.
    pub fn stream<R: AsyncRead + Send + 'static>(
        self,
        src: R,
    ) -> Result<ResponseStream, ChannelError> {
        let plain = (self.open)(Box::pin(src))?;
        let shared = SharedRead::new(plain);
        Ok(ResponseStream {
            msg: <bhttp::Message as bhttp::stream::AsyncReadMessage>::async_read(shared.clone()),
            rest: shared,
            stage: Stage::Head,
        })
    }

    /// Open a whole `message/ohttp-chunked-res` held in memory: the head, all content
    /// concatenated, and the trailers.
    pub fn open_all(self, encapsulated: Vec<u8>) -> Result<Response, ChannelError> {
        let mut stream = self.stream(futures::io::Cursor::new(encapsulated))?;
        block_on(async {
            let (status, headers) = stream.head().await?;
            let mut body = PlainBuf::default();
            while let Some(mut chunk) = stream.next_content().await? {
                body.extend_secure(&chunk);
                wipe(&mut chunk);
            }
            let trailers = stream.trailers()?;
            let len = body.len();
            Ok(Response {
                status,
                headers,
                body: Body::view(body, 0..len),
                trailers,
            })
        })
    }
}

enum Stage {
    Head,
    Body,
    Done(Headers),
    Failed,
}

/// A streamed response being opened. Call [`ResponseStream::head`], then
/// [`ResponseStream::next_content`] until it returns `None`, then
/// [`ResponseStream::trailers`]. `None` is returned only after the authenticated final
/// chunk and the zero padding have been read, so a truncated stream is always an error.
pub struct ResponseStream {
    msg: bhttp::stream::AsyncMessage<SharedRead>,
    rest: SharedRead,
    stage: Stage,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseStream(<redacted>)")
    }
}

/// The most content returned by one call of [`ResponseStream::next_content`].
const READ_SIZE: usize = padding::MAX_CHUNK;

impl ResponseStream {
    fn fail(&mut self, e: ChannelError) -> ChannelError {
        self.stage = Stage::Failed;
        e
    }

    fn bhttp_error(&mut self, e: &bhttp::Error) -> ChannelError {
        let err = match e {
            bhttp::Error::Io(io) => ChannelError::from_stream(io),
            bhttp::Error::Truncated => ChannelError::StreamTruncated,
            _ => ChannelError::Malformed {
                what: "streamed Binary HTTP response",
            },
        };
        self.fail(err)
    }

    /// The status and header fields (without the `veil-padding` field).
    pub async fn head(&mut self) -> Result<(u16, Headers), ChannelError> {
        if !matches!(self.stage, Stage::Head) {
            return Err(ChannelError::Misuse("head read twice"));
        }
        let header = match self.msg.header().await {
            Ok(h) => h,
            Err(e) => return Err(self.bhttp_error(&e)),
        };
        let Some(status) = header.control().status() else {
            return Err(self.fail(ChannelError::Malformed {
                what: "expected a response",
            }));
        };
        let status = final_status(u64::from(status.code())).map_err(|e| self.fail(e))?;
        let mut headers = Headers::new();
        for f in header.iter() {
            if f.name()
                .eq_ignore_ascii_case(super::server::PADDING_FIELD.as_bytes())
            {
                continue;
            }
            let (Ok(n), Ok(v)) = (
                std::str::from_utf8(f.name()),
                std::str::from_utf8(f.value()),
            ) else {
                return Err(self.fail(ChannelError::Malformed {
                    what: "header field not UTF-8",
                }));
            };
            headers.push(n, v).map_err(|e| self.fail(e))?;
        }
        self.stage = Stage::Body;
        Ok((status.code(), headers))
    }

    /// The next piece of content as it arrives, or `None` at the verified end.
    pub async fn next_content(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        match self.stage {
            Stage::Body => {}
            Stage::Done(_) => return Ok(None),
            _ => {
                return Err(ChannelError::Misuse(
                    "content before the head, or after an error",
                ));
            }
        }
        let mut buf = vec![0u8; READ_SIZE];
        let n = {
            let mut body = match self.msg.body() {
                Ok(b) => b,
                Err(e) => return Err(self.bhttp_error(&e)),
            };
            body.read(&mut buf).await
        };
        match n {
            Ok(0) => {}
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) => return Err(self.fail(ChannelError::from_stream(&e))),
        }
        let trailer = match self.msg.trailer().await {
            Ok(t) => t,
            Err(e) => return Err(self.bhttp_error(&e)),
        };
        let mut trailers = Headers::new();
        for f in trailer.iter() {
            let (Ok(n), Ok(v)) = (
                std::str::from_utf8(f.name()),
                std::str::from_utf8(f.value()),
            ) else {
                return Err(self.fail(ChannelError::Malformed {
                    what: "trailer field not UTF-8",
                }));
            };
            trailers.push(n, v).map_err(|e| self.fail(e))?;
        }
        // Whatever follows the message must be zero padding, then the final chunk.
        let mut pad = [0u8; 4096];
        loop {
            match self.rest.read(&mut pad).await {
                Ok(0) => break,
                Ok(n) => {
                    if pad.get(..n).unwrap_or_default().iter().any(|&b| b != 0) {
                        return Err(self.fail(ChannelError::Malformed {
                            what: "non-zero bytes after the message",
                        }));
                    }
                }
                Err(e) => return Err(self.fail(ChannelError::from_stream(&e))),
            }
        }
        self.stage = Stage::Done(trailers);
        Ok(None)
    }

    /// The trailer fields, once [`ResponseStream::next_content`] has returned `None`.
    pub fn trailers(&self) -> Result<Headers, ChannelError> {
        match &self.stage {
            Stage::Done(t) => Ok(t.clone()),
            _ => Err(ChannelError::Misuse(
                "trailers before the end of the stream",
            )),
        }
    }
}
