#include "baton/trace/summary.h"

#include <algorithm>
#include <chrono>
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

SloSummary SummarizeSlo(const std::vector<Duration>& latencies, uint64_t answered, std::optional<Duration> slo,
                        Duration measured) {
  SloSummary s;
  s.answered = std::max<uint64_t>(answered, latencies.size());
  for (Duration d : latencies) s.within += (!slo || d <= *slo) ? 1 : 0;
  const double seconds = std::chrono::duration<double>(measured).count();
  s.goodput_rps = seconds > 0 ? static_cast<double>(s.within) / seconds : 0;
  s.attainment = s.answered > 0 ? static_cast<double>(s.within) / static_cast<double>(s.answered) : 0;
  return s;
}

SloSummary operator+(const SloSummary& a, const SloSummary& b) {
  SloSummary s;
  s.answered = a.answered + b.answered;
  s.within = a.within + b.within;
  s.goodput_rps = a.goodput_rps + b.goodput_rps;
  s.attainment = s.answered > 0 ? static_cast<double>(s.within) / static_cast<double>(s.answered) : 0;
  return s;
}

}  // namespace baton::trace
