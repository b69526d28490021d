#!/usr/bin/env bash
# Installs the Debian 12 packages xray-dp needs, only those missing (no apt call at all when nothing is),
# with sudo only when not root. Usage: scripts/deps.sh [--test]   (--test adds what the test suite needs)
set -euo pipefail
# libjpeg-turbo and libpng decode JPEG/PNG (they report damaged files); stb_image does BMP/GIF/PNM.
pkgs=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools libstb-dev libjpeg-dev
  libpng-dev gnuplot-nox libmicrohttpd-dev nettle-dev)
# `export` (ONNX): protobuf-c's runtime and protoc-c generate the C code from libonnx-dev's onnx.proto.
pkgs+=(libprotobuf-c-dev protobuf-c-compiler libonnx-dev)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(file jq)
  # tests/test_serve*.sh: curl drives the server, headless Chromium (selenium) loads its page.
  pkgs+=(curl chromium chromium-driver python3-selenium)
  # valgrind: tests/test_rel_image.c's memcheck pass over damaged images; clang with its sanitizer and
  # libFuzzer runtime (a Recommends, so named) and LLVM's OpenMP: the fuzz targets (tests/fuzz/).
  pkgs+=(valgrind clang libclang-rt-dev libomp-dev)
  # tests/test_slurm.sh runs its own munged/slurmctld/slurmd; keep the packages' system daemons from
  # starting at install time (a policy-rc.d that says no, removed again on exit, only if none exists).
  pkgs+=(slurm-wlm munge)
  # tests/test_export.sh: the ONNX checker (python3-onnx) and onnxruntime (npm onnxruntime-node, below);
  # npm ships with NodeSource's nodejs, Debian has it as its own package.
  pkgs+=(python3-onnx python3-h5py nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
  if [ ! -e /usr/sbin/policy-rc.d ] && { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; } &&
     ! dpkg-query -W -f='${Status}' slurmd 2>/dev/null | grep -q "install ok installed"; then
    rc_sudo=""; [ "$(id -u)" -ne 0 ] && rc_sudo="sudo"
    printf '#!/bin/sh\nexit 101\n' | $rc_sudo tee /usr/sbin/policy-rc.d >/dev/null && $rc_sudo chmod 755 /usr/sbin/policy-rc.d
    trap '$rc_sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# onnxruntime-node (tests/onnx/package.json) into tests/onnx/node_modules (ignored by git), once; its
# install script would fetch CUDA binaries from nuget.org: skipped, the CPU runtime is in the package.
npm_deps() {
  [ "${1:-}" = "--test" ] || return 0
  local dir; dir="$(cd "$(dirname "$0")/.." && pwd)/tests/onnx"
  [ -e "$dir/node_modules/onnxruntime-node/package.json" ] && return 0
  echo "deps.sh: npm install onnxruntime-node into $dir/node_modules"
  ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix "$dir" --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null
}
if [ ${#missing[@]} -eq 0 ]; then npm_deps "${1:-}"; exit 0; fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps.sh: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_deps "${1:-}"
