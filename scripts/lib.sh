# Shared helpers for the scripts; sourced, not run.

need_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed" >&2
    echo "  hint: install Rust 1.85 or newer with rustup (https://rustup.rs), then run this again" >&2
    exit 1
  fi
}

# Installs Debian packages that are missing (as root, or with sudo).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Makes sure a Docker engine answers, starting dockerd if needed (as
# the test machines have no init system running it).
start_docker() {
  apt_install docker.io
  if docker info >/dev/null 2>&1; then return 0; fi
  local log=${TMPDIR:-/tmp}/triton-compose-dockerd.log
  echo "starting dockerd (log: $log)" >&2
  nohup dockerd --iptables=false --bridge=none >"$log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "error: the Docker engine did not start within 60 s" >&2
  tail -n 20 "$log" >&2 || true
  echo "  hint: the end-to-end tests need a Docker engine; see $log" >&2
  return 1
}

# Python tools the tests use, pinned, in a venv under the cache: spdx-tools'
# validator (pyspdxtools), the oras SDK (a referrers client not ours) and
# Prometheus' own client library (its text-format parser reads /metrics).
# Prints the venv's bin directory.
python_tools() {
  apt_install python3-venv >&2
  local dir=${TRITON_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-compose}/pytools-1
  if [ ! -x "$dir/bin/pyspdxtools" ] || ! "$dir/bin/python" -c 'import oras, prometheus_client' 2>/dev/null; then
    rm -rf "$dir"
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install -q spdx-tools==0.8.5 oras==0.2.43 prometheus-client==0.21.1 >&2
  fi
  echo "$dir/bin"
}

# Small real NVIDIA libraries from PyPI (CUDA 12.9's runtime, cuRAND: 60 MB
# of wheels) for the GPU-shaped --slim tests, unpacked once under the cache.
# Prints the directory holding libcudart.so.12 and libcurand.so.10.
nvidia_libs() {
  apt_install unzip >&2
  local dir=${TRITON_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-compose}/nvidia-1
  if [ ! -e "$dir/done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/wheels" "$dir/lib"
    "$(python_tools)/pip" download -q --no-deps --only-binary=:all: -d "$dir/wheels" \
      nvidia-cuda-runtime-cu12==12.9.79 nvidia-curand-cu12==10.3.7.77 >&2
    for wheel in "$dir"/wheels/*.whl; do
      unzip -q -j -o "$wheel" 'nvidia/*/lib/*.so*' -d "$dir/lib" >&2
    done
    rm -rf "$dir/wheels"
    touch "$dir/done"
  fi
  echo "$dir/lib"
}

# The eStargz tools of the lazy-pull tests, built offline from Debian's Go
# sources of stargz-snapshotter with Debian's Go (GOPATH mode, no module
# downloads), once per change of tests/stargz: tcverify (the format,
# checked by the estargz package itself), tcstargz (the snapshotter as
# a containerd proxy plugin) and tcpull (a lazy pull, as ctr-remote's
# rpull). Also installs containerd and FUSE for the lazy pull. Prints the
# directory holding the three programs.
stargz_tools() {
  apt_install golang-go golang-github-containerd-stargz-snapshotter-dev containerd fuse3 >&2
  local key
  key=$(find tests/stargz -type f | sort | xargs cat | sha256sum | cut -c1-16)
  local dir=${TRITON_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-compose}/stargz-$key
  if [ ! -x "$dir/tcstargz" ] || [ ! -x "$dir/tcverify" ] || [ ! -x "$dir/tcpull" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    local gopath
    gopath="$(pwd)/tests/stargz:/usr/share/gocode"
    for tool in tcverify tcstargz tcpull; do
      echo "building $tool (Go, offline)" >&2
      (cd "tests/stargz/src/$tool" \
        && GOPATH=$gopath GO111MODULE=off GOPROXY=off GOCACHE="$dir/.gocache" \
          go build -o "$dir/$tool.tmp" . >&2) \
        || { echo "error: building $tool failed" >&2; rm -rf "$dir"; return 1; }
      mv "$dir/$tool.tmp" "$dir/$tool"
    done
    rm -rf "$dir/.gocache"
  fi
  echo "$dir"
}
