//===- Trace.h - spans of one process for a Chrome/Perfetto trace -*- C++ -*-===//
//
// Part of the runtime core (no LLVM). While enabled, the process records
// named spans on two lanes: compute (compiled calls, the optimizer) and
// communication (every collective, from its start to its completion).
// runtime/parallel merges the ranks' spans into one trace file with a
// process per rank and a thread per lane (Chrome's trace-event format,
// which Perfetto reads).
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_SUPPORT_TRACE_H
#define DSV3_RUNTIME_SUPPORT_TRACE_H

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace dsv3::rt {

enum class TraceLane { Compute = 0, Communication = 1 };

class TraceRecorder {
public:
  using Clock = std::chrono::steady_clock;
  struct Span {
    std::string name;
    TraceLane lane;
    double beginMicros, endMicros; ///< since the origin
  };

  /// The recorder of this process.
  static TraceRecorder &process();

  /// Starts recording, with times measured from `origin`.
  void enable(Clock::time_point origin);
  bool enabled() const { return on; }
  void record(std::string name, TraceLane lane, Clock::time_point begin, Clock::time_point end);
  const std::vector<Span> &spans() const { return list; }

  /// This process's spans as trace events (JSON objects separated by
  /// ",\n") with `pid` = `rank`.
  std::string events(int rank) const;

private:
  bool on = false;
  Clock::time_point origin;
  std::mutex mutex; // guards list
  std::vector<Span> list;
};

/// Records the span from construction to destruction when tracing is on.
class TraceScope {
public:
  TraceScope(const char *name, TraceLane lane)
      : name(name), lane(lane), begin(TraceRecorder::Clock::now()) {}
  ~TraceScope() {
    TraceRecorder &r = TraceRecorder::process();
    if (r.enabled())
      r.record(name, lane, begin, TraceRecorder::Clock::now());
  }

private:
  const char *name;
  TraceLane lane;
  TraceRecorder::Clock::time_point begin;
};

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_SUPPORT_TRACE_H
