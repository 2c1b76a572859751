//! dm-verity parameters: the salt and UUIDs are derived from the filesystem image, never
//! random, so the same image always gets the same hash tree and root hash.

use super::BuildError;

/// Data and hash block size.
pub const BLOCK: u64 = 4096;

/// Everything `veritysetup format` is given, derived from the filesystem image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The salt (32 bytes, hex).
    pub salt: String,
    /// The verity superblock UUID.
    pub verity_uuid: String,
    /// The data blocks (the filesystem image is padded to a whole number of blocks).
    pub data_blocks: u64,
    /// The byte offset of the hash area (the verity superblock, then the tree), on the
    /// same device right after the data.
    pub hash_offset: u64,
    /// Where the tree starts, in hash blocks: the superblock takes the first one.
    pub hash_start_block: u64,
}

fn tagged_sha256(tag: &str, digest: &[u8; 32]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(tag.as_bytes());
    ctx.update(digest);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// An RFC 9562 version-8 (custom) UUID from the first 16 bytes of `bytes`.
#[must_use]
pub fn uuid_from(bytes: &[u8; 32]) -> String {
    let mut u = [0u8; 16];
    u.copy_from_slice(&bytes[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    let h = super::fsutil::hex(&u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The filesystem UUID for a tree whose content digest is `tree_digest`.
#[must_use]
pub fn fs_uuid(tree_digest: &[u8; 32]) -> String {
    uuid_from(&tagged_sha256("veil/image/fs-uuid/v1", tree_digest))
}

/// Derives the verity parameters of a filesystem image of `fs_size` bytes whose SHA-256
/// is `fs_sha256`.
///
/// # Errors
/// An empty image.
pub fn derive(fs_sha256: &[u8; 32], fs_size: u64) -> Result<Derived, BuildError> {
    if fs_size == 0 {
        return Err(BuildError::Invalid(
            "the filesystem image is empty".to_owned(),
        ));
    }
    let data_blocks = fs_size.div_ceil(BLOCK);
    Ok(Derived {
        salt: super::fsutil::hex(&tagged_sha256("veil/image/verity-salt/v1", fs_sha256)),
        verity_uuid: uuid_from(&tagged_sha256("veil/image/verity-uuid/v1", fs_sha256)),
        data_blocks,
        hash_offset: data_blocks * BLOCK,
        hash_start_block: data_blocks + 1,
    })
}

/// The root hash from `veritysetup format`'s output (`Root hash:  <hex>`).
///
/// # Errors
/// When the output has no 64-hex-digit root hash line.
pub fn parse_root_hash(output: &str) -> Result<String, BuildError> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Root hash:").map(str::trim))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            BuildError::Invalid(format!(
                "veritysetup format printed no root hash: {}",
                output.trim()
            ))
        })
}

/// The device-mapper table line (for `dmsetup create --table`) of a verity device whose
/// data and hash tree are on the same block device `dev`.
#[must_use]
pub fn dm_table(dev: &str, d: &Derived, root_hash: &str) -> String {
    format!(
        "0 {} verity 1 {dev} {dev} {BLOCK} {BLOCK} {} {} sha256 {root_hash} {} 1 panic_on_corruption",
        d.data_blocks * (BLOCK / 512),
        d.data_blocks,
        d.hash_start_block,
        d.salt,
    )
}
