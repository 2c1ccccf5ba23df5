#!/usr/bin/env bash
# Prints speed and memory figures, never asserts them (the machines are
# shared and noisy: read the ratios, measured in the same run).
#
#   BENCH_ONLY=layouts stops after Part 1's layouts; BENCH_ONLY=many-layer
#   runs only the many-layer one.
#
#   Part 1, the fixtures (scripts/fixtures.sh: real Triton 2.51 in a full
#   image FROM a debootstrapped min): the machine's limit, which is
#   `igzip -d` of the layers a cold compose reads plus `libdeflate-gzip -4`
#   of the layers it writes (their tars), one stream per core; a cold
#   compose (oci -> oci) with every core and with one thread, with where its
#   time goes (its phases); and what users would do instead: `docker build`
#   of the same Dockerfile.compose on a warm engine (no build cache) plus
#   `docker save`.
#   serve (scripts/bench_serve.sh), on the fixtures and on Part 3's pair:
#   a first pull while the prebuild runs against one with --no-prebuild, the
#   prebuild against a cold compose of every component, first pulls' manifest
#   times once prebuilt, and docker pull from serve against docker-registry.
#   Part 2, memory against full's file count: the fixtures' full with 300k
#   and 1M small python files added (MANY_FILES="300000 1000000"; 0 skips),
#   composed cold: time and peak RSS.
#   Part 3, a large synthetic image (default about 2 GiB; pass a size in MiB,
#   or 0 to skip): dry run and composes with small and large selections.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_rust
apt_install time isal pigz libdeflate-tools bc skopeo docker-registry curl

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
# The fastest of three runs: the machines are shared and noisy, and both
# sides of a ratio are measured so.
best_seconds() {
  local best="" s
  for _ in 1 2 3; do
    s=$(seconds "$@")
    if [ -z "$best" ] || [ "$(echo "$s < $best" | bc -l)" = 1 ]; then best=$s; fi
  done
  echo "$best"
}
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.1f'; }
ratio2() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }

echo "== fixtures (real Triton 2.51), $cores cores; selection: python, standin, checksum, local"
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
selection=(--backend python --backend standin --repoagent checksum --cache local)
# min's layout, and how composes write (oci or docker-archive): what
# bench_layout's rows use.
min_layout=$fx/min-oci
out_kind=oci
# The blobs a run read ("reading full layer 2/14" in its log), one path a line.
blobs_read() { # LOG MIN_LAYOUT FULL_LAYOUT
  python3 - "$@" <<'PY'
import json, re, sys
log, roots = sys.argv[1], {"min": sys.argv[2], "full": sys.argv[3]}
def blobs(root):
    index = json.load(open(f"{root}/index.json"))
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(open(f"{root}/blobs/sha256/{digest}"))
    return [f"{root}/blobs/sha256/{l['digest'].split(':')[1]}" for l in manifest["layers"]]
for line in open(log, errors="replace"):
    m = re.search(r"reading (min|full) layer (\d+)/\d+", line)
    if m:
        print(blobs(roots[m.group(1)])[int(m.group(2)) - 1])
PY
}
# The layers of OUT that are neither min's nor full's, one path a line.
new_layers() { # OUT MIN_LAYOUT FULL_LAYOUT
  comm -23 <(layers "$1" | sort) \
    <( (layers "$2" | xargs -n1 basename; layers "$3" | xargs -n1 basename) | sort -u | sed "s|^|$1/blobs/sha256/|" | sort) || true
}
# The limit of one layout: a cold compose (no store) with its log, then
# igzip -d of what it read and libdeflate-gzip -4 of the tars it wrote, one
# stream per core. Sets limit_s.
measure_limit() { # NAME FULL_REF FULL_LAYOUT
  local name=$1 full=$2 layout=$3 out=$bench/limit-$name
  rm -rf "$out" "$bench/work-limit" "$bench/tars"
  TRITON_COMPOSE_LOG=triton_compose=debug $bin --enable-gpu=false --work-dir "$bench/work-limit" --no-store \
    --image "min,oci:$min_layout:latest" --image "full,$full" "${selection[@]}" \
    --output "oci:$out:bench" 2>"$bench/log-$name" >/dev/null
  blobs_read "$bench/log-$name" "$min_layout" "$layout" >"$bench/read-$name"
  mkdir -p "$bench/tars"
  local ours=0 i=0
  for blob in $(new_layers "$out" "$min_layout" "$layout"); do
    i=$((i + 1)); ours=$((ours + $(stat -c %s "$blob")))
    igzip -dc "$blob" >"$bench/tars/$i.tar"
  done
  local read_mib; read_mib=$(( $(xargs du -cb <"$bench/read-$name" | tail -n1 | cut -f1) / 1048576 ))
  igzip_s=$(best_seconds sh -c "xargs -P$cores -n1 sh -c 'igzip -dc \"\$0\" >/dev/null' <$bench/read-$name")
  deflate_s=$(best_seconds sh -c "ls $bench/tars/*.tar | xargs -P$cores -n1 sh -c 'libdeflate-gzip -4 -c \"\$0\" >/dev/null'")
  local theirs; theirs=$(for t in "$bench"/tars/*.tar; do libdeflate-gzip -4 -c "$t"; done | wc -c)
  limit_s=$(echo "$igzip_s + $deflate_s" | bc -l | xargs printf '%.2f')
  echo "reads $(wc -l <"$bench/read-$name") layers ($read_mib MiB): igzip -d, one stream per core: $igzip_s s (best of 3)"
  echo "writes $i layers ($(( $(du -cb "$bench"/tars/*.tar | tail -n1 | cut -f1) / 1048576 )) MiB of tar): libdeflate-gzip -4, one stream per core: $deflate_s s (best of 3)"
  echo "the limit: $limit_s s"
  # SHA-256 the compose cannot skip: each blob read (its digest) and its
  # tar (its diff-id), each layer written and its tar; at this machine's
  # rate, one stream per core.
  local read_c read_u written_u hashed rate sha_s
  read_c=$(xargs du -cb <"$bench/read-$name" | tail -n1 | cut -f1)
  read_u=$(xargs -n1 sh -c 'igzip -dc "$0" | wc -c' <"$bench/read-$name" | paste -sd+ | bc)
  written_u=$(du -cb "$bench"/tars/*.tar | tail -n1 | cut -f1)
  hashed=$((read_c + read_u + written_u + ours))
  rate=$(openssl speed -evp sha256 -bytes 1048576 -seconds 1 2>/dev/null | awk '/^sha256/ {sub("k", "", $2); print $2 * 1000}')
  sha_s=$(echo "$hashed / $rate / $cores" | bc -l | xargs printf '%.2f')
  echo "SHA-256 of $((hashed / 1048576)) MiB (blobs read and their tars, layers written and theirs) at $((${rate%.*} / 1000000)) MB/s a core, one stream per core: $sha_s s = $(echo "100 * $sha_s / $limit_s" | bc -l | xargs printf '%.0f')% of the limit"
  echo "new layers: $ours B; libdeflate-gzip -4 of their tars: $theirs B ($(echo "$ours / $theirs" | bc -l | xargs printf '%.4f')x)"
  echo "phases of that cold compose: $(grep -a 'phase ' "$bench/log-$name" | sed 's/.*phase //' | paste -sd';' | sed 's/;/; /g')"
  rm -rf "$bench/tars" "$out"
}
other=(--backend onnxruntime)
# Runs a compose; prints "LABEL: time, RSS, ratio" and sets last_wall.
compose_fixture() {
  local label=$1 threads=$2 store=$3 full=$4 out=$5; shift 5
  rm -rf "$bench/$out" "$bench/work-$out"
  local store_args=(--no-store)
  [ -n "$store" ] && store_args=(--store "$bench/$store")
  rm -f "$bench/$out.tar"
  local output="oci:$bench/$out:bench"
  [ "$out_kind" = docker-archive ] && output="docker-archive:$bench/$out.tar"
  TRITON_COMPOSE_THREADS=$threads /usr/bin/time -f "%e %M" -o "$bench/time" \
    $bin -q --enable-gpu=false --work-dir "$bench/work-$out" "${store_args[@]}" \
    --image "min,oci:$min_layout:latest" --image "full,$full" "$@" --output "$output"
  read -r wall rss <"$bench/time"
  # The limit is the selection's: rows of another selection get no ratio.
  local against="$(ratio2 "$wall" "$limit_s")x the limit"
  [ "$*" = "${selection[*]}" ] || [ "$*" = "${selection[*]} --dry-run" ] \
    || [ "$*" = "${selection[*]} --compression-level 1" ] || against=""
  printf '%-44s %6s s  peak RSS %4d MiB  %s\n' "$label" "$wall" $((rss / 1024)) "$against"
  last_wall=$wall
}
# What identifies an output of compose_fixture: its index, or its archive's digest.
output_id() { # OUT
  if [ "$out_kind" = docker-archive ]; then sha256sum <"$bench/$1.tar"; else cat "$bench/$1/index.json"; fi
}
docker_build() { # WORK FULL_IMAGE: docker build of WORK's Dockerfile.compose + docker save
  local work=$1 full_image=$2
  build() {
    DOCKER_BUILDKIT=0 docker build -q --network none --no-cache -f "$work/Dockerfile.compose" \
      --build-arg "FULL_IMAGE=$full_image" --build-arg "MIN_IMAGE=$MIN_IMAGE" \
      -t triton-compose-bench:built "$work"
  }
  build >/dev/null 2>&1 # warm the engine: base images and their layers in place
  build_s=$(seconds build)
  save_s=$(seconds docker save -o "$bench/built.tar" triton-compose-bench:built)
  docker rmi -f triton-compose-bench:built >/dev/null 2>&1 || true
  rm -f "$bench/built.tar"
  docker_s=$(echo "$build_s + $save_s" | bc -l | xargs printf '%.2f')
}

# One layout of full: its limits, cold, warm same and warm other, docker.
bench_layout() {
  local name=$1 full=$2 layout=$3 engine_name=$4
  echo "-- $name full"
  measure_limit "$name" "$full" "$layout"
  # Cold, the fastest of three runs (the store emptied before each), as
  # the limit is the fastest of three.
  local cold="" colds=()
  for run in 1 2 3; do
    rm -rf "$bench/store-$name"
    compose_fixture "cold, $cores threads (run $run of 3)" "$cores" "store-$name" "$full" "cold-$name" "${selection[@]}"
    colds+=("$last_wall")
    if [ -z "$cold" ] || [ "$(echo "$last_wall < $cold" | bc -l)" = 1 ]; then cold=$last_wall; fi
  done
  local median; median=$(printf '%s\n' "${colds[@]}" | sort -g | sed -n 2p)
  echo "  cold, best of 3: $cold s = $(ratio2 "$cold" "$limit_s")x the limit; median of 3: $median s = $(ratio2 "$median" "$limit_s")x"
  local cold_index; cold_index=$(output_id "cold-$name")
  compose_fixture "cold, 1 thread, no store" 1 "" "$full" "one-$name" "${selection[@]}"
  [ "$cold_index" = "$(output_id "one-$name")" ] \
    && echo "  outputs cold ($cores threads, store) and cold (1 thread): byte-identical" \
    || echo "  outputs cold ($cores threads, store) and cold (1 thread): DIFFER"
  # Where a cold compose's time goes: the scan alone, and a faster gzip level.
  compose_fixture "  of which the scan (dry run, no store)" "$cores" "" "$full" "dry-$name" "${selection[@]}" --dry-run
  compose_fixture "  cold at gzip level 1 (for comparison)" "$cores" "" "$full" "fast-$name" "${selection[@]}" --compression-level 1
  compose_fixture "warm, same combination" "$cores" "store-$name" "$full" "same-$name" "${selection[@]}"
  echo "  warm same / cold: $(echo "100 * $last_wall / $cold" | bc -l | xargs printf '%.0f')%"
  [ "$cold_index" = "$(output_id "same-$name")" ] && echo "  warm same output: byte-identical to cold"
  compose_fixture "warm, another combination (+$(echo "${other[*]}" | sed 's/--backend //g'))" "$cores" "store-$name" "$full" "other-$name" "${selection[@]}" "${other[@]}"
  local warm_other=$last_wall
  compose_fixture "cold, that combination, no store" "$cores" "" "$full" "ref-$name" "${selection[@]}" "${other[@]}"
  [ "$(output_id "other-$name")" = "$(output_id "ref-$name")" ] \
    && echo "  warm other output: byte-identical to cold" || echo "  warm other output: DIFFERS from cold"
  if [ -z "$engine_name" ]; then
    echo "docker build + save: not measured for this full (not in the engine, or its min has no shell to RUN in)"
  elif docker info >/dev/null 2>&1; then
    docker_build "$bench/work-other-$name" "$engine_name"
    echo "docker build (warm engine, no cache) + docker save of that combination: $build_s s + $save_s s"
    echo "  triton-compose warm other is $(ratio "$docker_s" "$warm_other")x faster; cold is $(ratio "$docker_s" "$cold")x faster"
  else
    echo "docker build + save: no Docker engine answers; skipped"
  fi
}

if [ "${BENCH_ONLY:-}" != many-layer ]; then
bench_layout layered "oci:$fx/full-oci:latest" "$fx/full-oci" "$FULL_IMAGE"

rm -rf "$bench/flat"
python3 scripts/flatten.py "$fx/min-oci" "$fx/full-oci" "$bench/flat"
flat_name=""
if docker info >/dev/null 2>&1; then
  flat_name=triton-compose-bench/flat:latest
  skopeo copy -q "oci:$bench/flat:latest" "docker-daemon:$flat_name" >/dev/null
fi
bench_layout single-layer "oci:$bench/flat:latest" "$bench/flat" "$flat_name"
rm -rf "$bench/flat"

# The same layered full written as a docker-archive, and a many-layer full
# shaped as NGC's (its own content over 18 layers, compressing about 2:1):
# MANY_LAYER_MIB of it (0 skips), composed into a docker-archive.
out_kind=docker-archive
bench_layout "layered-to-docker-archive" "oci:$fx/full-oci:latest" "$fx/full-oci" "$FULL_IMAGE"
fi
out_kind=docker-archive
many_mib=${MANY_LAYER_MIB:-1024}
if [ "$many_mib" -gt 0 ]; then
  target/release/examples/bench_images "$bench/many" "$many_mib" 18 >/dev/null
  echo "== many-layer synthetic full: $(du -sh "$bench/many/full" | cut -f1) in $(( $(find "$bench/many/full/blobs" -type f | wc -l) - 2 )) layers; selection: python, onnxruntime, local"
  saved=("${selection[@]}"); saved_other=("${other[@]}")
  min_layout=$bench/many/min
  selection=(--backend python --backend onnxruntime --cache local)
  other=(--backend openvino)
  # Its min has no shell: docker build could not RUN the account step.
  bench_layout many-layer-to-docker-archive "oci:$bench/many/full:bench" "$bench/many/full" ""
  selection=("${saved[@]}"); other=("${saved_other[@]}"); min_layout=$fx/min-oci
  rm -rf "$bench/many"
fi
out_kind=oci
rm -rf "$bench"/*-layered-to-docker-archive* "$bench"/*-many-layer-to-docker-archive*
[ -n "${BENCH_ONLY:-}" ] && exit 0

echo "-- registry to registry (docker-registry on 127.0.0.1)"
regdir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$regdir/data" "$port" >"$regdir/config.yml"
docker-registry serve "$regdir/config.yml" >"$regdir/log" 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null || true; rm -rf "$regdir"' EXIT
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
reg=127.0.0.1:$port
skopeo copy -q --dest-tls-verify=false "oci:$fx/min-oci:latest" "docker://$reg/triton/min:latest"
skopeo copy -q --dest-tls-verify=false "oci:$fx/full-oci:latest" "docker://$reg/triton/full:latest"
rm -rf "$bench/store-registry"
registry_compose() {
  local label=$1 tag=$2
  local before; before=$(wc -l <"$regdir/log")
  /usr/bin/time -f "%e %M" -o "$bench/time" $bin -q --enable-gpu=false --store "$bench/store-registry" \
    --work-dir "$bench/work-registry" --image "min,$reg/triton/min:latest" \
    --image "full,$reg/triton/full:latest" "${selection[@]}" --output "$reg/triton/composed:$tag"
  read -r wall rss <"$bench/time"
  local gets; gets=$(tail -n +$((before + 1)) "$regdir/log" | grep -c '"GET /v2/triton/full/blobs/' || true)
  printf '%-44s %6s s  peak RSS %4d MiB  blob GETs from full: %s\n' "$label" "$wall" $((rss / 1024)) "$gets"
}
registry_compose "registry -> registry, cold" cold
registry_compose "registry -> registry, warm (same combination)" warm

echo "-- lazy pull: eStargz through containerd's stargz snapshotter against a plain pull + run"
echo "   (python + onnxruntime --slim; containerd, from the registry above; time from pull start"
echo "   to the first inference answer, and blob bytes the registry sent before it)"
lazydir=$(mktemp -d /tmp/tc-bench-lazy.XXXXXX)
TRITON_COMPOSE_STARGZ=$(stargz_tools)
export TRITON_COMPOSE_STARGZ
trap 'bash scripts/lazy.sh down "$lazydir" >/dev/null 2>&1 || true; rm -rf "$lazydir"; kill $regpid 2>/dev/null || true; rm -rf "$regdir"' EXIT
models=$lazydir/models
mkdir -p "$models/add_sub/1"
cp tests/data/models/add_sub/config.pbtxt "$models/add_sub/"
cp tests/data/models/add_sub/1/model.py "$models/add_sub/1/"
chmod -R a+rX "$models"
for kind in estargz gzip; do
  $bin -q --enable-gpu=false --store "$bench/store-registry" --work-dir "$bench/work-lazy" \
    --image "min,$reg/triton/min:latest" --image "full,$reg/triton/full:latest" \
    --backend python --backend onnxruntime --slim --compression "$kind" \
    --output "$reg/triton/lazy:$kind"
done
image_bytes() { # TAG: the compressed size of its layers
  skopeo inspect --raw --tls-verify=false "docker://$reg/triton/lazy:$1" \
    | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))'
}
sent_bytes() { # blob bytes the registry has sent, from its access log
  grep -o '"GET /v2/[^"]*/blobs/[^"]*" 2[0-9][0-9] [0-9]*' "$regdir/log" | awk '{s += $NF} END {print s + 0}'
}
infer='{"inputs":[{"name":"INPUT0","shape":[4],"datatype":"FP32","data":[1,2,3,4]},{"name":"INPUT1","shape":[4],"datatype":"FP32","data":[10,20,30,40]}]}'
# One pull + run on a fresh containerd: sets answer_s and fetched.
first_answer() { # TAG SNAPSHOTTER
  bash scripts/lazy.sh up "$lazydir"
  local sock=$lazydir/containerd.sock http
  http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local before start
  before=$(sent_bytes)
  start=$(date +%s.%N)
  "$TRITON_COMPOSE_STARGZ/tcpull" -address "$sock" -namespace tc -snapshotter "$2" "$reg/triton/lazy:$1" 2>/dev/null
  ctr -a "$sock" -n tc run -d --net-host --snapshotter "$2" --log-uri "file://$lazydir/server.log" \
    --mount "type=bind,src=$models,dst=/models,options=rbind:ro" "$reg/triton/lazy:$1" "bench-$1-$RANDOM" \
    tritonserver --model-repository=/models --http-address=127.0.0.1 --http-port="$http" \
    --grpc-address=127.0.0.1 --grpc-port=0 --metrics-address=127.0.0.1 --allow-metrics=false >/dev/null
  answer_s=""
  for _ in $(seq 1 1200); do
    if curl -sf -o /dev/null -X POST "http://127.0.0.1:$http/v2/models/add_sub/infer" -d "$infer"; then
      answer_s=$(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.2f')
      break
    fi
    sleep 0.05
  done
  fetched=$(($(sent_bytes) - before))
  bash scripts/lazy.sh down "$lazydir"
  [ -n "$answer_s" ] || { echo "error: no inference answer from $1 within 60 s" >&2; exit 1; }
}
declare -A best_s bytes
for round in 1 2 3; do
  for kind in estargz gzip; do
    snap=overlayfs
    [ "$kind" = estargz ] && snap=stargz
    first_answer "$kind" "$snap"
    if [ -z "${best_s[$kind]:-}" ] || [ "$(echo "$answer_s < ${best_s[$kind]}" | bc -l)" = 1 ]; then
      best_s[$kind]=$answer_s
    fi
    bytes[$kind]=$fetched
  done
done
for kind in estargz gzip; do
  total=$(image_bytes "$kind")
  label="plain pull + run (gzip, overlayfs)"
  [ "$kind" = estargz ] && label="lazy pull + run (eStargz, stargz)"
  printf '%-44s %6s s to the first answer (best of 3); fetched %d of %d bytes (%s%%)\n' \
    "$label" "${best_s[$kind]}" "${bytes[$kind]}" "$total" "$(echo "100 * ${bytes[$kind]} / $total" | bc)"
done
echo "lazy / plain: $(ratio2 "${best_s[estargz]}" "${best_s[gzip]}")x the time to the first answer"

# serve: first pulls during and after the prebuild, the prebuild against a
# cold compose of everything, docker pull against docker-registry.
BIN=$bin bash scripts/bench_serve.sh
# Part 2: memory against full's file count. The fixtures' full with small
# python files (pip-installed: dist-info RECORDs) added in one layer; a cold
# compose of the selection, no store. MANY_FILES="300000 1000000" (0: skip).
many_files=${MANY_FILES:-300000 1000000}
if [ "$many_files" != 0 ]; then
  echo "== full's file count: the fixtures' full plus small python files (cold, no store)"
  many_compose() { # LABEL FULL_LAYOUT
    rm -rf "$bench/out-many" "$bench/work-many"
    /usr/bin/time -f "%e %M" -o "$bench/time" $bin -q --enable-gpu=false --no-store \
      --work-dir "$bench/work-many" --image "min,oci:$fx/min-oci:latest" \
      --image "full,oci:$2:latest" "${selection[@]}" --output "oci:$bench/out-many:x"
    read -r wall rss <"$bench/time"
    printf '%-44s %6s s  peak RSS %4d MiB\n' "$1" "$wall" $((rss / 1024))
  }
  many_compose "as the fixtures build it" "$fx/full-oci"
  for files in $many_files; do
    target/release/examples/bench_images --many-files "$fx/full-oci" latest "$bench/full-many" "$files" >/dev/null
    many_compose "+ $files small files" "$bench/full-many"
    rm -rf "$bench/full-many"
  done
  rm -rf "$bench/out-many" "$bench/work-many"
fi
[ "$mib" -gt 0 ] || exit 0
echo "== synthetic image, $mib MiB"
target/release/examples/bench_images "$bench" "$mib"
du -sh "$bench/min" "$bench/full"
MIN=oci:$bench/min:latest FULL=oci:$bench/full:bench BIN=$bin bash scripts/bench_serve.sh

run() {
  local label=$1; shift
  rm -rf "$bench/out"
  /usr/bin/time -f "$label: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
    $bin -q --enable-gpu=false --work-dir "$bench/work" \
    --image "min,oci:$bench/min:latest" --image "full,oci:$bench/full:bench" "$@"
}
run "dry run (scan only)          " --backend python --dry-run
run "python backend, gzip         " --backend python --output "oci:$bench/out:py"
# The large selection leaves pytorch out: a CPU-only pytorch needs a gpu-min
# image, which the synthetic pair does not have.
run "onnxruntime+openvino, gzip   " --backend onnxruntime --backend openvino --output "oci:$bench/out:big"
run "onnxruntime+openvino, zstd   " --backend onnxruntime --backend openvino --compression zstd --output "oci:$bench/out:big"
du -sh "$bench/out"
