#include "baton/trace/summary.h"

#include <chrono>
#include <optional>
#include <vector>

#include "baton/core/process.h"
#include "gtest/gtest.h"

namespace baton::trace {
namespace {

using namespace std::chrono_literals;

TEST(SummaryTest, PercentilesAreMeasuredSamples) {
  const LatencySummary s = Summarize({4ms, 1ms, 3ms, 2ms});
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.p50_ms, 2.0);
  EXPECT_DOUBLE_EQ(s.p99_ms, 4.0);
  EXPECT_DOUBLE_EQ(s.mean_ms, 2.5);
  EXPECT_EQ(Summarize({}).count, 0u);
}

TEST(SloTest, GoodputCountsAnswersWithinTheSloPerMeasuredSecond) {
  // 4 OK answers (10, 20, 30, 40 ms), 2 more answered with an error; SLO 25 ms; 2 s.
  const SloSummary s = SummarizeSlo({10ms, 20ms, 30ms, 40ms}, 6, Duration(25ms), 2s);
  EXPECT_EQ(s.answered, 6u);
  EXPECT_EQ(s.within, 2u);
  EXPECT_DOUBLE_EQ(s.goodput_rps, 1.0);
  EXPECT_DOUBLE_EQ(s.attainment, 2.0 / 6.0);
  // The SLO bound is inclusive.
  EXPECT_EQ(SummarizeSlo({25ms}, 1, Duration(25ms), 1s).within, 1u);
}

TEST(SloTest, WithoutAnSloEveryOkAnswerCounts) {
  const SloSummary s = SummarizeSlo({10ms, 500ms}, 3, std::nullopt, 1s);
  EXPECT_EQ(s.within, 2u);
  EXPECT_DOUBLE_EQ(s.goodput_rps, 2.0);
  EXPECT_DOUBLE_EQ(s.attainment, 2.0 / 3.0);
}

TEST(SloTest, EdgeCases) {
  const SloSummary none = SummarizeSlo({}, 0, Duration(1ms), 1s);
  EXPECT_EQ(none.answered, 0u);
  EXPECT_DOUBLE_EQ(none.attainment, 0.0);
  // `answered` below the OK count is raised to it; no measured time, no goodput.
  const SloSummary s = SummarizeSlo({1ms, 2ms}, 0, std::nullopt, Duration::zero());
  EXPECT_EQ(s.answered, 2u);
  EXPECT_DOUBLE_EQ(s.goodput_rps, 0.0);
  EXPECT_DOUBLE_EQ(s.attainment, 1.0);
}

TEST(SloTest, SumsAddUpAndRecomputeAttainment) {
  const SloSummary a = SummarizeSlo({1ms, 2ms}, 2, std::nullopt, 1s);
  const SloSummary b = SummarizeSlo({50ms, 60ms}, 4, Duration(10ms), 1s);
  const SloSummary sum = a + b;
  EXPECT_EQ(sum.answered, 6u);
  EXPECT_EQ(sum.within, 2u);
  EXPECT_DOUBLE_EQ(sum.goodput_rps, 2.0);
  EXPECT_DOUBLE_EQ(sum.attainment, 2.0 / 6.0);
}

TEST(ProcessTest, PeakRssIsReportedOnLinux) {
  const std::optional<double> mb = PeakRssMb();
  ASSERT_TRUE(mb.has_value());
  EXPECT_GT(*mb, 0.0);
}

}  // namespace
}  // namespace baton::trace
