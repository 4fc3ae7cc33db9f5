//===- ScheduleTest.cpp - pipeline schedule generators and simulator ------===//
//
// The DualPipe(V) generators against the per-rank tables obtained by
// running DeepSeek's reference step() (written out cell by cell below), the
// bubble and activation figures of its analysis, and, for every schedule
// with up to 16 ranks, that it validates and runs to the end without a
// deadlock.
//
//===----------------------------------------------------------------------===//
#include "runtime/pipeline/Schedule.h"
#include "runtime/pipeline/Simulator.h"

#include <gtest/gtest.h>

using namespace dsv3::rt;

namespace {

using Table = std::vector<std::vector<std::string>>; // [rank][section] -> cell

PipelineSchedule build(ScheduleKind kind, int ranks, int microBatches) {
  Expected<PipelineSchedule> s = buildSchedule(kind, ranks, microBatches);
  EXPECT_TRUE(s) << (s ? "" : s.error().message());
  return s ? *s : PipelineSchedule{};
}

Table cells(const PipelineSchedule &s) {
  Table t(s.ranks, std::vector<std::string>(s.sections()));
  for (int r = 0; r < s.ranks; ++r)
    for (const ScheduleStep &step : s.steps[r]) {
      std::string &cell = t[r][step.section - 1];
      cell += (cell.empty() ? "" : " ") + stepLabel(s, r, step);
    }
  return t;
}

// DualPipe, P=4, N=8 (mb 0-3 go 0->3, mb 4-7 go 3->0).
const Table dualPipe4x8 = {
    {"F0 F1", "F2 F4", "Bi4 W4 F5", "F3&B5 F6&B0", "B6 F7&B1", "B7 Bi2", "W2 Bi3", "W3"},
    {"", "F0 F4 F1 F5", "", "F2 B4 F6&B0 F3&B5 F7&B1", "", "B6 B2 Bi7 Bi3", "", "W7 W3"},
    {"", "F4 F0 F5 F1", "", "F6 B0 F2&B4 F7&B1 F3&B5", "", "B2 B6 Bi3 Bi7", "", "W3 W7"},
    {"F4 F5", "F6 F0", "Bi0 W0 F1", "F7&B1 F2&B4", "B2 F3&B5", "B3 Bi6", "W6 Bi7", "W7"},
};

// DualPipeV, P=2 (4 stages), N=4.
const Table dualPipeV2x4 = {
    {"F0a F1a", "F2a F0b", "Bi0b W0b F1b", "F3a&B1b F2b&B0a", "B2b F3b&B1a", "B3b Bi2a",
     "W2a Bi3a", "W3a"},
    {"", "F0a F0b F1a F1b", "", "F2a B0b F2b&B0a F3a&B1b F3b&B1a", "", "B2b B2a Bi3b Bi3a", "",
     "W3b W3a"},
};

// DualPipeV, P=4 (8 stages), N=10: the reference README figure's case.
const Table dualPipeV4x10 = {
    {"F0a F1a F2a F3a F4a F5a", "F6a F0b",
     "Bi0b W0b F1b Bi1b W1b F2b Bi2b W2b F3b",
     "F7a&B3b F4b&B0a F8a&B4b F5b&B1a F9a&B5b F6b&B2a",
     "B6b F7b&B3a B7b F8b&B4a B8b F9b&B5a", "B9b Bi6a", "W6a Bi7a W7a Bi8a W8a Bi9a", "W9a"},
    {"F0a F1a F2a F3a", "F4a F0b F5a F1b", "Bi0b W0b F2b Bi1b W1b F3b",
     "F6a&B2b F4b&B0a F7a&B3b F5b&B1a F8a&B4b F6b&B2a F9a&B5b F7b&B3a",
     "B6b F8b&B4a B7b F9b&B5a", "B8b B6a Bi9b Bi7a", "W9b Bi8a W7a Bi9a", "W8a W9a"},
    {"F0a F1a", "F2a F0b F3a F1b F4a F2b", "Bi0b W0b F3b",
     "F5a&B1b F4b&B0a F6a&B2b F5b&B1a F7a&B3b F6b&B2a F8a&B4b F7b&B3a F9a&B5b F8b&B4a",
     "B6b F9b&B5a", "B7b B6a B8b Bi7a Bi9b Bi8a", "W7a Bi9a", "W9b W8a W9a"},
    {"", "F0a F0b F1a F1b F2a F2b F3a F3b", "",
     "F4a B0b F4b&B0a F5a&B1b F5b&B1a F6a&B2b F6b&B2a F7a&B3b F7b&B3a F8a&B4b F8b&B4a "
     "F9a&B5b F9b&B5a",
     "", "B6b B6a B7b B7a Bi8b Bi8a Bi9b Bi9a", "", "W8b W8a W9b W9a"},
};

TEST(PipelineSchedule, DualPipeMatchesTheReferenceTable) {
  EXPECT_EQ(cells(build(ScheduleKind::DualPipe, 4, 8)), dualPipe4x8);
}

TEST(PipelineSchedule, DualPipeVMatchesTheReferenceTables) {
  EXPECT_EQ(cells(build(ScheduleKind::DualPipeV, 2, 4)), dualPipeV2x4);
  EXPECT_EQ(cells(build(ScheduleKind::DualPipeV, 4, 10)), dualPipeV4x10);
}

TEST(PipelineSchedule, PrintsTheTableInTheReferenceNotation) {
  std::string table = formatScheduleTable(build(ScheduleKind::DualPipe, 4, 8));
  EXPECT_NE(table.find("| 0 | F0 F1 | F2 F4 | Bi4 W4 F5 | F3&B5 F6&B0 | B6 F7&B1 | B7 Bi2 | "
                       "W2 Bi3 | W3 |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| 1 | – | F0 F4 F1 F5 | – |"), std::string::npos) << table;
}

TEST(PipelineSchedule, PlacesStages) {
  PipelineSchedule dual = build(ScheduleKind::DualPipe, 4, 8);
  EXPECT_EQ(dual.rankOf(0, 0), 0);
  EXPECT_EQ(dual.rankOf(0, 4), 3); // the second half enters at rank P-1
  EXPECT_EQ(dual.stagesOn(1), (std::vector<int>{1, 2}));
  PipelineSchedule v = build(ScheduleKind::DualPipeV, 4, 10);
  EXPECT_EQ(v.stages, 8);
  EXPECT_EQ(v.rankOf(7, 3), 0);
  EXPECT_EQ(v.stagesOn(3), (std::vector<int>{3, 4}));
}

TEST(PipelineSchedule, RefusesWhatTheScheduleCannotRun) {
  auto message = [](ScheduleKind k, int p, int n) {
    Expected<PipelineSchedule> s = buildSchedule(k, p, n);
    return s ? std::string() : s.error().message();
  };
  EXPECT_EQ(message(ScheduleKind::DualPipe, 4, 6),
            "schedule dualpipe with 4 ranks and 6 micro-batches: needs at least 2 x ranks = 8 "
            "micro-batches");
  EXPECT_NE(message(ScheduleKind::DualPipe, 3, 8).find("even"), std::string::npos);
  EXPECT_NE(message(ScheduleKind::DualPipe, 4, 9).find("even"), std::string::npos);
  EXPECT_NE(message(ScheduleKind::DualPipeV, 2, 3).find("at least 2 x ranks"),
            std::string::npos);
  EXPECT_EQ(message(ScheduleKind::DualPipeV, 2, 5), ""); // V takes odd N
  EXPECT_EQ(message(ScheduleKind::OneFOneB, 4, 1), "");
  EXPECT_EQ(parseScheduleKind("zb1p"), ScheduleKind::ZeroBubble);
  EXPECT_FALSE(parseScheduleKind("gpipe"));
}

// A reordered program is caught: by the structural check when it breaks an
// ordering rule, by the simulator when ranks would wait on each other.
TEST(PipelineSchedule, CatchesBrokenPrograms) {
  PipelineSchedule s = build(ScheduleKind::DualPipeV, 2, 4);
  PipelineSchedule swapped = s;
  std::swap(swapped.steps[0][0], swapped.steps[0][1]); // F1a before F0a
  Error e = validateSchedule(swapped);
  ASSERT_TRUE(e);
  EXPECT_EQ(e.message(), "schedule dualpipev: rank 0: F1a is out of micro-batch order");

  PipelineSchedule dropped = s;
  dropped.steps[1].pop_back(); // W3a never runs
  EXPECT_TRUE(validateSchedule(dropped));

  // Structurally valid, yet the ranks wait on each other: 1f1b with P=2,
  // N=2 is rank 0: F0 F1 B0 B1, rank 1: F0 B0 F1 B1. Rank 1 may run F1
  // first; but if rank 0 also wants B0 before sending F1, neither moves.
  PipelineSchedule v = build(ScheduleKind::OneFOneB, 2, 2);
  std::vector<ScheduleStep> &r0 = v.steps[0], &r1 = v.steps[1];
  ASSERT_EQ(stepLabel(v, 0, r0[1]) + " " + stepLabel(v, 0, r0[2]), "F1 B0");
  ASSERT_EQ(stepLabel(v, 1, r1[1]) + " " + stepLabel(v, 1, r1[2]), "B0 F1");
  std::swap(r1[1], r1[2]); // rank 1: F0 F1 B0 B1
  ASSERT_FALSE(validateSchedule(v));
  EXPECT_TRUE(bool(simulate(v, ChunkCosts{})));
  std::swap(r0[1], r0[2]); // rank 0: F0 B0 F1 B1
  ASSERT_FALSE(validateSchedule(v));
  Expected<Simulation> stuck = simulate(v, ChunkCosts{});
  ASSERT_FALSE(stuck);
  EXPECT_EQ(stuck.error().message(),
            "schedule 1f1b deadlocks: rank 0 waits forever at step 1 (B0)");
}

// Every schedule up to 16 ranks, for several micro-batch counts, is
// structurally valid and runs to the end; DualPipe(V) ranks run as many W
// as Bi, 2H-h-1 of each.
TEST(PipelineSchedule, NoConfigurationDeadlocks) {
  int checked = 0;
  for (ScheduleKind kind : {ScheduleKind::OneFOneB, ScheduleKind::ZeroBubble,
                            ScheduleKind::DualPipe, ScheduleKind::DualPipeV})
    for (int p = 1; p <= 16; ++p)
      for (int n : {1, 2, p, 2 * p, 2 * p + 1, 2 * p + 2, 3 * p + 4}) {
        Expected<PipelineSchedule> s = buildSchedule(kind, p, n);
        if (!s)
          continue; // a refused configuration (tested above)
        Expected<Simulation> sim = simulate(*s, ChunkCosts{});
        ASSERT_TRUE(sim) << sim.error().message();
        ++checked;
        if (kind != ScheduleKind::DualPipe && kind != ScheduleKind::DualPipeV)
          continue;
        bool v = kind == ScheduleKind::DualPipeV;
        int H = v ? p : p / 2;
        for (int r = 0; r < p; ++r) {
          int h = v ? r : std::min(r, p - 1 - r), bi = 0, w = 0;
          for (const ScheduleStep &step : s->steps[r]) {
            bi += step.chunk.pass == ChunkPass::BackwardInput;
            w += step.chunk.pass == ChunkPass::BackwardWeight;
          }
          EXPECT_EQ(bi, 2 * H - h - 1) << scheduleName(kind) << " P=" << p << " r=" << r;
          EXPECT_EQ(w, bi);
        }
      }
  EXPECT_GT(checked, 300);
}

// The worst rank's bubble equals the reference analysis at unit costs
// (F = Bi = W = 1, B = 2) for several F&B costs.
TEST(PipelineSimulator, BubbleOfDualPipeMatchesTheAnalysis) {
  for (auto [fb, dual, v] : {std::tuple{3.0, 6.0, 14.0}, {2.5, 4.5, 10.5}, {2.0, 3.0, 7.0}}) {
    ChunkCosts c;
    c.overlapped = fb;
    Expected<Simulation> d = simulate(build(ScheduleKind::DualPipe, 8, 20), c);
    Expected<Simulation> dv = simulate(build(ScheduleKind::DualPipeV, 8, 32), c);
    ASSERT_TRUE(d && dv);
    EXPECT_DOUBLE_EQ(d->worstBubble(), dual) << "F&B=" << fb;
    EXPECT_DOUBLE_EQ(dv->worstBubble(), v) << "F&B=" << fb;
    EXPECT_DOUBLE_EQ(bubbleFormula(build(ScheduleKind::DualPipe, 8, 20), c), dual);
  }
}

TEST(PipelineSimulator, BubbleOf1F1BAndZeroBubble) {
  for (int p : {2, 4, 8})
    for (int n : {p, 2 * p, 20}) {
      ChunkCosts c; // F=1, B=2, W=1
      PipelineSchedule one = build(ScheduleKind::OneFOneB, p, n);
      PipelineSchedule zb = build(ScheduleKind::ZeroBubble, p, n);
      Expected<Simulation> a = simulate(one, c), b = simulate(zb, c);
      ASSERT_TRUE(a && b);
      EXPECT_DOUBLE_EQ(a->worstBubble(), (p - 1) * 3.0) << "P=" << p << " N=" << n;
      EXPECT_DOUBLE_EQ(b->worstBubble(), (p - 1) * 1.0) << "P=" << p << " N=" << n;
      EXPECT_DOUBLE_EQ(a->makespan, 3.0 * n + (p - 1) * 3.0);
    }
}

// Peak activations in stage x micro-batch units: PP on most ranks, PP+1 on
// the turning ranks, PP+1 everywhere inside an F&B pair.
TEST(PipelineSimulator, ActivationPeaks) {
  auto peaks = [](const PipelineSchedule &s, bool inStep) {
    Expected<Simulation> sim = simulate(s, ChunkCosts{});
    std::vector<int> out;
    for (const SimulatedRank &r : sim->ranks)
      out.push_back(inStep ? r.peakActivationsInStep : r.peakActivations);
    return out;
  };
  PipelineSchedule dual = build(ScheduleKind::DualPipe, 4, 8);
  EXPECT_EQ(peaks(dual, false), (std::vector<int>{4, 5, 5, 4}));
  EXPECT_EQ(peaks(dual, true), (std::vector<int>{5, 5, 5, 5}));
  EXPECT_EQ(activationFormula(dual), 5);
  PipelineSchedule v = build(ScheduleKind::DualPipeV, 4, 10);
  EXPECT_EQ(peaks(v, false), (std::vector<int>{8, 8, 8, 9}));
  EXPECT_EQ(peaks(build(ScheduleKind::OneFOneB, 4, 8), false),
            (std::vector<int>{4, 3, 2, 1}));
}

// The ASCII timeline at unit costs, F&B = 3. Ranks 1 and 2 equal the
// reference picture cell for cell. On ranks 0 and 3 the reference's W4 (W0)
// waits for F5's (F1's) input, because its W commits every pending
// receive; here W runs at once and the same wait comes later, before the
// first F&B pair: the same two idle cells, the same makespan.
TEST(PipelineSimulator, Timeline) {
  ChunkCosts c;
  PipelineSchedule dual = build(ScheduleKind::DualPipe, 4, 8);
  Expected<Simulation> sim = simulate(dual, c);
  ASSERT_TRUE(sim);
  EXPECT_EQ(formatTimeline(dual, *sim, c), "r0 FFFFBWFFBB.FBBBB.FBBBBBWBW\n"
                                           "r1 .FFFFFBBFBBFBBFBBBBBB.BBWW\n"
                                           "r2 .FFFFFBBFBBFBBFBBBBBB.BBWW\n"
                                           "r3 FFFFBWFFBB.FBBBB.FBBBBBWBW\n");
  EXPECT_DOUBLE_EQ(sim->makespan, 26);
}

TEST(PipelineSimulator, ParsesCosts) {
  Expected<ChunkCosts> c = parseChunkCosts("F=1,B=2.5,W=0.5,FB=3,comm=0.1");
  ASSERT_TRUE(c);
  EXPECT_DOUBLE_EQ(c->backwardInput(), 2.0);
  EXPECT_DOUBLE_EQ(c->pair(), 3.0);
  EXPECT_DOUBLE_EQ(c->comm, 0.1);
  EXPECT_FALSE(parseChunkCosts("F=1,X=2"));
  EXPECT_FALSE(parseChunkCosts("F=-1"));
  EXPECT_FALSE(parseChunkCosts("B=1,W=2"));
}

} // namespace
