//===- Sampler.h - choosing the next token from logits ----------*- C++ -*-===//
//
// Part of the generation runtime (no LLVM). Temperature, then top-k, then
// top-p, then the softmax (the order of Hugging Face and vLLM, which matches
// OpenAI's semantics); temperature 0 is greedy. Ids at or past the usable
// vocabulary (a model's vocab_size may exceed its tokenizer's) are never
// chosen. The speculative rule (Leviathan et al.) for a draft chosen by
// argmax, a point mass: accept it with probability p(draft), otherwise
// sample from p with the draft removed; the output distribution is p's.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_GENERATE_SAMPLER_H
#define DSV3_RUNTIME_GENERATE_SAMPLER_H

#include <cstdint>
#include <random>
#include <vector>

namespace dsv3::rt {

struct SamplingParams {
  double temperature = 0.0; ///< 0: greedy
  int64_t topK = 0;         ///< 0: no limit
  double topP = 1.0;        ///< 1: no limit
  uint64_t seed = 0;
  bool greedy() const { return temperature <= 0.0; }
};

class Sampler {
public:
  /// `vocab` usable ids of the logits' `width` (vocab <= width).
  Sampler(SamplingParams params, int64_t vocab);

  /// The id with the largest logit (the lowest id on ties).
  int64_t argmax(const float *logits) const;
  /// The target distribution over the usable ids (temperature, top-k,
  /// top-p, softmax): probabilities, zero outside the kept set.
  std::vector<double> distribution(const float *logits) const;
  /// A token: argmax when greedy, else drawn from distribution().
  int64_t sample(const float *logits);
  /// Speculative verification of `draft` against the target logits: the
  /// draft itself when accepted (greedy: when it is the argmax), else the
  /// replacement token. `accepted` says which.
  int64_t verify(const float *logits, int64_t draft, bool &accepted);

  const SamplingParams &params() const { return params_; }

private:
  int64_t draw(const std::vector<double> &p);

  SamplingParams params_;
  int64_t vocab;
  std::mt19937_64 rng;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_GENERATE_SAMPLER_H
