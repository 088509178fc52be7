#include "baton/serve/metrics.h"

#include <cstdint>
#include <iterator>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "baton/core/process.h"
#include "baton/serve/shared_memory.h"

namespace baton::serve {

namespace {

// A label value with \, " and newlines escaped.
std::string Label(const std::string& v) {
  return absl::StrReplaceAll(v, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

std::string Num(double v) { return absl::StrFormat("%.9g", v); }

void Header(std::string& out, const char* name, const char* type, const char* help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// A per-model histogram over kLatencyBucketsS; `of` gives a model's cumulative bucket counts and sum.
template <typename Of>
void Histogram(std::string& out, const EngineStats& stats, const std::string& name, const char* help, Of of) {
  Header(out, name.c_str(), "histogram", help);
  for (const ModelStats& m : stats.models) {
    const std::string model = Label(m.name);
    const auto [buckets, sum] = of(m);
    for (size_t b = 0; b < std::size(kLatencyBucketsS) && b < buckets->size(); ++b) {
      absl::StrAppend(&out, name, "_bucket{model=\"", model, "\",le=\"", Num(kLatencyBucketsS[b]), "\"} ",
                      (*buckets)[b], "\n");
    }
    absl::StrAppend(&out, name, "_bucket{model=\"", model, "\",le=\"+Inf\"} ", m.completed, "\n");
    absl::StrAppend(&out, name, "_sum{model=\"", model, "\"} ", Num(sum), "\n");
    absl::StrAppend(&out, name, "_count{model=\"", model, "\"} ", m.completed, "\n");
  }
}

}  // namespace

std::string PrometheusText(const EngineStats& stats, const SharedMemoryRegistry* shm, const HttpStats* http) {
  std::string out;
  Header(out, "baton_inference_requests_total", "counter", "Inference requests answered, by outcome.");
  for (const ModelStats& m : stats.models) {
    const std::string model = Label(m.name);
    const std::pair<const char*, uint64_t> outcomes[] = {{"success", m.completed},
                                                         {"failed", m.failed},
                                                         {"rejected", m.rejected},
                                                         {"deadline_exceeded", m.deadline_exceeded},
                                                         {"cancelled", m.cancelled},
                                                         {"invalid", m.invalid}};
    for (const auto& [status, n] : outcomes) {
      absl::StrAppend(&out, "baton_inference_requests_total{model=\"", model, "\",status=\"", status, "\"} ", n, "\n");
    }
  }
  Header(out, "baton_inference_executions_total", "counter",
         "Model executions answered OK; a batch of the dynamic batcher counts once.");
  for (const ModelStats& m : stats.models) {
    absl::StrAppend(&out, "baton_inference_executions_total{model=\"", Label(m.name), "\"} ", m.executions, "\n");
  }
  Header(out, "baton_inference_slo_met_total", "counter", "Requests answered OK within their SLO.");
  for (const ModelStats& m : stats.models) {
    absl::StrAppend(&out, "baton_inference_slo_met_total{model=\"", Label(m.name), "\"} ", m.slo_met, "\n");
  }
  Header(out, "baton_inference_slo_requests_total", "counter", "Answered requests that had an SLO.");
  for (const ModelStats& m : stats.models) {
    absl::StrAppend(&out, "baton_inference_slo_requests_total{model=\"", Label(m.name), "\"} ", m.with_slo, "\n");
  }
  Histogram(out, stats, "baton_inference_request_duration_seconds",
            "Latency of completed requests, arrival to answer (queueing and compute).",
            [](const ModelStats& m) { return std::make_pair(&m.latency_bucket_counts, m.latency_sum_s); });
  Histogram(out, stats, "baton_inference_queue_duration_seconds",
            "Time completed requests spent not running on a PU: queues, hand-overs, transfers.",
            [](const ModelStats& m) { return std::make_pair(&m.queue_bucket_counts, m.queue_sum_s); });
  Histogram(out, stats, "baton_inference_compute_duration_seconds",
            "Time PUs spent running completed requests' partitions (summed over partitions).",
            [](const ModelStats& m) { return std::make_pair(&m.compute_bucket_counts, m.compute_sum_s); });
  Header(out, "baton_pu_busy_seconds_total", "counter", "Time each processing unit spent running partitions.");
  for (const PuStatsView& p : stats.pus) {
    absl::StrAppend(&out, "baton_pu_busy_seconds_total{pu=\"", Label(p.name), "\",kind=\"", Label(p.kind),
                    "\",device=\"", Label(p.device), "\"} ", Num(p.busy_s), "\n");
  }
  Header(out, "baton_pu_run_cpu_seconds_total", "counter",
         "CPU time of the threads that ran each processing unit's partitions; below busy time when other threads "
         "shared its cores.");
  for (const PuStatsView& p : stats.pus) {
    absl::StrAppend(&out, "baton_pu_run_cpu_seconds_total{pu=\"", Label(p.name), "\",kind=\"", Label(p.kind),
                    "\",device=\"", Label(p.device), "\"} ", Num(p.run_cpu_s), "\n");
  }
  Header(out, "baton_pu_runs_total", "counter", "Partitions each processing unit ran.");
  for (const PuStatsView& p : stats.pus) {
    absl::StrAppend(&out, "baton_pu_runs_total{pu=\"", Label(p.name), "\",kind=\"", Label(p.kind), "\",device=\"",
                    Label(p.device), "\"} ", p.runs, "\n");
  }
  Header(out, "baton_device_queue_depth", "gauge", "Assignments waiting in each local device's ready queue.");
  for (const DeviceStatsView& d : stats.devices) {
    absl::StrAppend(&out, "baton_device_queue_depth{device=\"", Label(d.name), "\"} ", d.queued, "\n");
  }
  Header(out, "baton_device_running", "gauge", "Assignments running on each local device's processing units.");
  for (const DeviceStatsView& d : stats.devices) {
    absl::StrAppend(&out, "baton_device_running{device=\"", Label(d.name), "\"} ", d.running, "\n");
  }
  Header(out, "baton_device_reachable", "gauge", "1 when the device is reachable (always 1 for a local device).");
  for (const DeviceStatsView& d : stats.devices) {
    absl::StrAppend(&out, "baton_device_reachable{device=\"", Label(d.name), "\"} ", d.reachable ? 1 : 0, "\n");
  }
  Header(out, "baton_device_lost_total", "counter", "Times the device was found unreachable (remote devices).");
  for (const DeviceStatsView& d : stats.devices) {
    absl::StrAppend(&out, "baton_device_lost_total{device=\"", Label(d.name), "\"} ", d.lost, "\n");
  }
  Header(out, "baton_device_returned_assignments_total", "counter",
         "Assignments a lost device handed back unanswered, given to other devices (remote devices).");
  for (const DeviceStatsView& d : stats.devices) {
    absl::StrAppend(&out, "baton_device_returned_assignments_total{device=\"", Label(d.name), "\"} ", d.returned,
                    "\n");
  }
  Header(out, "baton_policy_violations_total", "counter",
         "Low-level policy decisions the dispatcher ignored for breaking the policy contract.");
  for (const DeviceStatsView& d : stats.devices) {
    absl::StrAppend(&out, "baton_policy_violations_total{device=\"", Label(d.name), "\"} ", d.policy_violations, "\n");
  }
  Header(out, "baton_requests_in_flight", "gauge", "Requests submitted and not answered yet.");
  absl::StrAppend(&out, "baton_requests_in_flight ", stats.in_flight, "\n");
  Header(out, "baton_uptime_seconds", "gauge", "Seconds since the engine opened.");
  absl::StrAppend(&out, "baton_uptime_seconds ", Num(stats.uptime_s), "\n");
  // The standard process metric (Prometheus client libraries' name): with
  // baton_pu_run_cpu_seconds_total it shows what serving costs beyond the runs.
  if (const std::optional<double> cpu = ProcessCpuSeconds()) {
    Header(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    absl::StrAppend(&out, "process_cpu_seconds_total ", Num(*cpu), "\n");
  }
  if (shm != nullptr) {
    const absl::StatusOr<std::vector<SharedMemoryRegionInfo>> regions = shm->Status("");
    uint64_t bytes = 0;
    for (const SharedMemoryRegionInfo& r : regions.ok() ? *regions : std::vector<SharedMemoryRegionInfo>{}) {
      bytes += r.byte_size;
    }
    Header(out, "baton_shared_memory_regions", "gauge", "Client shared memory regions registered.");
    absl::StrAppend(&out, "baton_shared_memory_regions ", regions.ok() ? regions->size() : 0, "\n");
    Header(out, "baton_shared_memory_bytes", "gauge", "Total size of the registered client shared memory regions.");
    absl::StrAppend(&out, "baton_shared_memory_bytes ", bytes, "\n");
    Header(out, "baton_shared_memory_regions_reclaimed_total", "counter",
           "Client shared memory regions dropped because the client that held their lock had exited.");
    absl::StrAppend(&out, "baton_shared_memory_regions_reclaimed_total ", shm->reclaimed(), "\n");
  }
  if (http != nullptr) {
    Header(out, "baton_http_requests_cut_total", "counter",
           "HTTP requests (or their answers) cut short and their connections closed, by reason: nothing moved for "
           "--timeout-s (idle), not done within --request-timeout-s and the rate allowance (deadline), or a request "
           "head too large (head_too_large).");
    const std::pair<const char*, uint64_t> reasons[] = {
        {"idle", http->cut_idle}, {"deadline", http->cut_deadline}, {"head_too_large", http->cut_head_too_large}};
    for (const auto& [reason, n] : reasons) {
      absl::StrAppend(&out, "baton_http_requests_cut_total{reason=\"", reason, "\"} ", n, "\n");
    }
    Header(out, "baton_http_idle_connections", "gauge",
           "Kept-alive HTTP connections idle between requests and parked off the workers (at most "
           "--max-idle-connections).");
    absl::StrAppend(&out, "baton_http_idle_connections ", http->idle_connections, "\n");
  }
  return out;
}

}  // namespace baton::serve
