#include "baton/profile/problem.h"

#include <algorithm>

namespace baton::profile {

std::optional<double> Problem::RangeMs(int m, int first, int last, int u) const {
  const ProblemModel& model = models.at(static_cast<size_t>(m));
  if (auto it = model.range_ms.find({first, last}); it != model.range_ms.end()) {
    const std::optional<double>& t = it->second.at(static_cast<size_t>(u));
    if (!t) return std::nullopt;
    return *t + dispatch_ms;
  }
  double sum = 0;
  for (int i = first; i < last; ++i) {
    const std::optional<double>& t = model.atom_ms.at(static_cast<size_t>(i)).at(static_cast<size_t>(u));
    if (!t) return std::nullopt;
    sum += *t;
  }
  // Each atom's time holds one partition overhead; the range pays it once.
  const double merged = sum - partition_overhead_ms * (last - first - 1);
  return std::max(merged, 1e-6) + dispatch_ms;
}

double Problem::TransferMs(int u, int v, int64_t bytes) const {
  if (u == v) return 0;
  const bool same = pus.at(static_cast<size_t>(u)).device == pus.at(static_cast<size_t>(v)).device;
  return (same ? same_device : cross_device).Ms(bytes);
}

Problem Problem::Scaled(const std::vector<double>& speed) const {
  Problem out = *this;
  auto scale = [&](PuCosts& costs) {
    for (size_t u = 0; u < costs.size() && u < speed.size(); ++u) {
      if (costs[u]) *costs[u] *= speed[u];
    }
  };
  for (ProblemModel& m : out.models) {
    for (PuCosts& c : m.atom_ms) scale(c);
    for (auto& [range, c] : m.range_ms) scale(c);
  }
  double mean = 0;
  for (double k : speed) mean += k / static_cast<double>(speed.size());
  if (!speed.empty()) out.partition_overhead_ms *= mean;
  return out;
}

Problem Subadditive(const Problem& problem) {
  Problem out = problem;
  out.dispatch_ms = 0;  // RangeMs below: times without the hand-over
  for (size_t m = 0; m < out.models.size(); ++m) {
    const int n = out.models[m].atoms();
    const size_t pus = out.pus.size();
    // best[(first * (n + 1) + last) * pus + u]: the closed time, nullopt where u cannot run it.
    std::vector<std::optional<double>> best(static_cast<size_t>(n + 1) * static_cast<size_t>(n + 1) * pus);
    auto at = [&](int first, int last, size_t u) -> std::optional<double>& {
      return best[(static_cast<size_t>(first) * static_cast<size_t>(n + 1) + static_cast<size_t>(last)) * pus + u];
    };
    for (int len = 1; len <= n; ++len) {
      for (int first = 0; first + len <= n; ++first) {
        const int last = first + len;
        PuCosts lowered(pus);
        bool any = false;
        for (size_t u = 0; u < pus; ++u) {
          const std::optional<double> own = out.RangeMs(static_cast<int>(m), first, last, static_cast<int>(u));
          std::optional<double> t = own;
          for (int mid = first + 1; mid < last && t; ++mid) {
            const std::optional<double>& left = at(first, mid, u);
            const std::optional<double>& right = at(mid, last, u);
            if (left && right) t = std::min(*t, std::max(*left + *right - out.partition_overhead_ms, 1e-6));
          }
          at(first, last, u) = lowered[u] = t;
          any = any || (own && t && *t < *own);
        }
        // Written after the loop: RangeMs reads only this range's own entry.
        if (any) out.models[m].range_ms[{first, last}] = std::move(lowered);
      }
    }
  }
  out.dispatch_ms = problem.dispatch_ms;
  return out;
}

}  // namespace baton::profile
