#!/usr/bin/env bash
# Builds (via setup.sh) and runs the whole test suite: lit, gtest, end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build && ctest --output-on-failure -j2
