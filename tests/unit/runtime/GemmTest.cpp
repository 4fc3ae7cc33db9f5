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

TEST(Gemm, StridedOperand) { check(6, 10, 21, true); }

} // namespace
