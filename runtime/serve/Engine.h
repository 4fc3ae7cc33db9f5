//===- Engine.h - continuous batching over one Generator --------*- C++ -*-===//
//
// Part of the serving runtime (no LLVM), under runtime/serve/Server.h. The
// Generator is not thread-safe, so one engine thread owns it: it admits
// queued requests into free decode slots, steps every busy slot, and turns
// each slot's tokens into text for the request's channel. Requests join and
// leave between steps (continuous batching). The text side lives here too,
// so that a stop string ends a sequence at the very token that completes it:
// streaming never splits a UTF-8 character (StreamingDecoder), text that
// could begin a stop string is held back until it is known not to, and the
// stop string itself is never delivered.
//
// HTTP handler threads call submit() and wait on the returned channel;
// cancel() (a client that left) ends the sequence at the next step and
// frees its slot.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_SERVE_ENGINE_H
#define DSV3_RUNTIME_SERVE_ENGINE_H

#include "runtime/generate/Generator.h"
#include "runtime/support/Error.h"
#include "runtime/text/Tokenizer.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dsv3::rt {

/// One request as the engine runs it.
struct EngineRequest {
  /// Prompt, token budget, sampling and stop tokens (EOS unless ignored).
  GenerateRequest generate;
  /// Generation ends when the decoded text contains one of these; the text
  /// returned ends before it.
  std::vector<std::string> stopStrings;
};

/// How a request ended.
struct EngineOutcome {
  /// "stop" (EOS or a stop string), "length" (max_tokens or the context),
  /// "cancelled", or "error" (then `error` says why).
  std::string finishReason;
  std::string error;
  int64_t promptTokens = 0, completionTokens = 0;
};

/// The text of one request as it is generated: the engine thread writes,
/// one handler thread reads.
class RequestChannel {
public:
  /// Waits until new text arrives, the request ends, or `timeout` passes;
  /// appends the new text to `text`. True once the request has ended (all
  /// its text has then been appended).
  bool wait(std::string &text, std::chrono::milliseconds timeout);
  /// Waits for the end; appends all text not taken yet.
  void waitForEnd(std::string &text);
  /// Valid once wait() returned true.
  EngineOutcome outcome() const;
  bool cancelRequested() const { return cancelled.load(); }

private:
  friend class Engine;
  void deliver(const std::string &text);
  void end(EngineOutcome outcome);

  mutable std::mutex mutex;
  std::condition_variable changed;
  std::string pending;
  bool ended = false;
  EngineOutcome result;
  std::atomic<bool> cancelled{false};
};

/// Counters for /metrics.
struct EngineCounters {
  int64_t finished = 0, cancelled = 0, promptTokens = 0, generatedTokens = 0;
  int64_t running = 0, waiting = 0;
};

class Engine {
public:
  /// Drives `generator`, which must not be used elsewhere until the
  /// engine is destroyed. `maxQueue`: requests that may wait for a slot.
  Engine(Generator &generator, const Tokenizer &tokenizer, int64_t maxQueue);
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  /// Starts the engine thread.
  void start();
  /// Queues a request (checked by the caller: a prompt that fits, ids in
  /// the vocabulary); fails when the queue is full or the engine stopped.
  Expected<std::shared_ptr<RequestChannel>> submit(EngineRequest request);
  /// Ends the request at the next step (or drops it from the queue).
  void cancel(RequestChannel &channel);
  /// Ends every request (reason "error": the server is shutting down) and
  /// joins the engine thread. Idempotent.
  void stop();

  EngineCounters counters() const;
  /// The generator's shape, fixed once it is compiled.
  int64_t slots() const { return slotCount; }
  int64_t cacheCapacity() const { return capacity; }
  int64_t promptCapacity() const { return maxPrompt; }
  int64_t vocab() const { return vocabSize; }

private:
  struct Queued {
    EngineRequest request;
    std::shared_ptr<RequestChannel> channel;
  };
  /// A request in a decode slot and its text so far.
  struct Active {
    std::shared_ptr<RequestChannel> channel;
    std::vector<std::string> stopStrings;
    std::optional<StreamingDecoder> decoder;
    std::string text;     ///< decoded text, cut before a matched stop string
    size_t delivered = 0; ///< bytes of `text` already in the channel
    bool stopMatched = false;
  };

  void run();
  void admit(Queued &queued);
  /// The token callback: decodes, matches stop strings, delivers text;
  /// false ends the sequence (a stop string was found).
  bool onToken(int64_t slot, int64_t token);
  /// Appends `piece` to the text, cuts it at a stop string, and delivers
  /// what can no longer become part of one (everything when `final`).
  void appendText(Active &a, const std::string &piece, bool final);
  /// Takes every finished slot's result and ends its channel.
  void collectFinished();
  /// Ends every slot's request with `error`, freeing the slots.
  void failActive(const std::string &error);

  Generator &generator;
  Tokenizer tokenizer;
  const int64_t maxQueue, slotCount, capacity, maxPrompt, vocabSize;

  std::vector<std::optional<Active>> active; ///< by slot; engine thread only
  /// The request being admitted: admit() emits its first token before it
  /// says which slot it took.
  Queued *admitting = nullptr;

  mutable std::mutex queueMutex;
  std::condition_variable wake;
  std::deque<Queued> queue;
  bool stopping = false;
  int64_t runningCount = 0;
  std::thread thread;

  std::atomic<int64_t> finishedCount{0}, cancelledCount{0}, promptTokenCount{0},
      generatedTokenCount{0};
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_SERVE_ENGINE_H
