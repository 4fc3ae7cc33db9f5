#!/usr/bin/env bash
# Installs what dsv3c needs from Debian (idempotent) and builds it into build/.
# Usage: scripts/setup.sh            (install missing packages, configure, build)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build clang-22 lld-22 llvm-22-dev llvm-22-tools libmlir-22-dev
          mlir-22-tools libclang-22-dev libtbb-dev libtomlplusplus-dev libgtest-dev
          libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev python3 ccache
          openmpi-bin libopenmpi-dev libpcre2-dev libcpp-httplib-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f build/build.ninja ]; then
  cmake -G Ninja -S . -B build -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 -DLLVM_USE_LINKER=lld
fi
ninja -C build -j"${DSV3_JOBS:-2}"
