#!/usr/bin/env python3
"""Runs a command that must fail: a non-zero exit within --timeout seconds
whose output contains --expect. Used for fault drills (a rank that aborts
must end the whole job, not hang it)."""
import argparse
import subprocess
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--timeout", type=float, required=True)
parser.add_argument("--expect", required=True)
parser.add_argument("command", nargs=argparse.REMAINDER)
args = parser.parse_args()
command = args.command[1:] if args.command[:1] == ["--"] else args.command
try:
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=args.timeout, text=True)
except subprocess.TimeoutExpired:
    sys.exit(f"expect_failure: still running after {args.timeout:.0f} s (a hang)")
if run.returncode == 0:
    sys.exit("expect_failure: the command succeeded:\n" + run.stdout)
if args.expect not in run.stdout:
    sys.exit(f"expect_failure: '{args.expect}' not in the output:\n" + run.stdout)
print(f"failed as expected (exit {run.returncode})")
