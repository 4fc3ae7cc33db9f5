//===- SamplerTest.cpp - token sampling and speculative acceptance --------===//
//
// rt::Sampler against an independent computation of the target
// distribution (temperature, then top-k, then top-p, then softmax): greedy
// choice and its ties, the usable vocabulary, chi-squared tests of sampled
// frequencies, the rejection rule's output distribution for a point-mass
// draft, and reproducibility from the seed. rt::LatentCache placement.
//
//===----------------------------------------------------------------------===//
#include "runtime/generate/Sampler.h"
#include "runtime/generate/LatentCache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace dsv3::rt;

namespace {

/// The target distribution written out directly from the definitions.
std::vector<double> expected(const std::vector<float> &logits, double t,
                             int64_t k, double p) {
  int64_t n = logits.size();
  std::vector<std::pair<double, int64_t>> sorted;
  for (int64_t i = 0; i < n; ++i)
    sorted.push_back({-logits[i] / t, i});
  std::sort(sorted.begin(), sorted.end());
  if (k > 0 && k < n)
    sorted.resize(k);
  std::vector<double> w;
  for (auto &s : sorted)
    w.push_back(std::exp(-s.first + sorted[0].first));
  double total = std::accumulate(w.begin(), w.end(), 0.0), mass = 0;
  size_t keep = 0;
  while (keep < w.size() && mass < p * total)
    mass += w[keep++];
  std::vector<double> out(n, 0.0);
  for (size_t i = 0; i < keep; ++i)
    out[sorted[i].second] = w[i] / mass;
  return out;
}

/// Pearson's chi-squared statistic of `counts` against `probs` (cells with
/// zero probability must have zero counts).
double chiSquared(const std::vector<int64_t> &counts,
                  const std::vector<double> &probs, int64_t draws, int &cells) {
  double chi = 0;
  cells = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "id " << i << " has no mass but was drawn";
      continue;
    }
    double e = probs[i] * draws;
    chi += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  return chi;
}

const std::vector<float> kLogits = {1.0f, 2.5f, 0.3f, 2.4f, -1.0f,
                                    1.7f, 0.9f, 2.0f, 3.0f, 4.0f};

TEST(Sampler, GreedyTakesTheLowestIdOfTheLargestLogit) {
  Sampler s({}, 4);
  std::vector<float> l = {0.5f, 2.0f, 2.0f, 1.0f};
  EXPECT_EQ(s.argmax(l.data()), 1);
  EXPECT_EQ(s.sample(l.data()), 1);
}

TEST(Sampler, IdsPastTheUsableVocabularyAreNeverChosen) {
  // The last two ids have the largest logits but no token.
  Sampler greedy({}, 8), hot({2.0, 0, 1.0, 7}, 8);
  EXPECT_EQ(greedy.argmax(kLogits.data()), 1);
  for (int i = 0; i < 2000; ++i)
    EXPECT_LT(hot.sample(kLogits.data()), 8);
}

TEST(Sampler, DistributionFollowsTemperatureTopKTopP) {
  for (auto [t, k, p] : {std::tuple{1.0, 0L, 1.0},
                         {0.7, 5L, 1.0},
                         {1.3, 0L, 0.8},
                         {0.9, 6L, 0.9}}) {
    Sampler s({t, k, p, 1}, kLogits.size());
    std::vector<double> got = s.distribution(kLogits.data()),
                        want = expected(kLogits, t, k, p);
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-12)
          << "T " << t << " k " << k << " p " << p << " id " << i;
  }
}

TEST(Sampler, SampledFrequenciesPassChiSquared) {
  const int64_t draws = 200000;
  for (auto [t, k, p] : {std::tuple{1.0, 0L, 1.0}, {0.8, 6L, 0.95}}) {
    Sampler s({t, k, p, 42}, kLogits.size());
    std::vector<int64_t> counts(kLogits.size(), 0);
    for (int64_t i = 0; i < draws; ++i)
      ++counts[s.sample(kLogits.data())];
    int cells = 0;
    double chi = chiSquared(counts, expected(kLogits, t, k, p), draws, cells);
    // 99.9% quantile of chi-squared with 9 degrees of freedom: 27.9.
    EXPECT_LT(chi, 27.9) << "T " << t << " cells " << cells;
  }
}

/// Speculative verification of a point-mass draft: the emitted token is
/// distributed as the target p, whatever the draft.
TEST(Sampler, RejectionRuleKeepsTheTargetDistribution) {
  const int64_t draws = 200000;
  for (int64_t draft : {9L, 2L, 4L}) {
    Sampler s({0.9, 0, 1.0, 7}, kLogits.size());
    std::vector<int64_t> counts(kLogits.size(), 0);
    int64_t accepted = 0;
    for (int64_t i = 0; i < draws; ++i) {
      bool ok = false;
      int64_t token = s.verify(kLogits.data(), draft, ok);
      ++counts[token];
      accepted += ok;
      EXPECT_EQ(ok, token == draft);
    }
    std::vector<double> p = expected(kLogits, 0.9, 0, 1.0);
    int cells = 0;
    EXPECT_LT(chiSquared(counts, p, draws, cells), 27.9) << "draft " << draft;
    // Acceptance happens with probability p(draft).
    EXPECT_NEAR(double(accepted) / draws, p[draft],
                4 * std::sqrt(p[draft] / draws) + 1e-3);
  }
}

TEST(Sampler, GreedyVerificationComparesArgmaxes) {
  Sampler s({}, kLogits.size());
  bool ok = true;
  EXPECT_EQ(s.verify(kLogits.data(), 3, ok), 9);
  EXPECT_FALSE(ok);
  EXPECT_EQ(s.verify(kLogits.data(), 9, ok), 9);
  EXPECT_TRUE(ok);
}

TEST(Sampler, TheSeedReproducesTheSequence) {
  Sampler a({1.0, 0, 1.0, 5}, kLogits.size()),
      b({1.0, 0, 1.0, 5}, kLogits.size()), c({1.0, 0, 1.0, 6}, kLogits.size());
  std::vector<int64_t> x, y, z;
  for (int i = 0; i < 64; ++i) {
    x.push_back(a.sample(kLogits.data()));
    y.push_back(b.sample(kLogits.data()));
    z.push_back(c.sample(kLogits.data()));
  }
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
}

TEST(LatentCache, BF16RowsAreRoundedToNearestEven) {
  LatentCache cache({1, 1, 2, 4}, ElementType::BF16);
  EXPECT_EQ(cache.bytesPerToken(), 4 * 2);
  HostTensor rows(ElementType::F32, {1, 1, 1, 4});
  // 1 + 2^-8 is halfway between two BF16 values: ties go to the even one
  // (1.0); 1 + 3*2^-8 rounds up to 1 + 2^-6; exact values stay.
  float values[4] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f, 0.0f};
  std::copy(values, values + 4, rows.f32());
  cache.write(rows, 0, 0, 1, 0, 1);
  EXPECT_EQ(cache.at(0, 0, 1, 0), 1.0f);
  EXPECT_EQ(cache.at(0, 0, 1, 1), 1.0f + 1.0f / 64);
  EXPECT_EQ(cache.at(0, 0, 1, 2), -2.5f);
  EXPECT_EQ(cache.at(0, 0, 0, 0), 0.0f);
}

TEST(LatentCache, WritesRowsAtTheirLayerSlotAndPosition) {
  LatentCache cache({3, 2, 8, 4}); // 3 layers, 2 slots, 8 positions, rows of 4
  EXPECT_EQ(cache.bytesPerToken(), 3 * 4 * 4);
  // A step's rows of 2 layers (the cache's layers 1 and 2), 2 rows, 3 tokens.
  HostTensor rows(ElementType::F32, {2, 2, 3, 4});
  for (int64_t i = 0; i < rows.numElements(); ++i)
    rows.f32()[i] = float(i);
  cache.write(rows, /*firstLayer=*/1, /*b=*/1, /*count=*/2, /*slot=*/0,
              /*position=*/5);
  // Layer l of the step, batch row 1, token i -> cache layer 1+l, slot 0,
  // position 5+i.
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t c = 0; c < 4; ++c)
        EXPECT_EQ(cache.at(1 + l, 0, 5 + i, c),
                  float(((l * 2 + 1) * 3 + i) * 4 + c));
  // The third token was not kept; nothing else was touched.
  EXPECT_EQ(cache.at(1, 0, 7, 0), 0.0f);
  EXPECT_EQ(cache.at(0, 0, 5, 0), 0.0f);
  EXPECT_EQ(cache.at(1, 1, 5, 0), 0.0f);
  // Rows past the capacity are dropped, not written out of bounds.
  cache.write(rows, 0, 0, 3, 1, 7);
  EXPECT_EQ(cache.at(0, 1, 7, 0), 0.0f + 0);
}

} // namespace
