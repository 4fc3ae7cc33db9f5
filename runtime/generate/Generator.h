//===- Generator.h - prefill and decode over a latent cache -----*- C++ -*-===//
//
// Part of the generation runtime (no LLVM): drives the compiled generation
// entry points (frontends/import importGenerator: @prefill, @decode and,
// with an MTP layer, @verify, @mtp_prefill, @mtp_step) of a session.
// Sequences live in slots of the decode batch: admit() prefills prompts
// (the naive MLA form) and writes their cache rows, step() advances every
// active slot by one decode step (absorbed MLA over the cache), so that
// requests may join and leave between steps (continuous batching).
//
// With speculative decoding, MTP drafts one token per step from the main
// model's final-normed hidden state; @verify runs [next, draft] at once and
// the sampler's rule accepts or replaces the draft (greedy: the output is
// exactly the non-speculative one); the MTP layer then consumes the newly
// committed rows (INFERENCE.md §3.3). Rejected rows are never written.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_GENERATE_GENERATOR_H
#define DSV3_RUNTIME_GENERATE_GENERATOR_H

#include "runtime/exec/Session.h"
#include "runtime/generate/LatentCache.h"
#include "runtime/generate/Sampler.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dsv3::rt {

struct GenerateRequest {
  std::vector<int64_t> prompt;
  int64_t maxNewTokens = 16;
  SamplingParams sampling;
  /// Tokens that end the sequence when generated (EOS); they are emitted.
  std::vector<int64_t> stopTokens;
};

struct GenerateResult {
  std::vector<int64_t> tokens;
  /// The logits each token was chosen from (tokens.size() x vocab), kept
  /// when the generator keeps logits.
  std::vector<float> stepLogits;
  /// "length" (max_new_tokens or the cache is full), "stop" (a stop token,
  /// or the caller ended it), "cancelled".
  std::string finishReason;
  int64_t promptTokens = 0;
};

/// Counters since the generator was made (or resetStats()).
struct GenerateStats {
  double prefillSeconds = 0, decodeSeconds = 0, firstTokenSeconds = 0;
  int64_t prefillTokens = 0, decodeTokens = 0, steps = 0;
  /// Speculative: drafts verified and accepted (vLLM: acceptance rate =
  /// accepted / drafted; mean acceptance length = 1 + accepted / drafts).
  int64_t drafts = 0, accepted = 0;
  /// Routed experts two adjacent generated tokens share, summed over MoE
  /// layers and token pairs, and the experts compared: the fraction of a
  /// verify step's second token's experts that the first one already reads.
  int64_t sharedExperts = 0, comparedExperts = 0;
};

class Generator {
public:
  /// Over `session`'s generation entry points; `speculative` needs @verify
  /// and the MTP steps.
  static Expected<std::unique_ptr<Generator>> create(Session &session,
                                                     bool speculative);

  /// Called with each generated token and its logits; returning false ends
  /// the sequence (a stop string, a client that left).
  using TokenCallback =
      std::function<bool(int64_t slot, int64_t token, const float *logits)>;
  void onToken(TokenCallback fn) { callback = std::move(fn); }
  /// Usable ids: logits past them are never sampled (the tokenizer's size).
  void setUsableVocab(int64_t n) { usableVocab = std::min(n, vocab_); }
  void keepLogits(bool keep) { keepLogits_ = keep; }

  int64_t slots() const { return cache.slots(); }
  int64_t freeSlots() const;
  int64_t capacity() const { return cache.capacity(); }
  /// The longest prompt a prefill entry takes.
  int64_t promptCapacity() const { return prefills.back().length; }
  int64_t vocab() const { return vocab_; }
  const LatentCache &latentCache() const { return cache; }

  /// Prefills `requests` into free slots (in batches of the prefill
  /// entry's rows) and emits each one's first token; returns their slots.
  Expected<std::vector<int64_t>>
  admit(const std::vector<GenerateRequest> &requests);
  /// One decode (or verify and draft) step of every active slot.
  Error step();
  /// True while a slot is generating.
  bool busy() const;
  bool finished(int64_t slot) const;
  /// Ends a slot's sequence now (reason "cancelled").
  void cancel(int64_t slot);
  /// The finished sequence of `slot`, which becomes free.
  GenerateResult take(int64_t slot);

  /// Admits all, steps until every one finishes, and returns the results
  /// in request order.
  Expected<std::vector<GenerateResult>>
  generate(const std::vector<GenerateRequest> &requests);

  const GenerateStats &stats() const { return stats_; }
  void resetStats() { stats_ = GenerateStats(); }

private:
  struct Sequence {
    bool used = false, done = false;
    int64_t length = 0; ///< main cache rows written: the position of `next`
    int64_t next = 0;   ///< generated, not yet fed to the model
    int64_t draft = 0;  ///< MTP's guess for the token after `next`
    GenerateRequest request;
    GenerateResult result;
    std::optional<Sampler> sampler;
    /// The experts the last token fed chose, per MoE layer.
    std::vector<std::vector<int64_t>> lastExperts;
  };
  /// Counts the experts adjacent tokens of each active slot share, from the
  /// step's expert-choice outputs (tokens [b*t, b*t + count[b]) of slot b).
  void countExpertOverlap(const std::string &entry, int64_t t, const std::vector<int64_t> &count);
  Generator(Session &session, std::vector<int64_t> cacheShape,
            ElementType cacheType, bool speculative);
  /// Appends `token` to the slot's output; false when the sequence ended.
  bool emit(int64_t slot, int64_t token, const float *logits);
  Error prefillBatch(const std::vector<int64_t> &slotsToFill);
  /// A compiled prompt length and its entry points (@prefill[_<n>],
  /// @mtp_prefill[_<n>]), shortest first.
  struct Prefill {
    int64_t length;
    std::string entry, mtpEntry;
  };
  std::vector<Prefill> prefills;
  Error decodeStep();
  Error speculativeStep();
  /// Runs @mtp_step on (ids, hidden rows, positions) and keeps `count[b]`
  /// rows of each slot; the draft is the argmax of the last kept row.
  Error draftStep(const std::vector<int64_t> &ids,
                  const std::vector<float> &hidden,
                  const std::vector<int64_t> &positions,
                  const std::vector<int64_t> &count);

  Session &session;
  LatentCache cache;
  bool speculative;
  int64_t prefillRows = 1, verifyLen = 0, vocab_ = 0, usableVocab = 0,
          hiddenSize = 0, mainLayers = 0;
  bool keepLogits_ = false;
  TokenCallback callback;
  std::vector<Sequence> seqs;
  GenerateStats stats_;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_GENERATE_GENERATOR_H
