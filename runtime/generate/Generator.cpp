//===- Generator.cpp - prefill and decode over a latent cache -------------===//
#include "runtime/generate/Generator.h"

#include <algorithm>
#include <chrono>

namespace dsv3::rt {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Index of the output called `name` of `entry`, or -1.
int64_t outputIndex(const EntryPoint &entry, const std::string &name) {
  for (size_t i = 0; i < entry.outputs.size(); ++i)
    if (entry.outputs[i].name == name)
      return static_cast<int64_t>(i);
  return -1;
}

const InputSlot *input(const EntryPoint &entry, const std::string &name) {
  for (const InputSlot &s : entry.inputs)
    if (s.name == name)
      return &s;
  return nullptr;
}

} // namespace

Expected<std::unique_ptr<Generator>> Generator::create(Session &session,
                                                       bool speculative) {
  const Executable &exe = session.executable();
  const EntryPoint *prefill = exe.entry("prefill"),
                   *decode = exe.entry("decode");
  if (!prefill || !decode)
    return Error::failure("the compiled module has no generation entry points "
                          "(@prefill, @decode)");
  const InputSlot *cacheSlot = input(*decode, "kv_cache");
  if (!cacheSlot || cacheSlot->shape.size() != 4)
    return Error::failure(
        "@decode takes no kv_cache [layers, slots, capacity, row]");
  if (speculative && (!exe.entry("verify") || !exe.entry("mtp_step")))
    return Error::failure("speculative decoding needs the model's MTP layer "
                          "(num_nextn_predict_layers = 0 here)");
  std::unique_ptr<Generator> g(
      new Generator(session, cacheSlot->shape, cacheSlot->type, speculative));
  g->prefillRows = input(*prefill, "input_ids")->shape[0];
  for (const EntryPoint &e : exe.entries()) {
    if (e.name != "prefill" && e.name.rfind("prefill_", 0) != 0)
      continue;
    const InputSlot *ids = input(e, "input_ids");
    if (!ids || ids->shape.size() != 2 || ids->shape[0] != g->prefillRows)
      return Error::failure("@" + e.name + " does not take input_ids [" +
                            std::to_string(g->prefillRows) + ", T]");
    g->prefills.push_back({ids->shape[1], e.name, "mtp_" + e.name});
    if (speculative && !exe.entry("mtp_" + e.name))
      return Error::failure("@" + e.name + " has no @mtp_" + e.name);
  }
  std::sort(
      g->prefills.begin(), g->prefills.end(),
      [](const Prefill &a, const Prefill &b) { return a.length < b.length; });
  int64_t logits = outputIndex(*decode, "logits"),
          rows = outputIndex(*decode, "kv_rows");
  if (logits < 0 || rows < 0)
    return Error::failure("@decode returns no logits or kv_rows");
  g->vocab_ = g->usableVocab = decode->outputs[logits].shape.back();
  g->mainLayers = decode->outputs[rows].shape[0];
  if (speculative) {
    const EntryPoint *verify = exe.entry("verify");
    g->verifyLen = input(*verify, "input_ids")->shape[1];
    g->hiddenSize = input(*exe.entry("mtp_step"), "hidden")->shape.back();
    if (g->verifyLen != 2)
      return Error::failure(
          "speculative decoding drafts one token: @verify must take 2 tokens");
  }
  return g;
}

Generator::Generator(Session &session, std::vector<int64_t> cacheShape,
                     ElementType cacheType, bool speculative)
    : session(session), cache(cacheShape, cacheType), speculative(speculative) {
  seqs.resize(cache.slots());
}

int64_t Generator::freeSlots() const {
  return std::count_if(seqs.begin(), seqs.end(),
                       [](const Sequence &s) { return !s.used; });
}

bool Generator::busy() const {
  return std::any_of(seqs.begin(), seqs.end(),
                     [](const Sequence &s) { return s.used && !s.done; });
}

bool Generator::finished(int64_t slot) const {
  return seqs[slot].used && seqs[slot].done;
}

void Generator::cancel(int64_t slot) {
  Sequence &s = seqs[slot];
  if (s.used && !s.done) {
    s.done = true;
    s.result.finishReason = "cancelled";
  }
}

GenerateResult Generator::take(int64_t slot) {
  GenerateResult r = std::move(seqs[slot].result);
  seqs[slot] = Sequence();
  return r;
}

bool Generator::emit(int64_t slot, int64_t token, const float *logits) {
  Sequence &s = seqs[slot];
  if (s.done)
    return false;
  s.result.tokens.push_back(token);
  if (keepLogits_)
    s.result.stepLogits.insert(s.result.stepLogits.end(), logits,
                               logits + vocab_);
  bool go = !callback || callback(slot, token, logits);
  auto &stops = s.request.stopTokens;
  if (!go || std::find(stops.begin(), stops.end(), token) != stops.end()) {
    s.result.finishReason = "stop";
  } else if (int64_t(s.result.tokens.size()) >= s.request.maxNewTokens ||
             // The next step feeds this token (and with a draft, one more).
             s.length + 1 + (speculative ? 1 : 0) > cache.capacity()) {
    s.result.finishReason = "length";
  } else {
    return true;
  }
  s.done = true;
  return false;
}

Expected<std::vector<int64_t>>
Generator::admit(const std::vector<GenerateRequest> &requests) {
  if (int64_t(requests.size()) > freeSlots())
    return Error::failure(std::to_string(requests.size()) + " sequences for " +
                          std::to_string(freeSlots()) + " free slots");
  std::vector<int64_t> slots;
  for (const GenerateRequest &r : requests) {
    if (r.prompt.empty())
      return Error::failure("an empty prompt");
    if (int64_t(r.prompt.size()) > promptCapacity())
      return Error::failure("a prompt of " + std::to_string(r.prompt.size()) +
                            " tokens is longer than the compiled prefill (" +
                            std::to_string(promptCapacity()) + ")");
    for (int64_t id : r.prompt)
      if (id < 0 || id >= vocab_)
        return Error::failure("prompt token " + std::to_string(id) +
                              " is outside the vocabulary [0, " +
                              std::to_string(vocab_) + ")");
  }
  for (const GenerateRequest &r : requests) {
    int64_t slot = 0;
    while (seqs[slot].used)
      ++slot;
    Sequence &s = seqs[slot];
    s.used = true;
    s.request = r;
    s.result.promptTokens = r.prompt.size();
    s.sampler.emplace(r.sampling, usableVocab);
    slots.push_back(slot);
  }
  for (size_t i = 0; i < slots.size(); i += prefillRows) {
    std::vector<int64_t> batch(slots.begin() + i,
                               slots.begin() +
                                   std::min(slots.size(), i + prefillRows));
    if (Error e = prefillBatch(batch))
      return e;
  }
  return slots;
}

Error Generator::prefillBatch(const std::vector<int64_t> &batch) {
  auto start = Clock::now();
  // The shortest compiled length that holds the batch's longest prompt.
  // Shorter prompts are padded at the end: causal attention keeps the
  // padding out of every real position, and its rows are never written.
  size_t longest = 0;
  for (int64_t slot : batch)
    longest = std::max(longest, seqs[slot].request.prompt.size());
  const Prefill &fit =
      *std::find_if(prefills.begin(), prefills.end(), [&](const Prefill &p) {
        return p.length >= int64_t(longest);
      });
  int64_t rows = prefillRows, t = fit.length;
  std::vector<int64_t> ids(rows * t, 0);
  for (size_t b = 0; b < batch.size(); ++b) {
    const auto &prompt = seqs[batch[b]].request.prompt;
    std::copy(prompt.begin(), prompt.end(), ids.begin() + b * t);
  }
  if (Error e = session.run(fit.entry, {{ids.data(), {rows, t}}}))
    return e;
  const EntryPoint &entry = *session.executable().entry(fit.entry);
  OutputBuffers &out = session.outputs(fit.entry);
  const HostTensor &logits = out.tensors[outputIndex(entry, "logits")];
  const HostTensor &kvRows = out.tensors[outputIndex(entry, "kv_rows")];
  std::vector<int64_t> next(rows * t, 0);
  for (size_t b = 0; b < batch.size(); ++b) {
    Sequence &s = seqs[batch[b]];
    int64_t n = s.request.prompt.size();
    cache.write(kvRows, 0, b, n, batch[b], 0);
    s.length = n;
    const float *last = logits.f32() + (b * t + n - 1) * vocab_;
    s.next = s.sampler->sample(last);
    stats_.prefillTokens += n;
    // The MTP input pairs position j's hidden state with token j+1.
    std::copy(s.request.prompt.begin() + 1, s.request.prompt.end(),
              next.begin() + b * t);
    next[b * t + n - 1] = s.next;
  }
  double prefill = since(start);
  if (stats_.firstTokenSeconds == 0)
    stats_.firstTokenSeconds = prefill;
  for (size_t b = 0; b < batch.size(); ++b) {
    Sequence &s = seqs[batch[b]];
    emit(batch[b], s.next, logits.f32() + (b * t + s.length - 1) * vocab_);
  }
  if (speculative) {
    auto mtpStart = Clock::now();
    const HostTensor &hidden = out.tensors[outputIndex(entry, "hidden")];
    if (Error e = session.run(
            fit.mtpEntry,
            {{next.data(), {rows, t}},
             {const_cast<HostTensor &>(hidden).f32(), hidden.shape}}))
      return e;
    const EntryPoint &mtp = *session.executable().entry(fit.mtpEntry);
    OutputBuffers &mout = session.outputs(fit.mtpEntry);
    const HostTensor &mtpLogits = mout.tensors[outputIndex(mtp, "mtp_logits")];
    const HostTensor &mtpRows = mout.tensors[outputIndex(mtp, "kv_rows")];
    for (size_t b = 0; b < batch.size(); ++b) {
      Sequence &s = seqs[batch[b]];
      cache.write(mtpRows, mainLayers, b, s.length, batch[b], 0);
      s.draft =
          s.sampler->argmax(mtpLogits.f32() + (b * t + s.length - 1) * vocab_);
    }
    prefill += since(mtpStart);
  }
  stats_.prefillSeconds += prefill;
  return Error::success();
}

Error Generator::step() {
  if (!busy())
    return Error::success();
  auto start = Clock::now();
  Error e = speculative ? speculativeStep() : decodeStep();
  stats_.decodeSeconds += since(start);
  ++stats_.steps;
  return e;
}

Error Generator::decodeStep() {
  int64_t slots = cache.slots();
  std::vector<int64_t> ids(slots, 0), positions(slots, 0);
  for (int64_t b = 0; b < slots; ++b)
    if (seqs[b].used && !seqs[b].done) {
      ids[b] = seqs[b].next;
      positions[b] = seqs[b].length;
    }
  if (Error e = session.run("decode", {{ids.data(), {slots, 1}},
                                       {positions.data(), {slots, 1}},
                                       cache.arg()}))
    return e;
  const EntryPoint &entry = *session.executable().entry("decode");
  OutputBuffers &out = session.outputs("decode");
  const HostTensor &logits = out.tensors[outputIndex(entry, "logits")];
  const HostTensor &rows = out.tensors[outputIndex(entry, "kv_rows")];
  std::vector<int64_t> fed(slots, 0);
  for (int64_t b = 0; b < slots; ++b)
    fed[b] = seqs[b].used && !seqs[b].done;
  countExpertOverlap("decode", 1, fed);
  for (int64_t b = 0; b < slots; ++b) {
    Sequence &s = seqs[b];
    if (!s.used || s.done)
      continue;
    cache.write(rows, 0, b, 1, b, s.length);
    s.length += 1;
    const float *l = logits.f32() + b * vocab_;
    s.next = s.sampler->sample(l);
    ++stats_.decodeTokens;
    emit(b, s.next, l);
  }
  return Error::success();
}

void Generator::countExpertOverlap(const std::string &entry, int64_t t,
                                   const std::vector<int64_t> &count) {
  const EntryPoint &e = *session.executable().entry(entry);
  OutputBuffers &out = session.outputs(entry);
  int64_t layer = 0;
  for (size_t o = 0; o < e.outputs.size(); ++o) {
    if (e.outputs[o].role != "expert_ids")
      continue;
    int64_t k = e.outputs[o].shape.back();
    const int64_t *ids = out.i64(o);
    for (int64_t b = 0; b < int64_t(count.size()); ++b) {
      Sequence &s = seqs[b];
      if (count[b] == 0)
        continue;
      if (int64_t(s.lastExperts.size()) <= layer)
        s.lastExperts.resize(layer + 1);
      for (int64_t i = 0; i < count[b]; ++i) {
        std::vector<int64_t> now(ids + (b * t + i) * k, ids + (b * t + i + 1) * k);
        std::vector<int64_t> &before = s.lastExperts[layer];
        if (!before.empty()) {
          for (int64_t x : now)
            stats_.sharedExperts += std::count(before.begin(), before.end(), x);
          stats_.comparedExperts += k;
        }
        before = std::move(now);
      }
    }
    ++layer;
  }
}

Error Generator::speculativeStep() {
  int64_t slots = cache.slots(), t = verifyLen;
  std::vector<int64_t> ids(slots * t, 0), positions(slots * t, 0);
  std::vector<char> active(slots, 0);
  for (int64_t b = 0; b < slots; ++b) {
    Sequence &s = seqs[b];
    if (!s.used || s.done)
      continue;
    active[b] = 1;
    ids[b * t] = s.next;
    ids[b * t + 1] = s.draft;
    positions[b * t] = s.length;
    positions[b * t + 1] = s.length + 1;
  }
  if (Error e = session.run("verify", {{ids.data(), {slots, t}},
                                       {positions.data(), {slots, t}},
                                       cache.arg()}))
    return e;
  const EntryPoint &entry = *session.executable().entry("verify");
  OutputBuffers &out = session.outputs("verify");
  const HostTensor &logits = out.tensors[outputIndex(entry, "logits")];
  const HostTensor &hidden = out.tensors[outputIndex(entry, "hidden")];
  const HostTensor &rows = out.tensors[outputIndex(entry, "kv_rows")];
  // What the MTP layer consumes next: (h_j, token j+1) for the new rows.
  std::vector<int64_t> mtpIds(slots * t, 0), mtpPositions(slots * t, 0),
      count(slots, 0);
  std::vector<float> mtpHidden(slots * t * hiddenSize, 0.0f);
  for (int64_t b = 0; b < slots; ++b) {
    if (!active[b])
      continue;
    Sequence &s = seqs[b];
    const float *l0 = logits.f32() + (b * t) * vocab_, *l1 = l0 + vocab_;
    bool accepted = false;
    int64_t y = s.sampler->verify(l0, s.draft, accepted);
    ++stats_.drafts;
    stats_.accepted += accepted;
    int64_t kept = accepted ? 2 : 1, old = s.length;
    cache.write(rows, 0, b, kept, b, old);
    s.length += kept;
    ++stats_.decodeTokens;
    bool more = emit(b, y, l0);
    int64_t last = y;
    if (accepted && more) {
      last = s.sampler->sample(l1);
      ++stats_.decodeTokens;
      emit(b, last, l1);
    }
    s.next = last;
    // Row old: (h_old, y); when accepted also row old+1: (h_old+1, bonus).
    count[b] = kept;
    mtpIds[b * t] = y;
    mtpIds[b * t + 1] = accepted ? last : y;
    mtpPositions[b * t] = old;
    mtpPositions[b * t + 1] = old + 1;
    const float *h = hidden.f32() + b * t * hiddenSize;
    std::copy(h, h + t * hiddenSize, mtpHidden.begin() + b * t * hiddenSize);
  }
  // Both tokens of a verify step read their experts, accepted or not.
  std::vector<int64_t> verified(slots, 0);
  for (int64_t b = 0; b < slots; ++b)
    verified[b] = active[b] ? t : 0;
  countExpertOverlap("verify", t, verified);
  return draftStep(mtpIds, mtpHidden, mtpPositions, count);
}

Error Generator::draftStep(const std::vector<int64_t> &ids,
                           const std::vector<float> &hidden,
                           const std::vector<int64_t> &positions,
                           const std::vector<int64_t> &count) {
  int64_t slots = cache.slots(), t = verifyLen;
  if (Error e = session.run(
          "mtp_step",
          {{const_cast<int64_t *>(ids.data()), {slots, t}},
           {const_cast<float *>(hidden.data()), {slots, t, hiddenSize}},
           {const_cast<int64_t *>(positions.data()), {slots, t}},
           cache.arg()}))
    return e;
  const EntryPoint &entry = *session.executable().entry("mtp_step");
  OutputBuffers &out = session.outputs("mtp_step");
  const HostTensor &logits = out.tensors[outputIndex(entry, "mtp_logits")];
  const HostTensor &rows = out.tensors[outputIndex(entry, "kv_rows")];
  for (int64_t b = 0; b < slots; ++b) {
    if (count[b] == 0 || seqs[b].done)
      continue;
    cache.write(rows, mainLayers, b, count[b], b, positions[b * t]);
    seqs[b].draft =
        seqs[b].sampler->argmax(logits.f32() + (b * t + count[b] - 1) * vocab_);
  }
  return Error::success();
}

Expected<std::vector<GenerateResult>>
Generator::generate(const std::vector<GenerateRequest> &requests) {
  std::vector<GenerateResult> results(requests.size());
  size_t nextRequest = 0;
  std::vector<std::pair<int64_t, size_t>> running; // (slot, request)
  while (nextRequest < requests.size() || busy()) {
    // Fill free slots, then step; finished sequences leave between steps.
    int64_t free = freeSlots();
    if (free > 0 && nextRequest < requests.size()) {
      size_t n = std::min<size_t>(free, requests.size() - nextRequest);
      std::vector<GenerateRequest> batch(requests.begin() + nextRequest,
                                         requests.begin() + nextRequest + n);
      auto slots = admit(batch);
      if (!slots)
        return slots.error();
      for (size_t i = 0; i < n; ++i)
        running.push_back({(*slots)[i], nextRequest + i});
      nextRequest += n;
    }
    if (Error e = step())
      return e;
    for (auto it = running.begin(); it != running.end();) {
      if (finished(it->first)) {
        results[it->second] = take(it->first);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
  }
  return results;
}

} // namespace dsv3::rt
