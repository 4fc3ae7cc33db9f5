//===- Trace.cpp - spans of one process for a Chrome/Perfetto trace -------===//
#include "runtime/support/Trace.h"

#include <cstdio>

namespace dsv3::rt {

TraceRecorder &TraceRecorder::process() {
  static TraceRecorder recorder;
  return recorder;
}

void TraceRecorder::enable(Clock::time_point start) {
  on = true;
  origin = start;
  list.clear();
}

void TraceRecorder::record(std::string name, TraceLane lane, Clock::time_point begin,
                           Clock::time_point end) {
  if (!on)
    return;
  auto micros = [&](Clock::time_point t) {
    return std::chrono::duration<double, std::micro>(t - origin).count();
  };
  // A communication progress thread records completions too.
  std::lock_guard<std::mutex> lock(mutex);
  list.push_back({std::move(name), lane, micros(begin), micros(end)});
}

std::string TraceRecorder::events(int rank) const {
  std::string out;
  char buf[256];
  // Names of the process (rank) and its two lanes.
  std::snprintf(buf, sizeof buf,
                "{\"ph\":\"M\",\"pid\":%d,\"name\":\"process_name\",\"args\":{\"name\":\"rank %d\"}},\n"
                "{\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"name\":\"thread_name\",\"args\":{\"name\":\"compute\"}},\n"
                "{\"ph\":\"M\",\"pid\":%d,\"tid\":1,\"name\":\"thread_name\",\"args\":{\"name\":\"communication\"}}",
                rank, rank, rank, rank);
  out += buf;
  for (const Span &s : list) {
    // Span names are the runtime's own identifiers: no JSON escaping needed.
    std::snprintf(buf, sizeof buf,
                  ",\n{\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"name\":\"%s\",\"ts\":%.3f,\"dur\":%.3f}",
                  rank, static_cast<int>(s.lane), s.name.c_str(), s.beginMicros,
                  s.endMicros - s.beginMicros);
    out += buf;
  }
  return out;
}

} // namespace dsv3::rt
