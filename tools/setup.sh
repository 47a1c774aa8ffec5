#!/usr/bin/env bash
# Installs what vitcuda needs to build, test and train on a fresh Debian 12 machine
# (CUDA toolkit optional: when nvcc is present the CUDA parts are built too).
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config            # build
  libopenblas-dev zlib1g-dev                  # CPU GEMM, gzip
  nlohmann-json3-dev libcli11-dev             # JSON (config, safetensors headers), CLI flags
  libgtest-dev libbenchmark-dev               # tests, microbenchmarks
  libstb-dev python3-matplotlib               # PNG/JPEG in and out, training curves (plot_history.py)
  dataset-fashion-mnist                       # the default training data
)
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
echo "setup: dependencies present"
