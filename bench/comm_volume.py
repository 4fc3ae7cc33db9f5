#!/usr/bin/env python3
"""Measured against analytic all-to-all volume of expert parallelism.

Runs one training step of a model under `mpirun -np E dsv3c train ... --ep E`
and reads each rank's metrics (`--log-json`'s .rank-R.jsonl). The analytic
volume comes from the routing alone, taken from `dsv3c eval` of the same
weights and tokens in one process: rank e owns experts [e*E/ep, (e+1)*E/ep)
and holds the block of ceil(N/ep) consecutive tokens of each MoE layer's N
(its `dsv3.rank_rows`); every (token, choice) pair whose expert lives on
another rank is one row of `hidden` float32 values. A training step moves
each such row four times (dispatch and combine forward, their reverses
backward) and exchanges per-expert counts once per layer, so per rank
    sent = sum over layers of 2 (S_e + R_e) hidden 4 + (ep-1) (E/ep) 8 bytes,
with S_e the pairs it sends off-rank and R_e those it receives. The bench
prints both per rank; they must be equal.

Usage: bench/comm_volume.py DSV3C MODEL TOKENS --ep 2 4 [--out results.json]
  TOKENS '-' draws a fixed batch (--batch, --seq, --vocab, seeded).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def write_tokens(path, batch, seq, vocab, seed=7):
    """A [batch, seq] int64 'input_ids' safetensors file of seeded tokens."""
    state, ids = seed, []
    for _ in range(batch * seq):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        ids.append((state >> 33) % vocab)
    body = struct.pack('<%dq' % len(ids), *ids)
    header = json.dumps({'input_ids': {'dtype': 'I64', 'shape': [batch, seq],
                                       'data_offsets': [0, len(body)]}}).encode()
    header += b' ' * (-len(header) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(header)) + header + body)


def routing(eval_out):
    """{layer name: list of per-token expert id lists} from dsv3c eval."""
    header, data = read_safetensors(eval_out)
    layers = {}
    for name, t in header.items():
        if not name.startswith('topk_ids.'):
            continue
        assert t['dtype'] == 'I64', name
        n, k = t['shape']
        lo, hi = t['data_offsets']
        ids = struct.unpack('<%dq' % (n * k), data[lo:hi])
        layers[name[len('topk_ids.'):]] = [ids[i * k:(i + 1) * k] for i in range(n)]
    return layers


def analytic(layers, experts, ep, hidden):
    """Bytes each rank sends (= receives) in one training step."""
    owned = experts // ep
    sent = [0] * ep
    for tokens in layers.values():
        n = len(tokens)
        block = -(-n // ep)
        rows_out = [0] * ep   # S_e
        rows_in = [0] * ep    # R_e
        for t, choices in enumerate(tokens):
            src = t // block
            for x in choices:
                dst = x // owned
                if dst != src:
                    rows_out[src] += 1
                    rows_in[dst] += 1
        for e in range(ep):
            sent[e] += 2 * (rows_out[e] + rows_in[e]) * hidden * 4 + (ep - 1) * owned * 8
    return sent


def model_shape(dsv3c, model):
    """(routed experts, hidden size) as dsv3c reads the description."""
    out = subprocess.run([dsv3c, 'compile', model, '--emit=dsv3'], capture_output=True,
                         text=True, check=True).stdout
    import re
    m = re.search(r'dsv3\.param "model\.layers\.\d+\.mlp\.experts\.\*\.gate_proj\.weight" '
                  r'stack (\d+).*tensor<\d+x\d+x(\d+)xf32>', out)
    if not m:
        sys.exit('comm_volume: cannot find the routed experts of ' + model)
    return int(m.group(1)), int(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dsv3c')
    ap.add_argument('model')
    ap.add_argument('tokens')
    ap.add_argument('--ep', type=int, nargs='+', default=[2, 4])
    ap.add_argument('--out')
    ap.add_argument('--mpirun', default='mpirun')
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--seq', type=int, default=256)
    ap.add_argument('--vocab', type=int, default=512)
    a = ap.parse_args()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               OMPI_MCA_btl_vader_single_copy_mechanism='none')
    experts, hidden = model_shape(a.dsv3c, a.model)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.tokens == '-':
            a.tokens = tmp + '/tokens.safetensors'
            write_tokens(a.tokens, a.batch, a.seq, a.vocab)
        subprocess.run([a.dsv3c, 'eval', a.model, '--tokens', a.tokens, '-o',
                        tmp + '/eval.safetensors'], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        layers = routing(tmp + '/eval.safetensors')
        print('%s: %d routed experts, hidden %d, MoE layers of %s tokens' %
              (a.model, experts, hidden, '/'.join(str(len(t)) for t in layers.values())))
        print('%-4s %-5s %16s %16s %8s %10s' % ('ep', 'rank', 'measured B/step',
                                                 'analytic B/step', 'equal', 'comm ms'))
        for ep in a.ep:
            log = '%s/ep%d.jsonl' % (tmp, ep)
            subprocess.run([a.mpirun, '--oversubscribe', '-np', str(ep), a.dsv3c, 'train',
                            a.model, '--tokens', a.tokens, '--steps', '1', '--ep', str(ep),
                            '--log-json', log], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            want = analytic(layers, experts, ep, hidden)
            for r in range(ep):
                with open('%s/ep%d.rank-%d.jsonl' % (tmp, ep, r)) as f:
                    m = json.loads(f.readline())
                got = m['all_to_all_bytes_sent']
                ok = got == want[r] and m['all_to_all_bytes_received'] == want[r]
                print('%-4d %-5d %16d %16d %8s %10.2f' % (ep, r, got, want[r],
                                                          'yes' if ok else 'NO',
                                                          1e3 * m['comm_seconds']))
                results.append({'ep': ep, 'rank': r, 'measured_bytes': got,
                                'analytic_bytes': want[r], 'equal': ok,
                                'comm_seconds': m['comm_seconds'],
                                'step_seconds': m['step_seconds']})
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(results, f, indent=1)
    return 0 if all(r['equal'] for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
