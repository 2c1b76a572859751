//! `veil config`: the gateway, API key and policy remembered between runs, in a TOML
//! file readable by its owner only (mode 0600, in a 0700 directory).
//!
//! The file is `$VEIL_CONFIG`, else `$XDG_CONFIG_HOME/veil/config.toml`, else
//! `~/.config/veil/config.toml`. Flags and `VEIL_*` variables override it.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// What the file holds.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gateway's URL.
    pub gateway: Option<String>,
    /// The API key.
    pub api_key: Option<String>,
    /// A policy file.
    pub policy: Option<PathBuf>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("gateway", &self.gateway)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish()
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        self.api_key.zeroize();
    }
}

/// The configuration file's path.
///
/// # Errors
/// When neither `VEIL_CONFIG`, `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VEIL_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("cannot place the configuration file: set VEIL_CONFIG or HOME")?;
    Ok(base.join("veil").join("config.toml"))
}

impl Config {
    /// Reads the file; a missing file is an empty configuration.
    ///
    /// # Errors
    /// When it exists but cannot be read or parsed (unknown keys are errors).
    pub fn load() -> anyhow::Result<Self> {
        let p = path()?;
        match std::fs::read_to_string(&p) {
            Ok(mut text) => {
                let c = toml::from_str(&text).with_context(|| format!("{}", p.display()));
                text.zeroize();
                c
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Writes the file with mode 0600 (its directory 0700), replacing it atomically.
    ///
    /// # Errors
    /// On any I/O failure.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let p = path()?;
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = toml::to_string(self).context("encoding the configuration")?;
        let tmp = dir.join(format!(".config.toml.{}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, &p)
        })();
        text.zeroize();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", p.display()));
        }
        Ok(p)
    }
}
