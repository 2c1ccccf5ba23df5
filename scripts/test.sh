#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit and integration tests,
# skopeo/umoci/oci-image-tool reading our output, and the end-to-end tests
# against real Triton in a Docker engine (fixture images are built once and
# cached; see scripts/fixtures.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_rust
# gcc: tests/deps.rs compiles the ELF files it composes.
# podman: a second client pulling from `serve`. chromium and its driver:
# serve's browse page in a real headless browser (tests/serve.rs).
apt_install skopeo umoci oci-image-tool docker-registry apache2-utils gcc podman \
  chromium chromium-driver

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Builds or reuses the fixtures and starts the Docker engine; a failure here
# fails the run (the end-to-end tests never pass silently).
TRITON_COMPOSE_FIXTURES=$(bash scripts/fixtures.sh)
export TRITON_COMPOSE_FIXTURES

# pyspdxtools validates the SBOMs; the oras SDK fetches them as referrers.
TRITON_COMPOSE_PYTOOLS=$(python_tools)
export TRITON_COMPOSE_PYTOOLS

# CUDA's runtime and cuRAND from PyPI: the GPU-shaped min of the --slim tests.
TRITON_COMPOSE_NVIDIA=$(nvidia_libs)
export TRITON_COMPOSE_NVIDIA

# The eStargz verifier, snapshotter and lazy puller (Go, built offline from
# Debian's sources), with containerd and FUSE: tests/lazy.rs.
TRITON_COMPOSE_STARGZ=$(stargz_tools)
export TRITON_COMPOSE_STARGZ

# --nocapture: the end-to-end tests print the image sizes they compare.
cargo test --all-targets --locked -- --nocapture
