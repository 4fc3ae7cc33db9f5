#!/usr/bin/env bash
# Runs the benchmarks in one go and prints ratios (the machine is shared and
# noisy: compare only numbers from the same run). Writes bench/results.json.
#   bench/run.sh            full run
#   bench/run.sh --smoke    a few iterations (what CI would run)
set -euo pipefail
cd "$(dirname "$0")/.."
min_time=0.5
[ "${1:-}" = "--smoke" ] && min_time=0.01
ninja -C build -j2 dsv3-bench-gemm dsv3c >/dev/null
out=build/bench/out
mkdir -p "$out"

build/bench/dsv3-bench-gemm --benchmark_min_time="${min_time}" \
  --benchmark_format=json --benchmark_out="$out/gemm.json" \
  --benchmark_out_format=json >/dev/null

# End-to-end: the tiny model's forward with the microkernel vs generated loops.
time_forward() {
  build/bin/dsv3c eval models/tiny --tokens tests/golden/tiny/reference.safetensors \
    -o "$out/eval.safetensors" --mlir-timing --mlir-timing-display=list "$@" 2>&1 >/dev/null |
    python3 -c '
import re, sys
for line in sys.stdin:
    if line.rstrip().endswith(" execute"):
        print(re.findall(r"([0-9.]+) +\( *[0-9.]+%\)", line)[-1])'
}
ukernel=$(time_forward); loops=$(time_forward --no-ukernels)

# Training steps on the bundled corpus: median tokens/s over the steps.
steps=10
[ "${1:-}" = "--smoke" ] && steps=3
build/bin/dsv3c train models/tiny/tiny.toml --steps "$steps" --batch 2 --seq 32 \
  --log-json "$out/train.jsonl" >/dev/null

python3 - "$out/gemm.json" "$ukernel" "$loops" "$out/train.jsonl" <<'PY'
import json, statistics, sys
runs = json.load(open(sys.argv[1]))["benchmarks"]
by = {}
for r in runs:
    kind, shape = r["name"].split("/", 1)
    by.setdefault(shape, {})[kind] = r["GFLOP/s"]
print(f"{'GEMM C+=AB^T (M/N/K)':<24}{'ukernel GF/s':>14}{'loops GF/s':>12}{'ratio':>8}")
rows = []
for shape, v in by.items():
    u, l = v.get("BM_Microkernel", 0) / 1e9, v.get("BM_GeneratedLoops", 0) / 1e9
    ratio = u / l if l else float("nan")
    rows.append({"shape": shape, "ukernel_gflops": u, "loops_gflops": l, "ratio": ratio})
    print(f"{shape:<24}{u:>14.1f}{l:>12.1f}{ratio:>7.1f}x")
uk, lo = float(sys.argv[2]), float(sys.argv[3])
print(f"\ntiny forward (2x32 tokens, execute only): ukernel {uk*1e3:.2f} ms, loops {lo*1e3:.2f} ms, ratio {lo/uk:.1f}x")
tps = statistics.median(json.loads(l)["tokens_per_s"] for l in open(sys.argv[4]))
print(f"tiny training step (2x32 tokens, forward+backward+AdamW): {tps:.0f} tokens/s (median)")
json.dump({"gemm": rows, "tiny_forward_s": {"ukernel": uk, "loops": lo},
           "tiny_train_tokens_per_s": tps},
          open("bench/results.json", "w"), indent=1)
PY
