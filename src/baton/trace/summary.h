// Latency summaries: percentiles by the nearest-rank rule (p-th percentile =
// the smallest sample with at least p % of the samples at or below it), so a
// reported p99 is always a latency that was actually measured.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
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

// Nearest-rank percentile of sorted `samples` (non-empty), p in (0, 100].
Duration Percentile(const std::vector<Duration>& sorted, double p);

}  // namespace baton::trace
