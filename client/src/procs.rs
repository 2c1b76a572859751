//! Child processes that announce where they listen: what `veil demo`, the tests and the
//! benchmarks use to run `veil-enclave`, `veil-gateway` and `veil proxy` for real.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A child process with its stdout and stderr captured line by line; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace binary next to the running executable, or in its parent directory (a
/// test or bench runs from `target/<profile>/deps`).
///
/// # Errors
/// When it is in neither.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no executable directory")?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let path = d.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    anyhow::bail!(
        "{name} is missing beside {}: build every binary first (`cargo build --workspace --bins`, with --release for a release build)",
        dir.display()
    )
}

impl Proc {
    /// Starts `program ARGS…` and waits up to five minutes for its
    /// `listening on http://ADDR` (or `https://ADDR`) line.
    ///
    /// # Errors
    /// When it cannot start, exits first, or does not announce an address in time.
    pub fn start(program: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let outputs: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stderr.take().context("stderr")?),
            Box::new(child.stdout.take().context("stdout")?),
        ];
        for out in outputs {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let mut proc = Self {
            name,
            child,
            log,
            url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(url) = proc
                .announced("listening on https://")
                .or_else(|| proc.announced("listening on http://"))
            {
                proc.url = url;
                return Ok(proc);
            }
            if let Some(status) = proc.child.try_wait()? {
                anyhow::bail!("{} exited ({status}):\n{}", proc.name, proc.log_text());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not start within 5 minutes:\n{}",
                proc.name,
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://ADDR` from the first line holding `marker` followed by an address
    /// (`listening on http://`, `PLAINTEXT on http://`); `https://ADDR` when the marker
    /// ends in `https://` (`listening on https://`).
    #[must_use]
    pub fn announced(&self, marker: &str) -> Option<String> {
        let scheme = if marker.ends_with("https://") {
            "https"
        } else {
            "http"
        };
        let log = self.log.lock().ok()?;
        log.iter().find_map(|line| {
            line.split_once(marker)
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
                .map(|a| format!("{scheme}://{a}"))
        })
    }

    /// The base URL it listens on, `http://ADDR` or `https://ADDR`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .unwrap_or(&self.url)
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Every line it has printed so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every line it has printed so far, joined.
    #[must_use]
    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// Its name, for messages.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `veil-enclave serve` with the **simulated** TEE, no GPU, on a free loopback port,
/// serving the models in `models`; `extra` flags appended.
///
/// # Errors
/// As [`Proc::start`].
pub fn sim_enclave(models: &str, extra: &[&str]) -> anyhow::Result<Proc> {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tee",
        "sim",
        "--gpu",
        "off",
        "--models",
        models,
    ];
    args.extend_from_slice(extra);
    Proc::start(&sibling("veil-enclave")?, &args)
}

/// `veil-gateway keys create`: a new API key named `name` in `database`.
///
/// # Errors
/// When the command fails or prints no key.
pub fn create_key(database: &str, name: &str) -> anyhow::Result<String> {
    let out = Command::new(sibling("veil-gateway")?)
        .args(["keys", "create", "--database", database, "--name", name])
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_owned();
    anyhow::ensure!(key.starts_with("veil_"), "keys create printed no key");
    Ok(key)
}

/// `veil-gateway serve` on a free loopback port in front of `backend`, with `database`,
/// accepting the simulated TEE (development only); `extra` flags appended.
///
/// # Errors
/// As [`Proc::start`].
pub fn sim_gateway(backend: &str, database: &str, extra: &[&str]) -> anyhow::Result<Proc> {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        backend,
        "--database",
        database,
        "--insecure-allow-sim",
    ];
    args.extend_from_slice(extra);
    Proc::start(&sibling("veil-gateway")?, &args)
}
