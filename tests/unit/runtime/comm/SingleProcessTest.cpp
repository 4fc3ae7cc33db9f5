//===- SingleProcessTest.cpp - the one-process communicator ---------------===//
#include "runtime/comm/Communicator.h"
#include "runtime/comm/Mpi.h"

#include <gtest/gtest.h>

#include <cstdlib>

using namespace dsv3::rt;

namespace {

TEST(SingleProcessComm, CollectivesOfOneRankAreCopies) {
  auto comm = singleProcessCommunicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  std::vector<float> x{1, 2, 3};
  ASSERT_FALSE(Communicator::complete(comm->allReduceSum(ElementType::F32, x.data(), 3)));
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
  std::vector<float> y(3);
  ASSERT_FALSE(Communicator::complete(comm->allGather(ElementType::F32, x.data(), y.data(), 3)));
  EXPECT_EQ(y, x);
  std::vector<int64_t> a{5, 6, 7, 8}, b(4, -1);
  ASSERT_FALSE(Communicator::complete(
      comm->allToAllV(ElementType::I64, a.data(), {2}, {1}, b.data(), {2}, {2})));
  EXPECT_EQ(b, (std::vector<int64_t>{-1, -1, 6, 7}));
  EXPECT_EQ(comm->stats().bytesSent, 0);
}

TEST(SingleProcessComm, MisuseIsAnError) {
  auto comm = singleProcessCommunicator();
  std::vector<uint16_t> h(2);
  Error e = Communicator::complete(comm->allReduceSum(ElementType::BF16, h.data(), 2));
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(e.message(), "sums over ranks are f32 or i64, not bf16");
  std::vector<float> x(2);
  e = Communicator::complete(comm->allToAllV(ElementType::F32, x.data(), {1, 1}, {0, 1}, x.data(),
                                             {1, 1}, {0, 1}));
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(e.message(), "all-to-all: counts and offsets need one entry per rank (1)");
  e = Communicator::complete(comm->send(ElementType::F32, x.data(), 2, 1, 0));
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(e.message(), "send to rank 1: a single process has no peers");
}

TEST(SingleProcessComm, WithoutALauncherTheWorldIsOneProcess) {
  if (launchedByMpi())
    GTEST_SKIP() << "running under mpirun";
  int argc = 1;
  char name[] = "test";
  char *args[] = {name, nullptr};
  char **argv = args;
  auto world = worldCommunicator(argc, argv);
  ASSERT_TRUE(static_cast<bool>(world)) << world.error().message();
  EXPECT_EQ((*world)->backend(), "single-process");
}

} // namespace

/// --link-model's text: GB/s and microseconds into bytes/s and seconds, the
/// modeled time of a transfer, and one-line errors for what is not a link.
TEST(LinkModel, ParsesBandwidthAndLatency) {
  auto m = parseLinkModel("bw=50,lat=5");
  ASSERT_TRUE(static_cast<bool>(m)) << m.error().message();
  EXPECT_DOUBLE_EQ(m->bytesPerSecond, 50e9);
  EXPECT_DOUBLE_EQ(m->latencySeconds, 5e-6);
  // 1 MB at 50 GB/s is 20 us, plus 5 us of latency.
  EXPECT_NEAR(m->seconds(1000000), 25e-6, 1e-12);
  auto latencyOnly = parseLinkModel("lat=2");
  ASSERT_TRUE(static_cast<bool>(latencyOnly));
  EXPECT_NEAR(latencyOnly->seconds(1 << 30), 2e-6, 1e-12);
  for (const char *bad : {"", "bw", "bw=fast", "bw=-1", "speed=5", "bw=0,lat=0", "bw=50,"}) {
    auto e = parseLinkModel(bad);
    ASSERT_FALSE(static_cast<bool>(e)) << bad;
    EXPECT_NE(e.error().message().find("--link-model '" + std::string(bad) + "'"),
              std::string::npos)
        << e.error().message();
  }
  EXPECT_FALSE(linkModel().enabled()) << "off unless set";
}
