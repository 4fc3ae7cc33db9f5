//===- GemmTest.cpp - the GEMM microkernel against a double reference -----===//
#include "runtime/kernels/Kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

using dsv3::rt::MatrixF32;

namespace {

MatrixF32 view(std::vector<float> &v, int64_t rows, int64_t cols,
               int64_t rowStride, int64_t colStride = 1, int64_t offset = 0) {
  return {v.data(), v.data(), offset, {rows, cols}, {rowStride, colStride}};
}

/// C += A B^T checked against a float64 product for odd shapes (tile tails
/// in M, N and K), the parallel path, and non-unit strides.
void check(int64_t m, int64_t n, int64_t k, bool transposedStorage) {
  std::mt19937 rng(m * 131 + n * 7 + k);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> a(m * k), b(n * k), c(m * n);
  for (auto *v : {&a, &b, &c})
    for (float &x : *v)
      x = dist(rng);
  std::vector<float> c0 = c;
  // With transposedStorage, A is stored column-major: A[i,p] at p*m + i.
  MatrixF32 av = transposedStorage ? view(a, m, k, 1, m) : view(a, m, k, k);
  dsv3::rt::matmulNT(av, view(b, n, k, k), view(c, m, n, n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = c0[i * n + j];
      for (int64_t p = 0; p < k; ++p) {
        double ap = transposedStorage ? a[p * m + i] : a[i * k + p];
        ref += ap * b[j * k + p];
      }
      ASSERT_NEAR(c[i * n + j], ref, 1e-4 * std::sqrt(double(k)) + 1e-5)
          << "m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
    }
}

TEST(Gemm, SmallOddShapes) {
  check(1, 1, 1, false);
  check(3, 5, 17, false);
  check(7, 9, 33, false);
}

TEST(Gemm, ParallelPath) { check(130, 67, 257, false); }

// K beyond one 512-wide packing chunk: the packed kernel's loop over K
// chunks runs three times, the last one partial.
TEST(Gemm, SeveralKChunks) { check(96, 64, 1100, false); }

TEST(Gemm, StridedOperand) { check(6, 10, 21, true); }

} // namespace

//===----------------------------------------------------------------------===//
// MoE dispatch order and grouped GEMMs
//===----------------------------------------------------------------------===//

namespace {

using dsv3::rt::MatrixI64;
using dsv3::rt::Tensor3F32;
using dsv3::rt::VectorI64;

VectorI64 vec(std::vector<int64_t> &v) {
  return {v.data(), v.data(), 0, int64_t(v.size()), 1};
}

Tensor3F32 tensor3(std::vector<float> &v, int64_t a, int64_t b, int64_t c) {
  return {v.data(), v.data(), 0, {a, b, c}, {b * c, c, 1}};
}

TEST(MoEDispatch, StableCountingSortWithInverse) {
  // 5 tokens, top-2, 4 experts; expert 2 gets nobody, -1 counts as expert 0.
  std::vector<int64_t> ids = {3, 0, 1, 3, 0, 1, 3, -1, 1, 0};
  std::vector<int64_t> rowOfSlot(10), slotOfRow(10), offsets(5);
  MatrixI64 idsView{ids.data(), ids.data(), 0, {5, 2}, {2, 1}};
  MatrixI64 rosView{rowOfSlot.data(), rowOfSlot.data(), 0, {5, 2}, {2, 1}};
  dsv3::rt::moeDispatchOrder(idsView, 4, rosView, vec(slotOfRow), vec(offsets));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 4, 7, 7, 10}));
  // Expert 0 gets slots 1, 4, 7, 9 in token order; expert 1 slots 2, 5, 8.
  EXPECT_EQ(slotOfRow, (std::vector<int64_t>{1, 4, 7, 9, 2, 5, 8, 0, 3, 6}));
  for (int64_t s = 0; s < 10; ++s)
    EXPECT_EQ(slotOfRow[rowOfSlot[s]], s) << "slot " << s;
}

TEST(GroupedGemm, GroupsMatchPerExpertProducts) {
  const int64_t rows = 23, k = 37, n = 19, experts = 4;
  std::vector<int64_t> offsets = {0, 9, 9, 20, 23}; // expert 1 is empty
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> x(rows * k), w(experts * n * k), y(rows * n, 7.0f);
  for (auto *v : {&x, &w})
    for (float &f : *v)
      f = dist(rng);
  auto offs = vec(offsets);
  auto xv = view(x, rows, k, k), yv = view(y, rows, n, n);
  auto wv = tensor3(w, experts, n, k);
  dsv3::rt::groupedMatmulNT(xv, wv, offs, yv);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double ref = 0;
        for (int64_t p = 0; p < k; ++p)
          ref += double(x[r * k + p]) * w[(e * n + j) * k + p];
        ASSERT_NEAR(y[r * n + j], ref, 1e-4) << "row " << r << " col " << j;
      }

  // The weight gradient: c[e] = a[:, group e] b[:, group e]^T.
  std::vector<float> a(n * rows), b(k * rows), c(experts * n * k, 3.0f);
  for (auto *v : {&a, &b})
    for (float &f : *v)
      f = dist(rng);
  auto cv = tensor3(c, experts, n, k);
  dsv3::rt::groupedMatmulNTSplitK(view(a, n, rows, rows), view(b, k, rows, rows),
                                  offs, cv);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double ref = 0;
        for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
          ref += double(a[i * rows + r]) * b[j * rows + r];
        ASSERT_NEAR(c[(e * n + i) * k + j], ref, 1e-4)
            << "expert " << e << " at " << i << "," << j;
      }
}

TEST(GroupedGemm, CorruptOffsetsStayInBounds) {
  // Bounds past the rows or decreasing are clamped, and a group starts no
  // earlier than the previous one ends: group 0 is rows [2, 2) (empty),
  // group 1 rows [2, 4); rows 0 and 1, in no group, are zero.
  std::vector<int64_t> offsets = {2, 1, 50};
  std::vector<float> x(4 * 3, 1.0f), w(2 * 2 * 3, 1.0f), y(4 * 2, 9.0f);
  auto xv = view(x, 4, 3, 3), yv = view(y, 4, 2, 2);
  auto wv = tensor3(w, 2, 2, 3);
  dsv3::rt::groupedMatmulNT(xv, wv, vec(offsets), yv);
  EXPECT_EQ(y, (std::vector<float>{0, 0, 0, 0, 3, 3, 3, 3}));
  // Overlapping and missing offsets: groups never overlap, groups past the
  // end of the offsets are empty.
  std::vector<int64_t> overlapping = {0, 3, 1, 4};
  auto ranges = dsv3::rt::groupRanges(vec(overlapping), 5, 4);
  EXPECT_EQ(ranges, (std::vector<dsv3::rt::RowRange>{{0, 3}, {3, 3}, {3, 4}, {4, 4}, {4, 4}}));
}

TEST(GroupedFP8Gemm, OverlappingOffsetsStayInBounds) {
  // Hand-written offsets where groups 0 and 2 both claim all 1000 rows:
  // group 0 keeps them, group 2 starts where group 0 ends (empty, zero
  // gradient), and nothing is read or written out of bounds.
  std::vector<int64_t> offsets = {0, 1000, 0, 1000, 0};
  int64_t rows = 1000, experts = 4, capacity = 12;
  std::vector<float> x(rows, 0.5f), scales(capacity, -1.0f);
  std::vector<uint8_t> codes(rows, 0xFF);
  auto offs = vec(offsets);
  dsv3::rt::StridedMatrix<float> xv{x.data(), x.data(), 0, {rows, 1}, {1, 1}};
  dsv3::rt::StridedMatrix<float> sv{scales.data(), scales.data(), 0, {capacity, 1}, {1, 1}};
  dsv3::rt::MatrixU8 qv{codes.data(), codes.data(), 0, {rows, 1}, {1, 1}};
  dsv3::rt::quantizeGroupedTiles(xv, offs, 128, 1, dsv3::rt::FP8Format::E4M3,
                                 dsv3::rt::ScaleRounding::Exact, qv, sv);
  for (int64_t t = 0; t < capacity; ++t)
    EXPECT_EQ(scales[t], t < 8 ? 0.5f / 448.0f : 0.0f) << "tile " << t;
  std::vector<float> y(experts, 7.0f);
  dsv3::rt::fp8KGroupedGemm(qv, sv, qv, sv, offs, dsv3::rt::FP8Format::E4M3,
                            dsv3::rt::FP8Format::E4M3,
                            tensor3(y, experts, 1, 1));
  EXPECT_FLOAT_EQ(y[0], 1000 * 0.25f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(GroupedFP8Gemm, RowsOutsideEveryGroupAreZero) {
  // One expert owns rows 1 and 2 of four; y starts as garbage.
  std::vector<int64_t> offsets = {1, 3};
  uint8_t one = dsv3::rt::encodeE4M3(1.0f);
  std::vector<uint8_t> a(4, one), b(1, one);
  std::vector<float> aScales(4, 2.0f), bScales(1, 3.0f), y(4, 9.0f);
  dsv3::rt::MatrixU8 av{a.data(), a.data(), 0, {4, 1}, {1, 1}};
  dsv3::rt::StridedMatrix<float> asv{aScales.data(), aScales.data(), 0, {4, 1}, {1, 1}};
  dsv3::rt::StridedTensor3<uint8_t> bv{b.data(), b.data(), 0, {1, 1, 1}, {1, 1, 1}};
  dsv3::rt::fp8MGroupedGemm(av, asv, bv, tensor3(bScales, 1, 1, 1), vec(offsets),
                            false, dsv3::rt::FP8Format::E4M3,
                            dsv3::rt::FP8Format::E4M3, view(y, 4, 1, 1));
  EXPECT_EQ(y, (std::vector<float>{0, 6, 6, 0}));
}

} // namespace
