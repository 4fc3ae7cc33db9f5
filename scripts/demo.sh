#!/usr/bin/env bash
# The main job on the embedded default: build, then train the bundled tiny
# DeepSeek-V3-architecture model on the bundled corpus (KJV Genesis+Exodus,
# byte-level tokens) with its recipe (models/tiny/tiny.toml): progress,
# JSON-lines metrics, a loss-curve SVG and a hub-layout checkpoint land in
# build/demo. Extra flags go to `dsv3c train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=build/demo
mkdir -p "$out"
build/bin/dsv3c train models/tiny/tiny.toml --save "$out/checkpoint" \
  --log-json "$out/train.jsonl" --plot "$out/loss.svg" "$@"
# The numbers the README quotes: first and last loss, median throughput.
log="$out/train.jsonl"
losses=$(sed -n 's/.*[{,]"loss":\([-0-9.e+]*\).*/\1/p' "$log")
median=$(sed -n 's/.*"tokens_per_s":\([-0-9.e+]*\).*/\1/p' "$log" | sort -g |
         awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
printf 'demo: loss %.2f -> %.2f over %d steps, median %.0f tokens/s\n' \
  "$(head -1 <<<"$losses")" "$(tail -1 <<<"$losses")" "$(wc -l <<<"$losses")" "$median"
