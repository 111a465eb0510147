#!/usr/bin/env bash
# Installs what vitsae needs on a fresh Debian 12 machine (run as root, or with sudo available), then the npm
# packages (offline-safe: onnxruntime's CUDA download is skipped) and the native SAE core.
set -euo pipefail
cd "$(dirname "$0")/.."
# libopenblas-dev: the SAE core's BLAS; pkgconf: pkg-config, which finds it for the build. python3-torch/-torchvision/
# -onnx: test fixtures and the benchmark's PyTorch reference only, never used at run time. dataset-fashion-mnist: the real-image test data. chromium: the
# browser tests of the feature browser (driven by playwright-core; never `npx playwright install`).
# python3-scipy/-pandas: the test that `vitsae export` files open with scipy.sparse.load_npz and pandas.read_csv.
packages=(libopenblas-dev pkgconf python3-torch python3-torchvision python3-onnx python3-scipy python3-pandas dataset-fashion-mnist chromium)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
export ONNXRUNTIME_NODE_INSTALL=skip
npm ci --no-audit --no-fund
