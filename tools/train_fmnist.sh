#!/usr/bin/env bash
# README command 1: install dependencies, build (Release), train the default ViT on
# Fashion-MNIST (on the GPU when one is present and supported, otherwise on the CPU).
#
# Builds in build/train (BUILD_DIR= to change), with the tests and benchmarks off; command 2
# (tools/test.sh) builds in build/test. Every option is passed on each configure, so a folder
# configured otherwise before is switched back. Extra arguments go to vit_train; OUTPUT= sets
# its output folder (runs/vit_fmnist).
# CONFIGURE_ONLY=1: configure and stop (no setup, no build, no training; tests/readme_commands.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${CONFIGURE_ONLY:-0}" == 1 ]] || bash tools/setup.sh
build=${BUILD_DIR:-build/train}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITCUDA_BUILD_TESTS=OFF \
  -DVITCUDA_BUILD_BENCH=OFF -DVITCUDA_BUILD_TOOLS=ON -DVITCUDA_NATIVE=ON \
  -DVITCUDA_WERROR="${VITCUDA_WERROR:-OFF}"
[[ "${CONFIGURE_ONLY:-0}" == 1 ]] && exit 0
cmake --build "$build" -j2 --target vit_train
exec "$build/tools/vit_train" --model vit_fmnist --data-dir /usr/share/datasets/fashion-mnist \
  --device auto --output "${OUTPUT:-runs/vit_fmnist}" "$@"
