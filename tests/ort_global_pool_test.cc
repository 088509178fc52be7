// ort_global_pool: ONNX Runtime's global intra-op thread pool is part of its
// one environment per process, so these tests run in a process that sets it
// up before any session exists (2 threads) and are kept apart from the other
// baseline tests, which run under ThreadSanitizer in CI (the pool's threads
// start inside ONNX Runtime, which TSan cannot see into).
#include <chrono>
#include <vector>

#include "baton/backend/ort/ort_runner.h"
#include "baton/baseline/ort_baseline.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ort_baseline_test_util.h"

namespace baton::baseline {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
using namespace baton::baseline::testing;

// Before the first session of the process (each test runs in its own process).
const bool kGlobalPoolConfigured = ort::ConfigureGlobalThreadPool(2).ok();

TEST(OrtGlobalPoolTest, ServesTwoClosedLoopModelsAndCanRunAgain) {
  ASSERT_TRUE(kGlobalPoolConfigured);
  auto baseline = OrtBaseline::Create(Mode::kGlobalPool, TwoClosedLoopModels(), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  for (uint64_t seed : {1u, 2u}) {
    auto slice = (*baseline)->RunFor(300ms, 50ms, seed);
    ASSERT_TRUE(slice.ok()) << slice.status();
    ASSERT_EQ(slice->models.size(), 2u);
    for (const ModelResult& r : slice->models) {
      ExpectConsistent(r);
      EXPECT_GT(r.completed, 0u);
      EXPECT_EQ(r.failed, 0u) << r.first_error;
      EXPECT_LE(r.unfinished, 2u);
    }
  }
}

TEST(OrtGlobalPoolTest, PeriodicArrivalsAreCountedOnceEach) {
  ASSERT_TRUE(kGlobalPoolConfigured);
  ExpectPeriodicArrivalsCountedOnce(Mode::kGlobalPool, {});
}

TEST(OrtGlobalPoolTest, RunsOneThreadPerRequestInFlight) {
  ASSERT_TRUE(kGlobalPoolConfigured);
  ExpectOneThreadPerRequestInFlight(Mode::kGlobalPool);
}

TEST(OrtGlobalPoolTest, ThePoolIsFixedOnceTheEnvironmentExists) {
  ASSERT_TRUE(kGlobalPoolConfigured);
  auto baseline = OrtBaseline::Create(Mode::kGlobalPool, TwoClosedLoopModels(), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  EXPECT_EQ(ort::GlobalThreadPoolThreads(), 2);
  EXPECT_TRUE(ort::ConfigureGlobalThreadPool(2).ok());  // the same again is fine
  absl::Status other = ort::ConfigureGlobalThreadPool(3);
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.message(), HasSubstr("global pool of 2 threads"));
  EXPECT_EQ(ort::ConfigureGlobalThreadPool(0).code(), absl::StatusCode::kInvalidArgument);
  // Sessions with their own threads still work next to the pool.
  auto tuned = OrtBaseline::Create(Mode::kTuned, TwoClosedLoopModels(), {});
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  auto slice = (*tuned)->RunFor(100ms, 0ms, 1);
  ASSERT_TRUE(slice.ok()) << slice.status();
}

}  // namespace
}  // namespace baton::baseline
