// Low-level policies: invariants over random snapshots, then one behaviour test
// (or a few) per policy.
#include "baton/policy/policy.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/priority.h"
#include "baton/policy/split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

Duration Ms(int64_t ms) { return std::chrono::milliseconds(ms); }
Time At(int64_t ms) { return kTimeZero + Ms(ms); }

Decision RunOn(uint32_t item, uint32_t pu) {
  return Decision{Decision::Kind::kRun, AssignmentId(item), PuId(pu)};
}
Decision DropOf(uint32_t item) { return Decision{Decision::Kind::kDrop, AssignmentId(item), PuId()}; }

// Builds a Snapshot and owns what it points to. Every item is model 0 with its
// own partition (= its id), so latencies are given per (item, PU); an item
// has no latency on a PU (cannot run there) unless one is set.
class SnapshotBuilder {
 public:
  SnapshotBuilder& Now(int64_t ms) {
    now_ = At(ms);
    return *this;
  }
  SnapshotBuilder& IdlePu(uint32_t id, std::string kind = "cpu") {
    pus_.push_back(PuState{PuId(id), std::move(kind), false, now_});
    return *this;
  }
  SnapshotBuilder& BusyPu(uint32_t id, int64_t free_at_ms, std::string kind = "cpu") {
    pus_.push_back(PuState{PuId(id), std::move(kind), true, At(free_at_ms)});
    return *this;
  }
  // Adds item `id` (seq = number of items so far); the reference stays valid.
  WorkItem& Item(uint32_t id) {
    WorkItem& item = items_.emplace_back();
    item.id = AssignmentId(id);
    item.request = RequestId(id);
    item.model = ModelId(0);
    item.partition = PartitionId(id);
    item.enqueued = now_;
    item.seq = items_.size() - 1;
    return item;
  }
  SnapshotBuilder& Latency(uint32_t item, uint32_t pu, int64_t ms) {
    latency_.Set(ModelId(0), PartitionId(item), PuId(pu), Ms(ms));
    return *this;
  }
  SnapshotBuilder& DecisionsSoFar(uint64_t n) {
    decisions_so_far_ = n;
    return *this;
  }
  // Valid while the builder lives and is not changed.
  Snapshot Build() {
    ready_.assign(items_.begin(), items_.end());
    return Snapshot{now_, ready_, pus_, &latency_, decisions_so_far_};
  }

 private:
  Time now_ = kTimeZero;
  std::deque<WorkItem> items_;
  std::vector<WorkItem> ready_;
  std::vector<PuState> pus_;
  FixedLatencyModel latency_;
  uint64_t decisions_so_far_ = 0;
};

std::unique_ptr<LowLevelPolicy> Make(const std::string& name, PolicyOptions options = {}) {
  absl::StatusOr<std::unique_ptr<LowLevelPolicy>> policy = MakeLowLevelPolicy(name, options);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return std::move(policy).value();
}

std::vector<Decision> Decide(const std::string& name, SnapshotBuilder& builder, PolicyOptions options = {}) {
  return Make(name, options)->Decide(builder.Build());
}

// ---------------------------------------------------------------------------
// Random snapshots and the invariants every policy keeps.

// A random snapshot with the data it points to.
struct RandomCase {
  Time now;
  std::vector<WorkItem> items;
  std::vector<PuState> pus;
  FixedLatencyModel latency;
  uint64_t decisions_so_far = 0;

  Snapshot snapshot() const { return Snapshot{now, items, pus, &latency, decisions_so_far}; }
};

std::unique_ptr<RandomCase> MakeRandomCase(std::mt19937& rng, int num_pus) {
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&rng](double p) { return std::bernoulli_distribution(p)(rng); };
  auto c = std::make_unique<RandomCase>();
  c->now = At(uniform(0, 50));
  c->decisions_so_far = static_cast<uint64_t>(uniform(0, 1000));

  // Distinct, non-contiguous PU ids in random order.
  std::vector<uint32_t> ids(16);
  for (uint32_t i = 0; i < ids.size(); ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  for (int i = 0; i < num_pus; ++i) {
    PuState pu{PuId(ids[i]), chance(0.5) ? "cpu" : "gpu", chance(0.4), c->now};
    if (pu.busy) pu.expected_free = c->now + Ms(uniform(-5, 20));
    c->pus.push_back(pu);
  }
  // Latencies per (model, partition, PU): holes, and some partitions no PU runs.
  for (uint32_t model = 0; model < 3; ++model) {
    for (uint32_t partition = 0; partition < 6; ++partition) {
      const bool unrunnable = chance(0.1);
      for (const PuState& pu : c->pus) {
        if (unrunnable || chance(0.25)) continue;
        c->latency.Set(ModelId(model), PartitionId(partition), pu.id, Ms(uniform(1, 20)));
      }
    }
  }
  const int num_items = uniform(0, 12);
  uint64_t seq = static_cast<uint64_t>(uniform(0, 100));
  for (int i = 0; i < num_items; ++i) {
    WorkItem item;
    item.id = AssignmentId(static_cast<uint32_t>(1000 + i * 7));
    item.request = RequestId(static_cast<uint32_t>(uniform(0, 4)));
    item.model = ModelId(static_cast<uint32_t>(uniform(0, 2)));
    item.partition = PartitionId(static_cast<uint32_t>(uniform(0, 5)));
    item.enqueued = c->now - Ms(uniform(0, 30));
    if (chance(0.5)) item.deadline = c->now + Ms(uniform(-10, 30));
    item.priority = uniform(-2, 6);
    if (chance(0.5)) {  // mostly a PU of the snapshot, sometimes one it does not have
      item.fixed_pu = chance(0.8) ? c->pus[static_cast<size_t>(uniform(0, num_pus - 1))].id
                                  : PuId(static_cast<uint32_t>(uniform(0, 20)));
    }
    seq += static_cast<uint64_t>(uniform(1, 3));
    item.seq = seq;
    c->items.push_back(item);
  }
  return c;
}

bool Runnable(const Snapshot& s, const WorkItem& item) {
  return std::any_of(s.pus.begin(), s.pus.end(), [&](const PuState& pu) {
    return s.latency->Expected(item.model, item.partition, pu.id).has_value();
  });
}

// The rules of policy.h, checked here independently of ValidateDecisions.
void ExpectInvariants(const Snapshot& s, const std::vector<Decision>& decisions) {
  absl::flat_hash_map<AssignmentId, const WorkItem*> items;
  for (const WorkItem& item : s.ready) items[item.id] = &item;
  absl::flat_hash_map<PuId, const PuState*> pus;
  for (const PuState& pu : s.pus) pus[pu.id] = &pu;
  absl::flat_hash_set<AssignmentId> seen_items;
  absl::flat_hash_set<PuId> seen_pus;
  for (const Decision& d : decisions) {
    ASSERT_TRUE(items.contains(d.item)) << d;
    EXPECT_TRUE(seen_items.insert(d.item).second) << "item decided twice: " << d;
    const WorkItem& item = *items[d.item];
    EXPECT_TRUE(Runnable(s, item)) << "decision for an item no PU can run: " << d;
    if (d.kind == Decision::Kind::kRun) {
      ASSERT_TRUE(pus.contains(d.pu)) << d;
      EXPECT_TRUE(seen_pus.insert(d.pu).second) << "PU used twice: " << d;
      EXPECT_FALSE(pus[d.pu]->busy) << "run on a busy PU: " << d;
      EXPECT_TRUE(s.latency->Expected(item.model, item.partition, d.pu).has_value()) << "incapable PU: " << d;
    } else {
      EXPECT_TRUE(item.deadline.has_value()) << "drop without a deadline: " << d;
    }
  }
  EXPECT_TRUE(ValidateDecisions(s, decisions).ok()) << ValidateDecisions(s, decisions);
}

// After the decisions, no idle PU is left unused while a waiting item could run on it.
void ExpectWorkConserving(const Snapshot& s, const std::vector<Decision>& decisions) {
  absl::flat_hash_set<AssignmentId> decided;
  absl::flat_hash_set<PuId> used;
  for (const Decision& d : decisions) {
    decided.insert(d.item);
    if (d.kind == Decision::Kind::kRun) used.insert(d.pu);
  }
  for (const WorkItem& item : s.ready) {
    if (decided.contains(item.id)) continue;
    for (const PuState& pu : s.pus) {
      EXPECT_FALSE(!pu.busy && !used.contains(pu.id) &&
                   s.latency->Expected(item.model, item.partition, pu.id).has_value())
          << "item " << item.id << " waits while idle pu " << pu.id << " could run it";
    }
  }
}

// Exactly which items a policy drops.
std::vector<AssignmentId> ExpectedDrops(const std::string& name, const Snapshot& s) {
  std::vector<AssignmentId> drops;
  for (const WorkItem& item : s.ready) {
    if (!item.deadline || !Runnable(s, item)) continue;
    if (name == "edf" && s.now > *item.deadline) drops.push_back(item.id);
    if (name == "lsf") {
      Duration best = Duration::max();
      for (const PuState& pu : s.pus) {
        best =
            std::min(best, s.latency->Expected(item.model, item.partition, pu.id).value_or(Duration::max()));
      }
      if (*item.deadline - s.now - best < Duration::zero()) drops.push_back(item.id);
    }
  }
  std::sort(drops.begin(), drops.end());
  return drops;
}

class PolicyPropertyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PolicyPropertyTest, InvariantsHoldOnRandomSnapshots) {
  const std::string name = GetParam();
  const bool work_conserving = name == "fifo" || name == "round_robin" || name == "edf" || name == "priority";
  std::mt19937 rng(20250705);
  int runs = 0;
  int drops = 0;
  for (int num_pus : {1, 2, 4, 8}) {
    for (int trial = 0; trial < 400; ++trial) {
      SCOPED_TRACE(::testing::Message() << name << " pus=" << num_pus << " trial=" << trial);
      std::unique_ptr<RandomCase> c = MakeRandomCase(rng, num_pus);
      const Snapshot s = c->snapshot();
      const std::vector<Decision> decisions = Make(name)->Decide(s);
      ExpectInvariants(s, decisions);
      if (work_conserving) ExpectWorkConserving(s, decisions);

      // Deterministic: the same snapshot, to the same or a fresh policy, gives the same answer.
      EXPECT_EQ(Make(name)->Decide(s), decisions);
      // A pure function of the snapshot's content: the order of the spans does not matter.
      RandomCase shuffled = *c;
      std::shuffle(shuffled.items.begin(), shuffled.items.end(), rng);
      std::shuffle(shuffled.pus.begin(), shuffled.pus.end(), rng);
      EXPECT_EQ(Make(name)->Decide(shuffled.snapshot()), decisions);

      std::vector<AssignmentId> dropped;
      for (const Decision& d : decisions) {
        if (d.kind == Decision::Kind::kDrop) dropped.push_back(d.item);
        (d.kind == Decision::Kind::kRun ? runs : drops)++;
      }
      std::sort(dropped.begin(), dropped.end());
      EXPECT_EQ(dropped, ExpectedDrops(name, s));
    }
  }
  // The generator exercises the interesting cases. A policy that says it
  // never drops (MayDrop false: the core skips it while every PU is busy) does not.
  EXPECT_GT(runs, 1000);
  if (name == "edf" || name == "lsf") {
    EXPECT_GT(drops, 100);
    EXPECT_TRUE(Make(name)->MayDrop());
  } else {
    EXPECT_EQ(drops, 0);
    EXPECT_FALSE(Make(name)->MayDrop());
  }
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, PolicyPropertyTest, ::testing::ValuesIn(LowLevelPolicyNames()),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

// ---------------------------------------------------------------------------
// Factory and shared checks.

TEST(MakeLowLevelPolicyTest, EveryNameMakesThatPolicy) {
  EXPECT_THAT(LowLevelPolicyNames(),
              ElementsAre("fifo", "round_robin", "fixed", "sel", "share", "heft", "lsf", "edf", "priority"));
  for (const std::string& name : LowLevelPolicyNames()) EXPECT_EQ(Make(name)->name(), name);
}

TEST(MakeLowLevelPolicyTest, UnknownNameListsValidNames) {
  absl::StatusOr<std::unique_ptr<LowLevelPolicy>> policy = MakeLowLevelPolicy("fastest");
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(policy.status().message(), HasSubstr("'fastest'"));
  EXPECT_THAT(policy.status().message(),
              HasSubstr("fifo, round_robin, fixed, sel, share, heft, lsf, edf, priority"));
}

TEST(MakeLowLevelPolicyTest, RejectsZeroPriorityClasses) {
  absl::StatusOr<std::unique_ptr<LowLevelPolicy>> policy =
      MakeLowLevelPolicy("priority", PolicyOptions{.priority_classes = 0});
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(policy.status().message(), HasSubstr("priority_classes"));
}

TEST(ValidateDecisionsTest, NamesEachBrokenRule) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1).BusyPu(2, 5);
  b.Item(10).deadline = At(3);
  b.Item(11);
  b.Item(12);  // no PU can run it
  b.Latency(10, 0, 1).Latency(10, 1, 1).Latency(10, 2, 1).Latency(11, 0, 1);
  const Snapshot s = b.Build();
  EXPECT_TRUE(ValidateDecisions(s, std::vector{RunOn(10, 1), RunOn(11, 0)}).ok());
  EXPECT_TRUE(ValidateDecisions(s, std::vector{DropOf(10)}).ok());

  auto message = [&](std::vector<Decision> d) { return std::string(ValidateDecisions(s, d).message()); };
  EXPECT_THAT(message({RunOn(99, 0)}), HasSubstr("not ready"));
  EXPECT_THAT(message({RunOn(10, 0), DropOf(10)}), HasSubstr("already decided"));
  EXPECT_THAT(message({RunOn(10, 7)}), HasSubstr("not in the snapshot"));
  EXPECT_THAT(message({RunOn(10, 2)}), HasSubstr("busy"));
  EXPECT_THAT(message({RunOn(10, 0), RunOn(11, 0)}), HasSubstr("already given"));
  EXPECT_THAT(message({RunOn(11, 1)}), HasSubstr("cannot run"));
  EXPECT_THAT(message({DropOf(11)}), HasSubstr("no deadline"));
  EXPECT_EQ(ValidateDecisions(s, std::vector{RunOn(12, 0)}).code(), absl::StatusCode::kInternal);
}

TEST(DecisionTest, PrintsReadably) {
  EXPECT_EQ(ToString(RunOn(3, 1)), "run 3 on pu 1");
  EXPECT_EQ(ToString(DropOf(3)), "drop 3");
}

TEST(AllPoliciesTest, ItemsNoPuCanRunAreLeftWaiting) {
  for (const std::string& name : LowLevelPolicyNames()) {
    SnapshotBuilder b;
    b.Now(10).IdlePu(0).IdlePu(1);
    b.Item(1).deadline = At(1);  // past its deadline, yet nobody may decide on it
    b.Item(2).fixed_pu = PuId(1);
    b.Latency(2, 1, 4);
    EXPECT_THAT(Decide(name, b), ElementsAre(RunOn(2, 1))) << name;
  }
}

TEST(AllPoliciesTest, NoPusOrNoItemsMeansNoDecisions) {
  for (const std::string& name : LowLevelPolicyNames()) {
    SnapshotBuilder no_pus;
    no_pus.Item(1);
    EXPECT_THAT(Decide(name, no_pus), IsEmpty()) << name;
    SnapshotBuilder no_items;
    no_items.IdlePu(0);
    EXPECT_THAT(Decide(name, no_items), IsEmpty()) << name;
  }
}

// ---------------------------------------------------------------------------
// fifo

TEST(FifoTest, OldestFirstOntoFastestIdlePu) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1);
  b.Item(7).seq = 5;  // listed first, but younger
  b.Item(8).seq = 2;
  b.Item(9).seq = 9;
  for (uint32_t item : {7, 8, 9}) b.Latency(item, 0, 4).Latency(item, 1, 1);
  // 8 (oldest) takes the fast pu1, 7 the remaining pu0, 9 waits.
  EXPECT_THAT(Decide("fifo", b), ElementsAre(RunOn(8, 1), RunOn(7, 0)));
}

TEST(FifoTest, TiesGoToLowestPuIdAndBlockedItemsDoNotBlockTheQueue) {
  SnapshotBuilder b;
  b.IdlePu(3).IdlePu(1).BusyPu(0, 50);
  b.Item(1);  // only pu0 (busy) can run it
  b.Item(2);
  b.Latency(1, 0, 1).Latency(2, 3, 2).Latency(2, 1, 2);
  EXPECT_THAT(Decide("fifo", b), ElementsAre(RunOn(2, 1)));
}

// ---------------------------------------------------------------------------
// round_robin

TEST(RoundRobinTest, RotationStartsAtDecisionsSoFar) {
  for (uint64_t so_far : {0, 1, 2, 3, 4}) {
    SnapshotBuilder b;
    b.IdlePu(0).IdlePu(1).IdlePu(2).DecisionsSoFar(so_far);
    b.Item(1);
    for (uint32_t pu : {0, 1, 2}) b.Latency(1, pu, pu == 0 ? 1 : 9);  // latency is ignored
    EXPECT_THAT(Decide("round_robin", b), ElementsAre(RunOn(1, static_cast<uint32_t>(so_far % 3)))) << so_far;
  }
}

TEST(RoundRobinTest, ContinuesAfterTheLastPuAndSkipsBusyOrIncapable) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1).BusyPu(2, 9).IdlePu(3).DecisionsSoFar(5);  // start at 5 % 4 = 1
  for (uint32_t item : {1, 2, 3, 4}) {
    b.Item(item);
    for (uint32_t pu : {0, 1, 2, 3}) b.Latency(item, pu, 1);
  }
  // 1 -> pu1; 2 -> pu3 (pu2 busy); 3 -> pu0 (wraps); 4 waits (all idle PUs taken).
  EXPECT_THAT(Decide("round_robin", b), ElementsAre(RunOn(1, 1), RunOn(2, 3), RunOn(3, 0)));

  SnapshotBuilder holes;
  holes.IdlePu(0).IdlePu(1).IdlePu(2);
  holes.Item(1);
  holes.Latency(1, 1, 1);  // only pu1 can run it
  holes.Item(2);
  for (uint32_t pu : {0, 1, 2}) holes.Latency(2, pu, 1);
  // 1 skips pu0 for pu1; the rotation goes on after pu1, so 2 takes pu2, not pu0.
  EXPECT_THAT(Decide("round_robin", holes), ElementsAre(RunOn(1, 1), RunOn(2, 2)));
}

// ---------------------------------------------------------------------------
// fixed

TEST(FixedTest, RunsOnlyOnTheFixedPu) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1).BusyPu(2, 30);
  b.Item(1).fixed_pu = PuId(2);  // busy: waits even though pu0 and pu1 are idle
  b.Item(2).fixed_pu = PuId(1);
  b.Item(3);                     // unpinned: placed as fifo would
  b.Item(4).fixed_pu = PuId(9);  // no such PU: waits
  for (uint32_t item : {1, 2, 3, 4}) {
    for (uint32_t pu : {0, 1, 2}) b.Latency(item, pu, pu == 1 ? 1 : 3);
  }
  EXPECT_THAT(Decide("fixed", b), ElementsAre(RunOn(2, 1), RunOn(3, 0)));
}

TEST(FixedTest, NeverMovesWorkOnRandomSnapshots) {
  std::mt19937 rng(7);
  int pinned_runs = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::unique_ptr<RandomCase> c = MakeRandomCase(rng, 4);
    const Snapshot s = c->snapshot();
    for (const Decision& d : Make("fixed")->Decide(s)) {
      auto item =
          std::find_if(s.ready.begin(), s.ready.end(), [&](const WorkItem& w) { return w.id == d.item; });
      ASSERT_NE(item, s.ready.end());
      if (!item->fixed_pu) continue;
      EXPECT_EQ(d.pu, *item->fixed_pu) << d;
      ++pinned_runs;
    }
  }
  EXPECT_GT(pinned_runs, 100);
}

// ---------------------------------------------------------------------------
// sel

TEST(SelTest, PicksIdlePuWithSmallestLatency) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1).IdlePu(2);
  b.Item(1);
  b.Latency(1, 0, 5).Latency(1, 1, 2).Latency(1, 2, 2);
  EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(1, 1)));
}

TEST(SelTest, WaitsForAFasterBusyPu) {
  SnapshotBuilder b;
  b.Now(0).IdlePu(0).BusyPu(1, 2);
  b.Item(1);
  b.Latency(1, 0, 10).Latency(1, 1, 1);  // pu1: 2 + 1 = 3 < 10: waits for pu1
  EXPECT_THAT(Decide("sel", b), IsEmpty());
}

TEST(SelTest, AWaitingItemReservesTheBusyPu) {
  SnapshotBuilder b;
  b.Now(0).IdlePu(0).BusyPu(1, 4);
  b.Item(1);
  b.Latency(1, 0, 10).Latency(1, 1, 4);  // pu1: 4 + 4 = 8 < 10: waits, reserving pu1 until 8
  b.Item(2);
  b.Latency(2, 0, 6).Latency(2, 1, 1);  // pu1: 8 + 1 = 9 > 6 (it would be 5 without item 1): pu0
  EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(2, 0)));
}

TEST(SelTest, RunsNowWhenTheBusyPuIsNotStrictlyFaster) {
  SnapshotBuilder b;
  b.Now(10).BusyPu(0, 15).IdlePu(1);  // the busy PU has the lower id: the tie still goes to idle
  b.Item(1);
  b.Latency(1, 0, 1).Latency(1, 1, 6);  // busy pu0: 15 + 1 = 16 = 10 + 6: run now
  EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(1, 1)));
}

TEST(SelTest, AnOverdueBusyPuCountsAsFreeNowNotInThePast) {
  SnapshotBuilder b;
  b.Now(10).IdlePu(0).BusyPu(1, 4);  // expected free at 4, still busy at 10
  b.Item(1);
  b.Latency(1, 0, 5).Latency(1, 1, 1);
  EXPECT_THAT(Decide("sel", b), IsEmpty());  // waits: 10 + 1 < 10 + 5
  SnapshotBuilder c;
  c.Now(10).IdlePu(0).BusyPu(1, 4);
  c.Item(1);
  c.Latency(1, 0, 3).Latency(1, 1, 5);  // pu1 at 10 + 5 = 15 (not 4 + 5 = 9) > 13: run on pu0
  EXPECT_THAT(Decide("sel", c), ElementsAre(RunOn(1, 0)));
}

TEST(SelTest, FollowsObservedLatencies) {
  OnlineLatencyModel model;
  std::vector<PuState> pus = {{PuId(0), "cpu", false, kTimeZero}, {PuId(1), "gpu", false, kTimeZero}};
  WorkItem item;
  item.id = AssignmentId(1);
  std::vector<WorkItem> ready = {item};
  ASSERT_TRUE(model.SetPrior(ModelId(0), PartitionId(0), PuId(0), Ms(5)).ok());
  ASSERT_TRUE(model.SetPrior(ModelId(0), PartitionId(0), PuId(1), Ms(2)).ok());
  const Snapshot s{kTimeZero, ready, pus, &model, 0};
  EXPECT_THAT(Make("sel")->Decide(s), ElementsAre(RunOn(1, 1)));
  // The GPU turned out slow: after the warm-up, one run moves the estimate by
  // at most 1.2x (2.4 ms), so sel still picks it; steady 9 ms runs win over.
  model.Observe(ModelId(0), PartitionId(0), PuId(1), Ms(9));
  model.Observe(ModelId(0), PartitionId(0), PuId(1), Ms(9));
  EXPECT_THAT(Make("sel")->Decide(s), ElementsAre(RunOn(1, 1)));
  for (int i = 0; i < 6; ++i) model.Observe(ModelId(0), PartitionId(0), PuId(1), Ms(9));
  EXPECT_THAT(Make("sel")->Decide(s), ElementsAre(RunOn(1, 0)));
}

// ---------------------------------------------------------------------------
// share

// The split {pu: share} for item `item` of a SnapshotBuilder (model 0, partition = item id).
std::shared_ptr<const PlanSplit> SplitOf(uint32_t item, std::vector<PuShare> shares) {
  auto split = std::make_shared<PlanSplit>();
  EXPECT_TRUE(split->Set(ModelId(0), PartitionId(item), std::move(shares)).ok());
  return split;
}

TEST(ShareTest, NeverWaitsForAPuThePlanGivesNoShare) {
  // npu0 busy until 3, gpu1 busy until 4, cpu2 idle. A, planned on gpu1 only:
  // sel waits for npu0 (3 + 1 < 4 + 2), share for gpu1. B is not planned:
  // npu0 is then free at 3 under share (B waits for it: 4 < 5) but taken
  // until 4 under sel (a tie with cpu2 at 5, which the idle PU wins).
  SnapshotBuilder b;
  b.Now(0).BusyPu(0, 3).BusyPu(1, 4).IdlePu(2);
  b.Item(1);
  b.Latency(1, 0, 1).Latency(1, 1, 2).Latency(1, 2, 20);
  b.Item(2);
  b.Latency(2, 0, 1).Latency(2, 2, 5);
  EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(2, 2)));
  EXPECT_THAT(Decide("share", b, PolicyOptions{.split = SplitOf(1, {{PuId(1), 1.0}})}), IsEmpty());
  // Without a split, share is sel.
  EXPECT_THAT(Decide("share", b), ElementsAre(RunOn(2, 2)));
}

TEST(ShareTest, UsesAnIdlePuThePlanGivesNoShare) {
  SnapshotBuilder b;
  b.Now(0).IdlePu(0).BusyPu(1, 4);
  b.Item(1);
  b.Latency(1, 0, 1).Latency(1, 1, 2);
  EXPECT_THAT(Decide("share", b, PolicyOptions{.split = SplitOf(1, {{PuId(1), 1.0}})}), ElementsAre(RunOn(1, 0)));
}

TEST(ShareTest, AnIdlePuAtMostOneAndAHalfTimesSlowerBeatsWaiting) {
  // pu0 busy until 1, 10 for the item there; pu1 idle. sel waits for pu0
  // (done at 11) whenever pu1 needs more than 11.
  for (const bool planned : {true, false}) {
    SCOPED_TRACE(planned ? "pu1 planned" : "pu1 not planned");
    const PolicyOptions options{.split = SplitOf(1, planned ? std::vector<PuShare>{{PuId(0), 0.5}, {PuId(1), 0.5}}
                                                            : std::vector<PuShare>{{PuId(0), 1.0}})};
    SnapshotBuilder near;
    near.Now(0).BusyPu(0, 1).IdlePu(1);
    near.Item(1);
    near.Latency(1, 0, 10).Latency(1, 1, 12);
    EXPECT_THAT(Decide("sel", near), IsEmpty());
    EXPECT_THAT(Decide("share", near, options), ElementsAre(RunOn(1, 1)));  // 12 <= 1.5 * 10

    SnapshotBuilder far;
    far.Now(0).BusyPu(0, 1).IdlePu(1);
    far.Item(1);
    far.Latency(1, 0, 10).Latency(1, 1, 16);
    EXPECT_THAT(Decide("share", far, options), IsEmpty());  // 16 > 15: waits for pu0
  }
  // Of several near-speed idle PUs, the one finishing first; without a split, sel.
  SnapshotBuilder b;
  b.Now(0).BusyPu(0, 1).IdlePu(1).IdlePu(2);
  b.Item(1);
  b.Latency(1, 0, 10).Latency(1, 1, 14).Latency(1, 2, 12);
  EXPECT_THAT(Decide("share", b, PolicyOptions{.split = SplitOf(1, {{PuId(0), 1.0}})}), ElementsAre(RunOn(1, 2)));
  EXPECT_THAT(Decide("share", b), IsEmpty());
}

TEST(ShareTest, AHigherPriorityItemIsPlacedFirst) {
  // now = 6: npu0 idle, gpu1 busy until 8. A (older, priority 0, a detector
  // body) takes 6 on npu0 and 22 on gpu1; B (priority 1, a classifier) 1 on
  // npu0 and 4 on gpu1. In arrival order A takes npu0 (12 < 30) and B waits
  // for gpu1 (12 < 13); by priority B takes npu0 (7 < 12) and A waits for it
  // (13 < 30).
  for (const int b_priority : {1, 0}) {
    SCOPED_TRACE(b_priority == 1 ? "B before A" : "equal priorities");
    SnapshotBuilder b;
    b.Now(6).IdlePu(0).BusyPu(1, 8);
    b.Item(1).priority = 0;
    b.Latency(1, 0, 6).Latency(1, 1, 22);
    b.Item(2).priority = b_priority;
    b.Latency(2, 0, 1).Latency(2, 1, 4);
    const PolicyOptions split{.split = SplitOf(1, {{PuId(0), 1.0}})};
    EXPECT_THAT(Decide("share", b, split), ElementsAre(RunOn(b_priority == 1 ? 2 : 1, 0)));
    EXPECT_THAT(Decide("share", b), ElementsAre(RunOn(b_priority == 1 ? 2 : 1, 0)));  // also without a split
    EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(1, 0)));                          // sel: arrival order
  }
}

TEST(ShareTest, TheLeastServedModelGoesFirstWithinAPriorityClass) {
  // One idle PU, two waiting items of equal priority: A (older) of a model
  // that had 8 ms of PU time per request in flight lately, B of one that had
  // 3 ms. share runs B; sel keeps arrival order. A higher priority still wins.
  for (const int a_priority : {0, 1}) {
    SCOPED_TRACE(a_priority == 1 ? "A more important" : "equal priorities");
    SnapshotBuilder b;
    b.Now(0).IdlePu(0);
    WorkItem& a = b.Item(1);
    a.service_ms = 8;
    a.priority = a_priority;
    b.Latency(1, 0, 2);
    b.Item(2).service_ms = 3;
    b.Latency(2, 0, 2);
    EXPECT_THAT(Decide("share", b), ElementsAre(RunOn(a_priority == 1 ? 1 : 2, 0)));
    EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(1, 0)));
  }
}

TEST(ShareTest, ASplitWhosePusCannotRunTheItemFallsBackToSel) {
  SnapshotBuilder b;
  b.Now(0).BusyPu(0, 2).IdlePu(1);
  b.Item(1);
  b.Latency(1, 0, 1).Latency(1, 1, 9);  // sel waits for pu0; the plan names pu5, which this device lacks
  EXPECT_THAT(Decide("share", b, PolicyOptions{.split = SplitOf(1, {{PuId(5), 1.0}})}), IsEmpty());
  EXPECT_THAT(Decide("sel", b), IsEmpty());
}

TEST(ShareTest, InvariantsHoldWithRandomSplits) {
  std::mt19937 rng(20261126);
  int runs = 0;
  int differs_from_sel = 0;
  for (int num_pus : {1, 2, 4, 8}) {
    for (int trial = 0; trial < 300; ++trial) {
      SCOPED_TRACE(::testing::Message() << "pus=" << num_pus << " trial=" << trial);
      std::unique_ptr<RandomCase> c = MakeRandomCase(rng, num_pus);
      // A random split for most (model, partition) pairs: a random subset of the PUs, random weights.
      auto split = std::make_shared<PlanSplit>();
      for (uint32_t model = 0; model < 3; ++model) {
        for (uint32_t partition = 0; partition < 6; ++partition) {
          if (std::bernoulli_distribution(0.2)(rng)) continue;
          std::vector<PuShare> shares;
          for (const PuState& pu : c->pus) {
            if (std::bernoulli_distribution(0.5)(rng)) {
              shares.push_back({pu.id, std::uniform_real_distribution<double>(0, 1)(rng)});
            }
          }
          if (shares.empty()) shares.push_back({c->pus[0].id, 1.0});
          ASSERT_TRUE(split->Set(ModelId(model), PartitionId(partition), shares).ok());
        }
      }
      const PolicyOptions options{.split = split};
      const Snapshot s = c->snapshot();
      const std::vector<Decision> decisions = Make("share", options)->Decide(s);
      ExpectInvariants(s, decisions);
      EXPECT_EQ(Make("share", options)->Decide(s), decisions);
      RandomCase shuffled = *c;
      std::shuffle(shuffled.items.begin(), shuffled.items.end(), rng);
      std::shuffle(shuffled.pus.begin(), shuffled.pus.end(), rng);
      EXPECT_EQ(Make("share", options)->Decide(shuffled.snapshot()), decisions);
      // Without a split and with equal priorities it is sel, decision for decision.
      RandomCase equal = *c;
      for (WorkItem& item : equal.items) item.priority = 0;
      EXPECT_EQ(Make("share")->Decide(equal.snapshot()), Make("sel")->Decide(equal.snapshot()));
      for (const Decision& d : decisions) runs += d.kind == Decision::Kind::kRun;
      differs_from_sel += decisions != Make("sel")->Decide(s);
    }
  }
  EXPECT_GT(runs, 500);
  EXPECT_GT(differs_from_sel, 20);  // the split changes decisions
}

TEST(PlanSplitTest, NormalizesAndRejectsBadShares) {
  PlanSplit split;
  ASSERT_TRUE(split.Set(ModelId(1), PartitionId(2), {{PuId(0), 3}, {PuId(4), 1}}).ok());
  EXPECT_DOUBLE_EQ(split.ShareOf(ModelId(1), PartitionId(2), PuId(0)), 0.75);
  EXPECT_DOUBLE_EQ(split.ShareOf(ModelId(1), PartitionId(2), PuId(4)), 0.25);
  EXPECT_DOUBLE_EQ(split.ShareOf(ModelId(1), PartitionId(2), PuId(3)), 0);
  EXPECT_TRUE(split.Of(ModelId(1), PartitionId(3)).empty());
  for (const std::vector<PuShare>& bad :
       {std::vector<PuShare>{{PuId(0), -1}}, std::vector<PuShare>{{PuId(0), 0}},
        std::vector<PuShare>{{PuId(0), 1}, {PuId(0), 1}},
        std::vector<PuShare>{{PuId(0), std::numeric_limits<double>::infinity()}}}) {
    absl::Status s = split.Set(ModelId(1), PartitionId(5), bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("model 1 partition 5"));
  }
}

// ---------------------------------------------------------------------------
// heft

TEST(HeftTest, PicksTheGlobalEarliestFinish) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1);
  b.Item(1);
  b.Item(2);
  b.Latency(1, 0, 5).Latency(1, 1, 4).Latency(2, 0, 8).Latency(2, 1, 1);
  // 2 on pu1 finishes first (1 ms); then 1 on pu0 (5) ties pu1 (1 + 4): idle pu0 wins.
  EXPECT_THAT(Decide("heft", b), ElementsAre(RunOn(2, 1), RunOn(1, 0)));
  // fifo and sel serve item 1 first.
  EXPECT_THAT(Decide("fifo", b), ElementsAre(RunOn(1, 1), RunOn(2, 0)));
  EXPECT_THAT(Decide("sel", b), ElementsAre(RunOn(1, 1)));  // 2 waits for pu1 (5 < 8)
}

TEST(HeftTest, TiesGoToLowerSeq) {
  SnapshotBuilder b;
  b.IdlePu(0);
  b.Item(5).seq = 3;
  b.Item(4).seq = 1;
  b.Latency(5, 0, 2).Latency(4, 0, 2);
  EXPECT_THAT(Decide("heft", b), ElementsAre(RunOn(4, 0)));
}

TEST(HeftTest, AnItemWhoseBestFinishIsOnABusyPuWaits) {
  SnapshotBuilder b;
  b.IdlePu(0).BusyPu(1, 1);
  b.Item(1);
  b.Latency(1, 0, 9).Latency(1, 1, 1);  // pu1 at 2 is the earliest pair: 1 waits, reserving pu1 to 2
  b.Item(2);
  b.Latency(2, 0, 4).Latency(2, 1, 2);  // pu1 at 2 + 2 ties pu0 at 4 (would be 3 unreserved): pu0
  EXPECT_THAT(Decide("heft", b), ElementsAre(RunOn(2, 0)));
}

// ---------------------------------------------------------------------------
// lsf

TEST(LsfTest, OrdersBySlackAndDropsNegativeSlack) {
  SnapshotBuilder b;
  b.Now(0).IdlePu(0).IdlePu(1);
  b.Item(1).deadline = At(10);  // slack 10 - 4 = 6
  b.Item(2).deadline = At(5);   // slack 5 - 3 = 2
  b.Item(3).deadline = At(2);   // slack 2 - 3 = -1: drop
  b.Item(4);                    // no deadline: last
  b.Item(5).deadline = At(3);   // slack 0: kept
  for (auto [item, ms] : std::vector<std::pair<uint32_t, int>>{{1, 4}, {2, 3}, {3, 3}, {4, 1}, {5, 3}}) {
    b.Latency(item, 0, ms).Latency(item, 1, ms + 1);
  }
  EXPECT_THAT(Decide("lsf", b), ElementsAre(DropOf(3), RunOn(5, 0), RunOn(2, 1)));
}

TEST(LsfTest, SlackUsesTheFastestPuEvenWhenItIsBusy) {
  SnapshotBuilder b;
  b.Now(0).IdlePu(0).BusyPu(1, 8);
  b.Item(1).deadline = At(5);
  b.Latency(1, 0, 9).Latency(1, 1, 4);  // slack 5 - 4 = 1: kept; pu1 would finish at 12 > 9: pu0
  EXPECT_THAT(Decide("lsf", b), ElementsAre(RunOn(1, 0)));
}

TEST(LsfTest, PlacesLikeSelWaitingForAFasterBusyPu) {
  SnapshotBuilder b;
  b.Now(0).IdlePu(0).BusyPu(1, 1);
  b.Item(1).deadline = At(10);          // slack 10 - 4 = 6
  b.Latency(1, 0, 9).Latency(1, 1, 4);  // pu1 at 1 + 4 = 5 < 9: waits
  EXPECT_THAT(Decide("lsf", b), IsEmpty());
  EXPECT_THAT(Decide("edf", b), ElementsAre(RunOn(1, 0)));  // edf places like fifo
}

TEST(LsfTest, DropsEvenWhenNoPuIsIdle) {
  SnapshotBuilder b;
  b.Now(20).BusyPu(0, 30);
  b.Item(1).deadline = At(21);
  b.Latency(1, 0, 2);
  EXPECT_THAT(Decide("lsf", b), ElementsAre(DropOf(1)));
}

// ---------------------------------------------------------------------------
// edf

TEST(EdfTest, EarliestDeadlineFirstAndDropsPastDeadlines) {
  SnapshotBuilder b;
  b.Now(10).IdlePu(0).IdlePu(1);
  b.Item(1).deadline = At(30);
  b.Item(2).deadline = At(20);
  b.Item(3).deadline = At(5);   // passed: drop
  b.Item(4);                    // no deadline: last
  b.Item(5).deadline = At(10);  // now == deadline: not passed
  for (uint32_t item : {1, 2, 3, 4, 5}) b.Latency(item, 0, 2).Latency(item, 1, 1);
  EXPECT_THAT(Decide("edf", b), ElementsAre(DropOf(3), RunOn(5, 1), RunOn(2, 0)));
}

TEST(EdfTest, ItemsWithoutDeadlineRunWhenNothingIsUrgent) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1);
  b.Item(1);
  b.Item(2).deadline = At(100);
  b.Latency(1, 0, 1).Latency(2, 0, 1).Latency(1, 1, 1).Latency(2, 1, 1);
  EXPECT_THAT(Decide("edf", b), ElementsAre(RunOn(2, 0), RunOn(1, 1)));
}

// ---------------------------------------------------------------------------
// priority

TEST(PriorityTest, HigherClassFirstFifoWithinAClass) {
  SnapshotBuilder b;
  b.IdlePu(0).IdlePu(1);
  b.Item(1).priority = 0;
  b.Item(2).priority = 1;
  b.Item(3).priority = 2;
  b.Item(4).priority = 1;
  for (uint32_t item : {1, 2, 3, 4}) b.Latency(item, 0, 1).Latency(item, 1, 2);
  // 3 (class 2), then 2 (class 1, older than 4).
  EXPECT_THAT(Decide("priority", b), ElementsAre(RunOn(3, 0), RunOn(2, 1)));
}

TEST(PriorityTest, ClampsIntoTheConfiguredClasses) {
  PriorityPolicy policy(3);
  EXPECT_EQ(policy.ClassOf(-4), 0);
  EXPECT_EQ(policy.ClassOf(1), 1);
  EXPECT_EQ(policy.ClassOf(99), 2);

  SnapshotBuilder b;
  b.IdlePu(0);
  b.Item(1).priority = 2;
  b.Item(2).priority = 7;  // clamped to 2: same class as 1, which is older
  b.Latency(1, 0, 1).Latency(2, 0, 1);
  EXPECT_THAT(Decide("priority", b), ElementsAre(RunOn(1, 0)));
  // With 8 classes, 7 is above 2.
  EXPECT_THAT(Decide("priority", b, PolicyOptions{.priority_classes = 8}), ElementsAre(RunOn(2, 0)));
  // With one class, priority is plain fifo.
  SnapshotBuilder c;
  c.IdlePu(0);
  c.Item(1).priority = -1;
  c.Item(2).priority = 5;
  c.Latency(1, 0, 1).Latency(2, 0, 1);
  EXPECT_THAT(Decide("priority", c, PolicyOptions{.priority_classes = 1}), ElementsAre(RunOn(1, 0)));
}

}  // namespace
}  // namespace baton::policy
