// Dispatch overhead per partition (goal: <= 20 us), with a no-op executor.
//
// The HL and LL cores are driven directly, as a shell would: a request goes in,
// every SendAssignment goes to the LL core, every StartOnPu "runs" at once (the
// executor renames its input tensor to the partition's output: no compute, no
// copy), every Completion goes back to the HL core, until the request is
// answered. What is measured is therefore the whole mechanism: entering-node
// joins, forwarding, assignment and completion messages, the LL queue, one
// policy Decide per LL event, and the HL bookkeeping.
//
// Benchmarks (the `per_partition` counter is the time per partition):
//   BM_Chain/K               one request at a time through a K-partition chain (fifo, 1 PU)
//   BM_Diamond               the 4-partition diamond (fan-out, join, model output also forwarded)
//   BM_InFlight/N/P/policy   N requests of a 4-partition chain in flight at once on P PUs,
//                            completed in start order (the LL queue holds up to N items)
//   BM_VirtualShell/K        the same K-partition chain through the virtual-time shell
//                            (adds the event queue and the port)
// Run: build/<dir>/bench/dispatch_bench --benchmark_min_time=1s
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/core/dtype.h"
#include "baton/core/tensor.h"
#include "baton/dispatch/high_level.h"
#include "baton/dispatch/low_level.h"
#include "baton/dispatch/virtual_shell.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"
#include "benchmark/benchmark.h"

namespace baton::dispatch {
namespace {

const std::vector<std::string> kPolicies = {"fifo", "heft", "lsf"};

ModelGraph Chain(int k) {
  ModelGraph g;
  g.name = "chain";
  g.inputs = {"t0"};
  g.outputs = {absl::StrCat("t", k)};
  for (int i = 0; i < k; ++i) {
    g.partitions.push_back({PartitionId(static_cast<uint32_t>(i)), absl::StrCat("chain.p", i),
                            {absl::StrCat("t", i)}, {absl::StrCat("t", i + 1)}, DeviceId(0), std::nullopt});
  }
  return g;
}

ModelGraph Diamond() {
  ModelGraph g;
  g.name = "diamond";
  g.inputs = {"x"};
  g.outputs = {"y", "b"};
  g.partitions = {{PartitionId(0), "p0", {"x"}, {"a"}, DeviceId(0), std::nullopt},
                  {PartitionId(1), "p1", {"a"}, {"b"}, DeviceId(0), std::nullopt},
                  {PartitionId(2), "p2", {"a"}, {"c"}, DeviceId(0), std::nullopt},
                  {PartitionId(3), "p3", {"b", "c"}, {"y"}, DeviceId(0), std::nullopt}};
  return g;
}

// The no-op executor: each output gets the first input's tensor (moved, or an
// empty tensor for the second and later outputs).
NamedTensors Run(const ModelGraph& g, Assignment& a) {
  NamedTensors out;
  const PartitionNode& p = g.partitions[a.partition.value];
  for (size_t k = 0; k < p.outputs.size(); ++k) {
    out.emplace_back(p.outputs[k], k == 0 ? std::move(a.inputs[0].second) : Tensor());
  }
  return out;
}

NamedTensors Input(const std::string& name) {
  NamedTensors in;
  in.emplace_back(name, Tensor(dtype::kFloat, {1, 3, 8, 8}));
  return in;
}

// One HL core and one LL core wired back to back.
class Harness {
 public:
  Harness(ModelGraph graph, int pus, const std::string& policy_name, size_t max_queue = 256)
      : graph_(std::move(graph)), latency_(FromMillis(1)) {
    LowLevelOptions o;
    o.device = DeviceId(0);
    o.max_queue = max_queue;
    for (int i = 0; i < pus; ++i) o.pus.push_back({PuId(static_cast<uint32_t>(i)), "cpu"});
    auto ll = LowLevelCore::Create(std::move(o), *policy::MakeLowLevelPolicy(policy_name), &latency_);
    ll_ = std::make_unique<LowLevelCore>(std::move(*ll));
    (void)hl_.AddModel(ModelId(1), graph_, {.max_in_flight = 1 << 20});
  }

  // Submits `n` requests, then runs every started partition in start order
  // until all are answered. Returns the number of answers.
  size_t Serve(int n) {
    size_t answered = 0;
    for (int i = 0; i < n; ++i) {
      answered += Take(hl_.OnRequest(RequestId(next_request_++), ModelId(1), Input(graph_.inputs[0]), {}, now_));
    }
    while (!running_.empty()) {
      StartOnPu s = std::move(running_.front());
      running_.pop_front();
      NamedTensors outputs = Run(graph_, s.assignment);
      LowLevelActions done =
          ll_->OnPuFinished({s.pu, s.assignment.id, absl::OkStatus(), std::move(outputs), now_, now_}, now_);
      answered += TakeLow(std::move(done));
    }
    return answered;
  }

 private:
  size_t Take(HighLevelActions a) {
    for (auto& send : a.assignments) TakeLow(ll_->OnAssignment(std::move(send.assignment), now_));
    return a.finished.size();
  }
  size_t TakeLow(LowLevelActions a) {
    size_t answered = 0;
    for (auto& s : a.starts) running_.push_back(std::move(s));
    for (auto& c : a.completions) answered += Take(hl_.OnCompletion(std::move(c), now_));
    return answered;
  }

  ModelGraph graph_;
  policy::FixedLatencyModel latency_;
  HighLevelCore hl_;
  std::unique_ptr<LowLevelCore> ll_;
  std::deque<StartOnPu> running_;
  uint32_t next_request_ = 1;
  Time now_{};
};

void SetCounters(benchmark::State& state, int64_t partitions_per_iteration) {
  state.SetItemsProcessed(state.iterations() * partitions_per_iteration);
  state.counters["per_partition"] = benchmark::Counter(
      static_cast<double>(state.iterations() * partitions_per_iteration),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_Chain(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  Harness h(Chain(k), 1, "fifo");
  for (auto _ : state) {
    if (h.Serve(1) != 1) state.SkipWithError("request not answered");
  }
  SetCounters(state, k);
}
BENCHMARK(BM_Chain)->Arg(1)->Arg(4)->Arg(16);

void BM_Diamond(benchmark::State& state) {
  Harness h(Diamond(), 2, "fifo");
  for (auto _ : state) {
    if (h.Serve(1) != 1) state.SkipWithError("request not answered");
  }
  SetCounters(state, 4);
}
BENCHMARK(BM_Diamond);

void BM_InFlight(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int pus = static_cast<int>(state.range(1));
  const std::string& policy = kPolicies[static_cast<size_t>(state.range(2))];
  state.SetLabel(policy);
  Harness h(Chain(4), pus, policy, static_cast<size_t>(n));
  for (auto _ : state) {
    if (h.Serve(n) != static_cast<size_t>(n)) state.SkipWithError("requests not answered");
  }
  SetCounters(state, 4 * n);
}
BENCHMARK(BM_InFlight)->ArgsProduct({{8, 64}, {1, 4}, {0, 1, 2}});

// Zero-time executor for the virtual shell.
class NoOpExecutor : public VirtualExecutor {
 public:
  explicit NoOpExecutor(const ModelGraph* g) : graph_(g) {}
  Duration RunTime(DeviceId, PuId, const Assignment&) override { return Duration(0); }
  absl::StatusOr<NamedTensors> Outputs(DeviceId, PuId, const Assignment& a) override {
    NamedTensors out;
    for (const auto& name : graph_->partitions[a.partition.value].outputs) {
      out.emplace_back(name, a.inputs[0].second.Clone());  // the shell keeps the assignment const
    }
    return out;
  }

 private:
  const ModelGraph* graph_;
};

void BM_VirtualShell(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  ModelGraph g = Chain(k);
  NoOpExecutor executor(&g);
  VirtualShell shell(&executor, {.keep_outputs = false});
  policy::FixedLatencyModel latency(FromMillis(1));
  (void)shell.AddDevice({.device = DeviceId(0), .pus = {{PuId(0), "cpu"}}}, *policy::MakeLowLevelPolicy("fifo"),
                        &latency);
  (void)shell.AddModel(ModelId(1), g);
  for (auto _ : state) {
    shell.Submit(ModelId(1), Input("t0"), {}, shell.now());
    shell.RunUntilIdle();
  }
  if (shell.finished().size() != static_cast<size_t>(state.iterations())) state.SkipWithError("lost requests");
  SetCounters(state, k);
}
BENCHMARK(BM_VirtualShell)->Arg(4);

}  // namespace
}  // namespace baton::dispatch

BENCHMARK_MAIN();
