//===- Attention.cpp - MLA attention core, forward and backward -----------===//
//
// Called by JIT code for dsv3.mla_core and dsv3.mla_core_grad. One task per
// (batch, head) computes its causal score block with the float32 GEMM
// microkernel, only up to the diagonal (row blocks of kRowBlock queries see
// keys [0, prefix + end of block)), applies the mask and softmax in place,
// and multiplies by V. The forward also takes fewer queries than keys: the
// queries are then the last Tq positions, after a cached prefix of
// Tk - Tq keys (a decode or verify step). The probabilities live in per-task scratch and are never
// written out: the backward recomputes them (as flash attention does), so
// no [B, H, T, T] tensor exists in the program.
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/Kernels.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

namespace dsv3::rt {
namespace {

constexpr int64_t kRowBlock = 64;

/// A dense row-major scratch matrix.
struct Scratch {
  std::vector<float> data;
  int64_t rows = 0, cols = 0;
  Scratch(int64_t r, int64_t c) : data(r * c, 0.0f), rows(r), cols(c) {}
  MatrixF32 view() { return {data.data(), data.data(), 0, {rows, cols}, {cols, 1}}; }
  MatrixF32 block(int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    return {data.data(), data.data(), r0 * cols + c0, {r1 - r0, c1 - c0}, {cols, 1}};
  }
  float *row(int64_t r) { return data.data() + r * cols; }
};

/// [T, D] view of (b, h) in a [B, T, H, D] tensor.
MatrixF32 head(const Tensor4F32 &x, int64_t b, int64_t h) {
  return {x.allocated, x.data, x.offset + b * x.strides[0] + h * x.strides[2],
          {x.sizes[1], x.sizes[3]}, {x.strides[1], x.strides[3]}};
}

/// [T, R] view of batch b in a [B, T, R] tensor.
MatrixF32 batch(const Tensor3F32 &x, int64_t b) {
  return {x.allocated, x.data, x.offset + b * x.strides[0],
          {x.sizes[1], x.sizes[2]}, {x.strides[1], x.strides[2]}};
}

float &at(const MatrixF32 &m, int64_t r, int64_t c) {
  return m.data[m.offset + r * m.strides[0] + c * m.strides[1]];
}

/// m^T as a dense scratch matrix (GEMM operands must be K-contiguous).
Scratch transposed(const MatrixF32 &m) {
  Scratch t(m.sizes[1], m.sizes[0]);
  for (int64_t r = 0; r < m.sizes[0]; ++r)
    for (int64_t c = 0; c < m.sizes[1]; ++c)
      t.data[c * m.sizes[0] + r] = at(m, r, c);
  return t;
}

/// out[t, :] += a[t, :] . b[u, :] for u <= prefix + t, by causal row blocks
/// (the entries past the diagonal inside a block are computed and later
/// masked). `out` is [Tq, prefix + Tq].
void causalScores(const MatrixF32 &a, const MatrixF32 &b, Scratch &out, int64_t prefix = 0) {
  int64_t t = out.rows;
  for (int64_t r0 = 0; r0 < t; r0 += kRowBlock) {
    int64_t r1 = std::min(t, r0 + kRowBlock);
    matmulNT(rowRange(a, r0, r1), rowRange(b, 0, prefix + r1),
             out.block(r0, r1, 0, prefix + r1));
  }
}

/// out = p b for causal p [Tq, prefix + Tq]: block rows read keys
/// [0, prefix + end of block). `bT` is b transposed ([D, Tk]).
void causalApply(Scratch &p, Scratch &bT, const MatrixF32 &out, int64_t prefix = 0) {
  int64_t t = p.rows;
  fillZero(out);
  for (int64_t r0 = 0; r0 < t; r0 += kRowBlock) {
    int64_t r1 = std::min(t, r0 + kRowBlock);
    matmulNT(p.block(r0, r1, 0, prefix + r1), columnRange(bT.view(), 0, prefix + r1),
             rowRange(out, r0, r1));
  }
}

struct AttentionArgs {
  Tensor4F32 qNope, qRope, kNope;
  Tensor3F32 kRope;
  Tensor4F32 v;
  MatrixI64 segments;
  float scale;
};

/// Keys before the first query: Tk - Tq (0 when training).
int64_t prefixOf(const AttentionArgs &a) { return a.kNope.sizes[1] - a.qNope.sizes[1]; }

/// Softmax probabilities of (b, h), [Tq, Tk]: query i (position prefix + i)
/// sees keys u <= prefix + i of its own document (segments are per key).
Scratch probabilities(const AttentionArgs &a, int64_t b, int64_t h) {
  int64_t tq = a.qNope.sizes[1], tk = a.kNope.sizes[1], prefix = tk - tq;
  Scratch p(tq, tk);
  causalScores(head(a.qNope, b, h), head(a.kNope, b, h), p, prefix);
  causalScores(head(a.qRope, b, h), batch(a.kRope, b), p, prefix);
  for (int64_t i = 0; i < tq; ++i) {
    float *row = p.row(i);
    int64_t last = prefix + i;
    int64_t segment = *a.segments.at(b, last);
    auto visible = [&](int64_t u) { return *a.segments.at(b, u) == segment; };
    float mx = -INFINITY;
    for (int64_t u = 0; u <= last; ++u)
      if (visible(u))
        mx = std::max(mx, row[u] * a.scale);
    float sum = 0.0f;
    for (int64_t u = 0; u <= last; ++u) {
      float e = visible(u) ? std::exp(row[u] * a.scale - mx) : 0.0f;
      row[u] = e;
      sum += e;
    }
    float inv = 1.0f / sum;
    for (int64_t u = 0; u <= last; ++u)
      row[u] *= inv;
    std::fill(row + last + 1, row + tk, 0.0f);
  }
  return p;
}

void forEachHead(const AttentionArgs &a, const std::function<void(int64_t, int64_t)> &f) {
  int64_t batches = a.qNope.sizes[0], heads = a.qNope.sizes[2];
  tbb::parallel_for(int64_t(0), batches * heads,
                    [&](int64_t i) { f(i / heads, i % heads); });
}

} // namespace

void mlaAttention(const AttentionArgs &a, const Tensor4F32 &out) {
  forEachHead(a, [&](int64_t b, int64_t h) {
    Scratch p = probabilities(a, b, h);
    Scratch vT = transposed(head(a.v, b, h));
    causalApply(p, vT, head(out, b, h), prefixOf(a));
  });
}

void mlaAttentionGrad(const AttentionArgs &a, const Tensor4F32 &dout,
                      const Tensor4F32 &dqNope, const Tensor4F32 &dqRope,
                      const Tensor4F32 &dkNope, const Tensor3F32 &dkRope,
                      const Tensor4F32 &dv) {
  int64_t batches = a.qNope.sizes[0], t = a.qNope.sizes[1], heads = a.qNope.sizes[2],
          rope = a.kRope.sizes[2];
  // The rope key is shared by all heads: per-head partial gradients, summed
  // after the parallel loop.
  std::vector<float> dkRopeParts(batches * heads * t * rope, 0.0f);
  forEachHead(a, [&](int64_t b, int64_t h) {
    Scratch p = probabilities(a, b, h);
    MatrixF32 dO = head(dout, b, h);
    // dP = dO V^T, then dS = scale * P * (dP - rowsum(P * dP)).
    Scratch ds(t, t);
    causalScores(dO, head(a.v, b, h), ds);
    for (int64_t i = 0; i < t; ++i) {
      float *pr = p.row(i), *dr = ds.row(i);
      float dot = 0.0f;
      for (int64_t u = 0; u <= i; ++u)
        dot += pr[u] * dr[u];
      for (int64_t u = 0; u <= i; ++u)
        dr[u] = a.scale * pr[u] * (dr[u] - dot);
      std::fill(dr + i + 1, dr + t, 0.0f);
    }
    // Query gradients: dS K; key and value gradients: dS^T Q, P^T dO.
    Scratch knT = transposed(head(a.kNope, b, h)), krT = transposed(batch(a.kRope, b));
    causalApply(ds, knT, head(dqNope, b, h));
    causalApply(ds, krT, head(dqRope, b, h));
    Scratch dsT = transposed(ds.view()), pT = transposed(p.view());
    Scratch qnT = transposed(head(a.qNope, b, h)), qrT = transposed(head(a.qRope, b, h));
    Scratch doT = transposed(dO);
    // Key u receives from queries t >= u: rows of dS^T from u, columns to T.
    auto anticausal = [&](Scratch &left, Scratch &rightT, const MatrixF32 &o) {
      fillZero(o);
      for (int64_t r0 = 0; r0 < t; r0 += kRowBlock) {
        int64_t r1 = std::min(t, r0 + kRowBlock);
        matmulNT(left.block(r0, r1, r0, t), columnRange(rightT.view(), r0, t), rowRange(o, r0, r1));
      }
    };
    anticausal(dsT, qnT, head(dkNope, b, h));
    anticausal(pT, doT, head(dv, b, h));
    float *part = dkRopeParts.data() + (b * heads + h) * t * rope;
    anticausal(dsT, qrT, {part, part, 0, {t, rope}, {rope, 1}});
  });
  for (int64_t b = 0; b < batches; ++b) {
    MatrixF32 dk = batch(dkRope, b);
    for (int64_t i = 0; i < t; ++i)
      for (int64_t r = 0; r < rope; ++r) {
        float s = 0.0f;
        for (int64_t h = 0; h < heads; ++h)
          s += dkRopeParts[((b * heads + h) * t + i) * rope + r];
        at(dk, i, r) = s;
      }
  }
}

/// dsv3.mla_absorbed_core, one batch row at a time: the absorbed queries
/// of every head and new token, `[q̂ ; q_rope]` ([H*T, C+R], head-major), are
/// scored against the cached prefix and the new rows by the GEMM microkernel
/// (all heads share each latent key, so the cache is read as one [L, C+R]
/// operand), soft-maxed, and the attended latents ([H*T, C]) are mapped
/// back through W_UV per head.
namespace {
/// Rows [0, prefix) of batch b of a float32 cache, as a view.
MatrixF32 cachedPrefix(const Tensor3F32 &cache, int64_t b, int64_t prefix, Scratch &) {
  return rowRange(batch(cache, b), 0, prefix);
}
/// The same of a BF16 cache, widened into `widened`.
MatrixF32 cachedPrefix(const StridedTensor3<uint16_t> &cache, int64_t b, int64_t prefix,
                       Scratch &widened) {
  widened = Scratch(prefix, cache.sizes[2]);
  StridedMatrix<uint16_t> m = cache.slice(b);
  for (int64_t r = 0; r < prefix; ++r)
    for (int64_t c = 0; c < m.sizes[1]; ++c) {
      uint32_t bits = uint32_t(*m.at(r, c)) << 16;
      std::memcpy(&widened.row(r)[c], &bits, sizeof(float));
    }
  return widened.view();
}
} // namespace

template <class Cache>
void mlaAbsorbedAttention(const Tensor4F32 &qNope, const Tensor4F32 &qRope,
                          const Tensor3F32 &wUK, const Tensor3F32 &wUV, const Cache &cache,
                          const Tensor3F32 &rows, const MatrixI64 &positions, float scale,
                          const Tensor4F32 &out) {
  int64_t batches = qNope.sizes[0], t = qNope.sizes[1], heads = qNope.sizes[2],
          nope = qNope.sizes[3], rope = qRope.sizes[3], latent = wUK.sizes[2],
          vd = wUV.sizes[1], capacity = cache.sizes[1], width = latent + rope;
  auto q4 = [](const Tensor4F32 &x, int64_t b, int64_t i, int64_t h, int64_t d) -> float & {
    return x.data[x.offset + b * x.strides[0] + i * x.strides[1] + h * x.strides[2] +
                  d * x.strides[3]];
  };
  auto t3 = [](const Tensor3F32 &x, int64_t a, int64_t r, int64_t c) -> float & {
    return x.data[x.offset + a * x.strides[0] + r * x.strides[1] + c * x.strides[2]];
  };
  for (int64_t b = 0; b < batches; ++b) {
    // Keys of the cached prefix: a stale or out-of-range length reads none
    // past the capacity.
    int64_t prefix = std::clamp<int64_t>(*positions.at(b, 0), 0, capacity);
    int64_t keys = prefix + t, n = heads * t;
    Scratch query(n, width), scores(n, keys), attended(n, latent);
    tbb::parallel_for(int64_t(0), heads, [&](int64_t h) {
      for (int64_t i = 0; i < t; ++i) {
        float *q = query.row(h * t + i);
        for (int64_t d = 0; d < nope; ++d) {
          float x = q4(qNope, b, i, h, d);
          for (int64_t c = 0; c < latent; ++c)
            q[c] += x * t3(wUK, h, d, c);
        }
        for (int64_t r = 0; r < rope; ++r)
          q[latent + r] = q4(qRope, b, i, h, r);
      }
    });
    Scratch widened(0, 0), cachedCopy(0, 0), freshCopy(0, 0);
    MatrixF32 cached = cachedPrefix(cache, b, prefix, widened), fresh = batch(rows, b);
    // The key loop below reads rows as contiguous vectors.
    auto contiguous = [](MatrixF32 &m, Scratch &copy) {
      if (m.strides[1] == 1 || m.sizes[0] == 0)
        return;
      copy = Scratch(m.sizes[0], m.sizes[1]);
      for (int64_t r = 0; r < m.sizes[0]; ++r)
        for (int64_t c = 0; c < m.sizes[1]; ++c)
          copy.row(r)[c] = at(m, r, c);
      m = copy.view();
    };
    contiguous(cached, cachedCopy);
    contiguous(fresh, freshCopy);
    if (prefix > 0)
      matmulNT(query.view(), cached, scores.block(0, n, 0, prefix));
    matmulNT(query.view(), fresh, scores.block(0, n, prefix, keys));
    tbb::parallel_for(int64_t(0), n, [&](int64_t r) {
      int64_t i = r % t, last = prefix + i; // new row j is visible for j <= i
      float *row = scores.row(r), mx = -INFINITY, sum = 0.0f;
      for (int64_t u = 0; u <= last; ++u)
        mx = std::max(mx, row[u] * scale);
      for (int64_t u = 0; u <= last; ++u)
        sum += (row[u] = std::exp(row[u] * scale - mx));
      float inv = 1.0f / sum, *o = attended.row(r);
      for (int64_t u = 0; u <= last; ++u) {
        float p = row[u] * inv;
        const float *key = u < prefix ? &at(cached, u, 0) : &at(fresh, u - prefix, 0);
        for (int64_t c = 0; c < latent; ++c)
          o[c] += p * key[c];
      }
      int64_t h = r / t;
      for (int64_t v = 0; v < vd; ++v) {
        float acc = 0.0f;
        for (int64_t c = 0; c < latent; ++c)
          acc += t3(wUV, h, v, c) * o[c];
        q4(out, b, i, h, v) = acc;
      }
    });
  }
}

} // namespace dsv3::rt

using namespace dsv3::rt;

extern "C" void _mlir_ciface_dsv3rt_mla_attention(
    Tensor4F32 *qNope, Tensor4F32 *qRope, Tensor4F32 *kNope, Tensor3F32 *kRope,
    Tensor4F32 *v, MatrixI64 *segments, double scale, Tensor4F32 *out) {
  mlaAttention({*qNope, *qRope, *kNope, *kRope, *v, *segments, float(scale)}, *out);
}

extern "C" void _mlir_ciface_dsv3rt_mla_absorbed_attention(Tensor4F32 *qNope, Tensor4F32 *qRope,
                                                Tensor3F32 *wUK, Tensor3F32 *wUV,
                                                Tensor3F32 *cache, Tensor3F32 *rows,
                                                MatrixI64 *positions, double scale,
                                                Tensor4F32 *out) {
  mlaAbsorbedAttention(*qNope, *qRope, *wUK, *wUV, *cache, *rows, *positions, float(scale),
                       *out);
}

extern "C" void _mlir_ciface_dsv3rt_mla_absorbed_attention_bf16(
    Tensor4F32 *qNope, Tensor4F32 *qRope, Tensor3F32 *wUK, Tensor3F32 *wUV,
    StridedTensor3<uint16_t> *cache, Tensor3F32 *rows, MatrixI64 *positions, double scale,
    Tensor4F32 *out) {
  mlaAbsorbedAttention(*qNope, *qRope, *wUK, *wUV, *cache, *rows, *positions, float(scale),
                       *out);
}

extern "C" void _mlir_ciface_dsv3rt_mla_attention_grad(
    Tensor4F32 *qNope, Tensor4F32 *qRope, Tensor4F32 *kNope, Tensor3F32 *kRope,
    Tensor4F32 *v, MatrixI64 *segments, double scale, Tensor4F32 *dout,
    Tensor4F32 *dqNope, Tensor4F32 *dqRope, Tensor4F32 *dkNope,
    Tensor3F32 *dkRope, Tensor4F32 *dv) {
  mlaAttentionGrad({*qNope, *qRope, *kNope, *kRope, *v, *segments, float(scale)},
                   *dout, *dqNope, *dqRope, *dkNope, *dkRope, *dv);
}
