//! `veil-image`: builds the sealed, measured confidential-VM image, and records the
//! launch measurements it must produce.
//!
//! Exit codes: 0 done, 1 the build or measurement failed, 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use veil_images::build::{self, Options, SnpConfig, TdxConfig, recipe};
use veil_images::manifest::Manifest;

/// Builds the sealed, measured confidential-VM image.
#[derive(Debug, Parser)]
#[command(name = "veil-image", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the image (vmlinuz, initrd.img, rootfs.img, cmdline, manifest.json) from
    /// Debian's packages (the system's apt sources) and a release veil-enclave.
    /// Needs apt-get, dpkg-deb, depmod, mkfs.erofs (erofs-utils) and veritysetup
    /// (cryptsetup-bin); runs as root or not (nothing is mounted).
    Build(BuildArgs),
    /// Record the expected launch measurements of a built image for the firmware and
    /// vCPU configurations the host uses, in DIR/manifest.json (and print them).
    Measure(MeasureArgs),
}

#[derive(Debug, clap::Args)]
struct LaunchArgs {
    /// SEV-SNP: an AmdSev OVMF build (with SNP_KERNEL_HASHES) the host boots with;
    /// repeat for several.
    #[arg(long = "ovmf", value_name = "FILE")]
    snp_ovmf: Vec<PathBuf>,
    /// SEV-SNP: vCPU counts to record (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    vcpus: Vec<u32>,
    /// SEV-SNP: QEMU vCPU types to record (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "EPYC-v4")]
    vcpu_type: Vec<String>,
    /// TDX: the OVMF (TDVF) file the host boots with; repeat for several.
    #[arg(long = "tdx-ovmf", value_name = "FILE")]
    tdx_ovmf: Vec<PathBuf>,
    /// TDX: guest memory sizes to record (QEMU -m syntax, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "16G")]
    memory: Vec<String>,
}

impl LaunchArgs {
    fn configs(&self) -> (Vec<SnpConfig>, Vec<TdxConfig>) {
        let mut snp = Vec::new();
        for ovmf in &self.snp_ovmf {
            for &vcpus in &self.vcpus {
                for t in &self.vcpu_type {
                    snp.push(SnpConfig {
                        ovmf: ovmf.clone(),
                        vcpus,
                        vcpu_type: t.clone(),
                    });
                }
            }
        }
        let mut tdx = Vec::new();
        for ovmf in &self.tdx_ovmf {
            for m in &self.memory {
                tdx.push(TdxConfig {
                    ovmf: ovmf.clone(),
                    memory: m.clone(),
                });
            }
        }
        (snp, tdx)
    }
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// The release veil-enclave binary [default: $CARGO_TARGET_DIR/release/veil-enclave,
    /// else target/release/veil-enclave].
    #[arg(long)]
    enclave: Option<PathBuf>,
    /// The model directory (`veil-enclave models fetch --dir DIR`).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// The timestamp of every file [default: $SOURCE_DATE_EPOCH, else the last git
    /// commit's time].
    #[arg(long)]
    source_date_epoch: Option<u64>,
    /// A previous manifest.json: use exactly its package versions, and fail when a
    /// downloaded .deb's SHA-256 differs from the one it records.
    #[arg(long)]
    lock: Option<PathBuf>,
    /// The image name [default: veil-VERSION].
    #[arg(long)]
    name: Option<String>,
    /// `veil-enclave serve --tee` in the image (on the measured command line).
    #[arg(long, default_value = "auto")]
    tee: String,
    /// `veil-enclave serve --gpu` in the image (on the measured command line).
    #[arg(long, default_value = "required")]
    gpu: String,
    #[command(flatten)]
    launch: LaunchArgs,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct MeasureArgs {
    /// The built image's directory (with manifest.json, vmlinuz, initrd.img).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    launch: LaunchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Build(a) => match run_build(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Usage(e)) => fail(2, &e),
            Err(Failure::Build(e)) => fail(1, &e),
        },
        Command::Measure(a) => match run_measure(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Usage(e)) => fail(2, &e),
            Err(Failure::Build(e)) => fail(1, &e),
        },
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("veil-image: error: {message}");
    ExitCode::from(code)
}

enum Failure {
    Usage(String),
    Build(String),
}

fn read_manifest(path: &Path) -> Result<Manifest, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    Manifest::parse(&bytes).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

fn default_epoch() -> Result<u64, Failure> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| Failure::Usage(format!("SOURCE_DATE_EPOCH {v:?} is not a number")));
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .output()
        .map_err(|e| Failure::Usage(format!("no --source-date-epoch, and git: {e}")))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            Failure::Usage(
                "no --source-date-epoch or SOURCE_DATE_EPOCH, and no git commit time".to_owned(),
            )
        })
}

fn run_build(a: &BuildArgs) -> Result<(), Failure> {
    let enclave = a.enclave.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("release/veil-enclave")
    });
    if !enclave.is_file() {
        return Err(Failure::Usage(format!(
            "{}: no veil-enclave binary (cargo build --release -p veil-enclave --bin veil-enclave, or --enclave FILE)",
            enclave.display()
        )));
    }
    let lock = a.lock.as_deref().map(read_manifest).transpose()?;
    let (snp, tdx) = a.launch.configs();
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Failure::Usage(format!("{}: {e}", a.out.display())))?;
    let opts = Options {
        out: a.out.clone(),
        enclave,
        models: a.models.clone(),
        source_date_epoch: match a.source_date_epoch {
            Some(e) => e,
            None => default_epoch()?,
        },
        lock,
        name: a
            .name
            .clone()
            .unwrap_or_else(|| format!("veil-{}", env!("CARGO_PKG_VERSION"))),
        runtime: recipe::Runtime {
            tee: a.tee.clone(),
            gpu: a.gpu.clone(),
        },
        snp,
        tdx,
        progress: !a.quiet,
    };
    let m = build::build(&opts).map_err(|e| Failure::Build(e.to_string()))?;
    let b = m.build.as_ref();
    eprintln!(
        "veil-image: wrote {} (verity root hash {})",
        a.out.display(),
        b.map_or("?", |b| b.verity.root_hash.as_str())
    );
    print_measurements(&m);
    Ok(())
}

fn print_measurements(m: &Manifest) {
    for s in &m.snp {
        println!(
            "snp {} vcpus={} vcpu_type={}: {}",
            s.firmware, s.vcpus, s.vcpu_type, s.launch_measurement
        );
    }
    for t in &m.tdx {
        println!(
            "tdx {} memory={}: mr_td={} rtmr1={} rtmr2={}",
            t.firmware,
            t.memory,
            t.mr_td,
            t.rtmr1.as_deref().unwrap_or("-"),
            t.rtmr2.as_deref().unwrap_or("-")
        );
    }
}

fn run_measure(a: &MeasureArgs) -> Result<(), Failure> {
    let path = a.dir.join("manifest.json");
    let mut m = read_manifest(&path)?;
    let (snp, tdx) = a.launch.configs();
    if snp.is_empty() && tdx.is_empty() {
        return Err(Failure::Usage(
            "name a firmware: --ovmf FILE (SEV-SNP) or --tdx-ovmf FILE (TDX)".to_owned(),
        ));
    }
    build::measure_into(&mut m, &a.dir, &snp, &tdx).map_err(|e| Failure::Build(e.to_string()))?;
    let json = m.to_json().map_err(|e| Failure::Build(e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| Failure::Build(format!("{}: {e}", path.display())))?;
    eprintln!("veil-image: updated {}", path.display());
    print_measurements(&m);
    Ok(())
}
