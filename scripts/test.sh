#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit and integration tests
# (with skopeo, umoci and oci-image-tool reading our output).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_rust
apt_install skopeo umoci oci-image-tool

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
