#!/usr/bin/env bash
# A lazy-pull stack for the tests and the bench, on this machine only:
# Debian's containerd (its own root, state and socket, CRI off) with the
# stargz snapshotter (tests/stargz/src/tcstargz, built by stargz_tools in
# scripts/lib.sh) as its proxy snapshotter `stargz`, which mounts eStargz
# layers over FUSE and fetches their files from the registry when read.
#
#   lazy.sh up DIR     start both; DIR/containerd.sock answers when it returns
#   lazy.sh down DIR   stop both, unmount what the snapshotter mounted, remove
#                      their state (DIR itself stays)
#
# The registry's credentials come from TC_REGISTRY_USER and
# TC_REGISTRY_PASSWORD. Logs: DIR/containerd.log, DIR/stargz.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { echo "usage: $0 up|down DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
dir=$2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# Unix sockets hold at most 107 bytes of path.
if [ ${#dir} -gt 80 ]; then
  echo "error: $dir is too long a path for containerd's sockets" >&2
  echo "  hint: use a directory under /tmp" >&2
  exit 1
fi

stop_pid() { # FILE
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

down() {
  # Containers first (their tasks hold the snapshotter's mounts).
  if [ -S "$dir/containerd.sock" ]; then
    for ns in $(ctr -a "$dir/containerd.sock" namespaces ls -q 2>/dev/null); do
      local c=(ctr -a "$dir/containerd.sock" -n "$ns")
      for task in $("${c[@]}" tasks ls -q 2>/dev/null); do
        "${c[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
      done
      # runc keeps its state outside DIR (/run/containerd/runc): delete the
      # tasks and containers so that none outlives the stack.
      for container in $("${c[@]}" containers ls -q 2>/dev/null); do
        for _ in $(seq 1 50); do
          "${c[@]}" tasks delete -f "$container" >/dev/null 2>&1 || true
          "${c[@]}" tasks ls -q 2>/dev/null | grep -qx "$container" || break
          sleep 0.1
        done
        "${c[@]}" containers delete "$container" >/dev/null 2>&1 || true
      done
    done
  fi
  stop_pid "$dir/containerd.pid"
  stop_pid "$dir/stargz.pid"
  # Whatever is still mounted under DIR (FUSE layers, overlays, shm),
  # deepest first.
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r \
    | while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  rm -rf "$dir/root" "$dir/state" "$dir/stargz-root" "$dir"/*.sock "$dir"/*.sock.ttrpc
}

up() {
  if [ ! -c /dev/fuse ]; then
    echo "error: /dev/fuse is missing: the stargz snapshotter mounts layers over FUSE" >&2
    echo "  hint: load the fuse module (modprobe fuse) or give the container /dev/fuse" >&2
    exit 1
  fi
  local tools
  tools=${TRITON_COMPOSE_STARGZ:-$(stargz_tools)}
  command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null || {
    echo "error: containerd, ctr and runc are needed (stargz_tools installs Debian's containerd)" >&2
    exit 1
  }
  down
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
[proxy_plugins]
  [proxy_plugins.stargz]
    type = "snapshot"
    address = "$dir/stargz.sock"
EOF
  setsid "$tools/tcstargz" -address "$dir/stargz.sock" -root "$dir/stargz-root" \
    >"$dir/stargz.log" 2>&1 </dev/null &
  echo $! >"$dir/stargz.pid"
  setsid containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 </dev/null &
  echo $! >"$dir/containerd.pid"
  for _ in $(seq 1 300); do
    if [ -S "$dir/stargz.sock" ] && ctr -a "$dir/containerd.sock" plugins ls 2>/dev/null \
      | grep -q 'io.containerd.snapshotter.v1 *stargz *- *ok'; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: containerd with the stargz snapshotter did not start within 30 s" >&2
  tail -n 20 "$dir/stargz.log" "$dir/containerd.log" >&2 || true
  down
  exit 1
}

case $1 in
  up) up ;;
  down) down ;;
  *) usage ;;
esac
