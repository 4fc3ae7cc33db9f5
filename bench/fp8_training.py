#!/usr/bin/env python3
"""FP8 vs float32 training from the same seed: relative loss gap and a plot.

Usage: fp8_training.py FP32.jsonl FP8.jsonl OUT.svg [MODEL]
Prints the mean relative gap over the run and over its last quarter, and
writes both loss curves (and their relative gap) as one SVG. Reads the JSON
lines `dsv3c train --log-json` writes; plain Python, no plotting library.
"""
import json
import sys


def losses(path):
    return [json.loads(line)["loss"] for line in open(path) if line.strip()]


def polyline(values, x0, y0, width, height, lo, hi, color):
    n = max(len(values) - 1, 1)
    pts = " ".join(
        f"{x0 + width * i / n:.1f},{y0 + height * (1 - (v - lo) / (hi - lo)):.1f}"
        for i, v in enumerate(values))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'


def main():
    fp32, fp8 = losses(sys.argv[1]), losses(sys.argv[2])
    model = sys.argv[4] if len(sys.argv) > 4 else "model"
    n = min(len(fp32), len(fp8))
    fp32, fp8 = fp32[:n], fp8[:n]
    gaps = [(b - a) / a for a, b in zip(fp32, fp8)]
    tail = gaps[-max(n // 4, 1):]
    mean_abs = sum(abs(g) for g in gaps) / n
    tail_mean = sum(tail) / len(tail)
    lo, hi = min(fp32 + fp8), max(fp32 + fp8)
    w, h, m = 640, 300, 50
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 2 * m}" height="{h + 2 * m + 140}" font-family="sans-serif" font-size="12">',
           f'<text x="{m}" y="20">Training loss of the {model} model, float32 vs FP8 (same seed, {n} steps)</text>',
           f'<rect x="{m}" y="{m}" width="{w}" height="{h}" fill="none" stroke="#888"/>',
           f'<text x="5" y="{m + 10}">{hi:.2f}</text><text x="5" y="{m + h}">{lo:.2f}</text>',
           polyline(fp32, m, m, w, h, lo, hi, "#1f77b4"),
           polyline(fp8, m, m, w, h, lo, hi, "#d62728"),
           f'<text x="{m + w - 160}" y="{m + 20}" fill="#1f77b4">float32</text>',
           f'<text x="{m + w - 160}" y="{m + 36}" fill="#d62728">FP8 (dsv3-fp8-tile-quantize)</text>']
    gy = m + h + 40
    glo, ghi = min(gaps + [0.0]), max(gaps + [0.0])
    if ghi == glo:
        ghi = glo + 1e-9
    svg += [f'<text x="{m}" y="{gy - 8}">relative gap (FP8 - fp32) / fp32: mean |gap| {mean_abs:.3%}, last quarter {tail_mean:+.3%}</text>',
            f'<rect x="{m}" y="{gy}" width="{w}" height="90" fill="none" stroke="#888"/>',
            polyline([0.0] * n, m, gy, w, 90, glo, ghi, "#888"),
            polyline(gaps, m, gy, w, 90, glo, ghi, "#2ca02c"),
            "</svg>"]
    open(sys.argv[3], "w").write("\n".join(svg))
    print(json.dumps({"model": model, "steps": n, "mean_abs_relative_gap": mean_abs,
                      "last_quarter_relative_gap": tail_mean,
                      "final_loss_fp32": fp32[-1], "final_loss_fp8": fp8[-1]}))


if __name__ == "__main__":
    main()
