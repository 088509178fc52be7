#include "baton/profile/problem.h"

#include <algorithm>

namespace baton::profile {

std::optional<double> Problem::RangeMs(int m, int first, int last, int u) const {
  const ProblemModel& model = models.at(static_cast<size_t>(m));
  if (auto it = model.range_ms.find({first, last}); it != model.range_ms.end()) {
    return it->second.at(static_cast<size_t>(u));
  }
  double sum = 0;
  for (int i = first; i < last; ++i) {
    const std::optional<double>& t = model.atom_ms.at(static_cast<size_t>(i)).at(static_cast<size_t>(u));
    if (!t) return std::nullopt;
    sum += *t;
  }
  // Each atom's time holds one partition overhead; the range pays it once.
  const double merged = sum - partition_overhead_ms * (last - first - 1);
  return std::max(merged, 1e-6);
}

double Problem::TransferMs(int u, int v, int64_t bytes) const {
  if (u == v) return 0;
  const bool same = pus.at(static_cast<size_t>(u)).device == pus.at(static_cast<size_t>(v)).device;
  return (same ? same_device : cross_device).Ms(bytes);
}

}  // namespace baton::profile
