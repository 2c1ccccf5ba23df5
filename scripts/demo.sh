#!/usr/bin/env bash
# Composes a Triton image from two small demo images, without Docker:
# python backend, checksum repository agent and local cache, written as an
# OCI layout and as a `docker load`-able archive under target/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_rust

demo=target/demo
rm -rf "$demo/out" "$demo/tritonserver.tar"
# One profile for both (the test profile, whose dependencies are optimized),
# so that a fresh machine compiles the dependencies once, and scripts/test.sh
# reuses them. The demo images come from a crate of their own (demo/), so
# the tests' dev-dependencies are not built for them.
cargo build --quiet -p triton-compose -p triton-compose-demo --bins
target/debug/triton-compose-demo "$demo"
compose=(target/debug/triton-compose --enable-gpu=false
  --backend python --repoagent checksum --cache local
  --image "min,oci:$demo/min:latest" --image "full,oci:$demo/full:24.10"
  --work-dir "$demo/work")
"${compose[@]}" --dry-run
"${compose[@]}" --output "oci:$demo/out:python"
"${compose[@]}" --output "docker-archive:$demo/tritonserver.tar"
echo
echo "Dockerfile.compose (the same plan, for docker build): $demo/work/Dockerfile.compose"
echo "OCI layout:  $demo/out  (try: skopeo inspect oci:$demo/out:python)"
echo "Archive:     $demo/tritonserver.tar  (try: docker load -i $demo/tritonserver.tar)"
