#!/usr/bin/env bash
# Launch the sealed image as an Intel TDX guest (direct boot: the TDVF measures the
# kernel into RTMR1 and the command line and initrd into RTMR2) with an NVIDIA H100 in
# CC mode passed through with VFIO.
#
#   images/scripts/launch-tdx.sh IMAGE_DIR OVMF GPU_BDF [VCPUS [MEM]]
#
# OVMF is a TDVF-capable OVMF.fd (Debian's ovmf package has one); MEM must be a size the
# manifest records (`veil-image measure --dir IMAGE_DIR --tdx-ovmf OVMF --memory MEM`):
# the TD HOB, hence RTMR0, depends on it. The image's kernel must have
# CONFIG_INTEL_TDX_GUEST (Debian 13's does; Debian 12's 6.1 does not: build the image on
# a host whose apt sources give a TDX-capable linux-image-amd64). Needs QEMU 10.1 or
# later (or a distribution's TDX QEMU) and a TDX host kernel. The enclave needs the
# host's DCAP collateral (see images/README.md).
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,16p "$0"; exit 2; }
dir=$1 ovmf=$2 gpu=$3 vcpus=${4:-2} mem=${5:-16G}
port=${VEIL_PORT:-8443}
exec qemu-system-x86_64 \
  -accel kvm -nodefaults -nographic -serial stdio \
  -machine q35,kernel_irqchip=split,confidential-guest-support=tdx0,hpet=off \
  -object '{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}' \
  -cpu host -smp "$vcpus" -m "$mem" \
  -bios "$ovmf" \
  -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$(cat "$dir/cmdline")" \
  -drive "file=$dir/rootfs.img,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8443" -device virtio-net-pci,netdev=n0 \
  -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=262144 \
  -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 \
  -device "vfio-pci,host=$gpu,bus=rp1"
