#!/usr/bin/env bash
# Fills third_party/ (git-ignored) with what the lent GPU machine lacks: it has nvcc, CMake,
# ninja, Python/PyTorch and the cuDNN wheel, but no Debian -dev packages and no network. Run it
# here, on Debian 12 with apt and PyPI reachable; the GPU session then carries third_party/
# (the `run` tool's carry ["third_party"]) and cmake/Dependencies.cmake falls back to it for
# every dependency the machine lacks.
#
#   tools/gpu/offline_deps.sh            fetch what is missing (idempotent; each part has a stamp)
#   FORCE=1 tools/gpu/offline_deps.sh    fetch everything again
#
# What it puts there (sources where practical):
#   googletest/           Debian's googletest package (/usr/src/googletest), add_subdirectory
#   benchmark/            Google Benchmark: the Debian source package (same version as
#                         libbenchmark-dev) with Debian's patches, add_subdirectory. (PyPI's
#                         google-benchmark sdists hold only the Python bindings, no C++ sources.)
#   nlohmann_json/include, cli11/include, stb/include   header-only libraries (Debian packages)
#   sysroot.tar.xz        OpenBLAS (pthread), libgfortran5, libquadmath0, zlib: headers and shared
#                         libraries of the Debian binary packages (dpkg -x, pruned, each library
#                         given an $ORIGIN runpath), xz-compressed because libopenblas alone is
#                         36 MB unpacked; CMake unpacks it into the build directory
#   cudnn_frontend/include  the nvidia-cudnn-frontend wheel's headers
#   data/fashion-mnist/   Debian's dataset-fashion-mnist, the four IDX files recompressed with xz
#                         (unpack before use: the loader reads raw or .gz)
#   MANIFEST.txt          what was fetched, versions and sizes
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tp="${VITCUDA_THIRD_PARTY_DIR:-$root/third_party}"
cudnn_frontend_version="${CUDNN_FRONTEND_VERSION:-1.32.0}"
force="${FORCE:-0}"
mkdir -p "$tp"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { echo "offline_deps: $*"; }
die() { echo "offline_deps: error: $*" >&2; exit 1; }
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
  die "needs a Debian 12 machine (apt-get, dpkg) with the package archive reachable"
# shellcheck disable=SC1091
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
apt_opts=(-o APT::Sandbox::User=root -qq)

# A part is fetched again when its stamp is missing or names another version.
fresh() {  # fresh STAMPFILE VERSION
  [[ "$force" != 1 && -f "$1" && "$(cat "$1")" == "$2" ]]
}
pkg_version() {  # candidate version of a Debian package
  apt-cache policy "$1" | awk '/Candidate:/ {print $2}'
}
# deb_x DIR PKG...: apt-get download the packages and dpkg -x each into DIR (never into /).
deb_x() {
  local dir="$1"; shift
  mkdir -p "$work/debs" "$dir"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download "$@")
  local p
  for p in "$@"; do
    dpkg -x "$(ls "$work/debs/${p}"_*.deb | head -1)" "$dir"
  done
}
fetched=()

# ---- GoogleTest: the sources of Debian's googletest package ---------------------------
v="googletest $(pkg_version googletest)"
if fresh "$tp/googletest/.stamp" "$v"; then
  log "googletest: have $v"
else
  log "googletest: fetching $v"
  deb_x "$work/gtest" googletest
  rm -rf "$tp/googletest"
  cp -a "$work/gtest/usr/src/googletest" "$tp/googletest"
  # googlemock is not used (Dependencies.cmake builds with BUILD_GMOCK=OFF).
  rm -rf "$tp"/googletest/googlemock "$tp"/googletest/googletest/{docs,test,samples,scripts,README.md}
  cp "$work/gtest/usr/share/doc/googletest/copyright" "$tp/googletest/COPYRIGHT" 2>/dev/null || true
  echo "$v" > "$tp/googletest/.stamp"
  fetched+=("$v")
fi

# ---- Google Benchmark: the Debian source package, with Debian's patches ----------------
# (apt-get source through a private apt configuration holding one deb-src line: the machine's
# own apt configuration is not touched.)
v="benchmark $(pkg_version libbenchmark-dev | sed 's/+b[0-9]*$//')"  # the source version
if fresh "$tp/benchmark/.stamp" "$v"; then
  log "benchmark: have $v"
else
  log "benchmark: fetching the Debian source package, $v"
  a="$work/apt-src"
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $codename main" \
    > "$a/sources.list"
  src_opts=("${apt_opts[@]}" -o "Dir::Etc::SourceList=$a/sources.list" -o "Dir::Etc::SourceParts=$a/none"
            -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache")
  apt-get "${src_opts[@]}" update
  (cd "$a/src" && apt-get "${src_opts[@]}" source --download-only "benchmark=${v#benchmark }")
  tar -xzf "$a"/src/benchmark_*.orig.tar.gz -C "$a/src"
  tar -xJf "$a"/src/benchmark_*.debian.tar.xz -C "$a/src"
  b="$(ls -d "$a"/src/benchmark-*/ | head -1)"
  if [[ -f "$a/src/debian/patches/series" ]]; then
    while read -r patch; do
      [[ -z "$patch" || "$patch" == \#* ]] && continue
      patch -d "$b" -p1 -s < "$a/src/debian/patches/$patch"
    done < "$a/src/debian/patches/series"
  fi
  rm -rf "$tp/benchmark"
  cp -a "$b" "$tp/benchmark"
  rm -rf "$tp"/benchmark/{.github,bindings,docs,test,tools,.git*,.travis*,.ycm*,.clang*,appveyor.yml,setup.py,pyproject.toml,_config.yml,BUILD.bazel,WORKSPACE,requirements.txt}
  echo "$v" > "$tp/benchmark/.stamp"
  fetched+=("$v (Debian source + patches)")
fi

# ---- header-only libraries -----------------------------------------------------------
header_lib() {  # header_lib DIR PKG SUBDIR [FILES...]: copy /usr/include/SUBDIR of PKG
  local dir="$1" pkg="$2" sub="$3"; shift 3
  local v
  v="$pkg $(pkg_version "$pkg")"
  if fresh "$tp/$dir/.stamp" "$v"; then
    log "$dir: have $v"
    return
  fi
  log "$dir: fetching $v"
  deb_x "$work/$pkg" "$pkg"
  rm -rf "${tp:?}/$dir"
  mkdir -p "$tp/$dir/include/$sub"
  if [[ $# -gt 0 ]]; then
    local f
    for f in "$@"; do cp "$work/$pkg/usr/include/$sub/$f" "$tp/$dir/include/$sub/"; done
  else
    cp -a "$work/$pkg/usr/include/$sub/." "$tp/$dir/include/$sub/"
  fi
  cp "$work/$pkg/usr/share/doc/$pkg/copyright" "$tp/$dir/COPYRIGHT" 2>/dev/null || true
  echo "$v" > "$tp/$dir/.stamp"
  fetched+=("$v")
}
header_lib nlohmann_json nlohmann-json3-dev nlohmann
header_lib cli11 libcli11-dev CLI
header_lib stb libstb-dev stb stb_image.h stb_image_write.h  # the two the project includes

# ---- OpenBLAS, libgfortran, libquadmath, zlib: Debian binaries in one xz archive -------
# Debian's OpenBLAS sits behind update-alternatives: the unversioned libopenblas.so.0 and
# cblas.h in /usr/lib/x86_64-linux-gnu and /usr/include/x86_64-linux-gnu are made by
# postinst, not shipped, so the sysroot keeps the real layout (.../openblas-pthread/).
sysroot_pkgs=(libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0 zlib1g zlib1g-dev)
v="sysroot"
for p in "${sysroot_pkgs[@]}"; do v+=" $p=$(pkg_version "$p")"; done
if fresh "$tp/sysroot.stamp" "$v"; then
  log "sysroot: have $v"
else
  log "sysroot: fetching $v"
  s="$work/sysroot"
  deb_x "$s" "${sysroot_pkgs[@]}"
  # zlib1g installs into /lib (merged-/usr alias): keep everything under usr/.
  if [[ -d "$s/lib" && ! -L "$s/lib" ]]; then
    cp -a "$s/lib/." "$s/usr/lib/"
    rm -rf "$s/lib"
  fi
  rm -rf "$s/usr/share" "$s/etc"
  find "$s" \( -name '*.a' -o -name 'liblapack*' -o -name 'libblas*' -o -name cmake -o -name pkgconfig \) \
    -prune -exec rm -rf {} +
  # Absolute symlinks (e.g. libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) made relative.
  while IFS= read -r l; do
    t="$(readlink "$l")"
    if [[ "$t" == /* ]]; then ln -sfn "$(basename "$t")" "$l"; fi
  done < <(find "$s" -type l)
  # Each library finds its own dependencies beside itself ($ORIGIN): a RUNPATH on the
  # executable does not apply to the dependencies of its libraries.
  patchelf="$(command -v patchelf || true)"
  if [[ -z "$patchelf" ]]; then
    deb_x "$work/patchelf" patchelf
    patchelf="$work/patchelf/usr/bin/patchelf"
  fi
  lib="$s/usr/lib/x86_64-linux-gnu"
  "$patchelf" --set-rpath '$ORIGIN:$ORIGIN/..' "$lib"/openblas-pthread/libopenblasp-r*.so
  "$patchelf" --set-rpath '$ORIGIN' "$lib"/libgfortran.so.5.*
  {
    echo "Debian $codename packages, dpkg -x'd (static libraries, LAPACK, docs dropped):"
    for p in "${sysroot_pkgs[@]}"; do echo "  $p $(pkg_version "$p")"; done
  } > "$s/README.vitcuda"
  tar -C "$work" -cf - sysroot | xz -9e -T0 > "$tp/sysroot.tar.xz.tmp"
  mv "$tp/sysroot.tar.xz.tmp" "$tp/sysroot.tar.xz"
  rm -rf "$tp/sysroot"  # an unpacked copy (see Dependencies.cmake) would be stale now
  echo "$v" > "$tp/sysroot.stamp"
  fetched+=("$v")
fi

# ---- cudnn_frontend headers (the nvidia-cudnn-frontend wheel) --------------------------
v="nvidia-cudnn-frontend $cudnn_frontend_version"
have_fe=""
if [[ -f "$tp/cudnn_frontend/include/cudnn_frontend_version.h" ]]; then
  have_fe="nvidia-cudnn-frontend $(awk '/define CUDNN_FRONTEND_(MAJOR|MINOR|PATCH)_VERSION/ {printf "%s%s", sep, $3; sep="."}' \
    "$tp/cudnn_frontend/include/cudnn_frontend_version.h")"
fi
if [[ "$force" != 1 && "$have_fe" == "$v" ]]; then
  log "cudnn_frontend: have $v"
else
  log "cudnn_frontend: fetching $v"
  python3 -m pip download -q --no-deps --index-url https://pypi.org/simple \
    "nvidia-cudnn-frontend==$cudnn_frontend_version" -d "$work/fe"
  rm -rf "$tp/cudnn_frontend/include"
  mkdir -p "$tp/cudnn_frontend"
  python3 - "$work"/fe/*.whl "$tp/cudnn_frontend" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])
EOF
  fetched+=("$v")
fi

# ---- Fashion-MNIST: the installed dataset-fashion-mnist, else its .deb --------------------
# Recompressed from gzip to xz (30 MB -> 26 MB): the carry is 64 MiB in all. The loader reads raw
# or .gz IDX files, so a session unpacks them first (tools/gpu/gpu_session.sh does:
#   for f in third_party/data/fashion-mnist/*.xz; do xz -dc "$f" > "DIR/$(basename "$f" .xz)"; done).
v="dataset-fashion-mnist $(pkg_version dataset-fashion-mnist)"
d="$tp/data/fashion-mnist"
if fresh "$d/.stamp" "$v" && [[ $(ls "$d"/*-ubyte.xz 2>/dev/null | wc -l) -eq 4 ]]; then
  log "fashion-mnist: have $v"
else
  log "fashion-mnist: fetching $v (and recompressing with xz: about a minute)"
  if dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "install ok installed"; then
    src="$(dpkg -L dataset-fashion-mnist | grep -m1 'train-images-idx3-ubyte.gz$' | xargs dirname)"
  else
    deb_x "$work/fmnist" dataset-fashion-mnist
    src="$work/fmnist/usr/share/datasets/fashion-mnist"
  fi
  rm -rf "$d"
  mkdir -p "$d"
  for f in "$src"/*-ubyte.gz; do
    gzip -dc "$f" | xz -9e -T0 > "$d/$(basename "$f" .gz).xz"
  done
  echo "$v" > "$d/.stamp"
  fetched+=("$v (as .xz)")
fi

# ---- what is there -----------------------------------------------------------------------
fe_version="$(awk '/define CUDNN_FRONTEND_(MAJOR|MINOR|PATCH)_VERSION/ {printf "%s%s", sep, $3; sep="."}' \
  "$tp/cudnn_frontend/include/cudnn_frontend_version.h")"
{
  echo "# third_party/ for vitcuda: made by tools/gpu/offline_deps.sh, $(date -u +%Y-%m-%d), Debian $codename"
  for f in googletest/.stamp benchmark/.stamp nlohmann_json/.stamp cli11/.stamp stb/.stamp sysroot.stamp \
           data/fashion-mnist/.stamp; do
    cat "$tp/$f"
  done
  echo "nvidia-cudnn-frontend $fe_version"
} > "$tp/MANIFEST.txt"

if [[ ${#fetched[@]} -gt 0 ]]; then
  log "fetched:"
  printf '  %s\n' "${fetched[@]}"
else
  log "nothing to fetch"
fi
(cd "$tp" && du -sh -- */ sysroot.tar.xz 2>/dev/null | sed 's/^/  /')
total="$(du -sb "$tp" | cut -f1)"
tracked="$(cd "$root" && git ls-files -z 2>/dev/null | xargs -0 cat 2>/dev/null | wc -c || echo 0)"
log "third_party: $(numfmt --to=iec-i --suffix=B "$total"); with the tracked tree: $(numfmt --to=iec-i --suffix=B $((total + tracked))) of the 64 MiB a carry allows"
if (( total > 40 * 1024 * 1024 )); then
  echo "offline_deps: warning: third_party is over 40 MiB; the carry limit is 64 MiB in all" >&2
fi
