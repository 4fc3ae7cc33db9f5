//===- CommTransport.cpp - pipeline messages over a Communicator ----------===//
#include "runtime/pipeline/CommTransport.h"

namespace dsv3::rt {

CommunicatorTransport::CommunicatorTransport(Communicator &pipeline, bool progressThread)
    : comm(pipeline) {
  if (progressThread && comm.size() > 1 && comm.threadSafe())
    poller = std::thread([this] {
      while (!stopping.load(std::memory_order_relaxed)) {
        {
          std::lock_guard<std::mutex> lock(mutex);
          testAll();
        }
        std::this_thread::sleep_for(kPollInterval);
      }
    });
}

CommunicatorTransport::~CommunicatorTransport() {
  stopping = true;
  if (poller.joinable())
    poller.join();
  // A step that failed half-way may leave transfers behind; MPI must see
  // them complete before their buffers go.
  for (Pending &p : sends)
    (void)p.request->wait();
}

void CommunicatorTransport::testAll() {
  // Errors surface when the owner tests or waits on the request itself.
  for (Pending &p : sends)
    (void)p.request->test();
  for (auto &[key, p] : receives)
    (void)p.request->test();
}

Expected<int> CommunicatorTransport::messageTag(int64_t tag) const {
  // MPI guarantees tags up to 32767.
  if (tag < 0 || tag > 32767)
    return Error::failure("pipeline message tag " + std::to_string(tag) +
                          " is out of MPI's guaranteed range (too many stages x micro-batches)");
  return static_cast<int>(tag);
}

Error CommunicatorTransport::send(int to, int64_t tag, std::vector<float> data) {
  Expected<int> t = messageTag(tag);
  if (!t)
    return t.takeError();
  std::lock_guard<std::mutex> lock(mutex);
  sends.push_back({std::move(data), nullptr});
  Pending &p = sends.back();
  Expected<RequestPtr> r =
      comm.send(ElementType::F32, p.data.data(), static_cast<int64_t>(p.data.size()), to, *t);
  if (!r) {
    sends.pop_back();
    return r.takeError();
  }
  p.request = std::move(*r);
  return Error::success();
}

Expected<bool> CommunicatorTransport::tryReceive(int from, int64_t tag, std::vector<float> &data) {
  Expected<int> t = messageTag(tag);
  if (!t)
    return t.takeError();
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_pair(from, tag);
  auto it = receives.find(key);
  if (it == receives.end()) {
    Pending p{std::vector<float>(data.size()), nullptr};
    Expected<RequestPtr> r =
        comm.recv(ElementType::F32, p.data.data(), static_cast<int64_t>(p.data.size()), from, *t);
    if (!r)
      return r.takeError();
    p.request = std::move(*r);
    it = receives.emplace(key, std::move(p)).first;
  }
  Expected<bool> done = it->second.request->test();
  if (!done || !*done)
    return done;
  data = std::move(it->second.data);
  receives.erase(it);
  return true;
}

Error CommunicatorTransport::progress() {
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = sends.begin(); it != sends.end();) {
    Expected<bool> done = it->request->test();
    if (!done)
      return done.takeError();
    it = *done ? sends.erase(it) : std::next(it);
  }
  return Error::success();
}

Error CommunicatorTransport::flush() {
  std::lock_guard<std::mutex> lock(mutex);
  for (Pending &p : sends)
    if (Error e = p.request->wait())
      return e;
  sends.clear();
  if (!receives.empty())
    return Error::failure("pipeline rank " + std::to_string(comm.rank()) + ": " +
                          std::to_string(receives.size()) +
                          " posted receives never completed (the ranks ran different schedules)");
  return Error::success();
}

} // namespace dsv3::rt
