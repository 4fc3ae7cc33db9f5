//===- CollectivesTest.cpp - the MPI communicator across real ranks -------===//
//
// Run by mpirun (tests/mpi/CMakeLists.txt): every rank runs every test and
// checks what it received against values it computes itself from the
// ranks' deterministic inputs (rank r contributes f(r, i)). A failure on
// any rank makes the job exit non-zero.
//
//   mpirun --oversubscribe -np 3 DSV3MpiTests
//   mpirun --oversubscribe -np 3 DSV3MpiTests --abort-on-rank 1   (fault drill)
//
//===----------------------------------------------------------------------===//
#include "runtime/comm/Mpi.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

using namespace dsv3::rt;

namespace {

Communicator *world = nullptr;

float value(int rank, int64_t i) { return static_cast<float>(rank * 100 + i) * 0.5f; }

TEST(MpiComm, RunsOnSeveralRanks) {
  EXPECT_EQ(world->backend(), "mpi");
  EXPECT_GE(world->size(), 2);
}

TEST(MpiComm, AllReduceSumsEveryRanksValues) {
  int n = world->size();
  std::vector<float> x(5);
  std::vector<int64_t> k(5);
  for (int64_t i = 0; i < 5; ++i) {
    x[i] = value(world->rank(), i);
    k[i] = world->rank() + i;
  }
  ASSERT_FALSE(Communicator::complete(world->allReduceSum(ElementType::F32, x.data(), 5)));
  ASSERT_FALSE(Communicator::complete(world->allReduceSum(ElementType::I64, k.data(), 5)));
  for (int64_t i = 0; i < 5; ++i) {
    float expected = 0;
    for (int r = 0; r < n; ++r)
      expected += value(r, i);
    EXPECT_EQ(x[i], expected) << i; // small integers and halves: exact
    EXPECT_EQ(k[i], n * (n - 1) / 2 + n * i);
  }
}

TEST(MpiComm, GatherAndReduceScatterPartitionByRank) {
  int n = world->size(), me = world->rank();
  std::vector<float> mine{value(me, 0), value(me, 1)}, all(2 * n);
  ASSERT_FALSE(
      Communicator::complete(world->allGather(ElementType::F32, mine.data(), all.data(), 2)));
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(all[2 * r], value(r, 0));
    EXPECT_EQ(all[2 * r + 1], value(r, 1));
  }
  // Block b of every rank's send buffer sums onto rank b.
  std::vector<float> send(3 * n), block(3);
  for (int64_t i = 0; i < 3 * n; ++i)
    send[i] = value(me, i);
  ASSERT_FALSE(Communicator::complete(
      world->reduceScatterSum(ElementType::F32, send.data(), block.data(), 3)));
  for (int64_t j = 0; j < 3; ++j) {
    float expected = 0;
    for (int r = 0; r < n; ++r)
      expected += value(r, me * 3 + j);
    EXPECT_EQ(block[j], expected);
  }
}

TEST(MpiComm, AllToAllVMovesVariableBlocksAndCountsBytes) {
  // Rank r sends (r + p + 1) elements to rank p, each r * 1000 + p * 10 + j.
  int n = world->size(), me = world->rank();
  std::vector<int64_t> sendCounts(n), sendOffsets(n), recvCounts(n), recvOffsets(n);
  for (int p = 0; p < n; ++p) {
    sendCounts[p] = me + p + 1;
    recvCounts[p] = p + me + 1;
  }
  std::exclusive_scan(sendCounts.begin(), sendCounts.end(), sendOffsets.begin(), int64_t(0));
  std::exclusive_scan(recvCounts.begin(), recvCounts.end(), recvOffsets.begin(), int64_t(0));
  std::vector<float> send(sendOffsets.back() + sendCounts.back());
  for (int p = 0; p < n; ++p)
    for (int64_t j = 0; j < sendCounts[p]; ++j)
      send[sendOffsets[p] + j] = me * 1000 + p * 10 + j;
  std::vector<float> recv(recvOffsets.back() + recvCounts.back(), -1);
  world->stats() = {};
  auto started = world->allToAllV(ElementType::F32, send.data(), sendCounts, sendOffsets,
                                  recv.data(), recvCounts, recvOffsets);
  ASSERT_TRUE(static_cast<bool>(started)) << started.error().message();
  ASSERT_FALSE((*started)->wait());
  for (int p = 0; p < n; ++p)
    for (int64_t j = 0; j < recvCounts[p]; ++j)
      EXPECT_EQ(recv[recvOffsets[p] + j], p * 1000 + me * 10 + j) << "from " << p;
  int64_t off = 0, in = 0;
  for (int p = 0; p < n; ++p)
    if (p != me) {
      off += sendCounts[p];
      in += recvCounts[p];
    }
  EXPECT_EQ(world->stats().bytesSent, off * 4);
  EXPECT_EQ(world->stats().bytesReceived, in * 4);
}

TEST(MpiComm, MessagesPassAroundARing) {
  int n = world->size(), me = world->rank();
  std::vector<int64_t> out{me, me * me}, in(2, -1);
  int next = (me + 1) % n, prev = (me + n - 1) % n;
  auto r = world->recv(ElementType::I64, in.data(), 2, prev, 7);
  auto s = world->send(ElementType::I64, out.data(), 2, next, 7);
  ASSERT_TRUE(static_cast<bool>(r) && static_cast<bool>(s));
  ASSERT_FALSE((*s)->wait());
  ASSERT_FALSE((*r)->wait());
  EXPECT_EQ(in, (std::vector<int64_t>{prev, prev * prev}));
  Error e = Communicator::complete(world->send(ElementType::I64, out.data(), 2, me, 0));
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_NE(e.message().find("not a peer"), std::string::npos) << e.message();
}

} // namespace

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto comm = mpiCommunicator(argc, argv);
  if (!comm) {
    std::fprintf(stderr, "%s\n", comm.error().message().c_str());
    return 1;
  }
  world = comm->get();
  // The fault drill: one rank gives up while the others wait in a
  // collective; the whole job must end, naming that rank.
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--abort-on-rank") == 0) {
      if (world->rank() == std::atoi(argv[i + 1]))
        world->abort("bad input found here");
      float x = 1;
      (void)Communicator::complete(world->allReduceSum(ElementType::F32, &x, 1));
      return 0;
    }
  int failed = RUN_ALL_TESTS();
  // Every rank reports; the job fails when any rank failed.
  int64_t failures = failed != 0;
  if (Communicator::complete(world->allReduceSum(ElementType::I64, &failures, 1)))
    return 1;
  return failures != 0;
}
