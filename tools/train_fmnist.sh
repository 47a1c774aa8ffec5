#!/usr/bin/env bash
# README command 1: install dependencies, build (Release), train the default ViT on
# Fashion-MNIST (on the GPU when one is present and supported, otherwise on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITCUDA_BUILD_TESTS=OFF -DVITCUDA_BUILD_BENCH=OFF
cmake --build "$build" -j2 --target vit_train
exec "$build/tools/vit_train" --model vit_fmnist --data-dir /usr/share/datasets/fashion-mnist \
  --device auto --output "${OUTPUT:-runs/vit_fmnist}" "$@"
