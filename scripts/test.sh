#!/usr/bin/env bash
# Builds (via setup.sh) and runs the whole test suite: lit, gtest, end-to-end;
# then builds and tests the runtime core alone (DSV3_ENABLE_COMPILER=OFF: no
# LLVM or MLIR on its include or link lines, and the system's C++ compiler
# instead of clang) in build-runtime/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
(cd build && ctest --output-on-failure -j2)

if [ ! -f build-runtime/build.ninja ]; then
  cmake -G Ninja -S . -B build-runtime -DCMAKE_BUILD_TYPE=Release -DDSV3_ENABLE_COMPILER=OFF
fi
ninja -C build-runtime -j"${DSV3_JOBS:-2}"
if grep -qiE -- '-I[^ ]*(llvm|mlir)|lib(LLVM|MLIR)' build-runtime/build.ninja; then
  echo "test: the runtime-only build mentions LLVM or MLIR" >&2
  exit 1
fi
(cd build-runtime && ctest --output-on-failure -j2)
