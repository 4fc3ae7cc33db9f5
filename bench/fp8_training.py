#!/usr/bin/env python3
"""FP8 vs float32 training from the same seeds: relative loss gap and a plot.

Usage: fp8_training.py OUT.svg MODEL FP32.jsonl FP8.jsonl [FP32.jsonl FP8.jsonl ...]
Each pair is one data seed trained twice from the same initialisation. Two
runs diverge chaotically after a few steps, so one pair's gap is noisy; the
pairs' mean is the number to compare with the paper's bar. Prints, per pair
and averaged over pairs, the mean |relative gap| per step and the relative
gap over the last quarter of the steps, and draws the first pair's curves
and every pair's gap (window means of 10 steps) as one SVG. Reads the JSON
lines `dsv3c train --log-json` writes; plain Python, no plotting library.
"""
import json
import sys

COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2"]


def losses(path):
    return [json.loads(line)["loss"] for line in open(path) if line.strip()]


def polyline(values, x0, y0, width, height, lo, hi, color, n=None):
    n = max((n or len(values)) - 1, 1)
    pts = " ".join(
        f"{x0 + width * i / n:.1f},{y0 + height * (1 - (v - lo) / (hi - lo)):.1f}"
        for i, v in enumerate(values))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'


def window_means(values, width=10):
    return [sum(values[i:i + width]) / len(values[i:i + width])
            for i in range(0, len(values), width)]


def pair_gap(fp32, fp8):
    n = min(len(fp32), len(fp8))
    fp32, fp8 = fp32[:n], fp8[:n]
    gaps = [(b - a) / a for a, b in zip(fp32, fp8)]
    q = max(n // 4, 1)
    tail32, tail8 = sum(fp32[-q:]) / q, sum(fp8[-q:]) / q
    return {"steps": n, "mean_abs_relative_gap": sum(abs(g) for g in gaps) / n,
            "last_quarter_relative_gap": (tail8 - tail32) / tail32,
            "final_loss_fp32": fp32[-1], "final_loss_fp8": fp8[-1]}


def main():
    out, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    pairs = [(losses(a), losses(b)) for a, b in zip(paths[::2], paths[1::2])]
    runs = [pair_gap(a, b) for a, b in pairs]
    n = min(r["steps"] for r in runs)
    mean_abs = sum(r["mean_abs_relative_gap"] for r in runs) / len(runs)
    tail = sum(r["last_quarter_relative_gap"] for r in runs) / len(runs)

    fp32, fp8 = pairs[0][0][:n], pairs[0][1][:n]
    lo, hi = min(fp32 + fp8), max(fp32 + fp8)
    w, h, m = 640, 300, 50
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 2 * m}" height="{h + 2 * m + 160}" font-family="sans-serif" font-size="12">',
           f'<text x="{m}" y="20">Training loss of the {model} model, float32 vs FP8 (same initialisation and data, {n} steps)</text>',
           f'<rect x="{m}" y="{m}" width="{w}" height="{h}" fill="none" stroke="#888"/>',
           f'<text x="5" y="{m + 10}">{hi:.2f}</text><text x="5" y="{m + h}">{lo:.2f}</text>',
           polyline(fp32, m, m, w, h, lo, hi, "#1f77b4"),
           polyline(fp8, m, m, w, h, lo, hi, "#d62728"),
           f'<text x="{m + w - 200}" y="{m + 20}" fill="#1f77b4">float32 (first seed)</text>',
           f'<text x="{m + w - 200}" y="{m + 36}" fill="#d62728">FP8 (dsv3-fp8-tile-quantize)</text>']
    gy = m + h + 50
    gap_curves = [window_means([(b - a) / a for a, b in zip(x[:n], y[:n])]) for x, y in pairs]
    flat = [g for c in gap_curves for g in c] + [0.0]
    glo, ghi = min(flat), max(flat)
    if ghi == glo:
        ghi = glo + 1e-9
    svg += [f'<text x="{m}" y="{gy - 24}">relative gap (FP8 - fp32) / fp32, means of 10 steps, one line per seed ({len(pairs)}):</text>',
            f'<text x="{m}" y="{gy - 8}">mean |gap| per step {mean_abs:.3%}, last quarter {tail:+.3%} (mean over seeds)</text>',
            f'<rect x="{m}" y="{gy}" width="{w}" height="100" fill="none" stroke="#888"/>',
            f'<text x="5" y="{gy + 10}">{ghi:+.1%}</text><text x="5" y="{gy + 100}">{glo:+.1%}</text>',
            polyline([0.0, 0.0], m, gy, w, 100, glo, ghi, "#888")]
    svg += [polyline(c, m, gy, w, 100, glo, ghi, COLORS[i % len(COLORS)])
            for i, c in enumerate(gap_curves)]
    svg.append("</svg>")
    open(out, "w").write("\n".join(svg))
    print(json.dumps({"model": model, "steps": n, "seeds": len(runs),
                      "mean_abs_relative_gap": mean_abs,
                      "last_quarter_relative_gap": tail, "per_seed": runs}))


if __name__ == "__main__":
    main()
