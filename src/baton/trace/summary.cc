#include "baton/trace/summary.h"

#include <algorithm>
#include <cmath>

namespace baton::trace {

Duration Percentile(const std::vector<Duration>& sorted, double p) {
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = rank < 1 ? 0 : std::min(sorted.size(), static_cast<size_t>(rank)) - 1;
  return sorted[index];
}

LatencySummary Summarize(std::vector<Duration> samples) {
  LatencySummary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = samples.size();
  double total = 0;
  for (Duration d : samples) total += ToMillis(d);
  s.mean_ms = total / static_cast<double>(samples.size());
  s.p50_ms = ToMillis(Percentile(samples, 50));
  s.p95_ms = ToMillis(Percentile(samples, 95));
  s.p99_ms = ToMillis(Percentile(samples, 99));
  s.max_ms = ToMillis(samples.back());
  return s;
}

}  // namespace baton::trace
