// Latency summaries: percentiles by the nearest-rank rule (p-th percentile =
// the smallest sample with at least p % of the samples at or below it), so a
// reported p99 is always a latency that was actually measured.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "baton/core/time.h"

namespace baton::trace {

struct LatencySummary {
  uint64_t count = 0;
  double mean_ms = 0;
  double p50_ms = 0;
  double p95_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// All zero for no samples. Sorts a copy.
LatencySummary Summarize(std::vector<Duration> samples);

// Service-level objective accounting over a measured window.
struct SloSummary {
  uint64_t answered = 0;  // requests answered in the window, OK or not
  uint64_t within = 0;    // answered OK within the SLO (every OK answer when there is no SLO)
  double goodput_rps = 0;  // within / measured seconds
  double attainment = 0;   // within / answered; 0 when nothing was answered
};
// `latencies`: of the requests answered OK; `answered` >= latencies.size()
// counts the failed, rejected and dropped answers too, which never meet an
// SLO. `slo` none = best effort. `measured` <= 0 gives goodput 0.
SloSummary SummarizeSlo(const std::vector<Duration>& latencies, uint64_t answered, std::optional<Duration> slo,
                        Duration measured);
// Adds b into a (answered, within, goodput); attainment is recomputed.
SloSummary operator+(const SloSummary& a, const SloSummary& b);

// Nearest-rank percentile of sorted `samples` (non-empty), p in (0, 100].
Duration Percentile(const std::vector<Duration>& sorted, double p);

}  // namespace baton::trace
