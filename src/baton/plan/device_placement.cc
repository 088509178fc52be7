#include "baton/plan/device_placement.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_format.h"

namespace baton::plan {

DevicePlacement PlaceModelsOnDevices(std::span<const PlacementModel> models, std::span<const PlacementDevice> devices) {
  DevicePlacement out;
  out.device_of.assign(models.size(), DeviceId(0));
  out.compute_ms.assign(models.size(), 0);
  out.transfer_ms.assign(models.size(), 0);
  out.explain.assign(models.size(), "");
  if (devices.empty()) return out;
  auto compute = [&](size_t m, size_t d) {
    return devices[d].capacity > 0 ? models[m].one_thread_ms / devices[d].capacity : 0.0;
  };
  auto transfer = [&](size_t m, size_t d) {
    const std::optional<PlacementLink>& link = devices[d].link;
    if (!link) return 0.0;
    return 2 * link->latency_ms + models[m].io_bytes * 8.0 / (std::max(link->mbps, 1e-6) * 1e3);
  };
  std::vector<size_t> order(models.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return models[a].one_thread_ms > models[b].one_thread_ms; });
  std::vector<double> compute_load(devices.size(), 0), link_load(devices.size(), 0);
  for (size_t m : order) {
    std::optional<size_t> best;
    double best_score = 0;
    for (size_t d = 0; d < devices.size(); ++d) {
      const bool can = devices[d].capacity > 0 && d < models[m].can_run_on.size() && models[m].can_run_on[d];
      if (!can) continue;
      const double score = std::max(compute_load[d] + compute(m, d), link_load[d] + transfer(m, d));
      if (!best || score < best_score - 1e-9) {
        best = d;
        best_score = score;
      }
    }
    const size_t d = best.value_or(m % devices.size());
    out.device_of[m] = DeviceId(static_cast<uint32_t>(d));
    out.compute_ms[m] = compute(m, d);
    out.transfer_ms[m] = transfer(m, d);
    compute_load[d] += out.compute_ms[m];
    link_load[d] += out.transfer_ms[m];
    out.explain[m] = absl::StrFormat("%s -> %s (compute %.2f ms, transfer %.2f ms)%s", models[m].name,
                                     devices[d].name, out.compute_ms[m], out.transfer_ms[m],
                                     best ? "" : "; no device can run every node");
  }
  return out;
}

}  // namespace baton::plan
