//! File-tree helpers shared by the build steps.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::BuildError;

/// Every entry under `root` (not `root` itself), as (`/`-separated relative path, full
/// path), depth-first in byte order of names, so the order never depends on the
/// underlying file system.
///
/// # Errors
/// An unreadable directory or a non-UTF-8 name.
pub fn walk_sorted(root: &Path) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), BuildError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| BuildError::io(dir, e))? {
        let entry = entry.map_err(|e| BuildError::io(dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| BuildError::Invalid(format!("{}: non-UTF-8 name {n:?}", dir.display())))?;
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let is_dir = std::fs::symlink_metadata(&path)
            .map_err(|e| BuildError::io(&path, e))?
            .is_dir();
        out.push((rel.clone(), path.clone()));
        if is_dir {
            walk(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// Whether any execute bit is set.
#[must_use]
pub fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Normalizes a tree for a reproducible image: modes 0755 (directories, executables)
/// or 0644 (other files); links untouched.
///
/// # Errors
/// An entry that cannot be read or changed.
pub fn normalize_modes(root: &Path) -> Result<(), BuildError> {
    for (_, path) in walk_sorted(root)? {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| BuildError::io(&path, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = if meta.is_dir() || is_executable(&meta) {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(&path, e))?;
    }
    Ok(())
}

/// SHA-256 of a file, streamed, as lowercase hex, and its size.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<(String, u64), BuildError> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| BuildError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok((hex(ctx.finish().as_ref()), size))
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Copies a file, creating its parent directories.
///
/// # Errors
/// When it cannot be copied.
pub fn copy_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
    }
    std::fs::copy(from, to).map_err(|e| BuildError::io(from, e))?;
    Ok(())
}

/// Copies the subtree entries of `from` that `keep` accepts (by relative path) into
/// `to`, keeping links as links and creating parents as needed.
///
/// # Errors
/// When an entry cannot be read or written.
pub fn copy_filtered(
    from: &Path,
    to: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, BuildError> {
    let mut copied = Vec::new();
    for (rel, path) in walk_sorted(from)? {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| BuildError::io(&path, e))?;
        if meta.is_dir() || !keep(&rel) {
            continue;
        }
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| BuildError::io(&path, e))?;
            let _ = std::fs::remove_file(&dest);
            std::os::unix::fs::symlink(&target, &dest).map_err(|e| BuildError::io(&dest, e))?;
        } else {
            std::fs::copy(&path, &dest).map_err(|e| BuildError::io(&path, e))?;
        }
        copied.push(rel);
    }
    Ok(copied)
}
