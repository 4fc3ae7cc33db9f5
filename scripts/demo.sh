#!/usr/bin/env bash
# The main job on the embedded default: build, then evaluate the bundled tiny
# DeepSeek-V3-architecture model on its reference batch and print the losses.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p build/demo
exec build/bin/dsv3c eval models/tiny/tiny.toml \
  --tokens tests/golden/tiny/reference.safetensors -o build/demo/eval.safetensors "$@"
