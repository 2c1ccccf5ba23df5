#!/usr/bin/env bash
# Builds the real-world fixture images, without triton-compose, and prints
# the directory that holds them. Cached by the hash of this script and of
# tests/fixtures/: a second run with nothing changed only makes sure the
# images are loaded in the engine.
#
#   min   debootstrap --variant=minbase bookworm, `docker import`ed
#   full  FROM min: python3, numpy, libgomp1, libarchive13, libpython3.11;
#         Triton 2.51.0 from the nvidia-pytriton 0.7.0 wheel as /opt/tritonserver
#         (RPATHs rewritten with patchelf); stand-in backends (standin and a
#         25 MB onnxruntime, both needing libgomp.so.1) and checksum repoagent;
#         pyllm, a python-based backend (model.py) importing distributions
#         pip installed only in full (tests/fixtures/python); /opt/nvidia;
#         NGC's ENV and LABELs
#
# The directory gets min.tar and full.tar (`docker save`), min-oci/ and
# full-oci/ (`skopeo copy`, tag `latest`), and images.env naming the images
# in the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

key=$( (cat scripts/fixtures.sh; find tests/fixtures -type f | sort | xargs cat) | sha256sum | cut -c1-16)
cache_root=${TRITON_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-compose}
out=$cache_root/fixtures-$key
min_name=triton-compose-fixture/min:$key
full_name=triton-compose-fixture/full:$key

start_docker >&2
if [ -f "$out/done" ]; then
  for name in min full; do
    ref=triton-compose-fixture/$name:$key
    docker image inspect "$ref" >/dev/null 2>&1 || docker load -q -i "$out/$name.tar" >&2
  done
  echo "$out"
  exit 0
fi

apt_install debootstrap patchelf skopeo gcc unzip ca-certificates >&2
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/triton-compose-fixtures.XXXXXX")
trap 'rm -rf "$work"' EXIT

log() { echo "fixtures: $*" >&2; }

log "debootstrap bookworm (minbase)"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
tar -C "$work/rootfs" --numeric-owner -c . | docker import - "$min_name" >/dev/null
rm -rf "$work/rootfs"

log "nvidia-pytriton 0.7.0 wheel"
python3 -m pip download -q --no-deps -d "$work/wheel" nvidia-pytriton==0.7.0 >&2
(cd "$work/wheel" && unzip -q ./*.whl 'pytriton/tritonserver/*' 'nvidia_pytriton.libs/*' 'nvidia_pytriton-0.7.0.dist-info/licenses/LICENSE')

log "laying out /opt/tritonserver"
ctx=$work/ctx
t=$ctx/triton
src=$work/wheel/pytriton/tritonserver
mkdir -p "$t"/{bin,lib,include/triton/core,backends/python,caches/local} "$ctx/standins"/{backends,repoagents}
cp "$src/bin/tritonserver" "$t/bin/"
cp "$work"/wheel/nvidia_pytriton.libs/* "$t/lib/"
cp "$src"/backends/python/* "$t/backends/python/"
cp "$src/python_backend_stubs/3.11/triton_python_backend_stub" "$t/backends/python/"
cp "$src/caches/local/libtritoncache_local.so" "$t/caches/local/"
cp "$work/wheel/nvidia_pytriton-0.7.0.dist-info/licenses/LICENSE" "$t/LICENSE"
echo "2.51.0" > "$t/TRITON_VERSION"
echo "%PDF-1.4 stand-in for the NGC container license" > "$t/NVIDIA_Deep_Learning_Container_License.pdf"
echo "/* stand-in for Triton's headers */" > "$t/include/triton/core/tritonserver.h"
echo "/* deleted by a later layer */" > "$t/include/triton/obsolete.h"
patchelf --set-rpath '$ORIGIN/../lib' "$t/bin/tritonserver"
for lib in "$t"/lib/*.so*; do patchelf --set-rpath '$ORIGIN' "$lib"; done
# NGC's name for the core library, next to the wheel's mangled one.
ln -s "$(basename "$t"/lib/libtritonserver-*.so)" "$t/lib/libtritonserver.so"
patchelf --set-rpath '$ORIGIN:$ORIGIN/../../lib' "$t/backends/python/libtriton_python.so"
patchelf --set-rpath '$ORIGIN/../../lib' "$t/backends/python/triton_python_backend_stub"
patchelf --set-rpath '$ORIGIN/../../lib' "$t/caches/local/libtritoncache_local.so"
chmod 0755 "$t/bin/tritonserver" "$t/backends/python/triton_python_backend_stub"

log "stand-in components"
s=$ctx/standins
mkdir -p "$s/backends/standin" "$s/backends/onnxruntime" "$s/backends/obsolete" "$s/repoagents/checksum"
gcc -shared -fPIC -fopenmp -o "$s/backends/standin/libtriton_standin.so" tests/fixtures/standins/standin.c
# A bulky backend that composes leave out, so size comparisons mean something.
gcc -shared -fPIC -fopenmp -o "$s/backends/onnxruntime/libtriton_onnxruntime.so" tests/fixtures/standins/standin.c
head -c 25000000 /dev/urandom > "$s/backends/onnxruntime/libonnxruntime_payload.bin"
gcc -shared -fPIC -o "$s/backends/obsolete/libtriton_obsolete.so" tests/fixtures/standins/standin.c
gcc -shared -fPIC -o "$s/repoagents/checksum/libtritonrepoagent_checksum.so" tests/fixtures/standins/standin.c
mkdir -p "$s/backends/pyllm"
cp tests/fixtures/standins/pyllm/model.py "$s/backends/pyllm/"
cp -r tests/fixtures/nvidia "$ctx/nvidia"
cp -r tests/fixtures/python "$ctx/python"

log "docker build full"
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "MIN_IMAGE=$min_name" \
  -f tests/fixtures/Dockerfile.full -t "$full_name" "$ctx" >&2

log "exporting (docker save, skopeo copy)"
docker save -o "$out/min.tar" "$min_name"
docker save -o "$out/full.tar" "$full_name"
skopeo copy -q "docker-archive:$out/min.tar" "oci:$out/min-oci:latest" >&2
skopeo copy -q "docker-archive:$out/full.tar" "oci:$out/full-oci:latest" >&2
printf 'MIN_IMAGE=%s\nFULL_IMAGE=%s\n' "$min_name" "$full_name" > "$out/images.env"
touch "$out/done"
# Older fixtures (another recipe hash) are dropped, from disk and engine.
find "$cache_root" -maxdepth 1 -name 'fixtures-*' ! -name "fixtures-$key" -exec rm -rf {} +
docker images --format '{{.Repository}}:{{.Tag}}' | grep '^triton-compose-fixture/' \
  | grep -v ":$key\$" | xargs -r docker rmi -f >/dev/null 2>&1 || true
log "done: $out"
echo "$out"
