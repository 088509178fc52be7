// Helpers shared by the ORT baseline tests (ort_baseline_test.cc, and
// ort_global_pool_test.cc, which runs in a process with ORT's global thread
// pool: that pool is fixed per process, and its threads start inside ONNX
// Runtime, which ThreadSanitizer cannot see into, so the other tests run
// without it).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <system_error>
#include <thread>
#include <string>
#include <vector>

#include "baton/baseline/ort_baseline.h"
#include "baton/graph/model.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "gtest/gtest.h"
#include "wait_until.h"

namespace baton::baseline::testing {

using namespace std::chrono_literals;

// A ModelSpec for the small variant of zoo model `zoo_name`, with `num_samples`
// random input sets.
inline ModelSpec ZooSpec(const std::string& zoo_name, dispatch::Arrival arrival, int num_samples = 2) {
  ModelSpec spec;
  spec.name = zoo_name + "_small";
  spec.arrival = arrival;
  auto bytes = zoo::Generate(zoo_name, /*small=*/true);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return spec;
  spec.onnx_bytes = *bytes;
  auto model = graph::Model::LoadBytes(spec.onnx_bytes, spec.name);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return spec;
  for (int s = 0; s < num_samples; ++s) {
    auto inputs = verify::RandomInputs(**model, /*seed=*/100 + s);
    EXPECT_TRUE(inputs.ok()) << inputs.status();
    if (inputs.ok()) spec.samples.push_back(*std::move(inputs));
  }
  return spec;
}

inline std::vector<ModelSpec> TwoClosedLoopModels() {
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("mobilenetv2", dispatch::ClosedLoop{.concurrency = 1}));
  models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{.concurrency = 2}));
  return models;
}

inline BaselineOptions Threads(int threads, std::vector<int> cores = {}) {
  BaselineOptions options;
  options.threads = threads;
  options.cores = std::move(cores);
  return options;
}

// Options every mode accepts for `models`: two threads, and for kPinned two
// unpinned 1-thread PUs with model m on PU m % 2.
inline BaselineOptions AnyModeOptions(size_t models) {
  BaselineOptions options = Threads(2);
  options.pus = {PinnedPu{1, {}}, PinnedPu{1, {}}};
  for (size_t m = 0; m < models; ++m) options.pu_of_model.push_back(m % 2);
  return options;
}

inline void ExpectConsistent(const ModelResult& r) {
  EXPECT_EQ(r.latencies.size(), r.completed);
  EXPECT_LE(r.deadline_missed, r.completed);
  for (Duration latency : r.latencies) EXPECT_GT(latency, Duration::zero());
  EXPECT_EQ(r.first_error.empty(), r.failed == 0) << r.first_error;
}

// Closed loop x3 with a think time far longer than the slice: each of the
// three threads answers its first request and then waits, so exactly three
// requests arrive in the window [0, 300 ms) and each is counted once, however
// the threads' results are merged.
// The threads of this process, from /proc/self/task.
inline int ThreadsOfThisProcess() {
  std::error_code ec;
  int n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/task", ec), end; !ec && it != end; it.increment(ec)) ++n;
  return n;
}

// ... and the slice runs on 3 + 2 threads of its own, one per request in flight.
inline void ExpectOneThreadPerRequestInFlight(Mode mode) {
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{.concurrency = 3, .think = 10s}));
  models.push_back(ZooSpec("mobilenetv2", dispatch::ClosedLoop{.concurrency = 2}));
  auto baseline = OrtBaseline::Create(mode, std::move(models), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  const int before = ThreadsOfThisProcess();
  std::atomic<bool> done{false};
  int most = before;
  std::thread watch([&] {
    baton::testing::WaitUntil([&] {
      most = std::max(most, ThreadsOfThisProcess());
      return most >= before + 5 || done.load();
    });
  });
  auto slice = (*baseline)->RunFor(300ms, 0ms, 1);
  done = true;
  watch.join();
  EXPECT_GE(most - before, 5) << "serving threads seen during the slice";
  ASSERT_TRUE(slice.ok()) << slice.status();
  ASSERT_EQ(slice->models.size(), 2u);
  for (const ModelResult& r : slice->models) ExpectConsistent(r);
  EXPECT_EQ(slice->models[0].completed + slice->models[0].unfinished + slice->models[0].failed, 3u);
  EXPECT_GT(slice->models[1].completed, 0u);
  EXPECT_LE(slice->models[1].unfinished, 2u);
}

// 20 fps for 0.5 s after a 0.1 s warm-up: arrivals at k * 50 ms, k = 2..11
// fall in the window, so exactly 10 requests arrive in it, each counted once;
// how many finish in time depends on the machine's load: at least one.
inline void ExpectPeriodicArrivalsCountedOnce(Mode mode, const BaselineOptions& options) {
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("mobilenetv2", dispatch::Periodic{.period = 50ms}));
  auto baseline = OrtBaseline::Create(mode, std::move(models), options);
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  auto slice = (*baseline)->RunFor(500ms, 100ms, 1);
  ASSERT_TRUE(slice.ok()) << slice.status();
  const ModelResult& r = slice->models[0];
  ExpectConsistent(r);
  EXPECT_EQ(r.completed + r.failed + r.unfinished, 10u);
  EXPECT_GE(r.completed, 1u);
}

}  // namespace baton::baseline::testing
