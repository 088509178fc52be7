#include "baton/plan/whole_assignment.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace baton::plan {

std::vector<size_t> BestWholeAssignment(const std::vector<std::vector<double>>& latency_ms) {
  const size_t models = latency_ms.size();
  const size_t pus = models ? latency_ms[0].size() : 0;
  if (models == 0 || pus == 0) return std::vector<size_t>(models, 0);
  const double inf = std::numeric_limits<double>::infinity();
  auto score = [&](const std::vector<size_t>& a) {
    std::vector<double> load(pus, 0);
    for (size_t m = 0; m < models; ++m) load[a[m]] += latency_ms[m][a[m]];
    double worst = 0, sum = 0;
    for (double l : load) {
      worst = std::max(worst, l);
      sum += l;
    }
    return std::pair(worst, sum);
  };
  double combos = 1;
  for (size_t m = 0; m < models && combos <= 200000; ++m) combos *= static_cast<double>(pus);
  std::vector<size_t> best(models, 0);
  if (combos <= 200000) {
    std::vector<size_t> a(models, 0);
    std::pair<double, double> best_score{inf, inf};
    while (true) {
      auto s = score(a);
      if (s < best_score) {
        best_score = s;
        best = a;
      }
      size_t k = 0;
      while (k < models && ++a[k] == pus) a[k++] = 0;
      if (k == models) break;
    }
    return best;
  }
  std::vector<size_t> order(models);
  for (size_t m = 0; m < models; ++m) order[m] = m;
  auto fastest = [&](size_t m) { return *std::min_element(latency_ms[m].begin(), latency_ms[m].end()); };
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return fastest(x) > fastest(y); });
  std::vector<double> load(pus, 0);
  for (size_t m : order) {
    size_t pick = 0;
    double pick_load = inf;
    for (size_t u = 0; u < pus; ++u) {
      if (load[u] + latency_ms[m][u] < pick_load) {
        pick_load = load[u] + latency_ms[m][u];
        pick = u;
      }
    }
    best[m] = pick;
    load[pick] = pick_load;
  }
  return best;
}

}  // namespace baton::plan
