//! A deterministic initramfs: a `newc` cpio archive of a directory tree, with entries in
//! sorted order, inode numbers counted from 1, every owner root, every timestamp the
//! build's `SOURCE_DATE_EPOCH`, and modes reduced to 0755 (directories, executables) or
//! 0644. The same tree always gives the same bytes.

use std::path::Path;

use super::BuildError;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A regular file and whether it is executable.
    File {
        /// The contents.
        data: Vec<u8>,
        /// Executable (0755) or not (0644).
        executable: bool,
    },
    /// A symbolic link to this target.
    Symlink(String),
}

/// Writes `entries` (archive paths without a leading `/`, any order) as a newc archive.
///
/// # Errors
/// A path that is empty, absolute, has `..`, or is too long for the format.
pub fn write(entries: &[(String, Entry)], mtime: u64) -> Result<Vec<u8>, BuildError> {
    let mut sorted: Vec<&(String, Entry)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mtime = u32::try_from(mtime)
        .map_err(|_| BuildError::Invalid(format!("SOURCE_DATE_EPOCH {mtime} is past 2106")))?;
    let mut out = Vec::new();
    for (ino, (path, entry)) in sorted.into_iter().enumerate() {
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(BuildError::Invalid(format!(
                "initramfs path {path:?} is not a clean relative path"
            )));
        }
        let (mode, nlink, data): (u32, u32, &[u8]) = match entry {
            Entry::Dir => (0o040_755, 2, &[]),
            Entry::File { data, executable } => (
                if *executable { 0o100_755 } else { 0o100_644 },
                1,
                data.as_slice(),
            ),
            Entry::Symlink(target) => (0o120_777, 1, target.as_bytes()),
        };
        let ino = u32::try_from(ino + 1)
            .map_err(|_| BuildError::Invalid("too many initramfs entries".to_owned()))?;
        header(&mut out, ino, mode, nlink, mtime, data.len(), path)?;
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, 0, "TRAILER!!!")?;
    // Pad the archive to a 512-byte multiple, as cpio(1) does.
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
    Ok(out)
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    name: &str,
) -> Result<(), BuildError> {
    let size = u32::try_from(size)
        .map_err(|_| BuildError::Invalid(format!("initramfs file {name:?} is over 4 GiB")))?;
    let namesize = u32::try_from(name.len() + 1)
        .map_err(|_| BuildError::Invalid(format!("initramfs path {name:?} is too long")))?;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check.
    out.extend_from_slice(b"070701");
    for field in [ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, namesize, 0] {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    Ok(())
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Reads a directory tree into archive entries (paths relative to `root`), following
/// nothing: symbolic links are kept as links.
///
/// # Errors
/// An unreadable entry, a non-UTF-8 name, or a device/FIFO/socket.
pub fn entries_from_dir(root: &Path) -> Result<Vec<(String, Entry)>, BuildError> {
    let mut out = Vec::new();
    for (rel, path) in super::fsutil::walk_sorted(root)? {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| BuildError::io(&path, e))?;
        let ty = meta.file_type();
        let entry = if ty.is_dir() {
            Entry::Dir
        } else if ty.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| BuildError::io(&path, e))?;
            Entry::Symlink(
                target
                    .to_str()
                    .ok_or_else(|| {
                        BuildError::Invalid(format!("{}: non-UTF-8 link", path.display()))
                    })?
                    .to_owned(),
            )
        } else if ty.is_file() {
            let data = std::fs::read(&path).map_err(|e| BuildError::io(&path, e))?;
            Entry::File {
                data,
                executable: super::fsutil::is_executable(&meta),
            }
        } else {
            return Err(BuildError::Invalid(format!(
                "{}: not a file, directory or link",
                path.display()
            )));
        };
        out.push((rel, entry));
    }
    Ok(out)
}
