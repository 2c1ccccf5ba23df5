#!/usr/bin/env bash
# serve's first pulls, on the fixtures or on MIN=REF FULL=REF (scripts/bench.sh
# runs this on both the fixtures and its synthetic NGC-sized pair).
# Prints figures, never asserts them; ratios are of runs in this one run.
#   - A first pull right after /readyz, with the prebuild running, against
#     the same pull with --no-prebuild (what serve did before prebuild).
#   - The prebuild (nothing pulled meanwhile) against a cold compose of
#     every component together.
#   - Once prebuilt: each first pull's manifest time for tags of 1-4
#     components, and docker pull of a new tag from serve against docker
#     pull of the same image from Debian's docker-registry.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install curl bc skopeo docker-registry >&2
bin=${BIN:-target/release/triton-compose}
[ -n "${BIN:-}" ] || cargo build --quiet --release
if [ -z "${MIN:-}" ]; then
  fx=$(bash scripts/fixtures.sh)
  MIN=oci:$fx/min-oci:latest FULL=oci:$fx/full-oci:latest
fi
work=$(mktemp -d /tmp/tc-bench-serve.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ratio2() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }

# serve NAME [FLAGS]: a fresh serve (own store and state); sets port, log.
serve_up() {
  local name=$1; shift
  port=$(free_port)
  log=$work/$name.log
  $bin serve --image "min,$MIN" --image "full,$FULL" \
    --listen "127.0.0.1:$port" --exit-after-idle 600 --state-dir "$work/$name-state" \
    --store "$work/$name-store" "$@" 2>"$log" &
  pids+=($!)
  serve_started=$(now)
  until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.02; done
}
serve_down() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
manifest_s() { # TAG: seconds to the manifest's last byte
  curl -sf -o /dev/null -w '%{time_total}' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:$port/v2/tritonserver/manifests/$1"
}
prebuilt() { curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^triton_compose_prebuild_finished 1'; }

echo "-- serve: first pulls ($FULL; prebuild on by default)"
# The parts the prebuild builds (those it skips, for want of gpu-min, say,
# are left out of every figure).
serve_up prebuilt
until prebuilt; do sleep 0.05; done
prebuild_s=$(grep -o 'prebuild finished in [0-9.]*' "$log" | awk '{print $4}')
mapfile -t parts < <(curl -sf "http://127.0.0.1:$port/" \
  | grep -o '<tr data-kind=[a-z]* data-name="[^"]*">.*<td>yes</td></tr>' \
  | grep -v 'data-kind=core' | sed 's/<tr data-kind=\([a-z]*\) data-name="\([^"]*\)".*/\1 \2/')
offered=() selection=()
for part in "${parts[@]}"; do
  offered+=("${part#* }")
  selection+=("--${part% *}" "${part#* }")
done
first=$(IFS=.; echo "${offered[*]:0:2}")
serve_down
# Best of 3 each, alternating, each on a fresh store and state.
today_s="" during_s=""
for _ in 1 2 3; do
  rm -rf "$work"/today-* "$work"/during-*
  serve_up today --no-prebuild
  s=$(manifest_s "$first")
  serve_down
  [ -z "$today_s" ] || [ "$(echo "$s < $today_s" | bc -l)" = 1 ] && today_s=$s
  serve_up during
  s=$(manifest_s "$first")
  serve_down
  [ -z "$during_s" ] || [ "$(echo "$s < $during_s" | bc -l)" = 1 ] && during_s=$s
done
rm -rf "$work"/today-* "$work"/during-*
printf '%-52s %6.2f s\n' "first pull of $first, --no-prebuild (best of 3)" "$today_s"
printf '%-52s %6.2f s  (%sx)\n' "the same right after /readyz, prebuild running" "$during_s" "$(ratio2 "$during_s" "$today_s")"

start=$(now)
$bin -q --enable-gpu=false --store "$work/cold-store" --work-dir "$work/cold-work" \
  --image "min,$MIN" --image "full,$FULL" \
  "${selection[@]}" --output "oci:$work/cold-out:all"
cold_s=$(since "$start")
rm -rf "$work/cold-store" "$work/cold-out" "$work/cold-work"
printf '%-52s %6s s\n' "cold compose of every component (${#offered[@]})" "$cold_s"
printf '%-52s %6s s  (%sx the cold compose)\n' "prebuild of the core and each component alone" "$prebuild_s" "$(ratio2 "$prebuild_s" "$cold_s")"
# The prebuilt serve again, on its store: it finds every part there.
serve_up prebuilt
until prebuilt; do sleep 0.05; done
echo "restarted on its store: $(grep -o 'prebuild finished in .*' "$log" | tail -1)"
worst=0
# Tags of 1-4 components from either end of the list (the first two were
# pulled above, during the prebuild).
tags=()
for n in 1 2 3 4; do
  [ "$n" -le "${#offered[@]}" ] || break
  tags+=("$(IFS=.; echo "${offered[*]:0:n}")" "$(IFS=.; echo "${offered[*]: -n}")")
done
mapfile -t tags < <(printf '%s\n' "${tags[@]}" | awk '!seen[$0]++')
for tag in "${tags[@]}"; do
  s=$(manifest_s "$tag")
  printf '%-52s %6.2f s\n' "first pull's manifest, $tag" "$s"
  [ "$(echo "$s > $worst" | bc -l)" = 1 ] && worst=$s
done
echo "slowest first manifest once prebuilt: $worst s"

if docker info >/dev/null 2>&1; then
  regport=$(free_port)
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/registry" "$regport" >"$work/registry.yml"
  docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  pids+=($!)
  until (echo >/dev/tcp/127.0.0.1/"$regport") 2>/dev/null; do sleep 0.05; done
  tag=$(IFS=.; echo "${offered[*]:1:3}")
  served=127.0.0.1:$port/tritonserver:$tag
  copy=127.0.0.1:$regport/tritonserver:$tag
  pull_s() { # REF: docker pull from nothing of this image (other images' layers stay)
    docker rmi -f "$served" "$copy" >/dev/null 2>&1 || true
    local start; start=$(now)
    docker pull -q "$1" >/dev/null
    since "$start"
  }
  served_first=$(pull_s "$served")
  skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$served" "docker://$copy"
  best() { local b="" s; for _ in 1 2 3; do s=$(pull_s "$1"); if [ -z "$b" ] || [ "$(echo "$s < $b" | bc -l)" = 1 ]; then b=$s; fi; done; echo "$b"; }
  served_best=$(best "$served")
  copy_best=$(best "$copy")
  docker rmi -f "$served" "$copy" >/dev/null 2>&1 || true
  printf '%-52s %6s s\n' "docker pull $tag from serve, first (composes)" "$served_first"
  printf '%-52s %6s s\n' "docker pull of it from serve again (best of 3)" "$served_best"
  printf '%-52s %6s s\n' "docker pull of it from docker-registry (best of 3)" "$copy_best"
  echo "serve / docker-registry: $(ratio2 "$served_first" "$copy_best")x first, $(ratio2 "$served_best" "$copy_best")x again"
else
  echo "(no Docker engine: docker pull not measured)"
fi
serve_down
