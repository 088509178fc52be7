// The virtual-time shell driving the real HL and LL cores: 10,000 requests
// across 4 models on 2 devices with 1/2/4/8 PUs each, random deadlines, under
// every low-level policy: every request is answered exactly once, completed
// requests carry exactly what the fake executor computes, and the same seed
// gives the same trace. Also the port contract, workload generators, link
// delay and failure injection.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "baton/core/dtype.h"
#include "baton/core/tensor.h"
#include "dispatch_test_util.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/model_graph.h"
#include "baton/dispatch/observer.h"
#include "baton/dispatch/virtual_shell.h"
#include "baton/dispatch/workload.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"

namespace baton::dispatch {
namespace {

using testing::Ms;
using testing::Scalar;
using testing::ValueOf;


// What output `k` of partition `p` of model `m` computes from its inputs (in the
// partition's input order). Order-sensitive, so a mixed-up input shows.
int64_t Compute(ModelId m, PartitionId p, size_t k, const std::vector<int64_t>& inputs) {
  uint64_t h = m.value * 1000003ull + p.value * 10007ull + k * 101ull + 7;
  for (size_t i = 0; i < inputs.size(); ++i) h = h * 31 + static_cast<uint64_t>(inputs[i]) * (i + 1);
  return static_cast<int64_t>(h % 1000000007ull);
}

// Evaluates a model graph sequentially: the expected model outputs.
std::map<std::string, int64_t> Reference(ModelId id, const ModelGraph& g, const std::map<std::string, int64_t>& in) {
  std::map<std::string, int64_t> values = in;
  std::vector<bool> done(g.partitions.size(), false);
  for (size_t round = 0; round < g.partitions.size(); ++round) {
    for (size_t i = 0; i < g.partitions.size(); ++i) {
      const PartitionNode& p = g.partitions[i];
      if (done[i]) continue;
      std::vector<int64_t> args;
      for (const auto& name : p.inputs) {
        if (!values.contains(name)) break;
        args.push_back(values.at(name));
      }
      if (args.size() != p.inputs.size()) continue;
      for (size_t k = 0; k < p.outputs.size(); ++k) values[p.outputs[k]] = Compute(id, p.id, k, args);
      done[i] = true;
    }
  }
  std::map<std::string, int64_t> out;
  for (const auto& name : g.outputs) out[name] = values.at(name);
  return out;
}

// Nominal latency of a partition on a "cpu" PU; "gpu" PUs take half.
Duration Base(ModelId m, PartitionId p) { return std::chrono::microseconds(200 + 150 * ((m.value * 3 + p.value) % 6)); }

// Runs partitions with Compute, for `Expected * U(0.5, 1.5)`; fails a run with
// probability `fail_rate`.
class FakeExecutor : public VirtualExecutor {
 public:
  FakeExecutor(uint64_t seed, double fail_rate) : rng_(seed), fail_rate_(fail_rate) {}
  void AddModel(ModelId id, const ModelGraph& g) {
    for (const auto& p : g.partitions) partitions_[{id, p.id}] = p;
  }
  void SetLatency(DeviceId d, const policy::LatencyModel* m) { latency_[d] = m; }

  Duration RunTime(DeviceId device, PuId pu, const Assignment& a) override {
    const Duration expected = *latency_.at(device)->Expected(a.model, a.partition, pu);
    return Duration(static_cast<Duration::rep>(static_cast<double>(expected.count()) * (0.5 + rng_.Uniform())));
  }
  absl::StatusOr<NamedTensors> Outputs(DeviceId, PuId, const Assignment& a) override {
    if (fail_rate_ > 0 && rng_.Uniform() < fail_rate_) return absl::InternalError("injected failure");
    const PartitionNode& p = partitions_.at({a.model, a.partition});
    std::vector<int64_t> args;
    for (const auto& name : p.inputs) {
      const Tensor* t = FindTensor(a.inputs, name);
      if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing input ", name));
      args.push_back(ValueOf(*t));
    }
    NamedTensors out;
    for (size_t k = 0; k < p.outputs.size(); ++k) out.emplace_back(p.outputs[k], Scalar(Compute(a.model, p.id, k, args)));
    return out;
  }

 private:
  Rng rng_;
  double fail_rate_;
  std::map<std::pair<ModelId, PartitionId>, PartitionNode> partitions_;
  absl::flat_hash_map<DeviceId, const policy::LatencyModel*> latency_;
};

// Four models, 2-4 partitions each, spread over devices 0 and 1.
std::vector<ModelGraph> Models() {
  const DeviceId d0(0), d1(1);
  std::vector<ModelGraph> models(4);
  models[0] = {"chain2", {"x"}, {"y"},
               {{PartitionId(0), "chain2.p0", {"x"}, {"t"}, d0, PuId(0)},
                {PartitionId(1), "chain2.p1", {"t"}, {"y"}, d1, std::nullopt}}};
  models[1] = {"diamond4", {"x"}, {"y", "b"},
               {{PartitionId(0), "diamond4.p0", {"x"}, {"a"}, d0, std::nullopt},
                {PartitionId(1), "diamond4.p1", {"a"}, {"b"}, d0, std::nullopt},
                {PartitionId(2), "diamond4.p2", {"a"}, {"c"}, d1, std::nullopt},
                {PartitionId(3), "diamond4.p3", {"b", "c"}, {"y"}, d1, std::nullopt}}};
  models[2] = {"skip3", {"x"}, {"y"},
               {{PartitionId(0), "skip3.p0", {"x"}, {"a"}, d1, std::nullopt},
                {PartitionId(1), "skip3.p1", {"a"}, {"b", "b2"}, d0, std::nullopt},
                {PartitionId(2), "skip3.p2", {"a", "b", "x"}, {"y"}, d1, std::nullopt}}};
  models[3] = {"forkjoin4", {"x1", "x2"}, {"y", "a", "x2"},
               {{PartitionId(0), "forkjoin4.p0", {"x1"}, {"a"}, d0, std::nullopt},
                {PartitionId(1), "forkjoin4.p1", {"x2"}, {"b"}, d1, std::nullopt},
                {PartitionId(2), "forkjoin4.p2", {"a"}, {"c"}, d1, std::nullopt},
                {PartitionId(3), "forkjoin4.p3", {"b", "c"}, {"y"}, d0, std::nullopt}}};
  return models;
}

// The oldest ready item onto the first idle PU that can run it (the tests' own
// fake, independent of the policy library).
class FirstIdlePolicy : public policy::LowLevelPolicy {
 public:
  std::string name() const override { return "first_idle"; }
  std::vector<policy::Decision> Decide(const policy::Snapshot& s) const override {
    std::vector<policy::Decision> out;
    std::vector<bool> taken(s.pus.size(), false);
    for (const auto& item : s.ready) {
      for (size_t i = 0; i < s.pus.size(); ++i) {
        if (s.pus[i].busy || taken[i] || !s.latency->Expected(item.model, item.partition, s.pus[i].id)) continue;
        taken[i] = true;
        out.push_back({policy::Decision::Kind::kRun, item.id, s.pus[i].id});
        break;
      }
    }
    return out;
  }
};

std::unique_ptr<policy::LowLevelPolicy> MakePolicy(const std::string& name) {
  if (name == "first_idle") return std::make_unique<FirstIdlePolicy>();
  absl::StatusOr<std::unique_ptr<policy::LowLevelPolicy>> p = policy::MakeLowLevelPolicy(name);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : std::make_unique<FirstIdlePolicy>();
}

struct SimConfig {
  std::string policy = "first_idle";
  int pus = 2;
  uint64_t requests_per_model = 2500;
  double per_second = 500;  // per model
  double fail_rate = 0;
  uint64_t seed = 42;
};

// One simulated system: the shell, its models, latency tables and what every
// stream request carried.
struct Sim {
  explicit Sim(const SimConfig& c)
      : config(c), executor(c.seed * 7 + 1, c.fail_rate), shell(&executor, {.seed = c.seed}), models(Models()) {
    for (uint32_t d = 0; d < 2; ++d) {
      LowLevelOptions o;
      o.device = DeviceId(d);
      o.max_queue = 16;
      for (int i = 0; i < c.pus; ++i) o.pus.push_back({PuId(static_cast<uint32_t>(i)), i % 2 == 0 ? "cpu" : "gpu"});
      auto table = std::make_unique<policy::FixedLatencyModel>();
      for (uint32_t m = 0; m < models.size(); ++m) {
        for (const auto& p : models[m].partitions) {
          for (int i = 0; i < c.pus; ++i) {
            Duration base = Base(ModelId(m + 1), p.id);
            table->Set(ModelId(m + 1), p.id, PuId(static_cast<uint32_t>(i)), i % 2 == 0 ? base : base / 2);
          }
        }
      }
      executor.SetLatency(DeviceId(d), table.get());
      EXPECT_TRUE(shell.AddDevice(std::move(o), MakePolicy(c.policy), table.get()).ok());
      latency.push_back(std::move(table));
    }
    for (uint32_t m = 0; m < models.size(); ++m) {
      executor.AddModel(ModelId(m + 1), models[m]);
      EXPECT_TRUE(shell.AddModel(ModelId(m + 1), models[m], {.max_in_flight = 24}).ok());
    }
    inputs.resize(models.size());
  }

  // A Poisson stream per model; 25% of requests have no deadline, the others
  // one of 0.5-15 ms; inputs are random and remembered for the check.
  void AddStreams() {
    for (uint32_t m = 0; m < models.size(); ++m) {
      StreamSpec s;
      s.model = ModelId(m + 1);
      s.arrival = Poisson{config.per_second};
      s.count = config.requests_per_model;
      s.make = [this, m](uint64_t index, Rng& rng) {
        RequestTemplate t;
        std::map<std::string, int64_t> values;
        for (const auto& name : models[m].inputs) {
          values[name] = static_cast<int64_t>(rng.Below(1000000));
          t.inputs.emplace_back(name, Scalar(values[name]));
        }
        if (inputs[m].size() <= index) inputs[m].resize(index + 1);
        inputs[m][index] = std::move(values);
        if (rng.Below(4) != 0) t.deadline = std::chrono::microseconds(rng.Between(500, 15000));
        deadline_of[{m, index}] = t.deadline;
        t.priority = static_cast<int>(rng.Below(3));
        return t;
      };
      EXPECT_TRUE(shell.AddStream(std::move(s)).ok());
    }
  }

  SimConfig config;
  FakeExecutor executor;
  VirtualShell shell;
  std::vector<ModelGraph> models;
  std::vector<std::unique_ptr<policy::FixedLatencyModel>> latency;
  std::vector<std::vector<std::map<std::string, int64_t>>> inputs;  // [stream][index]
  std::map<std::pair<uint32_t, uint64_t>, std::optional<Duration>> deadline_of;
};

class SimTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(SimTest, TenThousandRequestsAreEachAnsweredExactlyOnceWithCorrectOutputs) {
  SimConfig config;
  config.policy = std::get<0>(GetParam());
  config.pus = std::get<1>(GetParam());
  Sim sim(config);
  TraceRecorder trace;
  sim.shell.set_observer(&trace);
  sim.AddStreams();
  sim.shell.RunUntilIdle();

  const uint64_t total = config.requests_per_model * sim.models.size();
  EXPECT_EQ(sim.shell.pending(), 0u);
  EXPECT_EQ(sim.shell.duplicate_answers(), 0u);
  ASSERT_EQ(sim.shell.finished().size(), total);
  std::map<absl::StatusCode, int> codes;
  std::set<uint32_t> ids;
  for (const RequestRecord& r : sim.shell.finished()) {
    ASSERT_TRUE(ids.insert(r.id.value).second) << "request " << r.id << " answered twice";
    ASSERT_TRUE(r.stream.has_value());
    ++codes[r.status.code()];
    const std::optional<Duration> deadline = sim.deadline_of.at({*r.stream, r.stream_index});
    switch (r.status.code()) {
      case absl::StatusCode::kOk: {
        if (deadline) {
          EXPECT_LE(r.latency(), *deadline) << r.id;
        }
        const ModelGraph& g = sim.models[*r.stream];
        auto expected = Reference(r.model, g, sim.inputs[*r.stream][r.stream_index]);
        ASSERT_EQ(r.outputs.size(), g.outputs.size());
        for (size_t o = 0; o < g.outputs.size(); ++o) {
          ASSERT_EQ(r.outputs[o].first, g.outputs[o]);
          ASSERT_EQ(ValueOf(r.outputs[o].second), expected.at(g.outputs[o])) << "request " << r.id;
        }
        break;
      }
      case absl::StatusCode::kDeadlineExceeded:
        ASSERT_TRUE(deadline.has_value()) << r.status;
        // Policies may drop work early that cannot make it; the fake never does.
        if (config.policy == "first_idle") {
          EXPECT_GT(r.latency(), *deadline);
        }
        break;
      case absl::StatusCode::kResourceExhausted:
        break;
      default:
        FAIL() << "unexpected answer: " << r.status;
    }
  }
  // The trace agrees: one arrival and one answer per request.
  std::map<uint32_t, int> arrived, answered;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == TraceKind::kRequestArrived) ++arrived[e.request.value];
    if (e.kind == TraceKind::kRequestFinished) ++answered[e.request.value];
  }
  ASSERT_EQ(arrived.size(), total);
  ASSERT_EQ(answered.size(), total);
  for (const auto& [id, n] : answered) ASSERT_EQ(n, 1) << id;
  for (const auto& [id, n] : arrived) ASSERT_EQ(n, 1) << id;
  // Nothing is left anywhere.
  EXPECT_EQ(sim.shell.high_level().in_flight(), 0u);
  EXPECT_EQ(sim.shell.high_level().outstanding_assignments(), 0u);
  for (uint32_t d = 0; d < 2; ++d) {
    EXPECT_EQ(sim.shell.low_level(DeviceId(d))->queued(), 0u);
    EXPECT_EQ(sim.shell.low_level(DeviceId(d))->running(), 0u);
    EXPECT_EQ(sim.shell.low_level(DeviceId(d))->stats().violations, 0u);
  }
  // The workload exercises every outcome.
  EXPECT_GT(codes[absl::StatusCode::kOk], 0);
  EXPECT_GT(codes[absl::StatusCode::kDeadlineExceeded], 0);
  if (config.pus == 1) {
    EXPECT_GT(codes[absl::StatusCode::kResourceExhausted], 0);
  }
  RecordProperty("ok", codes[absl::StatusCode::kOk]);
  RecordProperty("deadline_exceeded", codes[absl::StatusCode::kDeadlineExceeded]);
  RecordProperty("resource_exhausted", codes[absl::StatusCode::kResourceExhausted]);
}

std::vector<std::string> PolicyNames() {
  std::vector<std::string> names = {"first_idle"};
  for (const auto& n : policy::LowLevelPolicyNames()) names.push_back(n);
  return names;
}

INSTANTIATE_TEST_SUITE_P(AllPolicies, SimTest,
                         ::testing::Combine(::testing::ValuesIn(PolicyNames()), ::testing::Values(1, 2, 4, 8)),
                         [](const auto& param_info) {
                           return absl::StrCat(std::get<0>(param_info.param), "_", std::get<1>(param_info.param),
                                               "pu");
                         });

std::vector<std::string> TraceOf(uint64_t seed, const std::string& policy) {
  SimConfig config;
  config.seed = seed;
  config.policy = policy;
  config.requests_per_model = 300;
  Sim sim(config);
  TraceRecorder trace;
  sim.shell.set_observer(&trace);
  sim.AddStreams();
  sim.shell.RunUntilIdle();
  std::vector<std::string> lines = trace.Lines();
  for (const RequestRecord& r : sim.shell.finished()) {
    lines.push_back(absl::StrCat("record ", r.id.value, " ", r.status.ToString(), " ",
                                 r.finished.time_since_epoch().count()));
  }
  return lines;
}

TEST(SimDeterminismTest, SameSeedGivesTheSameTrace) {
  for (const std::string policy : {"first_idle", "heft", "lsf"}) {
    std::vector<std::string> a = TraceOf(7, policy);
    std::vector<std::string> b = TraceOf(7, policy);
    ASSERT_GT(a.size(), 1200u);
    EXPECT_EQ(a, b) << policy;
    EXPECT_NE(a, TraceOf(8, policy)) << policy;
  }
}

TEST(SimFailureTest, FailedRunsFailTheirRequestsAndNothingElse) {
  SimConfig config;
  config.fail_rate = 0.03;
  config.requests_per_model = 500;
  Sim sim(config);
  sim.AddStreams();
  sim.shell.RunUntilIdle();
  ASSERT_EQ(sim.shell.finished().size(), 2000u);
  EXPECT_EQ(sim.shell.pending(), 0u);
  int failed = 0, ok = 0;
  for (const RequestRecord& r : sim.shell.finished()) {
    if (r.status.code() == absl::StatusCode::kInternal) {
      ++failed;
      EXPECT_NE(r.status.message().find("injected failure"), std::string::npos);
      EXPECT_TRUE(r.outputs.empty());
    } else if (r.status.ok()) {
      ++ok;
      auto expected = Reference(r.model, sim.models[*r.stream], sim.inputs[*r.stream][r.stream_index]);
      for (const auto& [name, t] : r.outputs) ASSERT_EQ(ValueOf(t), expected.at(name));
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(ok, 0);
}

// A one-partition model on one device with one PU, for the timing tests.
struct Tiny {
  explicit Tiny(VirtualShellOptions options, Duration run = FromMillis(2))
      : executor(1, 0), shell(&executor, options) {
    graph = {"one", {"x"}, {"y"}, {{PartitionId(0), "one.p0", {"x"}, {"y"}, DeviceId(0), std::nullopt}}};
    latency.Set(ModelId(1), PartitionId(0), PuId(0), run);
    executor.AddModel(ModelId(1), graph);
    executor.SetLatency(DeviceId(0), &latency);
    EXPECT_TRUE(shell.AddDevice({.device = DeviceId(0), .pus = {{PuId(0), "cpu"}}, .max_queue = 4},
                                std::make_unique<FirstIdlePolicy>(), &latency)
                    .ok());
    EXPECT_TRUE(shell.AddModel(ModelId(1), graph).ok());
  }
  NamedTensors Input(int64_t v) {
    NamedTensors in;
    in.emplace_back("x", Scalar(v));
    return in;
  }
  FakeExecutor executor;  // runs for 0.5-1.5x the expected time
  VirtualShell shell;
  ModelGraph graph;
  policy::FixedLatencyModel latency;
};

TEST(VirtualShellTest, LinkDelayAndDeadlinesLandAtExactInstants) {
  Tiny t({.link_delay = FromMillis(1)});
  RequestId a = t.shell.Submit(ModelId(1), t.Input(1), {}, Ms(10));
  RequestId b = t.shell.Submit(ModelId(1), t.Input(2), {.deadline = Ms(10.5)}, Ms(10));
  RequestId c = t.shell.Submit(ModelId(99), t.Input(3), {}, Ms(5));
  t.shell.RunUntilIdle();
  ASSERT_EQ(t.shell.finished().size(), 3u);
  std::map<uint32_t, const RequestRecord*> by_id;
  for (const auto& r : t.shell.finished()) by_id[r.id.value] = &r;
  EXPECT_EQ(by_id.at(c.value)->status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(by_id.at(c.value)->finished, Ms(5));
  // a: 1 ms to the device, its run, 1 ms back.
  EXPECT_TRUE(by_id.at(a.value)->status.ok());
  EXPECT_GE(by_id.at(a.value)->latency(), FromMillis(3));
  EXPECT_LE(by_id.at(a.value)->latency(), FromMillis(5));
  // b: dropped by the HL tick right after its deadline.
  EXPECT_EQ(by_id.at(b.value)->status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(by_id.at(b.value)->finished, ExpiryTime(Ms(10.5)));
}

TEST(VirtualShellTest, PortAnswersEverySubmittedAssignmentOnceAndNeverInsideSubmit) {
  Tiny t({});
  TraceRecorder trace;
  t.shell.set_observer(&trace);
  LowLevelPort* port = t.shell.port(DeviceId(0));
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(t.shell.port(DeviceId(5)), nullptr);
  std::vector<AssignmentId> ids;
  for (uint32_t i = 1; i <= 8; ++i) {
    Assignment a;
    a.id = AssignmentId(1000 + i);
    a.request = RequestId(500 + i);
    a.model = ModelId(1);
    a.partition = PartitionId(i == 8 ? 3 : 0);  // the last one: no PU can run it
    a.inputs.emplace_back("x", Scalar(i));
    if (i == 2) a.deadline = kTimeZero;  // queued at 0, expires 1 ns later
    ids.push_back(a.id);
    port->Submit(std::move(a));
    EXPECT_TRUE(trace.events().empty());  // nothing happens inside Submit
  }
  t.shell.RunUntilIdle();
  // Each assignment: exactly one terminal LL event and one completion at the HL
  // (which ignores them: it did not send them).
  std::map<uint32_t, int> terminal, at_hl;
  std::map<uint32_t, absl::StatusCode> code;
  for (const TraceEvent& e : trace.events()) {
    if (!e.assignment) continue;
    if (e.kind == TraceKind::kFinished || e.kind == TraceKind::kDropped) {
      ++terminal[e.assignment->value];
      code[e.assignment->value] = e.code;
    }
    if (e.kind == TraceKind::kCompletionIgnored) ++at_hl[e.assignment->value];
  }
  for (AssignmentId id : ids) {
    EXPECT_EQ(terminal[id.value], 1) << id;
    EXPECT_EQ(at_hl[id.value], 1) << id;
  }
  EXPECT_EQ(code[1008], absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code[1001], absl::StatusCode::kOk);
  // A queue of 4 behind one busy PU: 1 runs, 2-5 wait, 6 and 7 are rejected, 2 expires.
  EXPECT_EQ(code[1002], absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(code[1005], absl::StatusCode::kOk);
  EXPECT_EQ(code[1006], absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code[1007], absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(t.shell.high_level().stats().completions_ignored, 8u);
}

TEST(VirtualShellTest, PeriodicStreamArrivesOnTheDot) {
  Tiny t({}, FromMillis(0.5));
  StreamSpec s;
  s.model = ModelId(1);
  s.arrival = Periodic{FromMillis(3)};
  s.count = 20;
  s.start = Ms(1);
  s.make = [](uint64_t index, Rng&) {
    RequestTemplate r;
    r.inputs.emplace_back("x", Scalar(static_cast<int64_t>(index)));
    return r;
  };
  ASSERT_TRUE(t.shell.AddStream(std::move(s)).ok());
  t.shell.RunUntilIdle();
  ASSERT_EQ(t.shell.finished().size(), 20u);
  for (const auto& r : t.shell.finished()) {
    EXPECT_EQ(r.submitted, Ms(1) + FromMillis(3) * static_cast<int64_t>(r.stream_index));
    EXPECT_TRUE(r.status.ok());
  }
}

// Every request of a stream feeds x = 1.
RequestTemplate OneScalarRequest(uint64_t, Rng&) {
  RequestTemplate r;
  r.inputs.emplace_back("x", Scalar(1));
  return r;
}

TEST(VirtualShellTest, ClosedLoopKeepsItsConcurrency) {
  Tiny t({});
  TraceRecorder trace;
  t.shell.set_observer(&trace);
  StreamSpec s;
  s.model = ModelId(1);
  s.arrival = ClosedLoop{3, FromMillis(0.1)};
  s.count = 30;
  s.make = OneScalarRequest;
  ASSERT_TRUE(t.shell.AddStream(std::move(s)).ok());
  t.shell.RunUntilIdle();
  ASSERT_EQ(t.shell.finished().size(), 30u);
  int in_flight = 0, peak = 0;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == TraceKind::kRequestArrived) peak = std::max(peak, ++in_flight);
    if (e.kind == TraceKind::kRequestFinished) --in_flight;
  }
  EXPECT_EQ(peak, 3);
  for (const auto& r : t.shell.finished()) EXPECT_TRUE(r.status.ok()) << r.status;
}

TEST(VirtualShellTest, PoissonStreamHasTheRequestedRate) {
  Tiny t({.keep_outputs = false}, FromMillis(0.01));
  StreamSpec s;
  s.model = ModelId(1);
  s.arrival = Poisson{1000};  // mean gap 1 ms
  s.count = 4000;
  s.make = OneScalarRequest;
  ASSERT_TRUE(t.shell.AddStream(std::move(s)).ok());
  t.shell.RunUntilIdle();
  ASSERT_EQ(t.shell.finished().size(), 4000u);
  Time last{};
  for (const auto& r : t.shell.finished()) last = std::max(last, r.submitted);
  const double mean_gap_ms = ToMillis(last.time_since_epoch()) / 3999;
  EXPECT_NEAR(mean_gap_ms, 1.0, 0.1);
  EXPECT_TRUE(t.shell.finished()[0].outputs.empty());  // keep_outputs = false
}

TEST(VirtualShellTest, RejectsBadSetup) {
  Tiny t({});
  EXPECT_EQ(t.shell.AddDevice({.device = DeviceId(0), .pus = {{PuId(0), "cpu"}}},
                              std::make_unique<FirstIdlePolicy>(), &t.latency)
                .code(),
            absl::StatusCode::kAlreadyExists);
  ModelGraph elsewhere = t.graph;
  elsewhere.partitions[0].device = DeviceId(4);
  absl::Status s = t.shell.AddModel(ModelId(2), elsewhere);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("device 4"), std::string::npos) << s;
  StreamSpec bad;
  bad.arrival = Periodic{Duration(0)};
  bad.make = [](uint64_t, Rng&) { return RequestTemplate{}; };
  EXPECT_EQ(t.shell.AddStream(std::move(bad)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.shell.AddStream(StreamSpec{}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace baton::dispatch
