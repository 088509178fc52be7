// Lower bounds and plan predictions (profile/bounds.h) on hand-solved
// instances, plus a brute-force check of the throughput LP.
#include "baton/profile/bounds.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton::profile {
namespace {

using ::testing::AllOf;
using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr double kEps = 1e-6;
const std::optional<double> kNo = std::nullopt;

ProblemPu Pu(std::string name, uint32_t device = 0) {
  return {.name = std::move(name), .kind = "cpu", .device = device};
}

// A model with one capability unit per atom, no edges unless given, 0 cut bytes.
ProblemModel Model(std::string name, std::vector<PuCosts> atom_ms, std::vector<AtomEdge> edges = {}) {
  ProblemModel model;
  model.name = std::move(name);
  const int n = static_cast<int>(atom_ms.size());
  model.atom_ms = std::move(atom_ms);
  for (int i = 0; i < n; ++i) model.unit_of_atom.push_back(i);
  model.cut_bytes.assign(n > 0 ? static_cast<size_t>(n - 1) : 0, 0);
  model.edges = std::move(edges);
  return model;
}

std::vector<AtomEdge> Chain(int atoms, int64_t bytes = 0) {
  std::vector<AtomEdge> edges;
  for (int i = 0; i + 1 < atoms; ++i) edges.push_back({.from = i, .to = i + 1, .bytes = bytes});
  return edges;
}

Demand Rate(double rate) { return {.kind = Demand::Kind::kRate, .rate = rate}; }
Demand Closed(int concurrency, double think_ms) {
  return {.kind = Demand::Kind::kClosed, .concurrency = concurrency, .think_ms = think_ms};
}

// The header's worked example: atom 0 takes 10 ms on u0 and 5 ms on u1; atom
// 1 takes 10 ms on u0 only.
Problem WorkedExample() {
  Problem problem;
  problem.pus = {Pu("u0"), Pu("u1")};
  problem.models.push_back(Model("m", {{10.0, 5.0}, {10.0, kNo}}, Chain(2)));
  return problem;
}

// ----------------------------------------------------------------------------
// SolveThroughputLp

TEST(SolveThroughputLpTest, WorkedExampleFromTheHeader) {
  const std::vector<LpUnit> units = {{.model = 0, .ms = {10.0, 5.0}}, {.model = 0, .ms = {10.0, kNo}}};
  const std::vector<LpModel> models(1);
  auto lp = SolveThroughputLp(2, units, models);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_NEAR(lp->total_rps, 100, kEps);
  EXPECT_NEAR(lp->model_rps[0], 100, kEps);
  EXPECT_NEAR(lp->unit_share[0][0], 0, kEps);  // atom 0 all on u1
  EXPECT_NEAR(lp->unit_share[0][1], 1, kEps);
  EXPECT_NEAR(lp->unit_share[1][0], 1, kEps);
  EXPECT_NEAR(lp->unit_share[1][1], 0, kEps);
  EXPECT_NEAR(lp->pu_busy[0], 1.0, kEps);
  EXPECT_NEAR(lp->pu_busy[1], 0.5, kEps);
  EXPECT_TRUE(lp->min_met);
}

TEST(SolveThroughputLpTest, TwoIdenticalSaturatingModelsFillTwoIdenticalPus) {
  const std::vector<LpUnit> units = {{.model = 0, .ms = {10.0, 10.0}}, {.model = 1, .ms = {10.0, 10.0}}};
  const std::vector<LpModel> models(2);
  auto lp = SolveThroughputLp(2, units, models);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_NEAR(lp->total_rps, 200, kEps);
  EXPECT_NEAR(lp->model_rps[0] + lp->model_rps[1], 200, kEps);
  EXPECT_NEAR(lp->pu_busy[0], 1, kEps);
  EXPECT_NEAR(lp->pu_busy[1], 1, kEps);
}

TEST(SolveThroughputLpTest, MetMinimumThenTheCheaperModelTakesTheRest) {
  // One PU; model 0 costs 10 ms and needs 30/s (30 % busy), model 1 costs
  // 5 ms: the remaining 70 % serve 140/s of it.
  const std::vector<LpUnit> units = {{.model = 0, .ms = {10.0}}, {.model = 1, .ms = {5.0}}};
  const std::vector<LpModel> models = {{.min_rps = 30.0, .max_rps = kNo}, {}};
  auto lp = SolveThroughputLp(1, units, models);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_TRUE(lp->min_met);
  EXPECT_NEAR(lp->model_rps[0], 30, kEps);
  EXPECT_NEAR(lp->model_rps[1], 140, kEps);
  EXPECT_NEAR(lp->total_rps, 170, kEps);
}

TEST(SolveSharedLpTest, SaturatingModelsGetEqualPuTimePerWeightAfterTheDemands) {
  // One PU. Model 0 is paced at 20/s x 10 ms (20 % busy); models 1 (5 ms,
  // weight 1) and 2 (20 ms, weight 2) share the other 80 % as 1 : 2 in PU
  // time: 26.7 % and 53.3 %, i.e. 53.3/s and 26.7/s. Maximizing the total
  // alone would give model 1 all of it (160/s) and model 2 nothing.
  const std::vector<LpUnit> units = {
      {.model = 0, .ms = {10.0}}, {.model = 1, .ms = {5.0}}, {.model = 2, .ms = {20.0}}};
  const std::vector<LpModel> models = {{.min_rps = 20.0, .max_rps = 20.0}, {}, {}};
  auto greedy = SolveThroughputLp(1, units, models);
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  EXPECT_NEAR(greedy->model_rps[2], 0, 1e-6);
  const std::vector<FairShare> shared = {{.model = 1, .weight = 1, .work_ms = 5}, {.model = 2, .weight = 2, .work_ms = 20}};
  auto lp = SolveSharedLp(1, units, models, shared);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_TRUE(lp->min_met);
  // Within GLPK's tolerance (0.2 %).
  EXPECT_NEAR(lp->model_rps[0], 20, 1e-3);
  EXPECT_NEAR(lp->model_rps[1], 800.0 / 3 / 5, 800.0 / 3 / 5 * 2e-3);
  EXPECT_NEAR(lp->model_rps[2], 1600.0 / 3 / 20, 1600.0 / 3 / 20 * 2e-3);
  EXPECT_NEAR(lp->pu_busy[0], 1, 2e-3);
  // Nothing to share: the plain LP.
  auto plain = SolveSharedLp(1, units, models, {});
  ASSERT_TRUE(plain.ok());
  EXPECT_NEAR(plain->model_rps[1], greedy->model_rps[1], 1e-9);
  // Bad shares are named.
  for (const FairShare& bad : {FairShare{.model = 3, .weight = 1, .work_ms = 1}, FairShare{.model = 1, .weight = 0, .work_ms = 1},
                               FairShare{.model = 1, .weight = 1, .work_ms = -1}}) {
    const std::vector<FairShare> one = {bad};
    EXPECT_EQ(SolveSharedLp(1, units, models, one).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SolveThroughputLpTest, InfeasibleMinimaAreScaledByOneFactor) {
  // One PU; 60/s x 10 ms + 40/s x 20 ms = 140 % busy: theta = 1 / 1.4. The
  // saturating model 2 gets nothing: the PU is full.
  const std::vector<LpUnit> units = {{.model = 0, .ms = {10.0}}, {.model = 1, .ms = {20.0}}, {.model = 2, .ms = {1.0}}};
  const std::vector<LpModel> models = {{.min_rps = 60.0, .max_rps = 60.0}, {.min_rps = 40.0, .max_rps = 40.0}, {}};
  auto lp = SolveThroughputLp(1, units, models);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_FALSE(lp->min_met);
  EXPECT_NEAR(lp->model_rps[0], 60 / 1.4, 1e-5);
  EXPECT_NEAR(lp->model_rps[1], 40 / 1.4, 1e-5);
  EXPECT_NEAR(lp->model_rps[2], 0, 1e-5);
  EXPECT_NEAR(lp->pu_busy[0], 1, 1e-6);
}

TEST(SolveThroughputLpTest, ModelWithoutUnitsGetsZero) {
  const std::vector<LpUnit> units = {{.model = 1, .ms = {10.0}}};
  const std::vector<LpModel> models = {{.min_rps = 5.0, .max_rps = kNo}, {}};
  auto lp = SolveThroughputLp(1, units, models);
  ASSERT_TRUE(lp.ok()) << lp.status();
  EXPECT_TRUE(lp->min_met);
  EXPECT_EQ(lp->model_rps[0], 0);
  EXPECT_NEAR(lp->model_rps[1], 100, kEps);
}

TEST(SolveThroughputLpTest, RejectsBadInput) {
  const std::vector<LpModel> one(1);
  const std::vector<LpUnit> nowhere = {{.model = 0, .ms = {kNo, kNo}}};
  auto lp = SolveThroughputLp(2, nowhere, one);
  EXPECT_EQ(lp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(lp.status().message(), HasSubstr("unit 0 (model 0) may run on no PU"));

  const std::vector<LpUnit> short_costs = {{.model = 0, .ms = {1.0}}};
  lp = SolveThroughputLp(2, short_costs, one);
  EXPECT_THAT(lp.status().message(), HasSubstr("has costs for 1 PUs, but there are 2"));

  const std::vector<LpUnit> bad_model = {{.model = 3, .ms = {1.0, 1.0}}};
  lp = SolveThroughputLp(2, bad_model, one);
  EXPECT_THAT(lp.status().message(), HasSubstr("belongs to model 3"));

  const std::vector<LpUnit> fine = {{.model = 0, .ms = {1.0, 1.0}}};
  const std::vector<LpModel> inverted = {{.min_rps = 2.0, .max_rps = 1.0}};
  lp = SolveThroughputLp(2, fine, inverted);
  EXPECT_THAT(lp.status().message(), HasSubstr("min_rps 2 > max_rps 1"));
}

TEST(SolveThroughputLpTest, ConcurrentCallsAgree) {
  // GLPK keeps its environment per thread; each call sets it up and frees it.
  const std::vector<LpUnit> units = {{.model = 0, .ms = {10.0, 5.0}}, {.model = 0, .ms = {10.0, kNo}}};
  const std::vector<LpModel> models(1);
  for (int threads : {1, 2, 4, 8}) {
    std::vector<double> totals(static_cast<size_t>(threads), 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int k = 0; k < 20; ++k) {
          auto lp = SolveThroughputLp(2, units, models);
          totals[static_cast<size_t>(t)] += lp.ok() ? lp->total_rps : -1e9;
        }
      });
    }
    for (std::thread& worker : workers) worker.join();
    for (double total : totals) EXPECT_NEAR(total, 20 * 100.0, 1e-5) << threads << " threads";
  }
}

// Brute force: the best total over all splits of each atom between two PUs on
// a 0.05 grid. For fixed splits, model m loads PU u by a[m][u] per request,
// and the best rates are a vertex of {lambda >= 0, a^T lambda <= 1}.
double BestTotalForLoads(const double a[2][2]) {
  double best = 0;
  for (int m = 0; m < 2; ++m) best = std::max(best, 1 / std::max(a[m][0], a[m][1]));
  const double det = a[0][0] * a[1][1] - a[1][0] * a[0][1];
  if (std::abs(det) > 1e-15) {
    const double l0 = (a[1][1] - a[1][0]) / det;  // solves l0*a00 + l1*a10 = 1, l0*a01 + l1*a11 = 1
    const double l1 = (a[0][0] - a[0][1]) / det;
    if (l0 >= 0 && l1 >= 0) best = std::max(best, l0 + l1);
  }
  return best;
}

double GridSearch(const std::vector<std::vector<PuCosts>>& models) {
  struct Atom {
    int model;
    PuCosts ms;
  };
  std::vector<Atom> atoms;
  for (int m = 0; m < 2; ++m) {
    for (const PuCosts& ms : models[static_cast<size_t>(m)]) atoms.push_back({m, ms});
  }
  std::vector<int> step(atoms.size(), 0);  // share on PU 0 = step * 0.05
  auto steps_of = [](const Atom& atom) { return atom.ms[0] && atom.ms[1] ? 20 : 0; };
  double best = 0;
  while (true) {
    double a[2][2] = {{0, 0}, {0, 0}};
    for (size_t i = 0; i < atoms.size(); ++i) {
      const Atom& atom = atoms[i];
      const double share0 = !atom.ms[1] ? 1.0 : !atom.ms[0] ? 0.0 : step[i] * 0.05;
      if (atom.ms[0]) a[atom.model][0] += share0 * *atom.ms[0] / 1000;
      if (atom.ms[1]) a[atom.model][1] += (1 - share0) * *atom.ms[1] / 1000;
    }
    best = std::max(best, BestTotalForLoads(a));
    size_t i = 0;
    for (; i < atoms.size(); ++i) {
      if (step[i] < steps_of(atoms[i])) {
        ++step[i];
        break;
      }
      step[i] = 0;
    }
    if (i == atoms.size()) return best;
  }
}

TEST(SolveThroughputLpTest, MatchesGridSearchOnSmallRandomInstances) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> ms(1, 20);
  std::uniform_int_distribution<int> extra_atom(0, 1);
  std::bernoulli_distribution only_one_pu(0.2);
  for (int trial = 0; trial < 8; ++trial) {
    std::vector<std::vector<PuCosts>> models(2);
    std::vector<LpUnit> units;
    for (int m = 0; m < 2; ++m) {
      const int atoms = 2 + (m == 1 ? extra_atom(rng) : 0);
      for (int i = 0; i < atoms; ++i) {
        PuCosts costs = {ms(rng), ms(rng)};
        if (only_one_pu(rng)) costs[static_cast<size_t>(extra_atom(rng))] = kNo;
        models[static_cast<size_t>(m)].push_back(costs);
        units.push_back({.model = m, .ms = costs});
      }
    }
    const std::vector<LpModel> lp_models(2);
    auto lp = SolveThroughputLp(2, units, lp_models);
    ASSERT_TRUE(lp.ok()) << lp.status();
    const double grid = GridSearch(models);
    SCOPED_TRACE(testing::Message() << "trial " << trial << ": LP " << lp->total_rps << ", grid " << grid);
    EXPECT_GE(lp->total_rps, grid - 1e-6);         // the LP is the optimum over all splits
    EXPECT_LE(lp->total_rps, grid * 1.02 + 1e-6);  // and the grid gets within 2 % of it
  }
}

// ----------------------------------------------------------------------------
// ComputeBounds

TEST(ComputeBoundsTest, WorkedExampleFromTheHeader) {
  auto bounds = ComputeBounds(WorkedExample());
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->throughput_rps, 100, kEps);
  EXPECT_NEAR(bounds->model_rps[0], 100, kEps);
  EXPECT_NEAR(bounds->latency_ms[0], 5 + 10, kEps);  // atom 0 on u1, then atom 1 on u0 (same device)
  EXPECT_NEAR(bounds->pu_busy[0], 1.0, kEps);
  EXPECT_NEAR(bounds->pu_busy[1], 0.5, kEps);
}

class ComputeBoundsPuCountTest : public ::testing::TestWithParam<int> {};

TEST_P(ComputeBoundsPuCountTest, OneAtomScalesWithIdenticalPus) {
  const int pus = GetParam();
  Problem problem;
  for (int u = 0; u < pus; ++u) problem.pus.push_back(Pu("cpu" + std::to_string(u)));
  problem.models.push_back(Model("m", {PuCosts(static_cast<size_t>(pus), 10.0)}));
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->throughput_rps, 100.0 * pus, 1e-5);
  EXPECT_NEAR(bounds->latency_ms[0], 10, kEps);
}

INSTANTIATE_TEST_SUITE_P(Pus, ComputeBoundsPuCountTest, ::testing::Values(1, 2, 4, 8));

TEST(ComputeBoundsTest, RateCapBindsAndTheSaturatingModelTakesTheRest) {
  Problem problem;
  problem.pus = {Pu("cpu")};
  problem.models.push_back(Model("capped", {{10.0}}));
  problem.models.back().demand = Rate(30);  // 30 % of the PU
  problem.models.push_back(Model("free", {{20.0}}));
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->model_rps[0], 30, kEps);
  EXPECT_NEAR(bounds->model_rps[1], 35, kEps);  // 70 % / 20 ms
  EXPECT_NEAR(bounds->throughput_rps, 65, kEps);
  EXPECT_NEAR(bounds->pu_busy[0], 1, kEps);
}

TEST(ComputeBoundsTest, ClosedLoopCapUsesTheLatencyBound) {
  Problem problem;
  problem.pus = {Pu("cpu")};
  problem.models.push_back(Model("closed", {{4.0}, {6.0}}, Chain(2)));
  problem.models.back().demand = Closed(2, 90);  // 2 / ((90 + 10) ms) = 20/s
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->latency_ms[0], 10, kEps);
  EXPECT_NEAR(bounds->model_rps[0], 20, kEps);
  EXPECT_NEAR(bounds->pu_busy[0], 0.2, kEps);
}

TEST(ComputeBoundsTest, DiamondRunsItsBranchesInParallel) {
  // 0 -> {1, 2} -> 3; no edge 1 -> 2. Cheapest times: 2, 5, 7, 1.
  Problem problem;
  problem.pus = {Pu("a"), Pu("b")};
  problem.models.push_back(
      Model("diamond", {{2.0, 3.0}, {5.0, 8.0}, {9.0, 7.0}, {1.0, 1.0}},
            {{.from = 0, .to = 1}, {.from = 0, .to = 2}, {.from = 1, .to = 3}, {.from = 2, .to = 3}}));
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->latency_ms[0], 2 + 7 + 1, kEps);
}

TEST(ComputeBoundsTest, AClosedLoopSentToASlowPuCompletesFewerRequests) {
  // "paced": one request in flight, 10 ms pause, 2 ms on u0 or 10 ms on u1.
  // "bulk": always waiting, 2 ms on u0 only. The cap alone (1 / (10 + 2) ms =
  // 83.3/s) lets the LP run paced wholly on u1 and give u0 to bulk: 583.3/s.
  // But a request that runs 10 ms on u1 makes the loop's cycle 20 ms: at most
  // 50/s (Little's law with the split). Each paced run moved to u0 takes a
  // bulk run's place there, one for one, so the best is 50 + 500 = 550/s.
  Problem problem;
  problem.pus = {Pu("u0"), Pu("u1")};
  problem.models.push_back(Model("paced", {{2.0, 10.0}}));
  problem.models.back().demand = Closed(1, 10);
  problem.models.push_back(Model("bulk", {{2.0, kNo}}));
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->model_rps[0], 50, 1e-6);
  EXPECT_NEAR(bounds->model_rps[1], 500, 1e-6);
  EXPECT_NEAR(bounds->throughput_rps, 550, 1e-6);
}

TEST(ComputeBoundsTest, LittlesLawCountsAtomsThatRunAtOnce) {
  // One request in flight, no pause; atom 0 only on u0, atom 1 only on u1,
  // 10 ms each. Without an edge they run at the same time: 100/s (20 ms of
  // PU time per request, two atoms at once). Chained, one waits: 50/s.
  for (const bool chained : {false, true}) {
    Problem problem;
    problem.pus = {Pu("u0"), Pu("u1")};
    problem.models.push_back(Model("m", {{10.0, kNo}, {kNo, 10.0}}, chained ? Chain(2) : std::vector<AtomEdge>{}));
    problem.models.back().demand = {.kind = Demand::Kind::kSaturating, .concurrency = 1};
    auto bounds = ComputeBounds(problem);
    ASSERT_TRUE(bounds.ok()) << bounds.status();
    EXPECT_NEAR(bounds->throughput_rps, chained ? 50 : 100, 1e-6) << (chained ? "chained" : "parallel");
  }
}

TEST(ComputeBoundsTest, UnavoidableTransferIsOnTheCriticalPath) {
  Problem problem;
  problem.pus = {Pu("host", 0), Pu("remote", 1)};
  problem.cross_device = {.fixed_ms = 1, .ms_per_mb = 0.5};
  problem.models.push_back(Model("split", {{3.0, kNo}, {kNo, 4.0}}, Chain(2, 2'000'000)));
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->latency_ms[0], 3 + (1 + 2 * 0.5) + 4, kEps);

  // A slower PU on the host device can run atom 1 too: the sets are still
  // disjoint, and the cheapest transfer (same device) and the cheapest atom
  // time (remote) both count.
  problem.pus.push_back(Pu("host2", 0));
  problem.same_device = {.fixed_ms = 0.1, .ms_per_mb = 0.05};
  problem.models[0].atom_ms = {{3.0, kNo, kNo}, {kNo, 4.0, 6.0}};
  bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->latency_ms[0], 3 + (0.1 + 2 * 0.05) + 4, kEps);

  // Atoms that share a PU need no transfer.
  problem.models[0].atom_ms = {{3.0, kNo, 5.0}, {kNo, 4.0, 6.0}};
  bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->latency_ms[0], 3 + 4, kEps);
}

TEST(ComputeBoundsTest, CheaperMeasuredRangeScalesItsAtomsDown) {
  // Two 10 ms atoms, but the whole model measures 10 ms: 5 ms each.
  Problem problem;
  problem.pus = {Pu("cpu")};
  problem.models.push_back(Model("fused", {{10.0}, {10.0}}, Chain(2)));
  problem.models[0].range_ms[{0, 2}] = {10.0};
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->throughput_rps, 100, kEps);
  EXPECT_NEAR(bounds->latency_ms[0], 10, kEps);
}

TEST(SubadditiveTest, ARangeIsNeverDearerThanItsPartsAndNothingGetsDearer) {
  // Three atoms of 4, 5 and 6 ms on cpu (npu: 1 ms, only atom 0), 1 ms
  // partition overhead. Measured: [0, 3) 20 ms (dearer than 4 + 5 + 6 - 2 =
  // 13: noise), [0, 2) 5 ms (cheaper than its atoms: kept, and it makes
  // [0, 3) cost 5 + 6 - 1 = 10).
  Problem problem;
  problem.pus = {Pu("cpu"), Pu("npu")};
  problem.partition_overhead_ms = 1;
  problem.dispatch_ms = 0.5;
  problem.models.push_back(Model("m", {{4.0, 1.0}, {5.0, kNo}, {6.0, kNo}}, Chain(3)));
  problem.models[0].range_ms[{0, 3}] = {20.0, kNo};
  problem.models[0].range_ms[{0, 2}] = {5.0, kNo};
  const Problem closed = Subadditive(problem);
  EXPECT_EQ(closed.dispatch_ms, 0.5);
  EXPECT_THAT(closed.RangeMs(0, 0, 3, 0), Optional(DoubleNear(10 + 0.5, kEps)));
  EXPECT_THAT(closed.RangeMs(0, 0, 2, 0), Optional(DoubleNear(5 + 0.5, kEps)));
  EXPECT_THAT(closed.RangeMs(0, 1, 3, 0), Optional(DoubleNear(10 + 0.5, kEps)));  // 5 + 6 - 1, as before
  EXPECT_EQ(closed.RangeMs(0, 0, 3, 1), std::nullopt);  // the npu still cannot run atoms 1 and 2
  EXPECT_THAT(closed.RangeMs(0, 0, 1, 1), Optional(DoubleNear(1 + 0.5, kEps)));
  // Every range, on every PU: no dearer than before, no dearer than any split.
  for (int first = 0; first < 3; ++first) {
    for (int last = first + 1; last <= 3; ++last) {
      for (int u = 0; u < 2; ++u) {
        const std::optional<double> before = problem.RangeMs(0, first, last, u);
        const std::optional<double> after = closed.RangeMs(0, first, last, u);
        ASSERT_EQ(before.has_value(), after.has_value());
        if (!after) continue;
        EXPECT_LE(*after, *before + kEps);
        for (int mid = first + 1; mid < last; ++mid) {
          const std::optional<double> left = closed.RangeMs(0, first, mid, u);
          const std::optional<double> right = closed.RangeMs(0, mid, last, u);
          if (left && right) {
            EXPECT_LE(*after, *left + *right - 0.5 - 1 + kEps);
          }
        }
      }
    }
  }
  // The bound of the closed problem is at least the original's.
  auto before = ComputeBounds(problem);
  auto after = ComputeBounds(closed);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_GE(after->throughput_rps, before->throughput_rps - kEps);
}

TEST(ComputeBoundsTest, MergingSavesThePartitionOverhead) {
  // Three 10 ms atoms, 2 ms overhead each: one partition takes 30 - 2 x 2 = 26 ms.
  Problem problem;
  problem.pus = {Pu("cpu")};
  problem.partition_overhead_ms = 2;
  problem.models.push_back(Model("m", {{10.0}, {10.0}, {10.0}}, Chain(3)));
  auto bounds = ComputeBounds(problem);
  ASSERT_TRUE(bounds.ok()) << bounds.status();
  EXPECT_NEAR(bounds->latency_ms[0], 26, kEps);
  EXPECT_NEAR(bounds->throughput_rps, 1000.0 / 26, kEps);
}

TEST(ComputeBoundsTest, AtomWithoutPuIsAnError) {
  Problem problem;
  problem.pus = {Pu("cpu"), Pu("npu")};
  problem.models.push_back(Model("resnet", {{1.0, 1.0}, {kNo, kNo}}));
  auto bounds = ComputeBounds(problem);
  EXPECT_EQ(bounds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bounds.status().message(),
              AllOf(HasSubstr("model 'resnet'"), HasSubstr("atom 1"), HasSubstr("cpu, npu")));
}

// ----------------------------------------------------------------------------
// Predict and ValidatePlacement

// Two PUs of one device; a0 = {4, 6}, a1 = {8, 2} ms; 1 MB crosses the cut,
// costing 0.5 + 1 = 1.5 ms between the PUs.
Problem TwoStageProblem() {
  Problem problem;
  problem.pus = {Pu("cpu"), Pu("npu")};
  problem.same_device = {.fixed_ms = 0.5, .ms_per_mb = 1};
  problem.models.push_back(Model("m", {{4.0, 6.0}, {8.0, 2.0}}, Chain(2, 1'000'000)));
  problem.models[0].cut_bytes = {1'000'000};
  return problem;
}

Placement Pipeline() {
  return {.models = {{{.first = 0, .last = 1, .pus = {0}}, {.first = 1, .last = 2, .pus = {1}}}}};
}

TEST(PredictTest, PipelineByHand) {
  auto prediction = Predict(TwoStageProblem(), Pipeline());
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_NEAR(prediction->latency_ms[0], 4 + 1.5 + 2, kEps);
  EXPECT_NEAR(prediction->throughput_rps, 250, kEps);  // cpu: 4 ms per request
  EXPECT_NEAR(prediction->pu_busy[0], 1, kEps);
  EXPECT_NEAR(prediction->pu_busy[1], 0.5, kEps);
  EXPECT_TRUE(prediction->demand_met);
  // Each stage runs on its one PU.
  ASSERT_EQ(prediction->shares.size(), 1u);
  ASSERT_EQ(prediction->shares[0].size(), 2u);
  EXPECT_THAT(prediction->shares[0][0], ElementsAre(DoubleNear(1, kEps), DoubleNear(0, kEps)));
  EXPECT_THAT(prediction->shares[0][1], ElementsAre(DoubleNear(0, kEps), DoubleNear(1, kEps)));
}

TEST(PredictTest, ClosedLoopIsFixedByThePredictedLatency) {
  Problem problem = TwoStageProblem();
  problem.models[0].demand = Closed(1, 92.5);  // 1 / ((92.5 + 7.5) ms) = 10/s
  auto prediction = Predict(problem, Pipeline());
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_NEAR(prediction->model_rps[0], 10, kEps);
  EXPECT_NEAR(prediction->pu_busy[0], 0.04, kEps);
  EXPECT_NEAR(prediction->pu_busy[1], 0.02, kEps);
  EXPECT_TRUE(prediction->demand_met);
}

TEST(PredictTest, SaturatingModelsShareThePusByWeightAsTheRuntimeDoes) {
  // Two CPUs; a 6 ms model with one loop and a 9 ms model with two. Equal PU
  // time per loop: 2000 ms/s over 3 loops, 666.7 ms/s each: 111.1/s and
  // 2 x 74.1/s. The total-maximizing LP would run the cheap model alone on
  // both PUs (its Little cap, 1 / 6 ms = 166.7/s, binding; the rest to the other).
  Problem problem;
  problem.pus = {Pu("cpu0"), Pu("cpu1")};
  problem.models.push_back(Model("cheap", {{6.0, 6.0}}));
  problem.models.push_back(Model("dear", {{9.0, 9.0}}));
  problem.models[0].demand = {.kind = Demand::Kind::kSaturating, .concurrency = 1};
  problem.models[1].demand = {.kind = Demand::Kind::kSaturating, .concurrency = 2};
  problem.models[1].weight = 2;
  Placement placement;
  placement.models = {{PlannedPartition{0, 1, {0, 1}}}, {PlannedPartition{0, 1, {0, 1}}}};
  auto prediction = Predict(problem, placement);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_NEAR(prediction->model_rps[0], 2000.0 / 3 / 6, 2000.0 / 3 / 6 * 2e-3);  // GLPK's tolerance
  EXPECT_NEAR(prediction->model_rps[1], 2 * 2000.0 / 3 / 9, 2 * 2000.0 / 3 / 9 * 2e-3);
}

TEST(PredictTest, RateAboveCapacityIsNotMet) {
  Problem problem = TwoStageProblem();
  problem.models[0].demand = Rate(300);
  auto prediction = Predict(problem, Pipeline());
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_FALSE(prediction->demand_met);
  EXPECT_NEAR(prediction->model_rps[0], 250, 1e-5);
}

TEST(PredictTest, MeasuredRangeSharedByTwoPus) {
  Problem problem = TwoStageProblem();
  problem.models[0].range_ms[{0, 2}] = {10.0, 7.0};
  const Placement whole = {.models = {{{.first = 0, .last = 2, .pus = {0, 1}}}}};
  auto prediction = Predict(problem, whole);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_NEAR(prediction->latency_ms[0], 7, kEps);                  // fastest listed PU
  EXPECT_NEAR(prediction->throughput_rps, 100 + 1000.0 / 7, kEps);  // both PUs full
  EXPECT_NEAR(prediction->pu_busy[0], 1, kEps);
  EXPECT_NEAR(prediction->pu_busy[1], 1, kEps);
  // The split: 100/s on cpu, 1000/7 per s on npu.
  const double total = 100 + 1000.0 / 7;
  ASSERT_EQ(prediction->shares.size(), 1u);
  ASSERT_EQ(prediction->shares[0].size(), 1u);
  EXPECT_THAT(prediction->shares[0][0],
              ElementsAre(DoubleNear(100 / total, kEps), DoubleNear(1000.0 / 7 / total, kEps)));
}

TEST(ValidatePlacementTest, AcceptsTheCoverAndRejectsAGap) {
  Problem problem;
  problem.pus = {Pu("cpu")};
  problem.models.push_back(Model("bert", {{1.0}, {1.0}, {1.0}}, Chain(3)));
  EXPECT_TRUE(ValidatePlacement(problem, {.models = {{{.first = 0, .last = 3, .pus = {0}}}}}).ok());

  const Placement gap = {.models = {{{.first = 0, .last = 1, .pus = {0}}, {.first = 2, .last = 3, .pus = {0}}}}};
  const absl::Status status = ValidatePlacement(problem, gap);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("model 'bert'"), HasSubstr("partition 1"), HasSubstr("should start at atom 1")));
  EXPECT_EQ(Predict(problem, gap).status(), status);

  const Placement short_cover = {.models = {{{.first = 0, .last = 2, .pus = {0}}}}};
  EXPECT_THAT(ValidatePlacement(problem, short_cover).message(), HasSubstr("partitions end at atom 2"));
  EXPECT_THAT(ValidatePlacement(problem, {}).message(), HasSubstr("for 0 models, but the problem has 1"));
}

TEST(ValidatePlacementTest, RejectsAPuThatCannotRunThePartition) {
  Problem problem;
  problem.pus = {Pu("cpu"), Pu("npu")};
  problem.models.push_back(Model("yolo", {{1.0, 1.0}, {1.0, kNo}}, Chain(2)));
  const Placement placement = {.models = {{{.first = 0, .last = 2, .pus = {0, 1}}}}};
  const absl::Status status = ValidatePlacement(problem, placement);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("model 'yolo'"), HasSubstr("partition 0"), HasSubstr("PU 'npu'"),
                                      HasSubstr("atom 1 cannot run there")));

  const Placement unknown = {.models = {{{.first = 0, .last = 2, .pus = {5}}}}};
  EXPECT_THAT(ValidatePlacement(problem, unknown).message(), HasSubstr("PU index 5"));
  const Placement twice = {.models = {{{.first = 0, .last = 2, .pus = {0, 0}}}}};
  EXPECT_THAT(ValidatePlacement(problem, twice).message(), HasSubstr("PU 'cpu' twice"));
  const Placement none = {.models = {{{.first = 0, .last = 2, .pus = {}}}}};
  EXPECT_THAT(ValidatePlacement(problem, none).message(), HasSubstr("lists no PU"));
}

TEST(BoundViolationTest, NamesEveryModeAboveTheBoundWithBothNumbers) {
  const std::vector<std::pair<std::string, double>> modes = {
      {"baton", 99.5}, {"ort_tuned", 101.0}, {"ort_pinned", 100.0}, {"ort_concurrent", 250.0}};
  const std::vector<BoundViolation> v = FindBoundViolations(100.0, modes);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].mode, "ort_tuned");
  EXPECT_EQ(v[0].throughput_rps, 101.0);
  EXPECT_EQ(v[0].bound_rps, 100.0);
  EXPECT_EQ(v[1].mode, "ort_concurrent");
  EXPECT_TRUE(FindBoundViolations(1000.0, modes).empty());
  EXPECT_TRUE(FindBoundViolations(1.0, {}).empty());
}

}  // namespace
}  // namespace baton::profile
