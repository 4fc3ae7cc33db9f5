#!/usr/bin/env python3
"""dsv3c against its peers, side by side in one run (called by bench/run.sh).

- GEMMs of the model shapes: dsv3c's kernels (from the Google Benchmark JSON
  of dsv3-bench-gemm) against OpenBLAS sgemm (through ctypes) and PyTorch's
  float32 and BF16 matmul.
- The tiny and small models: forward and training-step tokens/s, peak RSS and
  cold/warm compile of `dsv3c` against the PyTorch eager implementation in
  bench/torch_peer.py, on the same weights and shapes. PyTorch runs with 1 and
  2 threads (OpenMP and OpenBLAS set alike); the faster setting is compared.

  compare.py GEMM_JSON OUT_DIR [--smoke]      writes OUT_DIR/compare.json
Run with the Python that has torch (Debian's /usr/bin/python3).
"""
import ctypes
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSV3C = os.path.join(ROOT, "build", "bin", "dsv3c")
PEER = os.path.join(ROOT, "bench", "torch_peer.py")


def run(cmd, env=None):
    """Runs cmd; returns (stdout+stderr text, wall seconds, peak RSS MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed:\n{out[-2000:]}")
    return out, wall, usage.ru_maxrss / 1024


def write_tokens(path, batch, seq, vocab, seed):
    """A safetensors file with random input_ids [batch, seq] (int64)."""
    import random
    rng = random.Random(seed)
    data = struct.pack(f"<{batch * seq}q", *(rng.randrange(vocab) for _ in range(batch * seq)))
    header = json.dumps({"input_ids": {"dtype": "I64", "shape": [batch, seq],
                                       "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def peer_env(threads):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    return env


def peer(model_dir, mode, batch, seq, steps, threads):
    out, _, rss = run([sys.executable, PEER, model_dir, "--batch", str(batch), "--seq",
                       str(seq), "--steps", str(steps), "--mode", mode,
                       "--threads", str(threads)], env=peer_env(threads))
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss
    return result


def best_peer(model_dir, mode, batch, seq, steps):
    runs = {t: peer(model_dir, mode, batch, seq, steps, t) for t in (1, 2)}
    best = max(runs, key=lambda t: runs[t]["tokens_per_s"])
    return runs[best], {t: r["tokens_per_s"] for t, r in runs.items()}


def dsv3c_forward(model, tokens, batch, seq, repeat, cache):
    out, _, rss = run([DSV3C, "eval", model, "--tokens", tokens, "-o", tokens + ".out",
                       "--repeat", str(repeat), "--cache-dir", cache])
    tps = float(re.search(r"eval: median [0-9.]+ ms over \d+ calls, ([0-9.]+) tok/s", out)[1])
    return tps, rss


def dsv3c_train(model, batch, seq, steps, cache, log):
    _, _, rss = run([DSV3C, "train", model, "--steps", str(steps), "--batch", str(batch),
                     "--seq", str(seq), "--lr", "1e-3", "--warmup-steps", "0",
                     "--weight-decay", "0.1", "--grad-clip", "1", "--mtp-weight", "0.3",
                     "--balance-alpha", "1e-4", "--log-json", log, "--cache-dir", cache])
    rates = [json.loads(l)["tokens_per_s"] for l in open(log)]
    # The first step pays for first touches of every buffer.
    return statistics.median(rates[1:] if len(rates) > 1 else rates), rss


def compile_times(model, tokens, cache):
    """Wall time of `dsv3c eval` with an empty compile cache, then a warm one."""
    subprocess.run(["rm", "-rf", cache], check=True)
    cmd = [DSV3C, "eval", model, "--tokens", tokens, "-o", tokens + ".out", "--cache-dir", cache]
    return run(cmd)[1], run(cmd)[1]


def compare_model(name, model_dir, batch, seq, steps, out_dir):
    vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
    tokens = os.path.join(out_dir, f"{name}-tokens.safetensors")
    write_tokens(tokens, batch, seq, vocab, seed=7)
    cache = os.path.join(out_dir, f"{name}-cache")
    cold, warm = compile_times(model_dir, tokens, cache)
    fwd, fwd_rss = dsv3c_forward(model_dir, tokens, batch, seq, max(3, steps), cache)
    trn, trn_rss = dsv3c_train(model_dir, batch, seq, steps, cache,
                               os.path.join(out_dir, f"{name}-train.jsonl"))
    pf, pf_threads = best_peer(model_dir, "forward", batch, seq, max(3, steps))
    pt, pt_threads = best_peer(model_dir, "train", batch, seq, steps)
    return {"model": name, "batch": batch, "seq": seq,
            "forward": {"dsv3c_tokens_per_s": fwd, "torch_tokens_per_s": pf["tokens_per_s"],
                        "ratio": fwd / pf["tokens_per_s"], "torch_threads": pf["threads"],
                        "torch_by_threads": pf_threads,
                        "dsv3c_peak_rss_mib": fwd_rss, "torch_peak_rss_mib": pf["peak_rss_mib"]},
            "train": {"dsv3c_tokens_per_s": trn, "torch_tokens_per_s": pt["tokens_per_s"],
                      "ratio": trn / pt["tokens_per_s"], "torch_threads": pt["threads"],
                      "torch_by_threads": pt_threads,
                      "dsv3c_peak_rss_mib": trn_rss, "torch_peak_rss_mib": pt["peak_rss_mib"]},
            "eval_wall_s": {"cold": cold, "warm": warm}}


def openblas_sgemm():
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
            lib.cblas_sgemm  # noqa: B018 (presence check)
            return lib
        except (OSError, AttributeError):
            continue
    return None


def time_gflops(fn, flops, min_time):
    fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times) / 1e9


def compare_gemms(gemm_json, min_time):
    import torch
    lib = openblas_sgemm()
    ours = {}
    for b in json.load(open(gemm_json))["benchmarks"]:
        kind, shape = b["name"].split("/", 1)
        ours.setdefault(shape, {})[kind] = b.get("GFLOP/s", 0) / 1e9
    rows = []
    for shape, v in ours.items():
        if "BM_Microkernel" not in v:
            continue
        m, n, k = (int(x) for x in shape.split("/")[:3])
        flops = 2.0 * m * n * k
        row = {"shape": shape, "dsv3c_fp32": v["BM_Microkernel"], "dsv3c_bf16": v.get("BM_BF16"),
               "dsv3c_fp8": v.get("BM_FP8")}
        a, b = torch.rand(m, k), torch.rand(n, k)
        c = torch.zeros(m, n)
        if lib:
            f = ctypes.POINTER(ctypes.c_float)
            pa, pb, pc = (ctypes.cast(t.data_ptr(), f) for t in (a, b, c))
            one = ctypes.c_float(1.0)
            # C += A B^T, row-major (CblasRowMajor=101, NoTrans=111, Trans=112).
            row["openblas_sgemm"] = time_gflops(
                lambda: lib.cblas_sgemm(101, 111, 112, m, n, k, one, pa, k, pb, k, one, pc, n),
                flops, min_time)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a16, b16 = a.bfloat16(), b.bfloat16()
            fp32 = time_gflops(lambda: torch.addmm(c, a, b.t(), out=c), flops, min_time)
            bf16 = time_gflops(lambda: torch.matmul(a16, b16.t()), flops, min_time)
            row["torch_fp32"] = max(row.get("torch_fp32", 0), fp32)
            row["torch_bf16"] = max(row.get("torch_bf16", 0), bf16)
        row["fp32_over_openblas"] = row["dsv3c_fp32"] / row["openblas_sgemm"] if lib else None
        row["bf16_over_torch_bf16"] = (row["dsv3c_bf16"] / row["torch_bf16"]
                                       if row["dsv3c_bf16"] else None)
        rows.append(row)
    return rows


def main():
    if sys.argv[1] == "--gemms":  # the child process of the GEMM comparison
        json.dump(compare_gemms(sys.argv[2], float(sys.argv[3])), sys.stdout)
        return
    gemm_json, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    smoke = "--smoke" in sys.argv
    if subprocess.run([sys.executable, "-c", "import torch"],
                      stderr=subprocess.DEVNULL).returncode != 0:
        print("compare.py: PyTorch not found (apt install python3-torch); peers skipped")
        json.dump({"skipped": "no torch"}, open(os.path.join(out_dir, "compare.json"), "w"))
        return
    # Torch is imported only in children: a child's peak RSS as reported by
    # wait4 starts from its parent's at fork, so this process stays small.
    gemms, _, _ = run([sys.executable, __file__, "--gemms", gemm_json,
                       str(0.05 if smoke else 0.5)])
    result = {"gemm": json.loads(gemms.strip().splitlines()[-1])}
    small_init = os.path.join(out_dir, "small-init")
    models = [("tiny", os.path.join(ROOT, "models", "tiny"), 2, 64, 3 if smoke else 10)]
    if not smoke:
        # The small model's weights: its seeded initialisation after one step,
        # saved in hub layout so that both sides load the same checkpoint.
        if not os.path.exists(os.path.join(small_init, "model.safetensors")):
            run([DSV3C, "train", os.path.join(ROOT, "models", "small", "small.toml"),
                 "--steps", "1", "--save", small_init,
                 "--cache-dir", os.path.join(out_dir, "small-cache")])
        models.append(("small", small_init, 4, 256, 6))
    result["models"] = [compare_model(*m, out_dir) for m in models]
    json.dump(result, open(os.path.join(out_dir, "compare.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
