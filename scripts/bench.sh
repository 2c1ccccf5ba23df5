#!/usr/bin/env bash
# Prints speed and memory figures for composing from a large synthetic image
# (default about 2 GiB uncompressed; pass a size in MiB). Targets are read from
# the figures, not asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_rust
apt_install time

mib=${1:-2048}
bench=target/bench
cargo build --quiet --release --example bench_images
cargo build --quiet --release
target/release/examples/bench_images "$bench" "$mib"
du -sh "$bench/min" "$bench/full"

run() {
  local label=$1; shift
  rm -rf "$bench/out"
  /usr/bin/time -f "$label: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
    target/release/triton-compose -q --enable-gpu=false --work-dir "$bench/work" \
    --image "min,oci:$bench/min:latest" --image "full,oci:$bench/full:bench" "$@"
}
run "dry run (scan only)          " --backend python --dry-run
run "python backend, gzip         " --backend python --output "oci:$bench/out:py"
run "pytorch+onnxruntime, gzip    " --backend pytorch --backend onnxruntime --output "oci:$bench/out:big"
run "pytorch+onnxruntime, zstd    " --backend pytorch --backend onnxruntime --compression zstd --output "oci:$bench/out:big"
du -sh "$bench/out"
