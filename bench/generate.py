#!/usr/bin/env python3
"""Generation benchmark: dsv3c generate against the PyTorch eager peer with a KV cache.

On a model trained on the bundled corpus with the MTP loss (the `small`
model by default: `dsv3c train models/small/small.toml --steps S --save DIR`
unless --model names a checkpoint), greedy generation of corpus prompts at
batch 1 and 8: prefill tok/s, TTFT, decode tok/s, time per output token and
cache bytes per token, for dsv3c (latent cache, absorbed MLA decode),
dsv3c with MTP speculative decoding (acceptance rate, mean acceptance length,
the routed experts adjacent tokens share) and bench/torch_peer.py --mode
generate (decompressed K/V cache; best of 1 and 2 threads), each after
an untimed warm-up run. The greedy
tokens of all three must agree. Ratios only compare numbers of this run.

  bench/generate.py [--model DIR] [--train-steps 150] [--prompt 64] [--new 64] [--json OUT]
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSV3C = os.path.join(ROOT, "build", "bin", "dsv3c")
PEER = os.path.join(ROOT, "bench", "torch_peer.py")
CORPUS = os.path.join(ROOT, "models", "corpus", "kjv-genesis-exodus.txt")


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"generate.py: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r


def write_prompts(path, batch, length):
    """input_ids [batch, length]: corpus bytes (the models' byte-level tokens) from spread offsets."""
    data = open(CORPUS, "rb").read()
    ids = []
    for b in range(batch):
        start = (b * 7919 + 1) * 1013 % (len(data) - length)
        ids.extend(data[start:start + length])
    header = json.dumps({"input_ids": {"dtype": "I64", "shape": [batch, length],
                                       "data_offsets": [0, 8 * len(ids)]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + struct.pack(f"<{len(ids)}q", *ids))


def read_i64(path, name):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        start, end = header[name]["data_offsets"]
        f.seek(8 + n + start)
        raw = f.read(end - start)
    return list(struct.unpack(f"<{len(raw) // 8}q", raw))


def dsv3c_generate(model, prompts, new, out, speculative):
    cmd = [DSV3C, "generate", model, "--tokens", prompts, "--max-new-tokens", str(new),
           "-o", out, "--speculative", "mtp" if speculative else "none", "--repeat", "2"]
    err = run(cmd).stderr
    m = re.search(r"prefill (\d+) tokens ([\d.]+) tok/s, TTFT ([\d.]+) ms, decode (\d+) tokens "
                  r"([\d.]+) tok/s \(([\d.]+) ms per step\), latent cache (\d+) B/token", err)
    if not m:
        sys.exit(f"generate.py: no statistics in dsv3c's output:\n{err}")
    r = {"prefill_tokens_per_s": float(m[2]), "ttft_s": float(m[3]) / 1e3,
         "decode_tokens_per_s": float(m[5]), "step_s": float(m[6]) / 1e3,
         "cache_bytes_per_token": int(m[7]), "generated_ids": read_i64(out, "generated_ids")}
    a = re.search(r"acceptance rate ([\d.]+), mean acceptance length ([\d.]+)", err)
    if a:
        r.update(acceptance_rate=float(a[1]), mean_acceptance_length=float(a[2]))
    o = re.search(r"adjacent tokens share ([\d.]+)", err)
    if o:
        r["expert_overlap"] = float(o[1])
    return r


def peer_generate(model, prompts, new):
    best = None
    for threads in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        out = run(["/usr/bin/python3", PEER, model, "--mode", "generate", "--prompts", prompts,
                   "--new-tokens", str(new), "--steps", "2", "--warmup", "1",
                   "--threads", str(threads)], env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        if best is None or r["decode_tokens_per_s"] > best["decode_tokens_per_s"]:
            best = r
    best["generated_ids"] = [t for row in best["generated_ids"] for t in row]
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint directory (default: train the small model)")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--new", type=int, default=64, help="generated tokens per sequence")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    out = os.path.join(ROOT, "build", "bench", "out", "generate")
    os.makedirs(out, exist_ok=True)
    model = args.model
    if not model:
        model = os.path.join(out, f"small-{args.train_steps}")
        if not os.path.exists(os.path.join(model, "model.safetensors")):
            print(f"training models/small for {args.train_steps} steps (MTP loss) ...",
                  file=sys.stderr)
            run([DSV3C, "train", os.path.join(ROOT, "models/small/small.toml"), "--steps",
                 str(args.train_steps), "--save", model])
    results = {"model": model, "prompt": args.prompt, "new_tokens": args.new, "batches": {}}
    for batch in (1, 8):
        prompts = os.path.join(out, f"prompts-{batch}.safetensors")
        write_prompts(prompts, batch, args.prompt)
        plain = dsv3c_generate(model, prompts, args.new, os.path.join(out, "plain.safetensors"),
                               False)
        mtp = dsv3c_generate(model, prompts, args.new, os.path.join(out, "mtp.safetensors"), True)
        peer = peer_generate(model, prompts, args.new)
        agree = plain["generated_ids"] == mtp["generated_ids"] == peer["generated_ids"]
        results["batches"][batch] = {"dsv3c": plain, "dsv3c_mtp": mtp, "torch": peer,
                                     "tokens_agree": agree}
        for r in (plain, mtp, peer):
            r.pop("generated_ids")
    print(f"{'batch':>5} {'engine':<12} {'prefill tok/s':>13} {'TTFT ms':>8} {'decode tok/s':>12} "
          f"{'TPOT ms':>8} {'cache B/tok':>11}  notes")
    for batch, r in results["batches"].items():
        for name, key in (("dsv3c", "dsv3c"), ("dsv3c+MTP", "dsv3c_mtp"), ("torch eager", "torch")):
            x = r[key]
            tpot = x.get("tpot_s", batch / x["decode_tokens_per_s"])
            note = ""
            if key == "dsv3c_mtp":
                note = (f"acceptance {x['acceptance_rate']:.2f}, mean length "
                        f"{x['mean_acceptance_length']:.2f}, speed-up "
                        f"{x['decode_tokens_per_s'] / r['dsv3c']['decode_tokens_per_s']:.2f}x, "
                        f"adjacent-token expert overlap {x.get('expert_overlap', 0):.2f}")
            elif key == "dsv3c":
                note = (f"{x['decode_tokens_per_s'] / r['torch']['decode_tokens_per_s']:.2f}x "
                        f"torch decode ({r['torch']['threads']} torch threads)")
            print(f"{batch:>5} {name:<12} {x['prefill_tokens_per_s']:>13.0f} {x['ttft_s'] * 1e3:>8.1f} "
                  f"{x['decode_tokens_per_s']:>12.1f} {tpot * 1e3:>8.2f} "
                  f"{x['cache_bytes_per_token']:>11}  {note}")
        print(f"{'':>5} greedy tokens agree (dsv3c, dsv3c+MTP, torch): {r['tokens_agree']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
