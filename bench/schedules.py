#!/usr/bin/env python3
"""Pipeline schedules side by side, from `dsv3c schedule`'s simulator.

For each schedule at the same number of pipeline ranks and micro-batches
(default P=4, N=20) and each cost set, prints one Markdown row: stages,
makespan, worst bubble (simulated) beside the DualPipe README's formula,
and peak activations per rank (stage x micro-batch units) beside its
formula. DualPipeV is listed twice: on P ranks (2P stages) and on P/2 ranks
(P stages, the README's "same number of stages" comparison).

  schedules.py DSV3C [--pp 4] [--micro-batches 20] [--costs F=1,B=2,W=1,FB=3 ...]
"""
import argparse
import re
import subprocess
import sys


def simulate(dsv3c, schedule, pp, n, costs):
    out = subprocess.run([dsv3c, "schedule", "--schedule", schedule, "--pp", str(pp),
                          "--micro-batches", str(n), "--costs", costs],
                         check=True, capture_output=True, text=True).stdout
    head = re.search(r"(\d+) ranks, (\d+) stages", out)
    tail = re.search(r"makespan ([\d.]+), worst bubble ([\d.]+) \(the DualPipe README's "
                     r"formula: ([-\d.]+)\)", out)
    act = re.search(r"peak activations (\d+) stage x micro-batch units \(formula: (\d+)\)", out)
    if not (head and tail and act):
        sys.exit(f"unexpected output of dsv3c schedule --schedule {schedule}:\n{out}")
    return head.groups() + tail.groups() + act.groups()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dsv3c")
    ap.add_argument("--pp", type=int, default=4)
    ap.add_argument("--micro-batches", type=int, default=20)
    ap.add_argument("--costs", nargs="+", default=["F=1,B=2,W=1,FB=3", "F=1,B=2,W=1,FB=2.5"])
    a = ap.parse_args()
    print("| costs | schedule | ranks | stages | makespan | worst bubble | formula | "
          "peak activations | formula |")
    print("|---|---|---|---|---|---|---|---|---|")
    for costs in a.costs:
        rows = [("1f1b", a.pp), ("zb1p", a.pp), ("dualpipe", a.pp), ("dualpipev", a.pp)]
        if a.pp % 2 == 0 and a.pp > 2:
            rows.append(("dualpipev", a.pp // 2))
        for schedule, pp in rows:
            ranks, stages, makespan, bubble, formula, peak, peak_formula = simulate(
                a.dsv3c, schedule, pp, a.micro_batches, costs)
            print(f"| {costs} | {schedule} | {ranks} | {stages} | {makespan} | {bubble} | "
                  f"{formula} | {peak} | {peak_formula} |")


if __name__ == "__main__":
    main()
