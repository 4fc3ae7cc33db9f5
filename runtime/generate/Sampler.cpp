//===- Sampler.cpp - choosing the next token from logits ------------------===//
#include "runtime/generate/Sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace dsv3::rt {

Sampler::Sampler(SamplingParams params, int64_t vocab)
    : params_(params), vocab(vocab), rng(params.seed) {}

int64_t Sampler::argmax(const float *logits) const {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best])
      best = i;
  return best;
}

std::vector<double> Sampler::distribution(const float *logits) const {
  std::vector<double> p(vocab, 0.0);
  if (params_.greedy()) {
    p[argmax(logits)] = 1.0;
    return p;
  }
  // Ids by decreasing logit (stable: ties keep the lower id first).
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t keep = params_.topK > 0 ? std::min(params_.topK, vocab) : vocab;
  double top = logits[order[0]] / params_.temperature, sum = 0.0;
  for (int64_t r = 0; r < keep; ++r)
    sum +=
        (p[order[r]] = std::exp(logits[order[r]] / params_.temperature - top));
  // Top-p: the smallest prefix of the sorted ids whose mass reaches top_p
  // (at least one id).
  if (params_.topP < 1.0) {
    double mass = 0.0;
    int64_t r = 0;
    while (r < keep && mass < params_.topP * sum)
      mass += p[order[r++]];
    for (int64_t q = std::max<int64_t>(r, 1); q < keep; ++q)
      p[order[q]] = 0.0;
    keep = std::max<int64_t>(r, 1);
    sum = 0.0;
    for (int64_t q = 0; q < keep; ++q)
      sum += p[order[q]];
  }
  for (double &x : p)
    x /= sum;
  return p;
}

int64_t Sampler::draw(const std::vector<double> &p) {
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng), acc = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[i] <= 0.0)
      continue;
    last = i;
    acc += p[i];
    if (u < acc)
      return i;
  }
  return last; // rounding left u above the total
}

int64_t Sampler::sample(const float *logits) {
  if (params_.greedy())
    return argmax(logits);
  return draw(distribution(logits));
}

int64_t Sampler::verify(const float *logits, int64_t draft, bool &accepted) {
  if (params_.greedy()) {
    int64_t y = argmax(logits);
    accepted = y == draft;
    return y;
  }
  std::vector<double> p = distribution(logits);
  double pd = draft >= 0 && draft < vocab ? p[draft] : 0.0;
  accepted = std::uniform_real_distribution<double>(0.0, 1.0)(rng) < pd;
  if (accepted)
    return draft;
  // The residual max(p - q, 0) of a point-mass draft: p without the draft.
  p[draft] = 0.0;
  double rest = 1.0 - pd;
  if (rest <= 0.0)
    return draft;
  for (double &x : p)
    x /= rest;
  return draw(p);
}

} // namespace dsv3::rt
