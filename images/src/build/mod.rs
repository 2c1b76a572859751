//! `veil-image build`: the sealed image, from Debian's packages and the workspace's
//! release `veil-enclave`.
//!
//! Outputs (in `--out DIR`): `vmlinuz`, `initrd.img`, `rootfs.img` (erofs + dm-verity
//! tree), `cmdline`, `manifest.json`. Every step is deterministic: package versions are
//! resolved once and recorded (or taken from `--lock`), files are visited in sorted
//! order with fixed modes, owners and timestamps, and the verity salt and the UUIDs are
//! derived from the content. See [`recipe`] for what the image holds and how it boots.

pub mod cpio;
pub mod fsutil;
pub mod kmod;
pub mod recipe;
pub mod verity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::launch::{self, Boot};
use crate::manifest::{
    Artifact, BuildRecord, FilesystemRecord, Manifest, PackageRecord, VerityRecord,
};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool is missing.
    #[error("{tool} not found: install it (apt-get install -y --no-install-recommends {package})")]
    MissingTool {
        /// The program.
        tool: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A tool failed.
    #[error("{what} failed ({status}): {stderr}")]
    Tool {
        /// What was run.
        what: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A measurement could not be computed.
    #[error("measuring {what}: {source}")]
    Measure {
        /// Which configuration.
        what: String,
        /// Why.
        source: crate::measure::MeasureError,
    },
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A launch configuration to record the expected SEV-SNP measurement of.
#[derive(Debug, Clone)]
pub struct SnpConfig {
    /// The AmdSev OVMF file.
    pub ovmf: PathBuf,
    /// vCPUs.
    pub vcpus: u32,
    /// vCPU type.
    pub vcpu_type: String,
}

/// A TDX configuration to record.
#[derive(Debug, Clone)]
pub struct TdxConfig {
    /// The OVMF (TDVF) file.
    pub ovmf: PathBuf,
    /// QEMU `-m` text.
    pub memory: String,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// The output directory.
    pub out: PathBuf,
    /// The release `veil-enclave` binary.
    pub enclave: PathBuf,
    /// The model directory (as `veil-enclave models fetch` fills it).
    pub models: PathBuf,
    /// Every timestamp in the image.
    pub source_date_epoch: u64,
    /// A previous manifest whose package versions (and .deb digests) to use.
    pub lock: Option<Manifest>,
    /// The image name.
    pub name: String,
    /// Runtime settings on the command line.
    pub runtime: recipe::Runtime,
    /// SEV-SNP configurations to measure.
    pub snp: Vec<SnpConfig>,
    /// TDX configurations to measure.
    pub tdx: Vec<TdxConfig>,
    /// Print progress on standard error.
    pub progress: bool,
}

struct Progress {
    step: usize,
    total: usize,
    started: Instant,
    on: bool,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        if self.on {
            eprintln!(
                "veil-image: [{:>2}/{}] {what} ({:.1} s)",
                self.step,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, BuildError> {
    let out = cmd.output().map_err(|e| BuildError::Tool {
        what: what.to_owned(),
        status: "could not start".to_owned(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(BuildError::Tool {
            what: what.to_owned(),
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/sbin"), PathBuf::from("/usr/sbin")])
            .any(|d| d.join(tool).is_file())
    })
}

/// The host tools a build runs, with the Debian packages that provide them.
pub const TOOLS: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("depmod", "kmod"),
    ("mkfs.erofs", "erofs-utils"),
    ("veritysetup", "cryptsetup-bin"),
];

/// The installed versions of the Debian packages in [`TOOLS`] (`unknown` where
/// `dpkg-query` cannot say).
fn host_tool_versions() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (_, package) in TOOLS {
        let version = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", package])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        out.insert((*package).to_owned(), version);
    }
    out
}

fn check_tools() -> Result<(), BuildError> {
    for (tool, package) in TOOLS {
        if !which(tool) {
            return Err(BuildError::MissingTool {
                tool: (*tool).to_owned(),
                package: (*package).to_owned(),
            });
        }
    }
    Ok(())
}

/// A package chosen for the image.
#[derive(Debug, Clone)]
struct Pkg {
    name: String,
    version: String,
    used_for: &'static str,
}

/// The versioned kernel package `linux-image-amd64` depends on.
///
/// # Errors
/// When apt-cache names none.
pub fn parse_kernel_dep(apt_cache_depends: &str) -> Result<String, BuildError> {
    apt_cache_depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-") && !d.contains('<'))
        .map(str::to_owned)
        .ok_or_else(|| {
            BuildError::Invalid(format!(
                "apt-cache depends {}: no linux-image-* dependency",
                recipe::KERNEL_METAPACKAGE
            ))
        })
}

/// The `Version:` of `apt-cache show --no-all-versions` output.
///
/// # Errors
/// When there is none.
pub fn parse_candidate_version(name: &str, apt_cache_show: &str) -> Result<String, BuildError> {
    apt_cache_show
        .lines()
        .find_map(|l| l.strip_prefix("Version:").map(str::trim))
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| BuildError::Invalid(format!("apt-cache show {name}: no version")))
}

fn resolve(opts: &Options) -> Result<Vec<Pkg>, BuildError> {
    let locked: BTreeMap<(String, String), String> = opts
        .lock
        .iter()
        .filter_map(|m| m.build.as_ref())
        .flat_map(|b| &b.packages)
        .map(|p| ((p.name.clone(), p.used_for.clone()), p.version.clone()))
        .collect();
    let kernel = match opts.lock.as_ref().and_then(|m| m.build.as_ref()) {
        Some(b) => b
            .packages
            .iter()
            .find(|p| p.used_for == "kernel")
            .map(|p| p.name.clone())
            .ok_or_else(|| {
                BuildError::Invalid("--lock: the manifest names no kernel package".to_owned())
            })?,
        None => parse_kernel_dep(&run(
            Command::new("apt-cache").args(["depends", recipe::KERNEL_METAPACKAGE]),
            "apt-cache depends",
        )?)?,
    };
    let mut wanted: Vec<(String, &'static str)> = vec![(kernel, "kernel")];
    wanted.extend(
        recipe::INITRD_PACKAGES
            .iter()
            .map(|p| ((*p).to_owned(), "initrd")),
    );
    wanted.extend(
        recipe::ROOTFS_PACKAGES
            .iter()
            .map(|p| ((*p).to_owned(), "rootfs")),
    );
    let mut out = Vec::new();
    for (name, used_for) in wanted {
        let version = match locked.get(&(name.clone(), used_for.to_owned())) {
            Some(v) => v.clone(),
            None if opts.lock.is_some() => {
                return Err(BuildError::Invalid(format!(
                    "--lock: the manifest has no version for {name} ({used_for})"
                )));
            }
            None => parse_candidate_version(
                &name,
                &run(
                    Command::new("apt-cache").args(["show", "--no-all-versions", &name]),
                    &format!("apt-cache show {name}"),
                )?,
            )?,
        };
        out.push(Pkg {
            name,
            version,
            used_for,
        });
    }
    Ok(out)
}

fn find_deb(dir: &Path, name: &str) -> Result<PathBuf, BuildError> {
    let prefix = format!("{name}_");
    for (rel, path) in fsutil::walk_sorted(dir)? {
        if rel.starts_with(&prefix) && rel.ends_with(".deb") {
            return Ok(path);
        }
    }
    Err(BuildError::Invalid(format!(
        "apt-get download left no {name}_*.deb in {}",
        dir.display()
    )))
}

/// The model manifest digest the enclave attests: SHA-256 over the sorted (path,
/// SHA-256) list, each path length-prefixed (u32 big-endian), as `veil-attestation`'s
/// `ModelManifest::digest` defines it.
///
/// # Errors
/// A digest that is not 64 hex digits.
pub fn model_manifest_digest(files: &BTreeMap<String, String>) -> Result<String, BuildError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (path, digest) in files {
        let raw = decode_hex32(digest)
            .ok_or_else(|| BuildError::Invalid(format!("model digest of {path}: not 64 hex")))?;
        let len = u32::try_from(path.len())
            .map_err(|_| BuildError::Invalid(format!("model path {path}: too long")))?;
        ctx.update(&len.to_be_bytes());
        ctx.update(path.as_bytes());
        ctx.update(&raw);
    }
    Ok(fsutil::hex(ctx.finish().as_ref()))
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A content digest of a tree (sorted paths, types, modes, contents, link targets): the
/// input of the filesystem UUID.
fn tree_digest(root: &Path) -> Result<[u8; 32], BuildError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (rel, path) in fsutil::walk_sorted(root)? {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| BuildError::io(&path, e))?;
        ctx.update(rel.as_bytes());
        ctx.update(&[0]);
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| BuildError::io(&path, e))?;
            ctx.update(b"l");
            ctx.update(t.as_os_str().as_encoded_bytes());
        } else if meta.is_dir() {
            ctx.update(b"d");
        } else {
            ctx.update(if fsutil::is_executable(&meta) {
                b"x"
            } else {
                b"f"
            });
            ctx.update(fsutil::sha256_file(&path)?.0.as_bytes());
        }
        ctx.update(&[0]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

fn mkdirs(root: &Path, dirs: &[&str]) -> Result<(), BuildError> {
    for d in dirs {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(|e| BuildError::io(&p, e))?;
    }
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
    }
    std::fs::write(path, data).map_err(|e| BuildError::io(path, e))
}

fn artifact(path: &Path) -> Result<Artifact, BuildError> {
    let (sha256, size) = fsutil::sha256_file(path)?;
    Ok(Artifact { sha256, size })
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| BuildError::io(path, e))
}

/// Records the expected measurements of `configs` in `manifest`, from the artifacts in
/// `dir` (`vmlinuz`, `initrd.img`) and the manifest's command line.
///
/// # Errors
/// Unreadable artifacts or firmware, or a configuration that cannot be measured.
pub fn measure_into(
    manifest: &mut Manifest,
    dir: &Path,
    snp: &[SnpConfig],
    tdx: &[TdxConfig],
) -> Result<(), BuildError> {
    let cmdline = manifest
        .build
        .as_ref()
        .map(|b| b.cmdline.clone())
        .ok_or_else(|| {
            BuildError::Invalid("the manifest has no build record (cmdline)".to_owned())
        })?;
    let kernel = read(&dir.join("vmlinuz"))?;
    let initrd = read(&dir.join("initrd.img"))?;
    if let Some(b) = &manifest.build {
        for (name, data) in [("vmlinuz", &kernel), ("initrd.img", &initrd)] {
            let got = fsutil::hex(&crate::measure::sha256(data));
            if b.artifacts.get(name).map(|a| &a.sha256) != Some(&got) {
                return Err(BuildError::Invalid(format!(
                    "{}: its SHA-256 {got} is not the manifest's",
                    dir.join(name).display()
                )));
            }
        }
    }
    let boot = Boot {
        kernel: &kernel,
        initrd: &initrd,
        cmdline: &cmdline,
    };
    for c in snp {
        let fw = read(&c.ovmf)?;
        let name = file_name(&c.ovmf);
        let entry = launch::snp_entry(&boot, &name, &fw, c.vcpus, &c.vcpu_type).map_err(|e| {
            BuildError::Measure {
                what: format!(
                    "SEV-SNP with {} ({} x {})",
                    c.ovmf.display(),
                    c.vcpus,
                    c.vcpu_type
                ),
                source: e,
            }
        })?;
        manifest.upsert_snp(entry);
    }
    for c in tdx {
        let fw = read(&c.ovmf)?;
        let name = file_name(&c.ovmf);
        let entry =
            launch::tdx_entry(&boot, &name, &fw, &c.memory).map_err(|e| BuildError::Measure {
                what: format!("TDX with {} ({})", c.ovmf.display(), c.memory),
                source: e,
            })?;
        manifest.upsert_tdx(entry);
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Builds the image (see the module docs) and returns its manifest, also written to
/// `OUT/manifest.json`.
///
/// # Errors
/// [`BuildError`], naming the step and what failed.
#[allow(clippy::too_many_lines)]
pub fn build(opts: &Options) -> Result<Manifest, BuildError> {
    let mut p = Progress {
        step: 0,
        total: 11,
        started: Instant::now(),
        on: opts.progress,
    };
    for (v, what) in [(&opts.runtime.tee, "tee"), (&opts.runtime.gpu, "gpu")] {
        let allowed = if what == "tee" {
            recipe::TEE_CHOICES
        } else {
            recipe::GPU_CHOICES
        };
        if !allowed.contains(&v.as_str()) {
            return Err(BuildError::Invalid(format!(
                "--{what} {v:?}: expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    p.step("checking tools and inputs");
    check_tools()?;
    let enclave_art = artifact(&opts.enclave)?;
    let mut models = BTreeMap::new();
    for f in recipe::MODEL_FILES {
        let (digest, _) = fsutil::sha256_file(&opts.models.join(f))?;
        models.insert((*f).to_owned(), digest);
    }
    let out = &opts.out;
    let work = out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| BuildError::io(&work, e))?;
    }
    let debs = work.join("debs");
    mkdirs(&work, &["debs", "pkgs", "rootfs", "initrd"])?;

    p.step("resolving Debian package versions");
    let pkgs = resolve(opts)?;

    p.step("downloading packages (apt-get download, the system's apt sources)");
    let mut records = Vec::new();
    let mut extracted: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut unique: Vec<&Pkg> = Vec::new();
    for pkg in &pkgs {
        if !unique.iter().any(|u| u.name == pkg.name) {
            unique.push(pkg);
        }
    }
    let specs: Vec<String> = unique
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    run(
        Command::new("apt-get")
            .current_dir(&debs)
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(&specs),
        "apt-get download",
    )?;
    for pkg in &pkgs {
        let deb = find_deb(&debs, &pkg.name)?;
        let (sha256, _) = fsutil::sha256_file(&deb)?;
        let locked = opts
            .lock
            .as_ref()
            .and_then(|m| m.build.as_ref())
            .and_then(|b| b.packages.iter().find(|l| l.name == pkg.name));
        if let Some(l) = locked
            && l.sha256 != sha256
        {
            return Err(BuildError::Invalid(format!(
                "{}: SHA-256 {sha256} differs from the locked {}",
                deb.display(),
                l.sha256
            )));
        }
        records.push(PackageRecord {
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            arch: "amd64".to_owned(),
            sha256,
            used_for: pkg.used_for.to_owned(),
        });
        if !extracted.contains_key(&pkg.name) {
            let dest = work.join("pkgs").join(&pkg.name);
            run(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dest),
                &format!("dpkg-deb -x {}", deb.display()),
            )?;
            extracted.insert(pkg.name.clone(), dest);
        }
    }
    records.sort();
    let pkg_dir = |name: &str| -> Result<&PathBuf, BuildError> {
        extracted
            .get(name)
            .ok_or_else(|| BuildError::Invalid(format!("package {name} was not extracted")))
    };

    p.step("kernel and modules");
    let kpkg = pkgs
        .iter()
        .find(|p| p.used_for == "kernel")
        .ok_or_else(|| BuildError::Invalid("no kernel package".to_owned()))?;
    let kdir = pkg_dir(&kpkg.name)?.clone();
    let kver = kpkg
        .name
        .strip_prefix("linux-image-")
        .ok_or_else(|| BuildError::Invalid(format!("{}: not linux-image-*", kpkg.name)))?
        .to_owned();
    fsutil::copy_file(
        &kdir.join(format!("boot/vmlinuz-{kver}")),
        &out.join("vmlinuz"),
    )?;
    run(
        Command::new("depmod").arg("-b").arg(&kdir).arg(&kver),
        "depmod",
    )?;
    let moddir = kdir.join("lib/modules").join(&kver);
    let dep = kmod::ModulesDep::parse(&String::from_utf8_lossy(&read(
        &moddir.join("modules.dep"),
    )?))?;
    let builtin = String::from_utf8_lossy(&read(&moddir.join("modules.builtin"))?).into_owned();
    let required: Vec<&str> = recipe::REQUIRED_MODULES
        .iter()
        .copied()
        .filter(|m| !kmod::is_builtin(&builtin, m))
        .collect();
    let order = dep.load_order(&required, &[])?;
    let all = dep.load_order(&required, recipe::OPTIONAL_MODULES)?;
    let initrd_root = work.join("initrd");
    let mut req_mods = Vec::new();
    let mut opt_mods = Vec::new();
    for m in &all {
        let src = moddir.join(m);
        let plain = m.strip_suffix(".xz").unwrap_or(m).to_owned();
        let dest = initrd_root.join("lib/modules").join(&plain);
        if m.ends_with(".xz") {
            // The kernel loads plain modules; decompress at build time.
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
            }
            let file = std::fs::File::create(&dest).map_err(|e| BuildError::io(&dest, e))?;
            let status = Command::new("xz")
                .arg("-dc")
                .arg(&src)
                .stdout(file)
                .status()
                .map_err(|e| BuildError::io(&src, e))?;
            if !status.success() {
                return Err(BuildError::Tool {
                    what: format!("xz -d {}", src.display()),
                    status: status.to_string(),
                    stderr: String::new(),
                });
            }
        } else {
            fsutil::copy_file(&src, &dest)?;
        }
        if order.contains(m) {
            req_mods.push(plain);
        } else {
            opt_mods.push(plain);
        }
    }

    p.step("root filesystem tree");
    let rootfs = work.join("rootfs");
    mkdirs(
        &rootfs,
        &[
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "etc",
            "usr/bin",
            recipe::MODELS_DIR,
        ],
    )?;
    for name in recipe::ROOTFS_PACKAGES {
        fsutil::copy_filtered(pkg_dir(name)?, &rootfs, &recipe::is_shared_library)?;
    }
    fsutil::copy_file(&opts.enclave, &rootfs.join(recipe::ENCLAVE_PATH))?;
    for f in recipe::MODEL_FILES {
        fsutil::copy_file(
            &opts.models.join(f),
            &rootfs.join(recipe::MODELS_DIR).join(f),
        )?;
    }
    write(
        &rootfs.join("etc/veil-image"),
        format!(
            "{}\nSOURCE_DATE_EPOCH={}\n",
            opts.name, opts.source_date_epoch
        )
        .as_bytes(),
    )?;
    fsutil::normalize_modes(&rootfs)?;
    let enclave_in_fs = rootfs.join(recipe::ENCLAVE_PATH);
    std::fs::set_permissions(
        &enclave_in_fs,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| BuildError::io(&enclave_in_fs, e))?;
    let fs_uuid = verity::fs_uuid(&tree_digest(&rootfs)?);

    p.step("erofs image (mkfs.erofs)");
    let fs_img = work.join("rootfs.erofs");
    run(
        Command::new("mkfs.erofs")
            .env("SOURCE_DATE_EPOCH", opts.source_date_epoch.to_string())
            .arg("--quiet")
            .arg(format!("-T{}", opts.source_date_epoch))
            .arg("--all-root")
            .arg("-x-1")
            .arg(format!("-U{fs_uuid}"))
            .arg(&fs_img)
            .arg(&rootfs),
        "mkfs.erofs",
    )?;

    p.step("dm-verity hash tree (veritysetup format)");
    let fs_bytes = read(&fs_img)?;
    let derived = verity::derive(&crate::measure::sha256(&fs_bytes), fs_bytes.len() as u64)?;
    let mut disk = fs_bytes;
    disk.resize(
        usize::try_from(derived.hash_offset)
            .map_err(|_| BuildError::Invalid("image too large".to_owned()))?,
        0,
    );
    let rootfs_img = out.join("rootfs.img");
    write(&rootfs_img, &disk)?;
    drop(disk);
    let verity_out = run(
        Command::new("veritysetup")
            .arg("format")
            .arg("--hash=sha256")
            .arg(format!("--data-block-size={}", verity::BLOCK))
            .arg(format!("--hash-block-size={}", verity::BLOCK))
            .arg(format!("--data-blocks={}", derived.data_blocks))
            .arg(format!("--hash-offset={}", derived.hash_offset))
            .arg(format!("--salt={}", derived.salt))
            .arg(format!("--uuid={}", derived.verity_uuid))
            .arg(&rootfs_img)
            .arg(&rootfs_img),
        "veritysetup format",
    )?;
    let root_hash = verity::parse_root_hash(&verity_out)?;
    let cmdline = recipe::cmdline(&derived, &root_hash, &opts.runtime);
    write(&out.join("cmdline"), cmdline.as_bytes())?;

    p.step("initramfs");
    for (pkg, keep) in [
        (
            "busybox-static",
            &(|r: &str| r == "bin/busybox") as &dyn Fn(&str) -> bool,
        ),
        ("dmsetup", &|r: &str| r == "sbin/dmsetup"),
    ] {
        fsutil::copy_filtered(pkg_dir(pkg)?, &initrd_root, keep)?;
    }
    for name in recipe::INITRD_PACKAGES {
        fsutil::copy_filtered(pkg_dir(name)?, &initrd_root, &recipe::is_shared_library)?;
    }
    write(
        &initrd_root.join("init"),
        recipe::init_script(&req_mods, &opt_mods).as_bytes(),
    )?;
    write(
        &initrd_root.join("etc/veil/udhcpc.sh"),
        recipe::UDHCPC_SCRIPT.as_bytes(),
    )?;
    std::os::unix::fs::symlink("busybox", initrd_root.join("bin/sh"))
        .map_err(|e| BuildError::io(&initrd_root, e))?;
    fsutil::normalize_modes(&initrd_root)?;
    for exe in ["init", "etc/veil/udhcpc.sh"] {
        let p = initrd_root.join(exe);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| BuildError::io(&p, e))?;
    }
    let entries = cpio::entries_from_dir(&initrd_root)?;
    write(
        &out.join("initrd.img"),
        &cpio::write(&entries, opts.source_date_epoch)?,
    )?;

    p.step("manifest");
    let mut artifacts = BTreeMap::new();
    for name in ["vmlinuz", "initrd.img", "rootfs.img"] {
        artifacts.insert(name.to_owned(), artifact(&out.join(name))?);
    }
    let mut manifest = Manifest {
        version: crate::manifest::VERSION,
        image: opts.name.clone(),
        model_manifest_digest: Some(model_manifest_digest(&models)?),
        snp: Vec::new(),
        tdx: Vec::new(),
        build: Some(BuildRecord {
            source_date_epoch: opts.source_date_epoch,
            cmdline,
            artifacts,
            verity: VerityRecord {
                root_hash,
                salt: derived.salt.clone(),
                uuid: derived.verity_uuid.clone(),
                data_blocks: derived.data_blocks,
                hash_start_block: derived.hash_start_block,
                data_block_size: 4096,
                hash_block_size: 4096,
                hash_algorithm: "sha256".to_owned(),
            },
            filesystem: FilesystemRecord {
                kind: "erofs".to_owned(),
                uuid: fs_uuid,
            },
            packages: records,
            models,
            enclave: enclave_art,
            host_tools: host_tool_versions(),
        }),
    };

    p.step("expected launch measurements");
    measure_into(&mut manifest, out, &opts.snp, &opts.tdx)?;
    let json = manifest
        .to_json()
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    write(&out.join("manifest.json"), &json)?;
    std::fs::remove_dir_all(&work).map_err(|e| BuildError::io(&work, e))?;
    p.step("done");
    Ok(manifest)
}
