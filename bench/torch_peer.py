#!/usr/bin/env python3
"""PyTorch eager peer of bench/run.sh: the same DeepSeek-V3-architecture model in plain PyTorch.

The benchmark compares dsv3c against this script: an idiomatic eager float32
implementation (MLA with q/kv LoRA, interleaved YaRN RoPE, DeepSeekMoE with
noaux_tc group-limited routing, MTP) written from the DeepSeek-V3 model math, loading the hub
layout that `dsv3c train --save` writes.

  torch_peer.py MODEL_DIR --batch B --seq T --steps S [--warmup W] [--threads N]
                [--mode forward|train] [--json OUT]
  torch_peer.py MODEL_DIR --mode generate [--prompts P.safetensors | --batch B --seq P]
                --new-tokens N     # greedy generation with a KV cache: TTFT, decode tok/s
  torch_peer.py --check-golden DIR     # logits/MTP/loss/grads vs HF golden data
  torch_peer.py MODEL_DIR --balance-reference TOKENS --alpha A --json OUT.safetensors
                                       # balance loss and gradients on a batch, as golden data

Run it with Debian's /usr/bin/python3 (torch 1.13 CPU, numpy).
"""
import argparse
import json
import math
import os
import resource
import statistics
import struct
import sys
import time

import numpy as np

# libgomp's default spin-waiting makes 2-thread runs ~10x slower on the 2-core
# benchmark machine (workers spin between the many small ops of an eager step);
# sleeping waiters fix it. Must be set before torch loads libgomp; callers may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class PeerError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


# --------------------------------------------------------------------------- safetensors

_NP_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def safetensors_header(path):
    """(header dict, byte offset of the data) of a safetensors file: u64 length, JSON, data."""
    if not os.path.isfile(path):
        raise PeerError(f"missing file {path}")
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    header.pop("__metadata__", None)
    return header, 8 + hlen


def read_tensor(f, base, name, info):
    """One tensor as float32 (floating dtypes) or int64, read straight from the open file."""
    lo, hi = info["data_offsets"]
    f.seek(base + lo)
    raw, dt = f.read(hi - lo), info["dtype"]
    if dt == "BF16":  # BF16 is the top half of an F32: widen by shifting
        arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif dt in _NP_DTYPES:
        arr = np.frombuffer(raw, _NP_DTYPES[dt])
    else:
        raise PeerError(f"tensor {name} has unsupported dtype {dt}")
    arr = arr.reshape(info["shape"]).astype(np.float32 if arr.dtype.kind == "f" else np.int64)
    return torch.from_numpy(arr)


def read_safetensors(path):
    """name -> tensor for a whole (small) file. No safetensors package here: parse by hand."""
    header, base = safetensors_header(path)
    with open(path, "rb") as f:
        return {name: read_tensor(f, base, name, info) for name, info in header.items()}


# --------------------------------------------------------------------------- config

# Keys that size the model's tensors: no default, since a DeepSeek-V3-sized fallback
# would try to allocate the 671B model before the checkpoint check could object.
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
            "num_hidden_layers", "num_attention_heads", "kv_lora_rank", "n_routed_experts")
# DeepSeek-V3 values (hub config / HF DeepseekV3Config) for the keys a config may omit.
V3_DEFAULTS = dict(q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64,
                   v_head_dim=128, n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8,
                   n_group=8, topk_group=4, routed_scaling_factor=2.5, norm_topk_prob=True,
                   first_k_dense_replace=3, rms_norm_eps=1e-6, rope_theta=10000.0,
                   rope_scaling=None, num_nextn_predict_layers=0, scoring_func="sigmoid")


class Config:
    def __init__(self, d):
        absent = [k for k in REQUIRED if d.get(k) is None]
        if absent:
            raise PeerError(f"config.json lacks {', '.join(absent)}")
        for k in REQUIRED:
            setattr(self, k, d[k])
        for k, v in V3_DEFAULTS.items():
            setattr(self, k, d[k] if d.get(k) is not None else v)
        self.q_lora_rank = self.q_lora_rank or None  # 0 / null => plain q_proj
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.scoring_func != "sigmoid":
            raise PeerError(f"scoring_func {self.scoring_func!r} unsupported (only sigmoid)")
        if self.n_routed_experts % self.n_group or self.topk_group > self.n_group:
            raise PeerError("need n_routed_experts % n_group == 0 and topk_group <= n_group")
        rs = self.rope_scaling
        if rs and rs.get("type", rs.get("rope_type")) not in ("yarn", "default", None):
            raise PeerError(f"rope_scaling type {rs.get('type')!r} unsupported (only yarn)")


def load_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise PeerError(f"missing file {path}")
    try:
        raw = json.load(open(path))
    except json.JSONDecodeError as e:
        raise PeerError(f"{path}: bad JSON ({e})")
    return Config(raw), raw


# --------------------------------------------------------------------------- RoPE (YaRN)

def yarn_get_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_tables(cfg, T):
    """cos/sin [T, rope_dim/2] for interleaved pairs, YaRN-blended frequencies when configured."""
    dim, base = cfg.qk_rope_head_dim, float(cfg.rope_theta)
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    attn_factor = 1.0
    rs = cfg.rope_scaling
    if rs and rs.get("type", rs.get("rope_type")) == "yarn":
        factor, orig = float(rs["factor"]), rs["original_max_position_embeddings"]
        beta_fast, beta_slow = rs.get("beta_fast", 32), rs.get("beta_slow", 1)

        def corr_dim(rot):  # dimension index whose wavelength makes `rot` turns over orig
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr_dim(beta_fast)), 0)
        high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # 1 => extrapolate (original frequency), 0 => interpolate (/factor)
        inv_freq = inv_freq / factor * (1 - keep) + inv_freq * keep
        ms, ms_all = rs.get("mscale"), rs.get("mscale_all_dim")
        # cos/sin magnitude: ratio of the two mscales (1 for V3), as the HF reference does.
        attn_factor = (yarn_get_mscale(factor, ms) / yarn_get_mscale(factor, ms_all)
                       if ms and ms_all else yarn_get_mscale(factor))
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    return ang.cos() * attn_factor, ang.sin() * attn_factor


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs (x[2i], x[2i+1]) of the last dim by the position angle."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


# --------------------------------------------------------------------------- modules

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MLP(nn.Module):
    """SwiGLU FFN: down(silu(gate x) * up x). Used for dense layers, experts, shared experts."""

    def __init__(self, dim, inter):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter, bias=False)
        self.up_proj = nn.Linear(dim, inter, bias=False)
        self.down_proj = nn.Linear(inter, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MLA(nn.Module):
    """Multi-head latent attention, naive (materialised per-head K/V) path for full sequences."""

    def __init__(self, cfg):
        super().__init__()
        c, H = cfg, cfg.num_attention_heads
        self.cfg, self.H = c, H
        if c.q_lora_rank:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
            self.q_b_proj = nn.Linear(c.q_lora_rank, H * c.qk_head_dim, bias=False)
        else:
            self.q_proj = nn.Linear(c.hidden_size, H * c.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim,
                                            bias=False)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, H * (c.qk_nope_head_dim + c.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(H * c.v_head_dim, c.hidden_size, bias=False)
        self.scale = c.qk_head_dim ** -0.5
        rs = c.rope_scaling
        if rs and rs.get("mscale_all_dim"):  # YaRN: sharpen softmax by mscale^2
            self.scale *= yarn_get_mscale(float(rs["factor"]), rs["mscale_all_dim"]) ** 2

    def forward(self, x, cos, sin, mask, past=None):
        """`past` (generation): a dict holding this layer's decompressed K and V
        [B, H, L, .] of the earlier positions, extended in place; cos/sin and
        mask cover the new positions only."""
        c, H = self.cfg, self.H
        B, T, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if c.q_lora_rank else self.q_proj(x)
        q = q.view(B, T, H, c.qk_head_dim).transpose(1, 2)
        q_nope, q_rot = q.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        latent, k_rot = self.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, c.qk_rope_head_dim], -1)
        kv = self.kv_b_proj(self.kv_a_layernorm(latent))
        kv = kv.view(B, T, H, c.qk_nope_head_dim + c.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        q_rot = apply_rope(q_rot, cos, sin)
        k_rot = apply_rope(k_rot.unsqueeze(1), cos, sin)  # one rope key shared by all heads
        q = torch.cat((q_nope, q_rot), -1)
        k = torch.cat((k_nope, k_rot.expand(B, H, T, c.qk_rope_head_dim)), -1)
        if past is not None:
            if "k" in past:
                k, v = torch.cat((past["k"], k), 2), torch.cat((past["v"], v), 2)
            past["k"], past["v"] = k, v
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale + mask, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, H * c.v_head_dim)
        return self.o_proj(o)


class Gate(nn.Module):
    """noaux_tc router: sigmoid scores; bias only for (group-limited) selection."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        # A buffer: the balance bias is adjusted by load statistics, never by gradient.
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))

    def forward(self, x):  # x [N, d] -> scores [N, E], topk_idx [N, K], topk_w [N, K]
        c = self.cfg
        scores = torch.sigmoid(F.linear(x, self.weight))
        with torch.no_grad():  # selection is discrete: keep it out of autograd
            biased = scores + self.e_score_correction_bias
            grouped = biased.view(-1, c.n_group, c.n_routed_experts // c.n_group)
            group_score = grouped.topk(min(2, grouped.shape[-1]), dim=-1)[0].sum(-1)
            keep = group_score.topk(c.topk_group, dim=-1)[1]
            gmask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
            biased = grouped.masked_fill(~gmask.unsqueeze(-1), float("-inf")).flatten(1)
            topk_idx = biased.topk(c.num_experts_per_tok, dim=-1)[1]
        w = scores.gather(1, topk_idx)
        if c.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return scores, topk_idx, w * c.routed_scaling_factor


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList(MLP(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.n_routed_experts))
        shared = cfg.moe_intermediate_size * cfg.n_shared_experts
        self.shared_experts = MLP(cfg.hidden_size, shared) if shared else None
        self.balance_loss = None  # set per forward when gradients are on

    def forward(self, x):
        c, (B, T, d) = self.cfg, x.shape
        flat = x.reshape(-1, d)
        scores, topk_idx, topk_w = self.gate(flat)
        K = topk_idx.shape[1]
        # Group (token, slot) pairs by expert: one gather, per-expert GEMMs on
        # contiguous rows, one scatter-add back. Only routed tokens are computed.
        slot_expert = topk_idx.reshape(-1)
        order = torch.argsort(slot_expert, stable=True)
        token = order // K
        counts = torch.bincount(slot_expert, minlength=c.n_routed_experts).tolist()
        xs = flat.index_select(0, token)
        ws = topk_w.reshape(-1, 1).index_select(0, order)
        outs, start = [], 0
        for e, n in enumerate(counts):
            if n:
                outs.append(self.experts[e](xs[start:start + n]))
                start += n
        routed = torch.zeros_like(flat).index_add_(0, token, torch.cat(outs) * ws)
        if self.shared_experts is not None:
            routed = routed + self.shared_experts(flat)
        self.balance_loss = None
        if torch.is_grad_enabled():  # sequence-wise balance loss, f_i constant
            E = c.n_routed_experts
            f = torch.zeros(B, E).scatter_add_(1, topk_idx.view(B, T * K),
                                               torch.ones(B, T * K)) * (E / (K * T))
            p = (scores / scores.sum(-1, keepdim=True)).view(B, T, E).mean(1)
            self.balance_loss = (f * p).sum(-1).mean()
        return routed.view(B, T, d)


class DecoderLayer(nn.Module):
    def __init__(self, cfg, moe):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if moe else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h, cos, sin, mask, past=None):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, past)
        return h + self.mlp(self.post_attention_layernorm(h))


class MTPLayer(DecoderLayer):
    """MTP depth module: eh_proj([enorm(emb of next token); hnorm(h)]) then a full MoE block."""

    def __init__(self, cfg):
        super().__init__(cfg, moe=True)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.shared_head = nn.Module()  # its `head` is the main lm_head (shared)
        self.shared_head.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        L = cfg.num_hidden_layers
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, moe=i >= cfg.first_k_dense_replace) for i in range(L)]
            + [MTPLayer(cfg) for _ in range(cfg.num_nextn_predict_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepseekV3(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, ids):
        """ids [B, T] -> (main logits [B,T,V], [MTP logits of depth k: [B,T-k,V]], hidden_final)."""
        cfg, T = self.cfg, ids.shape[1]
        cos, sin = rope_tables(cfg, T)
        mask = torch.full((T, T), float("-inf")).triu(1)  # causal, added to scores
        emb = self.model.embed_tokens(ids)
        h = emb
        for layer in self.model.layers[:cfg.num_hidden_layers]:
            h = layer(h, cos, sin, mask)
        h = self.model.norm(h)
        logits, mtp_logits, prev = self.lm_head(h), [], h
        for k, mtp in enumerate(self.model.layers[cfg.num_hidden_layers:], start=1):
            n = T - k  # depth k: position i sees tokens <= i and predicts token i+k+1
            x = mtp.eh_proj(torch.cat((mtp.enorm(emb[:, k:]), mtp.hnorm(prev[:, :n])), -1))
            prev = mtp(x, cos[:n], sin[:n], mask[:n, :n])
            mtp_logits.append(self.lm_head(mtp.shared_head.norm(prev)))
        return logits, mtp_logits, h

    def step(self, ids, start, caches, cos, sin):
        """Main-model logits of `ids` [B, T] at positions start.. over the
        per-layer K/V `caches` (extended): a Hugging Face-style KV cache."""
        cfg, T = self.cfg, ids.shape[1]
        L = start + T
        mask = torch.full((T, L), float("-inf")).triu(start + 1)
        h = self.model.embed_tokens(ids)
        for layer, past in zip(self.model.layers[:cfg.num_hidden_layers], caches):
            h = layer(h, cos[start:L], sin[start:L], mask, past)
        return self.lm_head(self.model.norm(h))

    def balance_loss(self):
        parts = [m.balance_loss for m in self.modules()
                 if isinstance(m, MoE) and m.balance_loss is not None]
        return sum(parts) if parts else torch.zeros(())


def load_model(model_dir):
    cfg, raw = load_config(model_dir)
    path = os.path.join(model_dir, "model.safetensors")
    header, base = safetensors_header(path)
    L = cfg.num_hidden_layers
    if raw.get("num_nextn_predict_layers") is None:  # absent: trust the checkpoint
        cfg.num_nextn_predict_layers = sum(f"model.layers.{L + k}.eh_proj.weight" in header
                                           for k in range(8))
    for k in range(cfg.num_nextn_predict_layers):  # MTP copies of the shared embedding / head
        header.pop(f"model.layers.{L + k}.embed_tokens.weight", None)
        header.pop(f"model.layers.{L + k}.shared_head.head.weight", None)
    model = DeepseekV3(cfg)
    expected = model.state_dict()  # shares storage with the parameters and buffers
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise PeerError(f"{model_dir}: checkpoint does not match config: missing "
                        f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                        f"{extra[:3]}{'...' if len(extra) > 3 else ''}")
    # Tensor by tensor into the parameters, so loading never holds a second copy of the model.
    with open(path, "rb") as f, torch.no_grad():
        for name, dst in expected.items():
            if list(header[name]["shape"]) != list(dst.shape):
                raise PeerError(f"{name}: shape {header[name]['shape']} != expected "
                                f"{list(dst.shape)}")
            dst.copy_(read_tensor(f, base, name, header[name]))
    return model


# --------------------------------------------------------------------------- losses

def losses(model, ids, logits, mtp_logits):
    V = model.cfg.vocab_size
    main = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    mtp = [F.cross_entropy(m[:, :-1].reshape(-1, V), ids[:, k + 1:].reshape(-1))
           for k, m in enumerate(mtp_logits, start=1)]
    mtp = sum(mtp) / len(mtp) if mtp else torch.zeros(())
    return main, mtp


def check_golden(gdir):
    torch.manual_seed(0)
    model = load_model(gdir)
    ref = read_safetensors(os.path.join(gdir, "reference.safetensors"))
    ids = ref["input_ids"].long()
    logits, mtp_logits, hidden = model(ids)
    main, mtp = losses(model, ids, logits, mtp_logits)
    total = main + 0.3 * mtp
    errs = {"logits": (logits - ref["logits"]).abs().max().item()}
    if "hidden_final" in ref:
        errs["hidden_final"] = (hidden - ref["hidden_final"]).abs().max().item()
    if "mtp_logits" in ref and mtp_logits:
        errs["mtp_logits"] = (mtp_logits[0] - ref["mtp_logits"]).abs().max().item()
    for name, val in (("loss", main), ("mtp_loss", mtp), ("total_loss", total)):
        if name in ref:
            errs[name] = abs(val.item() - ref[name].item())
    grads = {k[5:]: v for k, v in ref.items() if k.startswith("grad.")}
    if grads:  # d total_loss / d param, the training path's check
        total.backward()
        params = dict(model.named_parameters())
        errs["grads"] = max((params[k].grad - g).abs().max().item() for k, g in grads.items())
    print(f"golden {gdir}: loss {main.item():.6f} (ref {ref['loss'].item():.6f})")
    for k, v in errs.items():
        print(f"  max |{k} - ref| = {v:.3e}")
    bad = [k for k, v in errs.items() if not v <= 1e-4]
    if bad:
        print(f"FAIL: {', '.join(bad)} above 1e-4", file=sys.stderr)
        return 1
    print("PASS (all within 1e-4)")
    return 0


def write_safetensors(path, tensors):
    """name -> float32 tensor, written in the safetensors layout (sorted names)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def balance_reference(model_dir, tokens, alpha, out):
    """The sequence-wise balance loss (summed over every MoE layer, MTP's
    included, unscaled) on the batch `tokens` (input_ids), total_loss = loss + 0.3 mtp_loss
    + alpha * balance_loss, and d total_loss / d parameter for every router,
    the norms of the first two layers and one projection of the first (where
    the balance loss's gradient flows back through the hidden states), as
    golden data for dsv3c's end-to-end
    test of --balance-alpha."""
    torch.manual_seed(0)
    model = load_model(model_dir)
    ids = read_safetensors(tokens)["input_ids"].long()
    logits, mtp_logits, _ = model(ids)
    main, mtp = losses(model, ids, logits, mtp_logits)
    bal = model.balance_loss()
    total = main + 0.3 * mtp + alpha * bal
    total.backward()
    keep = {"balance_loss": bal.reshape(()), "total_loss": total.reshape(()),
            "alpha": torch.tensor(alpha)}
    for name, prm in model.named_parameters():
        if name.endswith(("mlp.gate.weight", "layernorm.weight")) and \
                name.startswith(("model.layers.0.", "model.layers.1.")) or \
                name.endswith("mlp.gate.weight") or \
                name == "model.layers.0.self_attn.kv_a_proj_with_mqa.weight":
            keep["grad." + name] = prm.grad
    write_safetensors(out, keep)
    print(f"balance_loss {bal.item():.9g}  total_loss {total.item():.9g}  "
          f"{len(keep) - 3} gradients -> {out}")
    return 0


# --------------------------------------------------------------------------- benchmark

def emit(result, path):
    """Prints the result line (and writes it to `path`); exit status 0."""
    line = json.dumps(result)
    print(line)
    if path:
        with open(path, "w") as f:
            f.write(line + "\n")
    return 0


def bench(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model_dir)
    cfg = model.cfg
    torch.manual_seed(1234)  # fixed token batch, independent of the model
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    if args.mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

        def step():
            logits, mtp_logits, _ = model(ids)
            main, mtp = losses(model, ids, logits, mtp_logits)
            loss = main + 0.3 * mtp + 1e-4 * model.balance_loss()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                logits, mtp_logits, _ = model(ids)
            return None

    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
        if args.verbose:
            print(f"step {i} {'(warmup) ' if i < args.warmup else ''}{dt:.3f}s"
                  + (f" loss {loss:.4f}" if loss is not None else ""), file=sys.stderr)
    med = statistics.median(times)
    result = {"model": os.path.abspath(args.model_dir), "mode": args.mode, "batch": args.batch,
              "seq": args.seq, "threads": torch.get_num_threads(),
              "tokens_per_s": args.batch * args.seq / med, "step_s_median": med,
              "step_s_all": times,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "torch": torch.__version__}
    return emit(result, args.json)


def bench_generate(args):
    """Greedy generation with a KV cache: prefill the prompt, then one token
    per step; times the prefill (TTFT) and the decode steps."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model_dir)
    model.eval()
    cfg = model.cfg
    if args.prompts:
        prompt = read_safetensors(args.prompts)["input_ids"].long()
    else:
        torch.manual_seed(1234)
        prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    B, P, N = prompt.shape[0], prompt.shape[1], args.new_tokens
    cos, sin = rope_tables(cfg, P + N)
    runs = []
    for _ in range(args.warmup + args.steps):
        caches = [{} for _ in range(cfg.num_hidden_layers)]
        out = []
        with torch.no_grad():
            t0 = time.perf_counter()
            logits = model.step(prompt, 0, caches, cos, sin)
            token = logits[:, -1].argmax(-1, keepdim=True)
            ttft = time.perf_counter() - t0
            out.append(token)
            t1 = time.perf_counter()
            for i in range(1, N):
                logits = model.step(token, P + i - 1, caches, cos, sin)
                token = logits[:, -1].argmax(-1, keepdim=True)
                out.append(token)
            decode = time.perf_counter() - t1
        runs.append((ttft, decode))
    runs = runs[args.warmup:]
    ttft = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    H = cfg.num_attention_heads
    result = {"model": os.path.abspath(args.model_dir), "mode": "generate", "batch": B,
              "prompt": P, "new_tokens": N, "threads": torch.get_num_threads(),
              "prefill_tokens_per_s": B * P / ttft, "ttft_s": ttft,
              "decode_tokens_per_s": B * (N - 1) / decode, "tpot_s": decode / (N - 1),
              "cache_bytes_per_token": cfg.num_hidden_layers * H
              * (cfg.qk_head_dim + cfg.v_head_dim) * 4,
              "generated_ids": torch.cat(out, 1).tolist(), "torch": torch.__version__}
    return emit(result, args.json)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", nargs="?", help="directory with config.json + model.safetensors")
    p.add_argument("--check-golden", metavar="DIR",
                   help="check the forward against DIR/reference.safetensors")
    p.add_argument("--balance-reference", metavar="TOKENS",
                   help="write the balance-loss reference on this batch to --json")
    p.add_argument("--alpha", type=float, default=0.5, help="balance-loss weight")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    p.add_argument("--mode", choices=("forward", "train", "generate"), default="forward")
    p.add_argument("--new-tokens", type=int, default=32, help="generate: tokens per sequence")
    p.add_argument("--prompts", metavar="T.safetensors",
                   help="generate: prompts (input_ids [B, P]) instead of random ones")
    p.add_argument("--json", metavar="OUT", help="also write the result line here")
    p.add_argument("-v", "--verbose", action="store_true", help="per-step times on stderr")
    args = p.parse_args()
    try:
        if args.check_golden:
            return check_golden(args.check_golden)
        if args.balance_reference:
            if not (args.model_dir and args.json):
                raise PeerError("--balance-reference needs MODEL_DIR and --json OUT.safetensors")
            return balance_reference(args.model_dir, args.balance_reference, args.alpha,
                                     args.json)
        if not args.model_dir:
            raise PeerError("MODEL_DIR (or --check-golden DIR) is required")
        if min(args.batch, args.seq, args.steps) < 1 or args.warmup < 0 or args.seq < 3:
            raise PeerError("--batch, --steps must be >= 1, --seq >= 3, --warmup >= 0")
        if args.mode == "generate":
            return bench_generate(args)
        return bench(args)
    except PeerError as e:
        print(f"torch_peer: error: {e}", file=sys.stderr)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"torch_peer: error: {type(e).__name__}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
