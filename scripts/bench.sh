#!/usr/bin/env bash
# Prints speed and memory figures, never asserts them (the machines are
# shared and noisy: read the ratios, measured in the same run).
#
#   Part 1, the fixtures (scripts/fixtures.sh: real Triton 2.51 in a full
#   image FROM a debootstrapped min): the machine's own limits over the
#   layers a compose reads (igzip -d and pigz -d, one stream per core), a
#   cold compose (oci -> oci) with every core and with one thread, and what
#   users would do instead: `docker build` of the same Dockerfile.compose on
#   a warm engine (no build cache) plus `docker save`.
#   Part 2, a large synthetic image (default about 2 GiB; pass a size in MiB,
#   or 0 to skip): dry run and composes with small and large selections.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_rust
apt_install time isal pigz bc

mib=${1:-2048}
bench=target/bench
mkdir -p "$bench"
cargo build --quiet --release --example bench_images
cargo build --quiet --release
bin=target/release/triton-compose
cores=$(nproc)

# Seconds of a command, to 2 decimals.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l | xargs printf '%.2f'
}
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.1f'; }

echo "== fixtures (real Triton 2.51), $cores cores"
fx=$(bash scripts/fixtures.sh)
# shellcheck disable=SC1091
source "$fx/images.env"
layers() { # the layer blobs of an OCI layout's image, one path a line
  python3 - "$1" <<'PY'
import json, sys
root = sys.argv[1]
index = json.load(open(f"{root}/index.json"))
digest = index["manifests"][0]["digest"].split(":")[1]
manifest = json.load(open(f"{root}/blobs/sha256/{digest}"))
for layer in manifest["layers"]:
    print(f"{root}/blobs/sha256/{layer['digest'].split(':')[1]}")
PY
}
# What a compose must read: full's layers that are not min's.
comm -13 <(layers "$fx/min-oci" | xargs -n1 basename | sort) \
  <(layers "$fx/full-oci" | xargs -n1 basename | sort) \
  | sed "s|^|$fx/full-oci/blobs/sha256/|" >"$bench/read-layers"
size=$(xargs du -cb <"$bench/read-layers" | tail -n1 | cut -f1)
echo "layers a compose reads: $(wc -l <"$bench/read-layers"), $((size / 1048576)) MiB compressed"
igzip_s=$(seconds sh -c "xargs -P$cores -n1 sh -c 'igzip -dc \"\$0\" >/dev/null' <$bench/read-layers")
pigz_s=$(seconds sh -c "xargs -P$cores -n1 sh -c 'pigz -dc \"\$0\" >/dev/null' <$bench/read-layers")
echo "igzip -d, one stream per core (the limit): $igzip_s s"
echo "pigz -d, one stream per core:              $pigz_s s"

selection=(--backend python --backend standin --repoagent checksum --cache local)
compose_fixture() {
  local label=$1 threads=$2
  rm -rf "$bench/fx-out" "$bench/fx-work"
  TRITON_COMPOSE_THREADS=$threads /usr/bin/time -f "%e %M" -o "$bench/time" \
    $bin -q --enable-gpu=false --work-dir "$bench/fx-work" \
    --image "min,oci:$fx/min-oci:latest" --image "full,oci:$fx/full-oci:latest" \
    "${selection[@]}" --output "oci:$bench/fx-out:bench"
  read -r wall rss <"$bench/time"
  echo "$label: $wall s wall, peak RSS $((rss / 1024)) MiB, $(ratio "$wall" "$igzip_s")x the igzip limit"
  last_wall=$wall
}
compose_fixture "triton-compose cold, $cores threads " "$cores"
ours=$last_wall
digest_n=$(cat "$bench/fx-out/index.json")
compose_fixture "triton-compose cold, 1 thread   " 1
[ "$digest_n" = "$(cat "$bench/fx-out/index.json")" ] \
  && echo "outputs with 1 and $cores threads: byte-identical" \
  || echo "outputs with 1 and $cores threads: DIFFER"

if docker info >/dev/null 2>&1; then
  build() {
    DOCKER_BUILDKIT=0 docker build -q --network none --no-cache -f "$bench/fx-work/Dockerfile.compose" \
      --build-arg "FULL_IMAGE=$FULL_IMAGE" --build-arg "MIN_IMAGE=$MIN_IMAGE" \
      -t triton-compose-bench:built "$bench/fx-work"
  }
  build >/dev/null 2>&1 # warm the engine: base images and their layers in place
  build_s=$(seconds build)
  save_s=$(seconds docker save -o "$bench/built.tar" triton-compose-bench:built)
  docker rmi -f triton-compose-bench:built >/dev/null 2>&1 || true
  rm -f "$bench/built.tar"
  total=$(echo "$build_s + $save_s" | bc -l)
  echo "docker build (warm engine, no cache) + docker save: $build_s s + $save_s s; triton-compose cold is $(ratio "$total" "$ours")x faster"
else
  echo "docker build + save: no Docker engine answers; skipped"
fi

[ "$mib" -gt 0 ] || exit 0
echo "== synthetic image, $mib MiB"
target/release/examples/bench_images "$bench" "$mib"
du -sh "$bench/min" "$bench/full"

run() {
  local label=$1; shift
  rm -rf "$bench/out"
  /usr/bin/time -f "$label: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
    $bin -q --enable-gpu=false --work-dir "$bench/work" \
    --image "min,oci:$bench/min:latest" --image "full,oci:$bench/full:bench" "$@"
}
run "dry run (scan only)          " --backend python --dry-run
run "python backend, gzip         " --backend python --output "oci:$bench/out:py"
run "pytorch+onnxruntime, gzip    " --backend pytorch --backend onnxruntime --output "oci:$bench/out:big"
run "pytorch+onnxruntime, zstd    " --backend pytorch --backend onnxruntime --compression zstd --output "oci:$bench/out:big"
du -sh "$bench/out"
