// High-level plan policies: names, one hand-computed instance (or a few) per
// policy, then invariants over random problems (valid, deterministic, search
// never worse than its start).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/plan/policies.h"
#include "baton/profile/bounds.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton::plan {
namespace {

using profile::Placement;
using profile::PlannedPartition;
using profile::Problem;
using profile::ProblemModel;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr std::optional<double> kNo = std::nullopt;
constexpr HighLevelPolicy kAllPolicies[] = {HighLevelPolicy::kCapability, HighLevelPolicy::kBalanced, HighLevelPolicy::kLp,
                                       HighLevelPolicy::kSearch};

// A model whose atoms form a chain; units are the maximal runs of atoms that
// the same PUs can run (as partition/units.h builds them).
ProblemModel ChainModel(std::string name, std::vector<profile::PuCosts> atom_ms) {
  ProblemModel model;
  model.name = std::move(name);
  model.atom_ms = std::move(atom_ms);
  for (int i = 0; i < model.atoms(); ++i) {
    const auto mask = [&](int a) {
      std::vector<bool> can;
      for (const std::optional<double>& t : model.atom_ms[static_cast<size_t>(a)]) can.push_back(t.has_value());
      return can;
    };
    model.unit_of_atom.push_back(i == 0 ? 0 : model.unit_of_atom.back() + (mask(i) == mask(i - 1) ? 0 : 1));
    if (i > 0) {
      model.cut_bytes.push_back(1000);
      model.edges.push_back({i - 1, i, 1000});
    }
  }
  return model;
}

Problem WithPus(int pus, std::vector<ProblemModel> models) {
  Problem problem;
  for (int u = 0; u < pus; ++u) problem.pus.push_back({"pu" + std::to_string(u), "cpu", 0});
  problem.models = std::move(models);
  return problem;
}

Placement Plan(HighLevelPolicy policy, const Problem& problem, const PlanOptions& options = {}) {
  absl::StatusOr<Placement> placement = MakePlacement(policy, problem, options);
  EXPECT_TRUE(placement.ok()) << HighLevelPolicyName(policy) << ": " << placement.status();
  return placement.ok() ? *placement : Placement{};
}

double Throughput(const Problem& problem, const Placement& placement) {
  absl::StatusOr<profile::Prediction> prediction = profile::Predict(problem, placement);
  EXPECT_TRUE(prediction.ok()) << prediction.status();
  return prediction.ok() ? prediction->throughput_rps : 0;
}

// Random problem: `models` chains of about `atoms` atoms on `pus` PUs over two
// devices; about 1 in 5 (atom, PU) pairs cannot run; mixed demands; some
// measured ranges cheaper than their atoms' sum.
Problem RandomProblem(int models, int pus, int atoms, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> ms(1, 20);
  std::uniform_int_distribution<int> coin(0, 4);
  std::vector<ProblemModel> list;
  for (int m = 0; m < models; ++m) {
    const int n = atoms - 2 + coin(rng);
    std::vector<profile::PuCosts> atom_ms;
    for (int i = 0; i < n; ++i) {
      profile::PuCosts costs;
      for (int u = 0; u < pus; ++u)
        costs.push_back(coin(rng) == 0 ? kNo : std::optional<double>(ms(rng) * (1 + u % 3)));
      if (std::none_of(costs.begin(), costs.end(), [](auto t) { return t.has_value(); })) costs[0] = ms(rng);
      atom_ms.push_back(costs);
    }
    ProblemModel model = ChainModel(absl::StrCat("m", m), std::move(atom_ms));
    model.weight = 1 + m % 2;
    if (m % 4 == 1) model.demand = {profile::Demand::Kind::kRate, 5, 1, 0};
    if (m % 4 == 2) model.demand = {profile::Demand::Kind::kClosed, 0, 2, 10};
    for (int i = 0; i + 2 <= n; i += 2) {
      profile::PuCosts costs;
      for (int u = 0; u < pus; ++u) {
        const auto& a = model.atom_ms[static_cast<size_t>(i)][static_cast<size_t>(u)];
        const auto& b = model.atom_ms[static_cast<size_t>(i + 1)][static_cast<size_t>(u)];
        costs.push_back(a && b ? std::optional<double>(0.8 * (*a + *b)) : kNo);
      }
      model.range_ms[{i, i + 2}] = costs;
    }
    list.push_back(std::move(model));
  }
  Problem problem = WithPus(pus, std::move(list));
  for (int u = 0; u < pus; ++u) problem.pus[static_cast<size_t>(u)].device = u < pus / 2 ? 0 : 1;
  problem.same_device = {0.01, 0.1};
  problem.cross_device = {0.5, 2};
  problem.partition_overhead_ms = 0.2;
  return problem;
}

std::vector<int> AtomsPerPu(const Problem& problem, const std::vector<PlannedPartition>& parts) {
  std::vector<int> count(problem.pus.size(), 0);
  for (const PlannedPartition& part : parts) count[static_cast<size_t>(part.pus[0])] += part.last - part.first;
  return count;
}

TEST(PlanPolicyNames, RoundTrip) {
  for (HighLevelPolicy policy : kAllPolicies) {
    absl::StatusOr<HighLevelPolicy> parsed = ParseHighLevelPolicy(HighLevelPolicyName(policy));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, policy);
    EXPECT_STRNE(HighLevelPolicyObjective(policy), "");
  }
}

TEST(PlanPolicyNames, UnknownNameListsTheNames) {
  absl::StatusOr<HighLevelPolicy> parsed = ParseHighLevelPolicy("fastest");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), AllOf(HasSubstr("'fastest'"), HasSubstr("capability"), HasSubstr("balanced"),
                                               HasSubstr("lp"), HasSubstr("search")));
}

TEST(CapabilityPolicy, OnePartitionPerUnitOnEveryCapablePuFastestFirst) {
  // Units {0, 1} (both PUs), {2} (pu1 only), {3} (both; pu0 faster).
  const Problem problem = WithPus(2, {ChainModel("m", {{4, 2}, {4, 2}, {kNo, 3}, {1, 5}})});
  const Placement placement = Plan(HighLevelPolicy::kCapability, problem);
  EXPECT_THAT(placement.models[0],
              ElementsAre(PlannedPartition{0, 2, {1, 0}}, PlannedPartition{2, 3, {1}}, PlannedPartition{3, 4, {0, 1}}));
}

TEST(BalancedPolicy, HomogeneousPusTakeTwoEqualAtomsEach) {
  const Problem problem = WithPus(2, {ChainModel("m", {{5, 5}, {5, 5}, {5, 5}, {5, 5}})});
  const Placement placement = Plan(HighLevelPolicy::kBalanced, problem);
  ASSERT_EQ(placement.models[0].size(), 2u);
  EXPECT_THAT(AtomsPerPu(problem, placement.models[0]), ElementsAre(2, 2));
}

TEST(BalancedPolicy, ThreeTimesFasterPuTakesThreeOfFourAtoms) {
  // pu0 with a atoms: 3a ms; pu1 with 4 - a: 4 - a ms; max(3a, 4 - a) is
  // smallest at a = 1 (3 ms); one stage on pu1 alone would take 4 ms.
  const Problem problem = WithPus(2, {ChainModel("m", {{3, 1}, {3, 1}, {3, 1}, {3, 1}})});
  const Placement placement = Plan(HighLevelPolicy::kBalanced, problem);
  ASSERT_EQ(placement.models[0].size(), 2u);
  EXPECT_THAT(AtomsPerPu(problem, placement.models[0]), ElementsAre(1, 3));
}

TEST(BalancedPolicy, LighterModelFillsTheLessLoadedPu) {
  // Heavy (12 ms on either PU) is planned first, whole on one PU (one stage
  // costs 12 ms; two stages on distinct PUs cannot beat it here since it is
  // one atom); light (4 ms) then goes to the other, idle PU (4 < 12 + 4).
  const Problem problem = WithPus(2, {ChainModel("light", {{4, 4}}), ChainModel("heavy", {{12, 12}})});
  const Placement placement = Plan(HighLevelPolicy::kBalanced, problem);
  ASSERT_EQ(placement.models[0].size(), 1u);
  ASSERT_EQ(placement.models[1].size(), 1u);
  EXPECT_NE(placement.models[0][0].pus, placement.models[1][0].pus);
}

TEST(BalancedPolicy, MaxStagesOneKeepsEachModelWhole) {
  const Problem problem = WithPus(2, {ChainModel("m", {{5, 5}, {5, 5}, {5, 5}, {5, 5}})});
  const Placement placement = Plan(HighLevelPolicy::kBalanced, problem, {.max_stages = 1});
  ASSERT_EQ(placement.models[0].size(), 1u);
  EXPECT_EQ(placement.models[0][0].first, 0);
  EXPECT_EQ(placement.models[0][0].last, 4);
}

TEST(BalancedPolicy, PerModelStagesCapOnlyThatModel) {
  // Three equal PUs: a is held to one stage (20 ms on one PU); b, unlimited,
  // splits over the two PUs left (10 ms each) rather than take one whole.
  const Problem problem = WithPus(3, {ChainModel("a", {{5, 5, 5}, {5, 5, 5}, {5, 5, 5}, {5, 5, 5}}),
                                      ChainModel("b", {{5, 5, 5}, {5, 5, 5}, {5, 5, 5}, {5, 5, 5}})});
  PlanOptions options;
  options.model_stages = {1, 0};  // a: one stage; b: the default (as many as PUs)
  const Placement placement = Plan(HighLevelPolicy::kBalanced, problem, options);
  EXPECT_EQ(placement.models[0].size(), 1u);
  EXPECT_EQ(placement.models[1].size(), 2u);
}

TEST(WholePolicy, EachModelOnePartitionOnEveryCapablePuFastestFirst) {
  // m runs on pu1 (8 ms) and pu0 (12 ms); n only on pu0 (pu1 cannot run its second atom).
  const Problem problem = WithPus(2, {ChainModel("m", {{6, 4}, {6, 4}}), ChainModel("n", {{1, 1}, {1, kNo}})});
  const Placement placement = Plan(HighLevelPolicy::kWhole, problem);
  ASSERT_EQ(placement.models[0].size(), 1u);
  EXPECT_EQ(placement.models[0][0].first, 0);
  EXPECT_EQ(placement.models[0][0].last, 2);
  EXPECT_EQ(placement.models[0][0].pus, (std::vector<int>{1, 0}));
  EXPECT_EQ(placement.models[1][0].pus, (std::vector<int>{0}));
}

TEST(BalancedPolicy, AlternatingCapabilitiesReuseAPu) {
  // pu0, pu1, pu0: three stages on two PUs; no cut on distinct PUs exists.
  const Problem problem = WithPus(2, {ChainModel("m", {{2, kNo}, {kNo, 2}, {2, kNo}})});
  const Placement placement = Plan(HighLevelPolicy::kBalanced, problem);
  EXPECT_THAT(placement.models[0],
              ElementsAre(PlannedPartition{0, 1, {0}}, PlannedPartition{1, 2, {1}}, PlannedPartition{2, 3, {0}}));
}

TEST(BalancedPolicy, SixteenPusPlanAndSeventeenAreAnErrorThatSearchSkips) {
  const Problem sixteen = RandomProblem(2, 16, 8, 3);
  EXPECT_TRUE(profile::ValidatePlacement(sixteen, Plan(HighLevelPolicy::kBalanced, sixteen)).ok());
  const Problem seventeen = RandomProblem(2, 17, 4, 3);
  absl::StatusOr<Placement> balanced = MakePlacement(HighLevelPolicy::kBalanced, seventeen);
  ASSERT_FALSE(balanced.ok());
  EXPECT_EQ(balanced.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(balanced.status().message(), AllOf(HasSubstr("17 PUs"), HasSubstr("16")));
  EXPECT_TRUE(profile::ValidatePlacement(seventeen, Plan(HighLevelPolicy::kSearch, seventeen, {.iterations = 50})).ok());
}

TEST(AllPolicies, AnAtomOnlyPu1CanRunIsPlacedOnPu1Only) {
  const Problem problem = WithPus(2, {ChainModel("m", {{5, 5}, {kNo, 5}, {5, 5}})});
  for (HighLevelPolicy policy : kAllPolicies) {
    const Placement placement = Plan(policy, problem);
    ASSERT_EQ(placement.models.size(), 1u);
    for (const PlannedPartition& part : placement.models[0]) {
      if (part.first <= 1 && 1 < part.last) {
        EXPECT_THAT(part.pus, ElementsAre(1)) << HighLevelPolicyName(policy);
      }
    }
  }
}

TEST(LpPolicy, ComparativeAdvantageSplitsTheChain) {
  // Atoms 0, 1 are 10x cheaper on pu0, atoms 2, 3 on pu1: the unique LP
  // optimum (500 req/s, each PU 2 ms per request) runs each pair on its PU.
  const Problem problem = WithPus(2, {ChainModel("m", {{1, 10}, {1, 10}, {10, 1}, {10, 1}})});
  const std::vector<PlannedPartition> expected{{0, 2, {0}}, {2, 4, {1}}};
  EXPECT_EQ(Plan(HighLevelPolicy::kLp, problem).models[0], expected);
  EXPECT_EQ(Plan(HighLevelPolicy::kBalanced, problem).models[0], expected);
  EXPECT_NEAR(Throughput(problem, Plan(HighLevelPolicy::kLp, problem)), 500, 1e-6);
}

TEST(LpPolicy, AtomOnlyPu1CanRunPushesTheOtherToPu0) {
  // pu1 must run atom 1 (5 ms) for every request; the optimum (200 req/s)
  // leaves atom 0 entirely to pu0.
  const Problem problem = WithPus(2, {ChainModel("m", {{5, 5}, {kNo, 5}})});
  EXPECT_THAT(Plan(HighLevelPolicy::kLp, problem).models[0],
              ElementsAre(PlannedPartition{0, 1, {0}}, PlannedPartition{1, 2, {1}}));
}

TEST(LpPolicy, SecondaryPuFromTenPercentOfTheWork) {
  // One atom, 30 ms on pu0, 10 ms on pu1: the optimum runs 100/s on pu1 and
  // 33.3/s on pu0 (25 % of the runs): pu1 first, pu0 listed.
  EXPECT_THAT(Plan(HighLevelPolicy::kLp, WithPus(2, {ChainModel("m", {{30, 10}})})).models[0],
              ElementsAre(PlannedPartition{0, 1, {1, 0}}));
  // 10 ms on pu0, 100 ms on pu1: pu1 adds 10/s of 110/s (9 %): not listed.
  EXPECT_THAT(Plan(HighLevelPolicy::kLp, WithPus(2, {ChainModel("m", {{10, 100}})})).models[0],
              ElementsAre(PlannedPartition{0, 1, {0}}));
}

TEST(LpPolicy, DegenerateInstancesStillReachTheLpBound) {
  // Equal atoms on equal PUs (and the 3x case) have many LP optima; whichever
  // the solver returns, the rounded placement keeps the bound's throughput.
  for (const Problem& problem : {WithPus(2, {ChainModel("m", {{5, 5}, {5, 5}, {5, 5}, {5, 5}})}),
                                 WithPus(2, {ChainModel("m", {{3, 1}, {3, 1}, {3, 1}, {3, 1}})})}) {
    absl::StatusOr<profile::Bounds> bounds = profile::ComputeBounds(problem);
    ASSERT_TRUE(bounds.ok()) << bounds.status();
    EXPECT_NEAR(Throughput(problem, Plan(HighLevelPolicy::kLp, problem)), bounds->throughput_rps,
                1e-6 * bounds->throughput_rps);
  }
}

TEST(SearchPolicy, NeverPredictsLessThroughputThanTheOtherPolicies) {
  std::vector<Problem> problems{WithPus(2, {ChainModel("m", {{3, 1}, {3, 1}, {3, 1}, {3, 1}})}),
                                WithPus(2, {ChainModel("m", {{5, 5}, {kNo, 5}, {5, 5}})})};
  for (uint32_t seed = 1; seed <= 3; ++seed) problems.push_back(RandomProblem(3, 3, 5, seed));
  for (const Problem& problem : problems) {
    double best = 0;
    for (HighLevelPolicy policy : {HighLevelPolicy::kCapability, HighLevelPolicy::kBalanced, HighLevelPolicy::kLp}) {
      best = std::max(best, Throughput(problem, Plan(policy, problem)));
    }
    EXPECT_GE(Throughput(problem, Plan(HighLevelPolicy::kSearch, problem, {.iterations = 300})), best * (1 - 1e-9));
  }
}

TEST(SearchPolicy, ZeroIterationsReturnsTheBestStart) {
  const Problem problem = RandomProblem(3, 3, 5, 7);
  double best = 0;
  for (HighLevelPolicy policy : {HighLevelPolicy::kCapability, HighLevelPolicy::kBalanced, HighLevelPolicy::kLp}) {
    best = std::max(best, Throughput(problem, Plan(policy, problem)));
  }
  EXPECT_NEAR(Throughput(problem, Plan(HighLevelPolicy::kSearch, problem, {.iterations = 0})), best, 1e-9 * best);
}

TEST(AllPolicies, EightModelsOnSixPusGiveValidPlacements) {
  const Problem problem = RandomProblem(8, 6, 8, 42);
  for (HighLevelPolicy policy : kAllPolicies) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<Placement> placement = MakePlacement(policy, problem);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(placement.ok()) << HighLevelPolicyName(policy) << ": " << placement.status();
    EXPECT_TRUE(profile::ValidatePlacement(problem, *placement).ok()) << HighLevelPolicyName(policy);
    // Informational only: timings belong in benchmarks, not assertions.
    std::cout << "[ timing ] " << HighLevelPolicyName(policy) << " planned 8 models x 6 PUs in " << ms << " ms, "
              << Throughput(problem, *placement) << " req/s predicted\n";
  }
}

TEST(AllPolicies, VaryingPuCountsGiveValidPlacements) {
  for (int pus : {1, 2, 4, 8}) {
    const Problem problem = RandomProblem(3, pus, 5, static_cast<uint32_t>(100 + pus));
    for (HighLevelPolicy policy : kAllPolicies) {
      absl::StatusOr<Placement> placement = MakePlacement(policy, problem, {.iterations = 200});
      ASSERT_TRUE(placement.ok()) << HighLevelPolicyName(policy) << " on " << pus << " PUs: " << placement.status();
      EXPECT_TRUE(profile::ValidatePlacement(problem, *placement).ok()) << HighLevelPolicyName(policy);
    }
  }
}

TEST(AllPolicies, SameInputGivesTheSamePlacement) {
  const Problem problem = RandomProblem(4, 4, 6, 9);
  for (HighLevelPolicy policy : kAllPolicies) {
    const PlanOptions options{.iterations = 300, .seed = 5};
    EXPECT_EQ(Plan(policy, problem, options), Plan(policy, problem, options)) << HighLevelPolicyName(policy);
  }
}

TEST(AllPolicies, AnAtomNoPuCanRunIsAnErrorNamingModelAndAtom) {
  const Problem problem = WithPus(2, {ChainModel("resnet", {{1, 1}, {1, 1}, {kNo, kNo}})});
  for (HighLevelPolicy policy : kAllPolicies) {
    absl::StatusOr<Placement> placement = MakePlacement(policy, problem);
    ASSERT_FALSE(placement.ok()) << HighLevelPolicyName(policy);
    EXPECT_EQ(placement.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(placement.status().message(), AllOf(HasSubstr("'resnet'"), HasSubstr("atom 2")));
  }
}

TEST(PlannedPriorities, PacedStreamsBeforeSaturatingOnesUnlessTheUserSetPriorities) {
  Problem problem = WithPus(1, {ChainModel("batch", {{1.0}}), ChainModel("camera", {{1.0}}),
                                ChainModel("video", {{1.0}}), ChainModel("loop", {{1.0}})});
  problem.models[0].demand = {profile::Demand::Kind::kSaturating, 0, 2, 0};
  problem.models[1].demand = {profile::Demand::Kind::kClosed, 0, 1, 30};
  problem.models[2].demand = {profile::Demand::Kind::kRate, 25, 0, 0};
  problem.models[3].demand = {profile::Demand::Kind::kSaturating, 0, 1, 0};
  absl::StatusOr<std::vector<int>> planned = PlannedPriorities(problem, {0, 0, 0, 0});
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_THAT(*planned, ElementsAre(0, 1, 1, 0));
  // Any priority set in the config: the config's, as is.
  planned = PlannedPriorities(problem, {3, 0, 0, -1});
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_THAT(*planned, ElementsAre(3, 0, 0, -1));
  EXPECT_THAT(PlannedPriorities(problem, {0, 0}).status().message(), HasSubstr("2 configured priorities for 4 models"));
}

TEST(AllPolicies, OptionsOutOfRangeAreErrorsNamingTheOption) {
  const Problem problem = WithPus(1, {ChainModel("m", {{1}})});
  for (HighLevelPolicy policy : kAllPolicies) {
    absl::StatusOr<Placement> stages = MakePlacement(policy, problem, {.max_stages = -1});
    ASSERT_FALSE(stages.ok());
    EXPECT_EQ(stages.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(stages.status().message(), HasSubstr("max_stages"));
    absl::StatusOr<Placement> iterations = MakePlacement(policy, problem, {.iterations = -1});
    ASSERT_FALSE(iterations.ok());
    EXPECT_EQ(iterations.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(iterations.status().message(), HasSubstr("iterations"));
  }
}

}  // namespace
}  // namespace baton::plan
