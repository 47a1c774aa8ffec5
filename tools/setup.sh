#!/usr/bin/env bash
# Installs what vitcuda needs to build, test and train on a fresh Debian 12 machine
# (CUDA toolkit optional: when nvcc is present the CUDA parts are built too).
#
# The kernel tests compile the kernels with g++ against the CUDA toolkit's headers (cuda_bf16.h,
# cuda_fp16.h, vector_types.h and what they include), without nvcc. Without a toolkit, those
# headers come from NVIDIA's CUDA 13.0 wheels on PyPI (pip download, nothing installed into
# Python): nvidia-cuda-runtime (cuda_bf16.h, ...), nvidia-cuda-crt (crt/host_defines.h, ...) and,
# of nvidia-cuda-cccl, nv/target alone; into third_party/cuda/include (git-ignored, 5 MB), which
# tools/test.sh points CMake at.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
packages=(
  cmake ninja-build g++ pkg-config            # build
  libopenblas-dev zlib1g-dev                  # CPU GEMM, gzip
  nlohmann-json3-dev libcli11-dev             # JSON (config, safetensors headers), CLI flags
  libgtest-dev libbenchmark-dev               # tests, microbenchmarks
  libstb-dev python3-matplotlib               # PNG/JPEG in and out, training curves (plot_history.py)
  dataset-fashion-mnist                       # the default training data
  libopenmpi-dev openmpi-bin                  # data parallelism: the "mpi" communicator, mpirun (tests/mpi)
)
# The wheels of CUDA 13.0 (nvcc 13.0.88): same headers as the toolkit's.
cuda_wheels=(nvidia-cuda-runtime==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)
cuda_headers="${VITCUDA_THIRD_PARTY_DIR:-$root/third_party}/cuda"

# The folders CMake searches for cuda_bf16.h (VITCUDA_CUDA_INCLUDE_DIR) before third_party.
have_cuda_headers() {
  local d
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr; do
    [[ -n "$d" && -f "$d/include/cuda_bf16.h" ]] && return 0
  done
  return 1
}
need_cuda_headers=0
if ! have_cuda_headers && [[ "$(cat "$cuda_headers/.stamp" 2>/dev/null)" != "${cuda_wheels[*]}" ]]; then
  need_cuda_headers=1
  python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
fi

# cuobjdump for the kernel gates (ctest kernel_gates, tools/kernel_gates.py), where the native
# kernels are built (nvcc present) but the toolkit has no cuobjdump: from NVIDIA's wheels on PyPI
# (nvidia-cuda-cuobjdump, and nvidia-cuda-nvdisasm, which cuobjdump -sass runs) into
# third_party/cuobjdump/bin (git-ignored, 6 MB). Newer than nvcc 13.0: no 13.0 wheel exists, and
# a newer cuobjdump reads older cubins.
gates_wheels=(nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)
gates_dir="${VITCUDA_THIRD_PARTY_DIR:-$root/third_party}/cuobjdump"
need_cuobjdump=0
gates_nvcc="$(command -v nvcc || true)"
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
  [[ -z "$gates_nvcc" && -n "$d" && -x "$d/bin/nvcc" ]] && gates_nvcc="$d/bin/nvcc"
done
if [[ -n "$gates_nvcc" ]] && ! command -v cuobjdump >/dev/null &&
   [[ ! -x "$(dirname "$(readlink -f "$gates_nvcc")")/cuobjdump" ]] &&
   [[ "$(cat "$gates_dir/.stamp" 2>/dev/null)" != "${gates_wheels[*]}" ]]; then
  need_cuobjdump=1
  python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# fetch_wheels <kind> <dest> <wheel>...: downloads NVIDIA's wheels from PyPI and unpacks what
# <kind> needs into <dest> (replaced whole, with a .stamp naming the wheels), with each licence:
#   headers  each wheel's nvidia/*/include tree but cccl's own (CUB, Thrust, libcu++: 14 MB that
#            nothing here includes); must hold cuda_bf16.h, crt/host_defines.h, nv/target
#   tools    bin/cuobjdump and bin/nvdisasm (executable; cuobjdump must run)
fetch_wheels() {
  local kind="$1" dest="$2"
  shift 2
  local work
  work="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$work" "$@"
  python3 - "$kind" "$work/out" "$work"/*.whl <<'EOF_PY'
import os, sys, zipfile
kind, dest, wheels = sys.argv[1], sys.argv[2], sys.argv[3:]
required = {"headers": ["include/cuda_bf16.h", "include/crt/host_defines.h", "include/nv/target"],
            "tools": ["bin/cuobjdump", "bin/nvdisasm"]}[kind]
def target(name, dist):  # (path under dest, mode) of a wheel member, or None to skip it
    if name.endswith("/licenses/License.txt"):
        return f"LICENSE.{dist}.txt", 0o644
    if kind == "headers" and name.startswith("nvidia/") and "/include/" in name and not name.endswith("/"):
        rel = os.path.join("include", name.split("/include/", 1)[1])
        return None if rel.startswith("include/cccl/") else (rel, 0o644)
    if kind == "tools" and name.endswith(("/bin/cuobjdump", "/bin/nvdisasm")):
        return os.path.join("bin", os.path.basename(name)), 0o755
    return None
n = 0
for wheel in wheels:
    dist = os.path.basename(wheel).split("-")[0]
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            t = target(info.filename, dist)
            if t is None:
                continue
            out = os.path.join(dest, t[0])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                dst.write(src.read())
            os.chmod(out, t[1])
            n += 1
for r in required:
    if not os.path.exists(os.path.join(dest, r)):
        sys.exit(f"setup: the wheels hold no {r}")
print(f"setup: {n} files")
EOF_PY
  [[ "$kind" != tools ]] || "$work/out/bin/cuobjdump" --version >/dev/null
  echo "$*" > "$work/out/.stamp"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  mv "$work/out" "$dest"
  rm -rf "$work"
}

if ((need_cuda_headers)); then
  echo "setup: no CUDA toolkit headers (cuda_bf16.h): fetching ${cuda_wheels[*]} into $cuda_headers/include"
  fetch_wheels headers "$cuda_headers" "${cuda_wheels[@]}"
fi
if ((need_cuobjdump)); then
  echo "setup: nvcc without cuobjdump: fetching ${gates_wheels[*]} into $gates_dir/bin"
  fetch_wheels tools "$gates_dir" "${gates_wheels[@]}"
fi
echo "setup: dependencies present"
