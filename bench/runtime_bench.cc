// Dispatch overhead per partition through the threaded runtime (real threads,
// real clock), with a no-op executor: each partition "runs" by copying its
// 8-byte input to its output, so the time is the runtime's own: the dispatcher
// thread's mailbox, the HL and LL cores, the policy, the hand-off to the PU
// worker thread and back.
//
// Benchmarks (`per_partition` = wall time per partition):
//   BM_RuntimeChain/K/N   a K-partition chain, N requests kept in flight
//                         (closed loop), 2 PUs, fifo
// Run: build/release/bench/runtime_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/runtime/runtime.h"

namespace baton::runtime {
namespace {

class NoOp : public backend::PreparedPartition {
 public:
  NoOp(std::string in, std::string out) : in_(std::move(in)), out_(std::move(out)) {}
  absl::StatusOr<backend::RunResult> Run(std::span<const std::pair<std::string, const Tensor*>> inputs, RunCancel* = nullptr) const override {
    backend::RunResult r;
    r.outputs.emplace_back(out_, inputs[0].second->Clone());
    return r;
  }

 private:
  std::string in_, out_;
};

void BM_RuntimeChain(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  const int in_flight = static_cast<int>(state.range(1));
  auto latency = *policy::OnlineLatencyModel::Create({});
  RunnerTable runners;
  std::vector<std::unique_ptr<NoOp>> parts;
  dispatch::ModelGraph g;
  g.name = "chain";
  g.inputs = {"t0"};
  g.outputs = {absl::StrCat("t", k)};
  for (int p = 0; p < k; ++p) {
    parts.push_back(std::make_unique<NoOp>(absl::StrCat("t", p), absl::StrCat("t", p + 1)));
    for (int u = 0; u < 2; ++u) runners.Set(ModelId(0), PartitionId(p), PuId(u), parts.back().get());
    g.partitions.push_back(dispatch::PartitionNode{PartitionId(p), absl::StrCat("chain.p", p), {absl::StrCat("t", p)},
                                                   {absl::StrCat("t", p + 1)}, DeviceId(0), std::nullopt});
  }
  std::vector<DeviceSetup> devices(1);
  devices[0].id = DeviceId(0);
  devices[0].name = "local";
  devices[0].pus = {PuSetup{PuId(0), "pu0", "cpu", {}}, PuSetup{PuId(1), "pu1", "cpu", {}}};
  devices[0].policy = *policy::MakeLowLevelPolicy("fifo");
  auto rt = std::move(*Runtime::Create(std::move(devices), latency.get(), &runners));
  if (!rt->AddModel(ModelId(0), g).ok() || !rt->Start().ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;
  auto input = [] {
    dispatch::NamedTensors in;
    in.emplace_back("t0", Tensor(dtype::kInt64, {1}));
    return in;
  };
  std::function<void(RequestResult)> on_done = [&](RequestResult) {
    std::lock_guard lock(mu);
    ++done;
    cv.notify_one();
  };
  int64_t submitted = 0;
  for (auto _ : state) {
    // Keep `in_flight` requests going; one iteration = one request answered.
    while (submitted - done < in_flight) {
      rt->Submit(ModelId(0), input(), {}, on_done);
      ++submitted;
    }
    std::unique_lock lock(mu);
    const int64_t target = submitted - in_flight + 1;
    cv.wait(lock, [&] { return done >= target; });
  }
  rt->Drain();
  state.counters["per_partition"] = benchmark::Counter(static_cast<double>(state.iterations()) * k,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  rt->Stop();
}
BENCHMARK(BM_RuntimeChain)->Args({1, 1})->Args({4, 1})->Args({4, 8})->Args({16, 8})->UseRealTime();

}  // namespace
}  // namespace baton::runtime
BENCHMARK_MAIN();
