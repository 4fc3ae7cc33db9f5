//===- Communicator.cpp - the shared checks and the one-process backend ---===//
#include "runtime/comm/Communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace dsv3::rt {

namespace {

class Done : public Request {
public:
  Error wait() override { return Error::success(); }
  Expected<bool> test() override { return true; }
};

class SingleProcess : public Communicator {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single-process"; }
  bool threadSafe() const override { return true; }

  Expected<RequestPtr> allReduceSum(ElementType type, void *, int64_t count) override {
    if (Error e = checkElements("", type, count, /*sums=*/true))
      return e;
    return completedRequest();
  }
  Expected<RequestPtr> allGather(ElementType type, const void *send, void *recv,
                                 int64_t count) override {
    return copy(type, send, recv, count);
  }
  Expected<RequestPtr> reduceScatterSum(ElementType type, const void *send, void *recv,
                                        int64_t count) override {
    if (Error e = checkElements("", type, count, /*sums=*/true))
      return e;
    return copy(type, send, recv, count);
  }
  Expected<RequestPtr> allToAllV(ElementType type, const void *send,
                                 const std::vector<int64_t> &sendCounts,
                                 const std::vector<int64_t> &sendOffsets, void *recv,
                                 const std::vector<int64_t> &recvCounts,
                                 const std::vector<int64_t> &recvOffsets) override {
    if (Error e = checkAllToAll(sendCounts, sendOffsets, recvCounts, recvOffsets))
      return e;
    if (sendCounts[0] != recvCounts[0])
      return Error::failure("all-to-all: rank 0 sends itself " + std::to_string(sendCounts[0]) +
                            " elements but expects " + std::to_string(recvCounts[0]));
    size_t es = elementSize(type);
    std::memmove(static_cast<char *>(recv) + recvOffsets[0] * es,
                 static_cast<const char *>(send) + sendOffsets[0] * es, sendCounts[0] * es);
    return completedRequest();
  }
  Expected<RequestPtr> send(ElementType, const void *, int64_t, int peer, int) override {
    return Error::failure("send to rank " + std::to_string(peer) + ": a single process has no peers");
  }
  Expected<RequestPtr> recv(ElementType, void *, int64_t, int peer, int) override {
    return Error::failure("receive from rank " + std::to_string(peer) +
                          ": a single process has no peers");
  }
  Expected<std::unique_ptr<Communicator>> split(int, int) override {
    return std::unique_ptr<Communicator>(new SingleProcess());
  }
  [[noreturn]] void abort(const std::string &message) override {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::exit(1);
  }

private:
  static Expected<RequestPtr> copy(ElementType type, const void *send, void *recv, int64_t count) {
    if (Error e = checkElements("", type, count, /*sums=*/false))
      return e;
    if (send != recv)
      std::memmove(recv, send, count * elementSize(type));
    return completedRequest();
  }
};

} // namespace

RequestPtr completedRequest() { return std::make_unique<Done>(); }

namespace {
LinkModel processLinkModel;
} // namespace

void setLinkModel(const LinkModel &model) { processLinkModel = model; }
const LinkModel &linkModel() { return processLinkModel; }

Expected<LinkModel> parseLinkModel(const std::string &text) {
  LinkModel m;
  auto bad = [&](const std::string &why) {
    return Error::failure("--link-model '" + text + "': " + why +
                          " (expected bw=GB/s,lat=us, e.g. bw=50,lat=5)");
  };
  size_t at = 0;
  while (at <= text.size()) {
    size_t end = text.find(',', at);
    std::string item = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    size_t eq = item.find('=');
    if (eq == std::string::npos)
      return bad("'" + item + "' is not key=value");
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    char *rest = nullptr;
    double v = std::strtod(value.c_str(), &rest);
    if (value.empty() || *rest != '\0' || !(v >= 0) || v > 1e9)
      return bad("'" + value + "' is not a non-negative number");
    if (key == "bw")
      m.bytesPerSecond = v * 1e9;
    else if (key == "lat")
      m.latencySeconds = v * 1e-6;
    else
      return bad("unknown key '" + key + "'");
    if (end == std::string::npos)
      break;
    at = end + 1;
  }
  if (!m.enabled())
    return bad("a link of infinite bandwidth and no latency models nothing");
  return m;
}

Error Communicator::complete(Expected<RequestPtr> op) {
  if (!op)
    return op.takeError();
  return (*op)->wait();
}

Error Communicator::checkElements(const std::string &op, ElementType type, int64_t count,
                                  bool sums) {
  std::string prefix = op.empty() ? "" : op + ": ";
  if (sums && type == ElementType::BF16)
    return Error::failure(prefix + "sums over ranks are f32 or i64, not bf16");
  if (count < 0)
    return Error::failure(prefix + "negative element count " + std::to_string(count));
  return Error::success();
}

Error Communicator::checkAllToAll(const std::vector<int64_t> &sendCounts,
                                  const std::vector<int64_t> &sendOffsets,
                                  const std::vector<int64_t> &recvCounts,
                                  const std::vector<int64_t> &recvOffsets) const {
  size_t n = static_cast<size_t>(size());
  if (sendCounts.size() != n || sendOffsets.size() != n || recvCounts.size() != n ||
      recvOffsets.size() != n)
    return Error::failure("all-to-all: counts and offsets need one entry per rank (" +
                          std::to_string(n) + ")");
  for (size_t p = 0; p < n; ++p)
    if (sendCounts[p] < 0 || sendOffsets[p] < 0 || recvCounts[p] < 0 || recvOffsets[p] < 0)
      return Error::failure("all-to-all: negative count or offset for rank " + std::to_string(p));
  return Error::success();
}

std::unique_ptr<Communicator> singleProcessCommunicator() {
  return std::make_unique<SingleProcess>();
}

} // namespace dsv3::rt
