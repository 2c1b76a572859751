//! `veil-verify fetch`: host-side helpers that fetch the collateral a host did not
//! supply: an SEV-SNP VCEK (with the ASK/ARK and the ARK's CRL) from AMD's Key
//! Distribution Service, and TDX DCAP collateral (TCB Info, QE Identity, PCK and Root CA
//! CRLs) from Intel's Provisioning Certification Service.
//!
//! They are run by the host operator or an auditor ahead of time, never on a request
//! path: the enclave and the gateway never reach the network for collateral. Everything
//! fetched is verified (with the verification code `snp-report` / `tdx-quote` use, to
//! the pinned AMD ARK / Intel SGX Root CA) before it is cached or written; a cache hit
//! makes no request. The VCEK of a chip and TCB never changes, so a cached one is
//! reused while it is valid; TCB Info, QE Identity and CRLs are fetched again after
//! their `nextUpdate`.

mod http;
pub mod kds;
pub mod pcs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use time::OffsetDateTime;

use crate::output;
pub use http::{Http, RetryPolicy};

/// The fetchers.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fetch the VCEK of an SEV-SNP report's chip and TCB (and the ASK/ARK, and with
    /// `--crl` the ARK's CRL) from AMD's Key Distribution Service.
    #[command(after_long_help = kds::HELP)]
    Snp(kds::Args),
    /// Fetch the DCAP collateral of a TDX quote's platform (TCB Info, QE Identity, PCK
    /// CRL, Root CA CRL) from Intel's PCS.
    #[command(after_long_help = pcs::HELP)]
    Tdx(pcs::Args),
}

/// Flags common to both fetchers.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The cache directory; `$XDG_CACHE_HOME/veil/collateral` (or
    /// `~/.cache/veil/collateral`) when absent.
    #[arg(long, env = "VEIL_COLLATERAL_CACHE")]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the cache.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Where to write the files (see below).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The time at which what is fetched (or cached) must be valid (RFC 3339); now when
    /// absent.
    #[arg(long)]
    pub at: Option<String>,
    /// Attempts per URL (429, 5xx and transport errors are retried; 404 is not).
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// The most seconds spent waiting between attempts, per URL (`Retry-After` is
    /// honoured within it).
    #[arg(long, default_value_t = 120)]
    pub max_wait: u64,
    /// Connect timeout, and the limit of one attempt, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

impl Common {
    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            max_wait: Duration::from_secs(self.max_wait),
            timeout: Duration::from_secs(self.timeout.max(1)),
        }
    }

    fn cache(&self) -> Cache {
        if self.no_cache {
            return Cache { dir: None };
        }
        let dir = self.cache.clone().or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .filter(|v| !v.is_empty())
                        .map(|h| PathBuf::from(h).join(".cache"))
                })
                .map(|d| d.join("veil").join("collateral"))
        });
        Cache { dir }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Bad arguments or input files.
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// 404: the service has no such item (not retried).
    #[error("{url}: not found (HTTP 404, not retried)")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// Rate limited or unavailable beyond the retry bounds.
    #[error("{url}: gave up after {reason}, having waited {waited:?}; last answer: {last}")]
    GaveUp {
        /// The URL.
        url: String,
        /// Which bound was reached.
        reason: String,
        /// Time spent waiting.
        waited: Duration,
        /// The last status or transport error.
        last: String,
    },
    /// Another HTTP status.
    #[error("{url}: {detail}")]
    Http {
        /// The URL.
        url: String,
        /// Status and the start of the body.
        detail: String,
    },
    /// What the service answered does not verify; nothing of it was cached or written.
    #[error("{what} from {source_name} refused (not cached, not written): {detail}")]
    Refused {
        /// Which item.
        what: &'static str,
        /// The URL, or `cache`.
        source_name: String,
        /// The failed check.
        detail: String,
    },
}

impl FetchError {
    fn exit_code(&self) -> ExitCode {
        match self {
            FetchError::Refused { .. } => output::invalid(),
            _ => output::usage(),
        }
    }
}

fn refused(what: &'static str, source: &str, detail: impl std::fmt::Display) -> FetchError {
    FetchError::Refused {
        what,
        source_name: source.to_owned(),
        detail: detail.to_string(),
    }
}

/// A directory of verified items, keyed by request.
#[derive(Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    /// The bytes cached under `key`, if any.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.as_ref()?.join(key)).ok()
    }

    /// Cache `bytes` under `key` (atomically: a reader never sees half a file).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), FetchError> {
        match &self.dir {
            None => Ok(()),
            Some(dir) => write_atomic(&dir.join(key), bytes),
        }
    }
}

/// Write `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let io = |e: std::io::Error| FetchError::Io(format!("{}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Where an item came from, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The cache (no request).
    Cache,
    /// The service.
    Network,
}

impl Origin {
    fn word(self) -> &'static str {
        match self {
            Origin::Cache => "cached ",
            Origin::Network => "fetched",
        }
    }
}

/// Fetch-or-cache one item: a cached entry that `verify` accepts is used without a
/// request; otherwise `fetch` runs and its result is cached only once `verify` accepts
/// it. `verify` gets the bytes and where they came from (for its error).
async fn cached_or_fetched<T, F, Fut>(
    cache: &Cache,
    key: &str,
    fetch: F,
    verify: impl Fn(&[u8], &str) -> Result<T, FetchError>,
) -> Result<(T, Vec<u8>, Origin), FetchError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<u8>, String), FetchError>>,
{
    if let Some(bytes) = cache.get(key) {
        match verify(&bytes, "cache") {
            Ok(v) => return Ok((v, bytes, Origin::Cache)),
            Err(e) => {
                // Not deleted: a good answer replaces it.
                eprintln!("veil-verify fetch: cached {key} is not usable ({e}); fetching");
            }
        }
    }
    let (bytes, url) = fetch().await?;
    let v = verify(&bytes, &url)?;
    cache.put(key, &bytes)?;
    Ok((v, bytes, Origin::Network))
}

fn runtime() -> Result<tokio::runtime::Runtime, FetchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchError::Io(format!("starting the HTTP client: {e}")))
}

fn at(common: &Common) -> Result<OffsetDateTime, FetchError> {
    output::at(common.at.as_deref()).map_err(FetchError::Usage)
}

/// A base URL without its trailing slashes.
fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Run a fetcher.
pub fn run(command: &Command) -> ExitCode {
    let result = match command {
        Command::Snp(args) => kds::run(args),
        Command::Tdx(args) => pcs::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veil-verify fetch: error: {e}");
            e.exit_code()
        }
    }
}
