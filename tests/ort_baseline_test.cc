// The plain-ONNX-Runtime baselines on small zoo models. Real time is involved,
// so assertions use only counts that do not depend on speed (arrivals inside
// the window, latencies.size() == completed) or loose bounds; no two separately
// measured timings are compared.
#include "baton/baseline/ort_baseline.h"

#include <sched.h>

#include <chrono>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ort_baseline_test_util.h"
#include "spin_model.h"

namespace baton::baseline {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
using namespace baton::baseline::testing;

// Every mode but kGlobalPool: this process has no global pool (see
// ort_baseline_test_util.h; ort_global_pool_test.cc covers that mode).
std::vector<Mode> ModesHere() {
  std::vector<Mode> modes;
  for (Mode m : AllModes()) {
    if (m != Mode::kGlobalPool) modes.push_back(m);
  }
  return modes;
}

TEST(OrtBaselineTest, ModeNames) {
  EXPECT_STREQ(ModeName(Mode::kSequential), "ort_sequential");
  EXPECT_STREQ(ModeName(Mode::kConcurrent), "ort_concurrent");
  EXPECT_STREQ(ModeName(Mode::kTuned), "ort_tuned");
  EXPECT_STREQ(ModeName(Mode::kPinned), "ort_pinned");
  EXPECT_STREQ(ModeName(Mode::kGlobalPool), "ort_global_pool");
  for (Mode mode : AllModes()) EXPECT_EQ(ModeFromName(ModeName(mode)), mode);
  EXPECT_EQ(ModeFromName("ort_fast"), std::nullopt);
  EXPECT_TRUE(IsOrtDefaults(Mode::kSequential));
  EXPECT_TRUE(IsOrtDefaults(Mode::kConcurrent));
  EXPECT_FALSE(IsOrtDefaults(Mode::kTuned));
  EXPECT_FALSE(IsOrtDefaults(Mode::kPinned));
  EXPECT_FALSE(IsOrtDefaults(Mode::kGlobalPool));
}

TEST(OrtBaselineTest, EveryModeServesTwoClosedLoopModelsAndCanRunAgain) {
  for (Mode mode : ModesHere()) {
    SCOPED_TRACE(ModeName(mode));
    auto baseline = OrtBaseline::Create(mode, TwoClosedLoopModels(), AnyModeOptions(2));
    ASSERT_TRUE(baseline.ok()) << baseline.status();
    EXPECT_EQ((*baseline)->mode(), mode);
    for (uint64_t seed : {1u, 2u}) {  // sessions are reused across slices
      auto slice = (*baseline)->RunFor(300ms, 50ms, seed);
      ASSERT_TRUE(slice.ok()) << slice.status();
      EXPECT_EQ(slice->elapsed, Duration(300ms));
      ASSERT_EQ(slice->models.size(), 2u);
      for (const ModelResult& r : slice->models) {
        ExpectConsistent(r);
        EXPECT_GT(r.completed, 0u);
        EXPECT_EQ(r.failed, 0u) << r.first_error;
        EXPECT_EQ(r.deadline_missed, 0u);  // no deadline set
        // Closed loop: at most `concurrency` requests can be waiting at the end.
        EXPECT_LE(r.unfinished, 2u);
      }
    }
  }
}

TEST(OrtBaselineTest, PeriodicArrivalsCompleteAboutDurationTimesFps) {
  for (Mode mode : ModesHere()) {
    SCOPED_TRACE(ModeName(mode));
    ExpectPeriodicArrivalsCountedOnce(mode, AnyModeOptions(1));
  }
}

// Open-loop arrivals beyond max_in_flight in flight are rejected at once, as
// baton rejects them: every arrival in the window is counted exactly once, and
// at most max_in_flight are left when the window ends.
TEST(OrtBaselineTest, OverloadBeyondMaxInFlightIsRejectedAndCountedOnce) {
  for (Mode mode : ModesHere()) {
    SCOPED_TRACE(ModeName(mode));
    std::vector<ModelSpec> models;
    models.push_back(ZooSpec("mobilenetv2", dispatch::Periodic{.period = 50us}));
    models[0].max_in_flight = 2;
    auto baseline = OrtBaseline::Create(mode, std::move(models), AnyModeOptions(1));
    ASSERT_TRUE(baseline.ok()) << baseline.status();
    auto slice = (*baseline)->RunFor(300ms, 50ms, 1);
    ASSERT_TRUE(slice.ok()) << slice.status();
    const ModelResult& r = slice->models[0];
    ExpectConsistent(r);
    EXPECT_EQ(r.completed + r.failed + r.unfinished + r.rejected, 6000u);
    EXPECT_GT(r.rejected, 0u) << "20,000 requests/s, more than one session can run";
    EXPECT_LE(r.unfinished, 2u);
  }
}

TEST(OrtBaselineTest, PoissonArrivalsAreServed) {
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("mobilenetv2", dispatch::Poisson{.per_second = 50}));
  models.push_back(ZooSpec("lstm", dispatch::Poisson{.per_second = 50}));
  auto baseline = OrtBaseline::Create(Mode::kSequential, std::move(models), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  auto slice = (*baseline)->RunFor(300ms, 0ms, 7);
  ASSERT_TRUE(slice.ok()) << slice.status();
  for (const ModelResult& r : slice->models) {
    ExpectConsistent(r);
    // The first arrival is at the slice start, so each model has at least one.
    EXPECT_GT(r.completed + r.unfinished, 0u);
  }
}

TEST(OrtBaselineTest, OneNanosecondDeadlineIsAlwaysMissed) {
  for (Mode mode : ModesHere()) {
    SCOPED_TRACE(ModeName(mode));
    std::vector<ModelSpec> models = TwoClosedLoopModels();
    for (ModelSpec& m : models) m.deadline = Duration(1);
    auto baseline = OrtBaseline::Create(mode, std::move(models), AnyModeOptions(2));
    ASSERT_TRUE(baseline.ok()) << baseline.status();
    auto slice = (*baseline)->RunFor(200ms, 0ms, 3);
    ASSERT_TRUE(slice.ok()) << slice.status();
    for (const ModelResult& r : slice->models) {
      ExpectConsistent(r);
      EXPECT_GT(r.completed, 0u);
      EXPECT_EQ(r.deadline_missed, r.completed);
    }
  }
}

TEST(OrtBaselineTest, SequentialServesTheEarliestArrivalFirst) {
  // Two closed-loop models with one request each: whichever is answered, the
  // other one has been waiting longer, so the server alternates between them
  // even though one model is slower than the other.
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("mobilenetv2", dispatch::ClosedLoop{.concurrency = 1}));
  models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{.concurrency = 1}));
  auto baseline = OrtBaseline::Create(Mode::kSequential, std::move(models), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  auto slice = (*baseline)->RunFor(300ms, 50ms, 5);
  ASSERT_TRUE(slice.ok()) << slice.status();
  const double a = static_cast<double>(slice->models[0].completed);
  const double b = static_cast<double>(slice->models[1].completed);
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  // Strict alternation, whatever each model's speed: the counts differ by at
  // most one, plus one for a request cut off at each end of the window.
  EXPECT_LE(std::abs(a - b), 2.0) << a << " vs " << b;
}

TEST(OrtBaselineTest, SequentialPinsToAnAllowedCore) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  int core = 0;
  while (core < CPU_SETSIZE && !CPU_ISSET(core, &allowed)) ++core;
  ASSERT_LT(core, CPU_SETSIZE);
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{.concurrency = 1}));
  auto baseline = OrtBaseline::Create(Mode::kSequential, std::move(models), Threads(1, {core}));
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  auto slice = (*baseline)->RunFor(100ms, 0ms, 1);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_GT(slice->models[0].completed, 0u);
}

TEST(OrtBaselineTest, RunTimeFailuresAreCountedWithTheFirstError) {
  // The sample names the right input but has the wrong shape: Create accepts
  // it (only names are checked up front) and every request fails.
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("mobilenetv2", dispatch::ClosedLoop{.concurrency = 1}, 1));
  ASSERT_EQ(models[0].samples.size(), 1u);
  models[0].samples[0][0].second = Tensor(dtype::kFloat, {1, 1});
  auto baseline = OrtBaseline::Create(Mode::kConcurrent, std::move(models), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  auto slice = (*baseline)->RunFor(100ms, 0ms, 1);
  ASSERT_TRUE(slice.ok()) << slice.status();
  const ModelResult& r = slice->models[0];
  ExpectConsistent(r);
  EXPECT_EQ(r.completed, 0u);
  EXPECT_GT(r.failed, 0u);
  EXPECT_THAT(r.first_error, HasSubstr("mobilenetv2_small"));
}

// A model whose runs never end (spin_model.h), fed one float.
ModelSpec SpinSpec() {
  ModelSpec spec;
  spec.name = "spin";
  spec.arrival = dispatch::ClosedLoop{.concurrency = 1};
  absl::StatusOr<std::string> bytes = baton::testing::SpinModelBytes();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (bytes.ok()) spec.onnx_bytes = *bytes;
  dispatch::NamedTensors sample;
  sample.emplace_back("x", Tensor(dtype::kFloat, {1}));
  spec.samples.push_back(std::move(sample));
  return spec;
}

// A run that never ends is stopped at the end of the slice (a hang would time
// the test out), and counted unfinished; the other model is served beside it.
TEST(OrtBaselineTest, ARunThatNeverEndsIsStoppedAtTheEndOfTheSlice) {
  for (Mode mode : {Mode::kTuned, Mode::kConcurrent}) {
    SCOPED_TRACE(ModeName(mode));
    std::vector<ModelSpec> models;
    models.push_back(SpinSpec());
    models.push_back(ZooSpec("mobilenetv2", dispatch::ClosedLoop{.concurrency = 1}));
    auto baseline = OrtBaseline::Create(mode, std::move(models), {});
    ASSERT_TRUE(baseline.ok()) << baseline.status();
    for (int slice = 0; slice < (mode == Mode::kTuned ? 2 : 1); ++slice) {  // and the sessions serve the next slice
      auto r = (*baseline)->RunFor(150ms, 0ms, 1);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->models[0].completed, 0u);
      EXPECT_EQ(r->models[0].failed, 0u);
      EXPECT_EQ(r->models[0].unfinished, 1u);
      EXPECT_GT(r->models[1].completed, 0u);
      ExpectConsistent(r->models[1]);
    }
  }
}

// With an execution timeout, as baton's models have with execution_timeout_ms,
// each run past it is stopped and counted failed with a message that says so;
// on kSequential's one serving thread the other model then gets its turns.
TEST(OrtBaselineTest, ARunPastItsExecutionTimeoutIsStoppedAndCountedFailed) {
  for (Mode mode : {Mode::kSequential, Mode::kTuned}) {
    SCOPED_TRACE(ModeName(mode));
    std::vector<ModelSpec> models;
    models.push_back(SpinSpec());
    models[0].execution_timeout = 20ms;
    models.push_back(ZooSpec("mobilenetv2", dispatch::ClosedLoop{.concurrency = 1}));
    auto baseline = OrtBaseline::Create(mode, std::move(models), mode == Mode::kSequential ? Threads(1) : BaselineOptions{});
    ASSERT_TRUE(baseline.ok()) << baseline.status();
    auto r = (*baseline)->RunFor(300ms, 0ms, 1);
    ASSERT_TRUE(r.ok()) << r.status();
    const ModelResult& spin = r->models[0];
    EXPECT_EQ(spin.completed, 0u);
    EXPECT_GE(spin.failed, 2u) << "each run stopped after about 20 ms, within a 300 ms slice";
    EXPECT_THAT(spin.first_error, HasSubstr("model 'spin': a run took longer than its execution timeout of 20 ms"));
    EXPECT_GT(r->models[1].completed, 0u);
  }
  std::vector<ModelSpec> bad;
  bad.push_back(SpinSpec());
  bad[0].execution_timeout = 0ms;
  auto refused = OrtBaseline::Create(Mode::kTuned, std::move(bad), {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("model 'spin': execution timeout must be > 0"));
}

TEST(OrtBaselineTest, CreateErrorsNameTheProblem) {
  auto none = OrtBaseline::Create(Mode::kSequential, {}, {});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("no models"));

  {
    std::vector<ModelSpec> models;
    models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{}));
    models[0].samples.clear();
    auto r = OrtBaseline::Create(Mode::kConcurrent, std::move(models), {});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("model 'lstm_small'"));
    EXPECT_THAT(r.status().message(), HasSubstr("samples"));
  }
  for (Mode mode : {Mode::kSequential, Mode::kConcurrent}) {
    std::vector<ModelSpec> models;
    models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{}));
    models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{}));
    models[1].name = "garbage.onnx";
    models[1].onnx_bytes = "this is not an onnx model";
    auto r = OrtBaseline::Create(mode, std::move(models), {});
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr("garbage.onnx"));
  }
  {
    std::vector<ModelSpec> models;
    models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{}));
    models[0].samples[0][0].first = "not_an_input";
    auto r = OrtBaseline::Create(Mode::kSequential, std::move(models), {});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("does not feed input"));
  }
  {
    std::vector<ModelSpec> models;
    models.push_back(ZooSpec("lstm", dispatch::Periodic{.period = Duration(0)}));
    auto r = OrtBaseline::Create(Mode::kSequential, std::move(models), {});
    EXPECT_THAT(r.status().message(), HasSubstr("period > 0"));
  }
  for (BaselineOptions bad : {Threads(0), Threads(2, {0})}) {
    std::vector<ModelSpec> models;
    models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{}));
    auto r = OrtBaseline::Create(Mode::kSequential, std::move(models), bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("ort_sequential"));
  }
}

// Runs under ThreadSanitizer in CI (1-thread sessions only; scripts/test.sh).
TEST(OrtBaselineTest, TunedRunsOneThreadPerRequestInFlight) { ExpectOneThreadPerRequestInFlight(Mode::kTuned); }

TEST(OrtBaselineTest, GlobalPoolNeedsAConfiguredPool) {
  auto r = OrtBaseline::Create(Mode::kGlobalPool, TwoClosedLoopModels(), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("ConfigureGlobalThreadPool"));
}

TEST(OrtBaselineTest, PinnedAndThreadLimitErrorsNameTheProblem) {
  {
    BaselineOptions options;  // no PUs
    auto r = OrtBaseline::Create(Mode::kPinned, TwoClosedLoopModels(), options);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("no PUs"));
  }
  {
    BaselineOptions options = AnyModeOptions(2);
    options.pu_of_model = {0};
    auto r = OrtBaseline::Create(Mode::kPinned, TwoClosedLoopModels(), options);
    EXPECT_THAT(r.status().message(), HasSubstr("1 PU assignments for 2 models"));
  }
  {
    BaselineOptions options = AnyModeOptions(2);
    options.pu_of_model = {0, 7};
    auto r = OrtBaseline::Create(Mode::kPinned, TwoClosedLoopModels(), options);
    EXPECT_THAT(r.status().message(), HasSubstr("model 'lstm_small' is assigned to PU 7 of 2"));
  }
  {
    BaselineOptions options = AnyModeOptions(2);
    options.pus[1] = PinnedPu{2, {0}};  // 2 threads, 1 core
    auto r = OrtBaseline::Create(Mode::kPinned, TwoClosedLoopModels(), options);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("ort_pinned"));
  }
  {
    std::vector<ModelSpec> many;
    many.push_back(ZooSpec("lstm", dispatch::ClosedLoop{.concurrency = 1000000}));
    auto r = OrtBaseline::Create(Mode::kTuned, std::move(many), {});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("1000000 requests in flight"));
    EXPECT_THAT(r.status().message(), HasSubstr("at most 256"));
  }
}

TEST(OrtBaselineTest, RunForRejectsBadDurations) {
  std::vector<ModelSpec> models;
  models.push_back(ZooSpec("lstm", dispatch::ClosedLoop{}));
  auto baseline = OrtBaseline::Create(Mode::kSequential, std::move(models), {});
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  EXPECT_EQ((*baseline)->RunFor(0ms, 0ms, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*baseline)->RunFor(10ms, -1ms, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace baton::baseline
