//===- Engine.cpp - continuous batching over one Generator ----------------===//
//
// The engine thread's loop: admit queued requests into free slots, apply
// cancellations, step, collect finished slots; see Engine.h.
//
//===----------------------------------------------------------------------===//
#include "runtime/serve/Engine.h"

#include <algorithm>

namespace dsv3::rt {

//===----------------------------------------------------------------------===//
// RequestChannel
//===----------------------------------------------------------------------===//

bool RequestChannel::wait(std::string &text,
                          std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex);
  changed.wait_for(lock, timeout, [&] { return ended || !pending.empty(); });
  text += pending;
  pending.clear();
  return ended;
}

void RequestChannel::waitForEnd(std::string &text) {
  std::unique_lock<std::mutex> lock(mutex);
  changed.wait(lock, [&] { return ended; });
  text += pending;
  pending.clear();
}

EngineOutcome RequestChannel::outcome() const {
  std::lock_guard<std::mutex> lock(mutex);
  return result;
}

void RequestChannel::deliver(const std::string &text) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    pending += text;
  }
  changed.notify_all();
}

void RequestChannel::end(EngineOutcome outcome) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    result = std::move(outcome);
    ended = true;
  }
  changed.notify_all();
}

//===----------------------------------------------------------------------===//
// Engine
//===----------------------------------------------------------------------===//

Engine::Engine(Generator &generator, const Tokenizer &tokenizer,
               int64_t maxQueue)
    : generator(generator), tokenizer(tokenizer),
      maxQueue(std::max<int64_t>(maxQueue, 0)), slotCount(generator.slots()),
      capacity(generator.capacity()), maxPrompt(generator.promptCapacity()),
      vocabSize(generator.vocab()) {
  active.resize(slotCount);
  generator.onToken([this](int64_t slot, int64_t token, const float *) {
    return onToken(slot, token);
  });
}

Engine::~Engine() { stop(); }

void Engine::start() {
  std::lock_guard<std::mutex> lock(queueMutex);
  if (!thread.joinable() && !stopping)
    thread = std::thread([this] { run(); });
}

Expected<std::shared_ptr<RequestChannel>>
Engine::submit(EngineRequest request) {
  auto channel = std::make_shared<RequestChannel>();
  {
    std::lock_guard<std::mutex> lock(queueMutex);
    if (stopping)
      return Error::failure("the server is shutting down");
    // Everything in the system: the slots' requests and those waiting.
    if (runningCount + int64_t(queue.size()) >= slotCount + maxQueue)
      return Error::failure(
          "the server is busy: " + std::to_string(queue.size()) +
          " requests are waiting for one of " + std::to_string(slotCount) +
          " slots; retry later");
    queue.push_back({std::move(request), channel});
  }
  wake.notify_all();
  return channel;
}

void Engine::cancel(RequestChannel &channel) {
  channel.cancelled = true;
  // Taking the lock orders the flag before the engine's next look at it.
  { std::lock_guard<std::mutex> lock(queueMutex); }
  wake.notify_all();
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(queueMutex);
    if (stopping)
      return;
    stopping = true;
  }
  wake.notify_all();
  if (thread.joinable())
    thread.join();
  // The engine thread has ended (or never ran): the generator is ours.
  failActive("the server is shutting down");
  std::deque<Queued> left;
  {
    std::lock_guard<std::mutex> lock(queueMutex);
    left.swap(queue);
  }
  for (Queued &q : left) {
    EngineOutcome o;
    o.finishReason = "error";
    o.error = "the server is shutting down";
    q.channel->end(std::move(o));
  }
}

EngineCounters Engine::counters() const {
  EngineCounters c;
  c.finished = finishedCount;
  c.cancelled = cancelledCount;
  c.promptTokens = promptTokenCount;
  c.generatedTokens = generatedTokenCount;
  std::lock_guard<std::mutex> lock(queueMutex);
  c.running = runningCount;
  c.waiting = queue.size();
  return c;
}

void Engine::run() {
  for (;;) {
    std::vector<Queued> admitNow, dropped;
    {
      std::unique_lock<std::mutex> lock(queueMutex);
      // Idle until there is a step to take or a request for a free slot.
      wake.wait(lock, [&] {
        return stopping || generator.busy() ||
               (!queue.empty() && generator.freeSlots() > 0);
      });
      if (stopping)
        return;
      int64_t free = generator.freeSlots();
      while (!queue.empty() && int64_t(admitNow.size()) < free) {
        Queued q = std::move(queue.front());
        queue.pop_front();
        (q.channel->cancelRequested() ? dropped : admitNow)
            .push_back(std::move(q));
      }
      runningCount += admitNow.size();
    }
    for (Queued &q : dropped) {
      EngineOutcome o;
      o.finishReason = "cancelled";
      o.promptTokens = q.request.generate.prompt.size();
      ++cancelledCount;
      q.channel->end(std::move(o));
    }
    for (Queued &q : admitNow)
      admit(q);
    // A cancelled sequence leaves before the step: it costs no more work.
    for (int64_t slot = 0; slot < slotCount; ++slot)
      if (active[slot] && active[slot]->channel->cancelRequested())
        generator.cancel(slot);
    collectFinished();
    if (generator.busy())
      if (Error e = generator.step())
        failActive("generation failed: " + e.message());
    collectFinished();
  }
}

void Engine::admit(Queued &queued) {
  admitting = &queued;
  auto slots = generator.admit({queued.request.generate});
  admitting = nullptr;
  if (slots)
    return; // onToken bound the slot with the first token
  // A prefill that failed after taking its slot leaves it taken: free it.
  for (int64_t slot = 0; slot < slotCount; ++slot) {
    if (active[slot] && active[slot]->channel != queued.channel)
      continue;
    generator.cancel(slot);
    if (generator.finished(slot))
      generator.take(slot);
    active[slot].reset();
  }
  EngineOutcome o;
  o.finishReason = "error";
  o.error = "generation failed: " + slots.error().message();
  queued.channel->end(std::move(o));
  std::lock_guard<std::mutex> lock(queueMutex);
  --runningCount;
}

bool Engine::onToken(int64_t slot, int64_t token) {
  if (!active[slot]) {
    if (!admitting)
      return false;
    Active a;
    a.channel = admitting->channel;
    a.stopStrings = admitting->request.stopStrings;
    a.decoder.emplace(tokenizer, /*skipSpecialTokens=*/true);
    active[slot] = std::move(a);
  }
  Active &a = *active[slot];
  ++generatedTokenCount;
  if (a.stopMatched)
    return false;
  appendText(a, a.decoder->push(token), /*final=*/false);
  return !a.stopMatched;
}

void Engine::appendText(Active &a, const std::string &piece, bool final) {
  size_t before = a.text.size();
  a.text += piece;
  size_t longest = 0;
  for (const std::string &s : a.stopStrings)
    longest = std::max(longest, s.size());
  if (!a.stopMatched && longest > 0) {
    // Only a match that ends in the new piece is new; none starts in text
    // already delivered (a possible start is held back).
    size_t from = std::max(a.delivered,
                           before >= longest - 1 ? before - (longest - 1) : 0);
    size_t cut = std::string::npos;
    for (const std::string &s : a.stopStrings)
      cut = std::min(cut, a.text.find(s, from));
    if (cut != std::string::npos) {
      a.text.resize(cut);
      a.stopMatched = true;
    }
  }
  size_t safe = a.text.size();
  if (!final && !a.stopMatched) {
    // Hold back the longest tail that is a proper prefix of a stop string.
    size_t limit =
        std::min(a.text.size() - a.delivered, longest ? longest - 1 : 0);
    for (size_t k = limit; k > 0; --k) {
      bool prefix =
          std::any_of(a.stopStrings.begin(), a.stopStrings.end(),
                      [&](const std::string &s) {
                        return s.size() > k && a.text.compare(a.text.size() - k,
                                                              k, s, 0, k) == 0;
                      });
      if (prefix) {
        safe -= k;
        break;
      }
    }
  }
  if (safe > a.delivered) {
    a.channel->deliver(a.text.substr(a.delivered, safe - a.delivered));
    a.delivered = safe;
  }
}

void Engine::collectFinished() {
  for (int64_t slot = 0; slot < slotCount; ++slot) {
    if (!active[slot] || !generator.finished(slot))
      continue;
    GenerateResult r = generator.take(slot);
    Active &a = *active[slot];
    appendText(a, a.stopMatched ? std::string() : a.decoder->finish(),
               /*final=*/true);
    EngineOutcome o;
    o.finishReason = a.stopMatched ? "stop" : r.finishReason;
    o.promptTokens = r.promptTokens;
    o.completionTokens = r.tokens.size();
    ++(o.finishReason == "cancelled" ? cancelledCount : finishedCount);
    promptTokenCount += r.promptTokens;
    a.channel->end(std::move(o));
    active[slot].reset();
    std::lock_guard<std::mutex> lock(queueMutex);
    --runningCount;
  }
}

void Engine::failActive(const std::string &error) {
  for (int64_t slot = 0; slot < slotCount; ++slot) {
    generator.cancel(slot);
    if (generator.finished(slot))
      generator.take(slot);
    if (!active[slot])
      continue;
    EngineOutcome o;
    o.finishReason = "error";
    o.error = error;
    active[slot]->channel->end(std::move(o));
    active[slot].reset();
    std::lock_guard<std::mutex> lock(queueMutex);
    --runningCount;
  }
}

} // namespace dsv3::rt
