#!/usr/bin/env bash
# Launch the sealed image as an AMD SEV-SNP guest with measured direct boot
# (kernel-hashes=on) and an NVIDIA H100 in CC mode passed through with VFIO.
#
#   images/scripts/launch-snp.sh IMAGE_DIR AMDSEV_OVMF GPU_BDF [VCPUS [VCPU_TYPE [MEM]]]
#
# IMAGE_DIR is a `veil-image build --out` directory; AMDSEV_OVMF the host's OVMF built
# from OvmfPkg/AmdSev (with SNP_KERNEL_HASHES); GPU_BDF the GPU's PCI address (e.g.
# 0000:41:00.0), already bound to vfio-pci with CC mode on (see images/README.md).
# VCPUS and VCPU_TYPE must be a configuration the manifest records
# (`veil-image measure --dir IMAGE_DIR --ovmf AMDSEV_OVMF --vcpus N --vcpu-type T`), or
# the report's MEASUREMENT matches no policy. Needs QEMU 9.1 or later and a host kernel
# with SNP (6.11 or later, or the AMD SNP host stack). The enclave listens on the guest's
# port 8443, forwarded here to ${VEIL_PORT:-8443} on loopback: run veil-gateway beside it
# with --backend http://127.0.0.1:${VEIL_PORT:-8443}.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,18p "$0"; exit 2; }
dir=$1 ovmf=$2 gpu=$3 vcpus=${4:-2} vcpu_type=${5:-EPYC-v4} mem=${6:-64G}
port=${VEIL_PORT:-8443}
exec qemu-system-x86_64 \
  -enable-kvm -nodefaults -nographic -serial stdio \
  -machine q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off \
  -cpu "$vcpu_type" -smp "$vcpus" -m "$mem" \
  -object "memory-backend-memfd,id=ram1,size=$mem,share=true,prealloc=false" \
  -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on \
  -bios "$ovmf" \
  -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$(cat "$dir/cmdline")" \
  -drive "file=$dir/rootfs.img,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8443" -device virtio-net-pci,netdev=n0 \
  -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=262144 \
  -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 \
  -device "vfio-pci,host=$gpu,bus=rp1"
