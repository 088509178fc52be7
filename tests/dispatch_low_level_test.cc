// The low-level dispatcher core, driven directly: the bounded queue, policy
// decisions carried out, contract violations ignored (or fatal), drops,
// unrunnable work, the snapshot it builds and the PU reports it accepts.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/tensor.h"
#include "dispatch_test_util.h"
#include "baton/dispatch/low_level.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/observer.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"

namespace baton::dispatch {
namespace {

using testing::Ms;
using testing::Scalar;
using testing::ValueOf;

using policy::Decision;
using Kind = policy::Decision::Kind;



Assignment Work(uint32_t id, std::optional<Time> deadline = std::nullopt, int priority = 0) {
  Assignment a;
  a.id = AssignmentId(id);
  a.request = RequestId(100 + id);
  a.model = ModelId(1);
  a.partition = PartitionId(id % 2);
  a.inputs.emplace_back("x", Scalar(id));
  a.deadline = deadline;
  a.priority = priority;
  return a;
}

// Returns whatever the test's function returns.
class ScriptedPolicy : public policy::LowLevelPolicy {
 public:
  using Script = std::function<std::vector<Decision>(const policy::Snapshot&)>;
  explicit ScriptedPolicy(Script script) : script_(std::move(script)) {}
  std::string name() const override { return "scripted"; }
  std::vector<Decision> Decide(const policy::Snapshot& s) const override { return script_(s); }

 private:
  Script script_;
};

// The oldest ready item onto the first idle PU that can run it, and so on.
class FirstIdlePolicy : public policy::LowLevelPolicy {
 public:
  std::string name() const override { return "first_idle"; }
  std::vector<Decision> Decide(const policy::Snapshot& s) const override {
    std::vector<Decision> out;
    std::vector<bool> taken(s.pus.size(), false);
    for (const auto& item : s.ready) {
      for (size_t i = 0; i < s.pus.size(); ++i) {
        if (s.pus[i].busy || taken[i] || !s.latency->Expected(item.model, item.partition, s.pus[i].id)) continue;
        taken[i] = true;
        out.push_back({Kind::kRun, item.id, s.pus[i].id});
        break;
      }
    }
    return out;
  }
};

class LowLevelTest : public ::testing::Test {
 protected:
  LowLevelCore Make(std::unique_ptr<policy::LowLevelPolicy> policy, size_t pus = 2, size_t max_queue = 8,
                    ContractMode contract = ContractMode::kIgnore,
                    std::optional<ExecTimeoutRule> exec_timeout = std::nullopt) {
    LowLevelOptions o;
    o.exec_timeout = exec_timeout;
    o.device = DeviceId(3);
    for (size_t i = 0; i < pus; ++i) o.pus.push_back({PuId(static_cast<uint32_t>(i)), i == 0 ? "cpu" : "gpu"});
    o.max_queue = max_queue;
    o.contract = contract;
    absl::StatusOr<LowLevelCore> core = LowLevelCore::Create(std::move(o), std::move(policy), &latency_);
    EXPECT_TRUE(core.ok()) << core.status();
    core->set_observer(&trace_);
    return std::move(*core);
  }
  LowLevelCore MakeScripted(ScriptedPolicy::Script script, size_t pus = 2, size_t max_queue = 8) {
    return Make(std::make_unique<ScriptedPolicy>(std::move(script)), pus, max_queue);
  }

  // 1 ms on PU 0, 3 ms on PU 1, for both partitions.
  policy::FixedLatencyModel latency_ = [] {
    policy::FixedLatencyModel m;
    for (uint32_t p = 0; p < 2; ++p) {
      m.Set(ModelId(1), PartitionId(p), PuId(0), FromMillis(1));
      m.Set(ModelId(1), PartitionId(p), PuId(1), FromMillis(3));
    }
    return m;
  }();
  TraceRecorder trace_;
};

TEST_F(LowLevelTest, CreateRejectsBadOptions) {
  LowLevelOptions o;
  EXPECT_EQ(LowLevelCore::Create(o, std::make_unique<FirstIdlePolicy>(), &latency_).status().code(),
            absl::StatusCode::kInvalidArgument);  // no PUs
  o.pus = {{PuId(0), "cpu"}, {PuId(0), "cpu"}};
  EXPECT_EQ(LowLevelCore::Create(o, std::make_unique<FirstIdlePolicy>(), &latency_).status().code(),
            absl::StatusCode::kInvalidArgument);  // duplicate PU
  o.pus = {{PuId(0), "cpu"}};
  o.max_queue = 0;
  EXPECT_EQ(LowLevelCore::Create(o, std::make_unique<FirstIdlePolicy>(), &latency_).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.max_queue = 1;
  EXPECT_EQ(LowLevelCore::Create(o, nullptr, &latency_).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LowLevelCore::Create(o, std::make_unique<FirstIdlePolicy>(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LowLevelTest, FullQueueRejectsAtOnceWithResourceExhausted) {
  LowLevelCore ll = MakeScripted([](const policy::Snapshot&) { return std::vector<Decision>{}; }, 1, 2);
  EXPECT_TRUE(ll.OnAssignment(Work(1), kTimeZero).completions.empty());
  EXPECT_TRUE(ll.OnAssignment(Work(2), kTimeZero).completions.empty());
  LowLevelActions out = ll.OnAssignment(Work(3), kTimeZero);
  ASSERT_EQ(out.completions.size(), 1u);
  const Completion& c = out.completions[0];
  EXPECT_EQ(c.id, AssignmentId(3));
  EXPECT_EQ(c.request, RequestId(103));
  EXPECT_EQ(c.device, DeviceId(3));
  EXPECT_EQ(c.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(c.pu, std::nullopt);
  EXPECT_TRUE(c.outputs.empty());
  EXPECT_EQ(ll.queued(), 2u);
  EXPECT_EQ(ll.stats().rejected_full, 1u);
  EXPECT_EQ(trace_.events().back().kind, TraceKind::kDropped);
}

TEST_F(LowLevelTest, AppliesRunDecisionsAndReportsCompletions) {
  LowLevelCore ll = Make(std::make_unique<FirstIdlePolicy>());
  LowLevelActions out = ll.OnAssignment(Work(1), kTimeZero);
  ASSERT_EQ(out.starts.size(), 1u);
  EXPECT_EQ(out.starts[0].pu, PuId(0));
  EXPECT_EQ(out.starts[0].assignment.id, AssignmentId(1));
  EXPECT_EQ(ValueOf(out.starts[0].assignment.inputs[0].second), 1);
  out = ll.OnAssignment(Work(2), Ms(0.5));
  ASSERT_EQ(out.starts.size(), 1u);
  EXPECT_EQ(out.starts[0].pu, PuId(1));
  EXPECT_TRUE(ll.OnAssignment(Work(3), Ms(0.6)).starts.empty());  // both PUs busy
  EXPECT_EQ(ll.queued(), 1u);
  EXPECT_EQ(ll.running(), 2u);

  NamedTensors outputs;
  outputs.emplace_back("y", Scalar(10));
  out = ll.OnPuFinished({PuId(0), AssignmentId(1), absl::OkStatus(), std::move(outputs), Ms(0), Ms(1)}, Ms(1));
  ASSERT_EQ(out.completions.size(), 1u);
  const Completion& c = out.completions[0];
  EXPECT_TRUE(c.status.ok());
  EXPECT_EQ(c.id, AssignmentId(1));
  EXPECT_EQ(c.pu, PuId(0));
  EXPECT_EQ(c.start, Ms(0));
  EXPECT_EQ(c.end, Ms(1));
  EXPECT_EQ(ValueOf(*FindTensor(c.outputs, "y")), 10);
  ASSERT_EQ(out.starts.size(), 1u);  // the freed PU takes the waiting item
  EXPECT_EQ(out.starts[0].assignment.id, AssignmentId(3));
  EXPECT_EQ(out.starts[0].pu, PuId(0));
  EXPECT_EQ(ll.stats().started, 3u);

  // A failed run is reported with its status and without outputs.
  outputs.clear();
  outputs.emplace_back("y", Scalar(1));
  out = ll.OnPuFinished({PuId(1), AssignmentId(2), absl::InternalError("oom"), std::move(outputs), Ms(0.5), Ms(2)},
                        Ms(2));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(out.completions[0].outputs.empty());
}

TEST_F(LowLevelTest, WithoutAnExecutionTimeoutRuleRunsHaveNoTimeout) {
  LowLevelCore ll = Make(std::make_unique<FirstIdlePolicy>());
  ASSERT_EQ(ll.OnAssignment(Work(1), kTimeZero).starts.size(), 1u);
  EXPECT_EQ(ll.NextRunTimeout(), std::nullopt);
  EXPECT_TRUE(ll.OnTick(Ms(1e9)).completions.empty());
}

// Past its limit a run is answered Aborted at once and its PU is asked to stop
// it; the PU stays busy until it reports, and that late report is dropped.
TEST_F(LowLevelTest, ARunPastItsExecutionTimeoutIsAnsweredAbortedAndItsPuKeptUntilItReports) {
  // 10 x 1 ms on PU 0 is under the 50 ms floor: the limit is 50 ms.
  LowLevelCore ll = Make(std::make_unique<FirstIdlePolicy>(), 1, 8, ContractMode::kAbort,
                         ExecTimeoutRule{.factor = 10, .floor = FromMillis(50), .cap = std::nullopt});
  ASSERT_EQ(ll.OnAssignment(Work(1), kTimeZero).starts.size(), 1u);
  EXPECT_EQ(ll.NextRunTimeout(), ExpiryTime(Ms(50)));
  EXPECT_TRUE(ll.OnTick(Ms(50)).completions.empty()) << "at the limit it is still on time";
  EXPECT_TRUE(ll.OnAssignment(Work(2), Ms(10)).starts.empty());  // PU busy
  LowLevelActions out = ll.OnTick(ExpiryTime(Ms(50)));
  ASSERT_EQ(out.completions.size(), 1u);
  const Completion& c = out.completions[0];
  EXPECT_EQ(c.id, AssignmentId(1));
  EXPECT_EQ(c.status.code(), absl::StatusCode::kAborted);
  EXPECT_NE(c.status.message().find("execution timeout of 50 ms"), std::string::npos) << c.status;
  EXPECT_EQ(c.pu, PuId(0));
  EXPECT_EQ(c.start, kTimeZero);
  ASSERT_EQ(out.cancels.size(), 1u);
  EXPECT_EQ(out.cancels[0], PuId(0));
  EXPECT_TRUE(out.starts.empty()) << "the PU still runs the stopped work";
  EXPECT_EQ(ll.stats().timed_out, 1u);
  EXPECT_EQ(ll.NextRunTimeout(), std::nullopt);
  EXPECT_TRUE(ll.OnTick(Ms(500)).completions.empty()) << "answered once";
  // The run returns (stopped): no second answer, and the PU takes the next item.
  out = ll.OnPuFinished({PuId(0), AssignmentId(1), absl::AbortedError("stopped"), {}, kTimeZero, Ms(600)}, Ms(600));
  EXPECT_TRUE(out.completions.empty());
  ASSERT_EQ(out.starts.size(), 1u);
  EXPECT_EQ(out.starts[0].assignment.id, AssignmentId(2));
  EXPECT_EQ(ll.stats().violations, 0u);
}

// OnCancel: a queued assignment is answered with the given status and leaves
// the queue; a running one is answered at once and its PU asked to stop, and
// the PU stays busy until it reports (that report is dropped). Unknown and
// already answered ids are ignored.
TEST_F(LowLevelTest, CancelledWorkIsAnsweredOnceAndARunningOneKeepsItsPuUntilItReports) {
  LowLevelCore ll = Make(std::make_unique<FirstIdlePolicy>(), 1, 8, ContractMode::kAbort);
  ASSERT_EQ(ll.OnAssignment(Work(1), kTimeZero).starts.size(), 1u);
  EXPECT_TRUE(ll.OnAssignment(Work(2), Ms(1)).starts.empty());
  EXPECT_TRUE(ll.OnAssignment(Work(3), Ms(1)).starts.empty());
  const absl::Status why = absl::CancelledError("withdrawn");
  const AssignmentId queued[] = {AssignmentId(2), AssignmentId(42)};
  LowLevelActions out = ll.OnCancel(queued, why, Ms(2));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].id, AssignmentId(2));
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(out.completions[0].pu.has_value()) << "it never ran";
  EXPECT_TRUE(out.cancels.empty());
  EXPECT_EQ(ll.queued(), 1u);
  const AssignmentId running[] = {AssignmentId(1), AssignmentId(2)};
  out = ll.OnCancel(running, why, Ms(3));
  ASSERT_EQ(out.completions.size(), 1u) << "2 was answered already";
  EXPECT_EQ(out.completions[0].id, AssignmentId(1));
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(out.completions[0].pu, PuId(0));
  ASSERT_EQ(out.cancels.size(), 1u);
  EXPECT_EQ(out.cancels[0], PuId(0));
  EXPECT_TRUE(out.starts.empty()) << "the PU still runs the stopped work";
  EXPECT_TRUE(ll.OnCancel(running, why, Ms(4)).completions.empty()) << "answered once";
  EXPECT_EQ(ll.stats().cancelled, 2u);
  out = ll.OnPuFinished({PuId(0), AssignmentId(1), absl::AbortedError("stopped"), {}, kTimeZero, Ms(5)}, Ms(5));
  EXPECT_TRUE(out.completions.empty());
  ASSERT_EQ(out.starts.size(), 1u);
  EXPECT_EQ(out.starts[0].assignment.id, AssignmentId(3));
  EXPECT_EQ(ll.stats().violations, 0u);
}

TEST_F(LowLevelTest, TheAssignmentsOwnTimeoutWinsAndTheCapBoundsEveryRun) {
  // PU 1 expects 3 ms: 10 x 3 ms = 30 ms over the 1 ms floor.
  LowLevelCore ll = Make(std::make_unique<FirstIdlePolicy>(), 2, 8, ContractMode::kAbort,
                         ExecTimeoutRule{.factor = 10, .floor = FromMillis(1), .cap = FromMillis(100)});
  Assignment a = Work(1);
  a.exec_timeout = FromMillis(7);
  ASSERT_EQ(ll.OnAssignment(std::move(a), kTimeZero).starts.size(), 1u);  // PU 0
  EXPECT_EQ(ll.NextRunTimeout(), ExpiryTime(Ms(7)));
  ASSERT_EQ(ll.OnAssignment(Work(2), kTimeZero).starts.size(), 1u);  // PU 1, derived: 30 ms
  LowLevelActions out = ll.OnTick(ExpiryTime(Ms(7)));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].id, AssignmentId(1));
  EXPECT_EQ(ll.NextRunTimeout(), ExpiryTime(Ms(30)));
  out = ll.OnPuFinished({PuId(1), AssignmentId(2), absl::OkStatus(), {}, kTimeZero, Ms(20)}, Ms(20));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_TRUE(out.completions[0].status.ok());
  EXPECT_EQ(ll.NextRunTimeout(), std::nullopt);
  // A longer own timeout is held to the cap.
  Assignment b = Work(3);
  b.exec_timeout = FromMillis(1e6);
  ASSERT_EQ(ll.OnAssignment(std::move(b), Ms(20)).starts.size(), 1u);
  EXPECT_EQ(ll.NextRunTimeout(), ExpiryTime(Ms(120)));
}

TEST_F(LowLevelTest, SnapshotShowsQueueInArrivalOrderAndExpectedFreeTimes) {
  std::vector<policy::WorkItem> seen_items;
  std::vector<policy::PuState> seen_pus;
  uint64_t seen_decisions = 0;
  LowLevelCore ll = MakeScripted([&](const policy::Snapshot& s) {
    seen_items.assign(s.ready.begin(), s.ready.end());
    seen_pus.assign(s.pus.begin(), s.pus.end());
    seen_decisions = s.decisions_so_far;
    EXPECT_NE(s.latency, nullptr);
    std::vector<Decision> d;
    // Start assignment 1 on PU 1 (3 ms) when it is first seen.
    for (const auto& w : s.ready) {
      if (w.id == AssignmentId(1) && !s.pus[1].busy) d.push_back({Kind::kRun, w.id, PuId(1)});
    }
    return d;
  });
  Assignment pinned = Work(2, Ms(9), 2);
  pinned.fixed_pu = PuId(0);
  ll.OnAssignment(Work(1), Ms(1));
  ll.OnAssignment(std::move(pinned), Ms(2));
  ll.OnAssignment(Work(3), Ms(2));
  ASSERT_EQ(seen_items.size(), 2u);
  EXPECT_EQ(seen_items[0].id, AssignmentId(2));
  EXPECT_EQ(seen_items[0].enqueued, Ms(2));
  EXPECT_EQ(seen_items[0].deadline, Ms(9));
  EXPECT_EQ(seen_items[0].priority, 2);
  EXPECT_EQ(seen_items[0].fixed_pu, PuId(0));
  EXPECT_EQ(seen_items[1].id, AssignmentId(3));
  EXPECT_LT(seen_items[0].seq, seen_items[1].seq);
  EXPECT_EQ(seen_decisions, 1u);
  ASSERT_EQ(seen_pus.size(), 2u);
  EXPECT_FALSE(seen_pus[0].busy);
  EXPECT_EQ(seen_pus[0].expected_free, Ms(2));  // idle: now
  EXPECT_EQ(seen_pus[0].kind, "cpu");
  EXPECT_TRUE(seen_pus[1].busy);
  EXPECT_EQ(seen_pus[1].expected_free, Ms(4));  // started at 1 ms, expected 3 ms
  ll.OnTick(Ms(6));                                // overran: taken to be about to finish
  EXPECT_EQ(seen_pus[1].expected_free, Ms(6));
}

TEST_F(LowLevelTest, SnapshotShowsEachModelsDecayedPuTimePerRequestInFlight) {
  // Model 1 runs 4 ms on PU 0 (finishing at 4 ms); then two of its requests
  // and one of model 2 wait. At 4 ms model 1 had 4 ms over 2 requests in
  // flight, model 2 nothing; one half-life later model 1's 4 ms count 2.
  latency_.Set(ModelId(2), PartitionId(0), PuId(0), FromMillis(1));
  std::vector<policy::WorkItem> seen;
  bool run_first = true;
  LowLevelCore ll = MakeScripted([&](const policy::Snapshot& s) {
    seen.assign(s.ready.begin(), s.ready.end());
    std::vector<Decision> d;
    if (run_first && !s.ready.empty()) d.push_back({Kind::kRun, s.ready[0].id, PuId(0)});
    run_first = false;
    return d;
  });
  ll.OnAssignment(Work(2), kTimeZero);  // model 1, partition 0: runs
  ll.OnPuFinished({PuId(0), AssignmentId(2), absl::OkStatus(), {}, kTimeZero, Ms(4)}, Ms(4));
  ll.OnAssignment(Work(4), Ms(4));
  ll.OnAssignment(Work(6), Ms(4));
  Assignment other = Work(8);
  other.model = ModelId(2);
  ll.OnAssignment(std::move(other), Ms(4));
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_DOUBLE_EQ(seen[0].service_ms, 2);
  EXPECT_DOUBLE_EQ(seen[1].service_ms, 2);
  EXPECT_DOUBLE_EQ(seen[2].service_ms, 0);
  ll.OnTick(Ms(4) + LowLevelCore::kServiceHalfLife);
  EXPECT_NEAR(seen[0].service_ms, 1, 1e-9);
  EXPECT_DOUBLE_EQ(seen[2].service_ms, 0);
}

TEST_F(LowLevelTest, PolicyDropAnswersDeadlineExceeded) {
  LowLevelCore ll = MakeScripted([](const policy::Snapshot& s) {
    std::vector<Decision> d;
    for (const auto& w : s.ready) d.push_back({Kind::kDrop, w.id, PuId{}});
    return d;
  });
  LowLevelActions out = ll.OnAssignment(Work(1, Ms(5)), kTimeZero);
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(out.completions[0].start, kTimeZero);
  EXPECT_EQ(ll.queued(), 0u);
  EXPECT_EQ(ll.stats().dropped_by_policy, 1u);
}

TEST_F(LowLevelTest, CoreDropsQueuedWorkWhoseDeadlinePassed) {
  LowLevelCore ll = MakeScripted([](const policy::Snapshot&) { return std::vector<Decision>{}; });
  ll.OnAssignment(Work(1, Ms(5)), kTimeZero);
  ll.OnAssignment(Work(2, Ms(3)), kTimeZero);
  ll.OnAssignment(Work(3), kTimeZero);
  EXPECT_EQ(ll.NextExpiry(), ExpiryTime(Ms(3)));
  EXPECT_TRUE(ll.OnTick(Ms(3)).completions.empty());
  LowLevelActions out = ll.OnTick(ExpiryTime(Ms(3)));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].id, AssignmentId(2));
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ll.NextExpiry(), ExpiryTime(Ms(5)));
  out = ll.OnTick(Ms(100));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].id, AssignmentId(1));
  EXPECT_EQ(ll.NextExpiry(), std::nullopt);  // item 3 has no deadline
  EXPECT_EQ(ll.queued(), 1u);
  // Arriving after the deadline: answered at once.
  out = ll.OnAssignment(Work(4, Ms(50)), Ms(100));
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ll.stats().dropped_expired, 3u);
}

TEST_F(LowLevelTest, ViolationsInOneDecisionListDoNotStopTheValidOnes) {
  int round = 0;
  LowLevelCore ll = MakeScripted([&](const policy::Snapshot& s) -> std::vector<Decision> {
    ++round;
    if (round == 1) return {{Kind::kRun, s.ready[0].id, PuId(0)}};  // item 1 -> PU 0
    if (s.ready.size() < 2) return {};
    return {
        {Kind::kRun, AssignmentId(77), PuId(1)},  // unknown item
        {Kind::kRun, AssignmentId(2), PuId(5)},   // unknown PU
        {Kind::kRun, AssignmentId(2), PuId(0)},   // busy PU
        {Kind::kDrop, AssignmentId(3), PuId{}},   // no deadline to miss
        {Kind::kRun, AssignmentId(2), PuId(1)},   // fine
        {Kind::kRun, AssignmentId(2), PuId(1)},   // item twice
        {Kind::kRun, AssignmentId(3), PuId(1)},   // PU taken earlier in this list
    };
  });
  ll.OnAssignment(Work(1), kTimeZero);
  ASSERT_EQ(ll.running(), 1u);
  ll.OnAssignment(Work(2), kTimeZero);  // a round with one item: no decisions
  LowLevelActions out = ll.OnAssignment(Work(3), kTimeZero);
  ASSERT_EQ(out.starts.size(), 1u);
  EXPECT_EQ(out.starts[0].assignment.id, AssignmentId(2));
  EXPECT_EQ(out.starts[0].pu, PuId(1));
  EXPECT_TRUE(out.completions.empty());
  EXPECT_EQ(ll.stats().violations, 6u);
  EXPECT_NE(ll.last_violation().find("busy"), std::string::npos) << ll.last_violation();
  EXPECT_EQ(ll.queued(), 1u);  // item 3 waits, untouched
}

TEST_F(LowLevelTest, RunOntoAPuThatCannotRunTheItemIsAViolation) {
  latency_.SetIncapable(ModelId(1), PartitionId(1), PuId(1));
  LowLevelCore ll = MakeScripted([](const policy::Snapshot& s) {
    return std::vector<Decision>{{Kind::kRun, s.ready[0].id, PuId(1)}};
  });
  LowLevelActions out = ll.OnAssignment(Work(1), kTimeZero);  // partition 1
  EXPECT_TRUE(out.starts.empty());
  EXPECT_EQ(ll.stats().violations, 1u);
  EXPECT_NE(ll.last_violation().find("cannot run"), std::string::npos);
}

TEST_F(LowLevelTest, ViolationAbortsInAbortMode) {
  auto run = [this] {
    LowLevelCore ll = Make(std::make_unique<ScriptedPolicy>([](const policy::Snapshot&) {
                             return std::vector<Decision>{{Kind::kRun, AssignmentId(77), PuId(0)}};
                           }),
                           1, 4, ContractMode::kAbort);
    ll.OnAssignment(Work(1), kTimeZero);
  };
  EXPECT_DEATH(run(), "contract violation.*77");
}

TEST_F(LowLevelTest, UnrunnableAndDuplicateAssignmentsAreAnsweredAtOnce) {
  policy::FixedLatencyModel none;  // no PU can run anything
  LowLevelOptions o;
  o.device = DeviceId(0);
  o.pus = {{PuId(0), "cpu"}};
  absl::StatusOr<LowLevelCore> blind = LowLevelCore::Create(o, std::make_unique<FirstIdlePolicy>(), &none);
  ASSERT_TRUE(blind.ok());
  LowLevelActions out = blind->OnAssignment(Work(1), kTimeZero);
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kFailedPrecondition);

  LowLevelCore ll = MakeScripted([](const policy::Snapshot&) { return std::vector<Decision>{}; });
  Assignment pinned = Work(2);
  pinned.fixed_pu = PuId(9);  // not on this device
  out = ll.OnAssignment(std::move(pinned), kTimeZero);
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ll.OnAssignment(Work(3), kTimeZero).completions.empty());
  out = ll.OnAssignment(Work(3), kTimeZero);
  ASSERT_EQ(out.completions.size(), 1u);
  EXPECT_EQ(out.completions[0].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ll.queued(), 1u);
}

TEST_F(LowLevelTest, MismatchedPuReportsAreIgnored) {
  LowLevelCore ll = Make(std::make_unique<FirstIdlePolicy>());
  ll.OnAssignment(Work(1), kTimeZero);  // runs on PU 0
  LowLevelActions out = ll.OnPuFinished({PuId(1), AssignmentId(1), absl::OkStatus(), {}, {}, {}}, Ms(1));
  EXPECT_TRUE(out.completions.empty());
  out = ll.OnPuFinished({PuId(0), AssignmentId(2), absl::OkStatus(), {}, {}, {}}, Ms(1));
  EXPECT_TRUE(out.completions.empty());
  EXPECT_EQ(ll.stats().violations, 2u);
  out = ll.OnPuFinished({PuId(0), AssignmentId(1), absl::OkStatus(), {}, {}, {}}, Ms(1));
  EXPECT_EQ(out.completions.size(), 1u);
  out = ll.OnPuFinished({PuId(0), AssignmentId(1), absl::OkStatus(), {}, {}, {}}, Ms(1));  // twice
  EXPECT_TRUE(out.completions.empty());
  EXPECT_EQ(ll.stats().violations, 3u);
}

}  // namespace
}  // namespace baton::dispatch
