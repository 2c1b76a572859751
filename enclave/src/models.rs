//! The model directory: fetching the default models, and finding models in a directory.

use std::path::Path;

/// Fetches the default models into `dir` (see the issue and README for what and how),
/// checking pinned SHA-256 digests, with a progress display on stderr.
///
/// # Errors
/// When a download, an extraction or a digest check fails.
pub fn fetch_defaults(dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!(
        "models fetch into {} is not implemented yet (issue 3)",
        dir.display()
    )
}
