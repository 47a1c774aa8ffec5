#!/usr/bin/env bash
# README command 2: install dependencies, build everything (Release), run the whole test suite.
#
# Builds in build/test (BUILD_DIR= to change), its own folder: command 1 (tools/train_fmnist.sh)
# builds in build/train with the tests off. Every option the suite relies on is passed on each
# configure, so a folder configured otherwise before is switched back, and ctest fails when it
# finds no tests. VITCUDA_WERROR=ON (CI) makes the project's warnings errors.
# CONFIGURE_ONLY=1: configure and stop (no setup, no build, no tests; tests/readme_commands.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${CONFIGURE_ONLY:-0}" == 1 ]] || bash tools/setup.sh
build=${BUILD_DIR:-build/test}
args=(-DCMAKE_BUILD_TYPE=Release -DVITCUDA_BUILD_TESTS=ON -DVITCUDA_BUILD_BENCH=ON
      -DVITCUDA_BUILD_TOOLS=ON -DVITCUDA_EMU_SANITIZE=ON -DVITCUDA_NATIVE=ON
      -DVITCUDA_WERROR="${VITCUDA_WERROR:-OFF}")
# Without a CUDA toolkit the emulation build compiles against the headers tools/setup.sh put in
# third_party/cuda/include, where CMake looks for them (VITCUDA_THIRD_PARTY_DIR).
if [[ -n "${VITCUDA_THIRD_PARTY_DIR:-}" ]]; then
  args+=(-DVITCUDA_THIRD_PARTY_DIR="$VITCUDA_THIRD_PARTY_DIR")
fi
cmake -S . -B "$build" -G Ninja "${args[@]}"
[[ "${CONFIGURE_ONLY:-0}" == 1 ]] && exit 0
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure --no-tests=error -j2
