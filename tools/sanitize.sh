#!/usr/bin/env bash
# Run the native kernel tests (vitcuda_kernel_tests_cuda) under compute-sanitizer: memcheck
# (out-of-bounds and misaligned global/shared accesses, leaks), racecheck (shared-memory hazards,
# which the CPU emulator cannot see), synccheck (illegal __syncthreads/__syncwarp use) and
# initcheck (reads of uninitialised global memory). Needs a CUDA GPU.
#
#   tools/sanitize.sh [build-dir] [gtest filter]
#   e.g. tools/sanitize.sh build/gpu 'Backends/LayerNorm.*'
#
# Builds vitcuda_kernel_tests_cuda (tests/CMakeLists.txt) in build-dir (default: build/sanitize,
# configured for the GPU that is present when not configured yet). Exits non-zero when any tool
# reports an error.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/sanitize}"
filter="${2:-*}"

sanitizer="$(command -v compute-sanitizer || true)"
if [[ -z "$sanitizer" && -x /usr/local/cuda/bin/compute-sanitizer ]]; then
  sanitizer=/usr/local/cuda/bin/compute-sanitizer
fi
if [[ -z "$sanitizer" ]]; then
  echo "sanitize.sh: compute-sanitizer not found (it ships with the CUDA toolkit)" >&2
  exit 2
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "sanitize.sh: no CUDA GPU is visible; the native tests need one" >&2
  exit 2
fi

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')"
  [[ "$arch" == 90 ]] && arch=90a  # mma/cp.async paths are the same; 90a enables the sm_90 extras
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" -DVITCUDA_CUDA=ON \
    -DVITCUDA_BUILD_TESTS=ON -DVITCUDA_BUILD_BENCH=OFF -DVITCUDA_BUILD_TOOLS=OFF -DVITCUDA_NATIVE=ON
fi
cmake --build "$build" --target vitcuda_kernel_tests_cuda -j "$(nproc)"
tests="$build/tests/vitcuda_kernel_tests_cuda"

# The Misuse tests provoke errors on purpose and are emulator-only (they skip natively).
gtest_filter="${filter}:-Misuse.*"
status=0
for tool in memcheck racecheck synccheck initcheck; do
  extra=()
  case "$tool" in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report all) ;;
  esac
  echo "==== compute-sanitizer --tool $tool"
  if ! "$sanitizer" --tool "$tool" --error-exitcode 99 "${extra[@]}" \
      "$tests" --gtest_filter="$gtest_filter" --gtest_brief=1; then
    echo "==== $tool: FAILED" >&2
    status=1
  else
    echo "==== $tool: clean"
  fi
done
exit $status
