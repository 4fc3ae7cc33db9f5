//===- AttentionTest.cpp - the MLA attention kernels against float64 ------===//
//
// Checks runtime/kernels/Attention.cpp, forward and gradient, against a
// naive double-precision evaluation of causal softmax attention with a
// shared rope key, for sequence lengths that span several row blocks (with a
// partial last block), for packed documents, and for queries that follow a
// cached prefix of keys (decode and verify steps).
//
//===----------------------------------------------------------------------===//
#include "runtime/kernels/Kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

using namespace dsv3::rt;

namespace {

struct Shape {
  int64_t b, t, h, dn, r, dv;
};

Tensor4F32 view4(std::vector<float> &v, int64_t a, int64_t b, int64_t c, int64_t d) {
  return {v.data(), v.data(), 0, {a, b, c, d}, {b * c * d, c * d, d, 1}};
}
Tensor3F32 view3(std::vector<float> &v, int64_t a, int64_t b, int64_t c) {
  return {v.data(), v.data(), 0, {a, b, c}, {b * c, c, 1}};
}

/// Reference: probabilities, output, and gradients of sum(out * dout).
struct Reference {
  std::vector<double> out, dqn, dqr, dkn, dkr, dv;
};

Reference reference(const Shape &s, const std::vector<float> &qn,
                    const std::vector<float> &qr, const std::vector<float> &kn,
                    const std::vector<float> &kr, const std::vector<float> &v,
                    const std::vector<int64_t> &seg, double scale,
                    const std::vector<float> &dout) {
  Reference ref;
  ref.out.assign(s.b * s.t * s.h * s.dv, 0);
  ref.dqn.assign(qn.size(), 0);
  ref.dqr.assign(qr.size(), 0);
  ref.dkn.assign(kn.size(), 0);
  ref.dkr.assign(kr.size(), 0);
  ref.dv.assign(v.size(), 0);
  auto i4 = [&](int64_t b, int64_t t, int64_t h, int64_t d, int64_t dim) {
    return ((b * s.t + t) * s.h + h) * dim + d;
  };
  for (int64_t b = 0; b < s.b; ++b)
    for (int64_t h = 0; h < s.h; ++h)
      for (int64_t t = 0; t < s.t; ++t) {
        std::vector<double> p(s.t, 0.0);
        double mx = -INFINITY;
        for (int64_t u = 0; u <= t; ++u) {
          if (seg[b * s.t + u] != seg[b * s.t + t])
            continue;
          double x = 0;
          for (int64_t d = 0; d < s.dn; ++d)
            x += double(qn[i4(b, t, h, d, s.dn)]) * kn[i4(b, u, h, d, s.dn)];
          for (int64_t d = 0; d < s.r; ++d)
            x += double(qr[i4(b, t, h, d, s.r)]) * kr[(b * s.t + u) * s.r + d];
          p[u] = x * scale;
          mx = std::max(mx, p[u]);
        }
        double sum = 0;
        for (int64_t u = 0; u <= t; ++u) {
          bool vis = seg[b * s.t + u] == seg[b * s.t + t];
          p[u] = vis ? std::exp(p[u] - mx) : 0.0;
          sum += p[u];
        }
        for (double &x : p)
          x /= sum;
        // out and dp = dout . v
        std::vector<double> dp(s.t, 0.0);
        double dot = 0;
        for (int64_t u = 0; u <= t; ++u) {
          for (int64_t e = 0; e < s.dv; ++e) {
            ref.out[i4(b, t, h, e, s.dv)] += p[u] * v[i4(b, u, h, e, s.dv)];
            dp[u] += double(dout[i4(b, t, h, e, s.dv)]) * v[i4(b, u, h, e, s.dv)];
            ref.dv[i4(b, u, h, e, s.dv)] += p[u] * dout[i4(b, t, h, e, s.dv)];
          }
          dot += p[u] * dp[u];
        }
        for (int64_t u = 0; u <= t; ++u) {
          double ds = scale * p[u] * (dp[u] - dot);
          for (int64_t d = 0; d < s.dn; ++d) {
            ref.dqn[i4(b, t, h, d, s.dn)] += ds * kn[i4(b, u, h, d, s.dn)];
            ref.dkn[i4(b, u, h, d, s.dn)] += ds * qn[i4(b, t, h, d, s.dn)];
          }
          for (int64_t d = 0; d < s.r; ++d) {
            ref.dqr[i4(b, t, h, d, s.r)] += ds * kr[(b * s.t + u) * s.r + d];
            ref.dkr[(b * s.t + u) * s.r + d] += ds * qr[i4(b, t, h, d, s.r)];
          }
        }
      }
  return ref;
}

void expectClose(const std::vector<float> &got, const std::vector<double> &want,
                 const char *what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  EXPECT_LT(worst, 2e-5 * std::max(1.0, scale)) << what;
}

/// Random queries, keys, values and output gradient of shape `s`, and
/// segment ids (documents of 37 positions when packed, so boundaries cross
/// row blocks).
struct Inputs {
  std::vector<float> qn, qr, kn, kr, v, dout;
  std::vector<int64_t> seg;
  Inputs(const Shape &s, bool packed, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0, 1);
    auto rand = [&](int64_t n) {
      std::vector<float> x(n);
      for (float &f : x)
        f = dist(rng);
      return x;
    };
    qn = rand(s.b * s.t * s.h * s.dn);
    kn = rand(qn.size());
    qr = rand(s.b * s.t * s.h * s.r);
    kr = rand(s.b * s.t * s.r);
    v = rand(s.b * s.t * s.h * s.dv);
    dout = rand(v.size());
    seg.assign(s.b * s.t, 0);
    if (packed)
      for (int64_t i = 0; i < s.b * s.t; ++i)
        seg[i] = (i % s.t) / 37;
  }
};

void check(const Shape &s, bool packed) {
  Inputs in(s, packed, s.t * 7 + s.h);
  auto &[qn, qr, kn, kr, v, dout, seg] = in;
  double scale = 0.125;
  std::vector<float> out(v.size()), dqn(qn.size()), dqr(qr.size()), dkn(kn.size()),
      dkr(kr.size()), dv(v.size());
  auto Qn = view4(qn, s.b, s.t, s.h, s.dn), Kn = view4(kn, s.b, s.t, s.h, s.dn);
  auto Qr = view4(qr, s.b, s.t, s.h, s.r), V = view4(v, s.b, s.t, s.h, s.dv);
  auto Kr = view3(kr, s.b, s.t, s.r);
  MatrixI64 Seg{seg.data(), seg.data(), 0, {s.b, s.t}, {s.t, 1}};
  auto Out = view4(out, s.b, s.t, s.h, s.dv), DOut = view4(dout, s.b, s.t, s.h, s.dv);
  auto DQn = view4(dqn, s.b, s.t, s.h, s.dn), DKn = view4(dkn, s.b, s.t, s.h, s.dn);
  auto DQr = view4(dqr, s.b, s.t, s.h, s.r), DV = view4(dv, s.b, s.t, s.h, s.dv);
  auto DKr = view3(dkr, s.b, s.t, s.r);
  _mlir_ciface_dsv3rt_mla_attention(&Qn, &Qr, &Kn, &Kr, &V, &Seg, scale, &Out);
  _mlir_ciface_dsv3rt_mla_attention_grad(&Qn, &Qr, &Kn, &Kr, &V, &Seg, scale, &DOut,
                                         &DQn, &DQr, &DKn, &DKr, &DV);
  Reference ref = reference(s, qn, qr, kn, kr, v, seg, scale, dout);
  expectClose(out, ref.out, "out");
  expectClose(dqn, ref.dqn, "dq_nope");
  expectClose(dqr, ref.dqr, "dq_rope");
  expectClose(dkn, ref.dkn, "dk_nope");
  expectClose(dkr, ref.dkr, "dk_rope");
  expectClose(dv, ref.dv, "dv");
}

/// Queries after a cached prefix: the last `tq` of `s.t` positions attend
/// to all earlier keys. Their outputs are the float64 reference's rows of
/// those positions (computed over the whole sequence).
void checkPrefix(const Shape &s, int64_t tq, bool packed) {
  Inputs in(s, packed, s.t * 13 + tq);
  auto &[qn, qr, kn, kr, v, dout, seg] = in;
  double scale = 0.125;
  Reference ref = reference(s, qn, qr, kn, kr, v, seg, scale, std::vector<float>(v.size()));
  // The queries of the last tq positions, as their own [B, tq, H, D] tensors.
  int64_t prefix = s.t - tq;
  auto lastRows = [&](const std::vector<float> &x, int64_t d) {
    std::vector<float> y;
    for (int64_t b = 0; b < s.b; ++b)
      y.insert(y.end(), x.begin() + (b * s.t + prefix) * s.h * d,
               x.begin() + (b + 1) * s.t * s.h * d);
    return y;
  };
  std::vector<float> qnq = lastRows(qn, s.dn), qrq = lastRows(qr, s.r);
  std::vector<float> out(s.b * tq * s.h * s.dv);
  auto Qn = view4(qnq, s.b, tq, s.h, s.dn), Qr = view4(qrq, s.b, tq, s.h, s.r);
  auto Kn = view4(kn, s.b, s.t, s.h, s.dn), V = view4(v, s.b, s.t, s.h, s.dv);
  auto Kr = view3(kr, s.b, s.t, s.r);
  MatrixI64 Seg{seg.data(), seg.data(), 0, {s.b, s.t}, {s.t, 1}};
  auto Out = view4(out, s.b, tq, s.h, s.dv);
  _mlir_ciface_dsv3rt_mla_attention(&Qn, &Qr, &Kn, &Kr, &V, &Seg, scale, &Out);
  std::vector<double> want;
  for (int64_t b = 0; b < s.b; ++b)
    want.insert(want.end(), ref.out.begin() + (b * s.t + prefix) * s.h * s.dv,
                ref.out.begin() + (b + 1) * s.t * s.h * s.dv);
  expectClose(out, want, "out after a cached prefix");
}

TEST(Attention, SeveralRowBlocksWithPartialLast) { check({2, 150, 3, 16, 8, 12}, false); }

TEST(Attention, OneQueryAfterACachedPrefix) { checkPrefix({2, 150, 3, 16, 8, 12}, 1, false); }

TEST(Attention, QueriesSpanningBlocksAfterAPrefix) {
  checkPrefix({2, 150, 3, 16, 8, 12}, 70, false);
  checkPrefix({1, 150, 2, 8, 4, 8}, 5, true);
}

TEST(Attention, PackedDocumentsAcrossBlocks) { check({1, 150, 2, 8, 4, 8}, true); }

TEST(Attention, SinglePosition) { check({1, 1, 2, 4, 2, 4}, false); }

} // namespace
