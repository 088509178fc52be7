#include "baton/harness/report_json.h"

#include <chrono>
#include <optional>
#include <string>

#include "baton/trace/summary.h"
#include "nlohmann/json.hpp"

namespace baton::harness {

namespace {

double Seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

nlohmann::json LatencyJson(const trace::LatencySummary& s) {
  return {{"p50", s.p50_ms}, {"p95", s.p95_ms}, {"p99", s.p99_ms}, {"mean", s.mean_ms}, {"max", s.max_ms}};
}

nlohmann::json OptionalNumber(std::optional<double> v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }


nlohmann::json ModeJson(const ModeOutcome& mode, const RunReport* report) {
  nlohmann::json models = nlohmann::json::array();
  for (size_t i = 0; i < mode.models.size(); ++i) {
    const ModelOutcome& m = mode.models[i];
    const trace::SloSummary slo = m.Slo(mode.measured);
    nlohmann::json j = {{"name", m.name},
                        {"completed", m.completed},
                        {"throughput_rps", mode.model_throughput_rps(i)},
                        {"latency_ms", LatencyJson(trace::Summarize(m.latencies))},
                        {"slo_ms", OptionalNumber(m.slo_ms)},
                        {"answered", slo.answered},
                        {"goodput_rps", slo.goodput_rps},
                        {"slo_attainment", slo.attainment},
                        {"deadline_missed", m.deadline_missed},
                        {"rejected", m.rejected},
                        {"rejection_latency_ms", LatencyJson(trace::Summarize(m.rejection_latencies))},
                        {"failed", m.failed},
                        {"unfinished", m.unfinished},
                        {"arrivals_missed", m.arrivals_missed}};
    if (!m.first_error.empty()) j["first_error"] = m.first_error;
    if (report != nullptr && i < report->models.size()) {
      j["partitions"] = report->models[i].partitions;
      const config::ModelConfig& mc = report->config.models[i];
      if (mc.max_batch > 1) {
        const ModelPlanInfo& info = report->models[i];
        j["batching"] = {{"max_batch", mc.max_batch},
                         {"max_queue_delay_ms", mc.max_queue_delay_ms},
                         {"mode", mc.batching},
                         {"batch", info.max_batch},
                         {"per_request_ratio", info.batch_per_request_ratio},
                         {"reason", info.batching_reason},
                         {"batches", info.batches},
                         {"mean_batch", info.batches > 0 ? static_cast<double>(info.batched_requests) /
                                                               static_cast<double>(info.batches)
                                                         : 0.0}};
      }
      j["device"] = report->models[i].device;
      j["priority"] = report->models[i].priority;
      nlohmann::json placement = nlohmann::json::array();
      for (const PlacedPartition& p : report->models[i].placement) {
        nlohmann::json q = {{"nodes", p.nodes}, {"pus", p.pus}};
        if (!p.runs.empty()) q["runs"] = p.runs;
        placement.push_back(std::move(q));
      }
      j["placement"] = std::move(placement);
    }
    models.push_back(std::move(j));
  }
  const trace::SloSummary slo = mode.Slo();
  nlohmann::json j = {{"throughput_rps", mode.throughput_rps()},
                      {"completed", mode.completed()},
                      {"goodput_rps", slo.goodput_rps},
                      {"slo_attainment", slo.attainment},
                      {"measured_s", Seconds(mode.measured)},
                      {"latency_ms", LatencyJson(trace::Summarize(mode.AllLatencies()))},
                      {"models", std::move(models)}};
  if (!mode.pus.empty()) {
    nlohmann::json pus = nlohmann::json::array();
    for (const PuOutcome& p : mode.pus) {
      pus.push_back({{"name", p.name},
                     {"kind", p.kind},
                     {"device", p.device},
                     {"runs", p.runs},
                     {"utilization", Seconds(mode.measured) > 0 ? Seconds(p.busy) / Seconds(mode.measured) : 0},
                     {"busy_s", Seconds(p.busy)},
                     {"run_cpu_s", Seconds(p.run_cpu)}});
    }
    j["pus"] = std::move(pus);
  }
  if (mode.process_cpu > Duration(0)) {
    j["process_cpu_s"] = Seconds(mode.process_cpu);
    j["process_cpu_ms_per_request"] =
        mode.completed() > 0 ? 1000.0 * Seconds(mode.process_cpu) / static_cast<double>(mode.completed()) : 0.0;
  }
  if (!mode.note.empty()) j["note"] = mode.note;
  return j;
}

nlohmann::json ReportObject(const RunReport& r) {
  nlohmann::json j = r.baton_ran ? ModeJson(r.baton, &r) : nlohmann::json::object();
  j["baton_ran"] = r.baton_ran;
  j["server"] = r.server.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.server);
  j["server_shared_memory"] = r.server.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.server_shared_memory);
  j["server_streaming"] = r.server.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.server_streaming);
  // With --streaming: how the calls went (warm-up included); null otherwise.
  j["server_stream_calls"] = r.server_streaming ? nlohmann::json(r.server_stream_calls) : nlohmann::json(nullptr);
  j["server_unary_calls"] = r.server_streaming ? nlohmann::json(r.server_unary_calls) : nlohmann::json(nullptr);
  nlohmann::json baselines = nlohmann::json::object();
  for (const ModeOutcome& b : r.baselines) {
    nlohmann::json bj = ModeJson(b, nullptr);
    bj["label"] = ModeLabel(b);
    bj["bound_ratio"] = OptionalNumber(r.BoundRatio(b));
    baselines[b.name] = std::move(bj);
  }
  j["baselines"] = std::move(baselines);
  const ModeOutcome* best = r.BestBaseline();
  j["best_baseline"] = best != nullptr ? nlohmann::json(best->name) : nlohmann::json(nullptr);
  if (r.baton_ran && best != nullptr && best->throughput_rps() > 0) {
    j["speedup_vs_best_baseline"] = r.baton.throughput_rps() / best->throughput_rps();
  } else {
    j["speedup_vs_best_baseline"] = nullptr;
  }
  const ModeOutcome* best_goodput = r.BestGoodputBaseline();
  j["best_goodput_baseline"] = best_goodput != nullptr ? nlohmann::json(best_goodput->name) : nlohmann::json(nullptr);
  if (r.baton_ran && best_goodput != nullptr && best_goodput->Slo().goodput_rps > 0) {
    j["goodput_speedup_vs_best_baseline"] = r.baton.Slo().goodput_rps / best_goodput->Slo().goodput_rps;
  } else {
    j["goodput_speedup_vs_best_baseline"] = nullptr;
  }
  if (r.baton_ran) {
    for (const ModeOutcome& b : r.baselines) {
      if (b.throughput_rps() > 0) j["speedup_vs_" + b.name] = r.baton.throughput_rps() / b.throughput_rps();
    }
  }
  if (!r.baselines_note.empty()) j["baselines_note"] = r.baselines_note;
  nlohmann::json devices = nlohmann::json::array();
  for (const DeviceOutcome& d : r.devices) {
    devices.push_back({{"name", d.name},
                       {"address", d.address},
                       {"remote", !d.address.empty()},
                       {"pus", d.pus},
                       {"utilization", d.utilization},
                       {"reachable", d.reachable},
                       {"lost", d.lost},
                       {"returned", d.returned},
                       {"policy_violations", d.policy_violations}});
  }
  j["devices"] = std::move(devices);
  j["reissued"] = r.reissued;
  j["abandoned"] = r.abandoned;
  j["answered_twice"] = r.answered_twice;
  j["interrupted"] = r.interrupted;
  j["slices_run"] = r.slices_run;
  j["rerouted"] = r.rerouted;
  j["withdrawn"] = r.withdrawn;
  j["policy"] = {{"high_level", r.config.policy.high_level},
                 {"low_level", r.config.policy.low_level},
                 {"stages", r.config.policy.stages}};
  j["run"] = {{"duration_s", r.config.run.duration_s},
              {"warmup_s", r.config.run.warmup_s},
              {"slices", r.config.run.slices},
              {"seed", r.config.run.seed}};
  j["verify"] = {{"checked", r.verified}, {"mismatches", r.mismatches}};
  if (!r.first_mismatch.empty()) j["verify"]["first_mismatch"] = r.first_mismatch;
  nlohmann::json violations = nlohmann::json::array();
  for (const profile::BoundViolation& v : r.bound_violations) {
    violations.push_back({{"mode", v.mode}, {"throughput_rps", v.throughput_rps}, {"bound_rps", v.bound_rps}});
  }
  j["bound_violated"] = std::move(violations);
  if (r.bound) {
    nlohmann::json lat = nlohmann::json::object();
    for (size_t i = 0; i < r.bound->latency_ms.size() && i < r.config.models.size(); ++i) {
      lat[r.config.models[i].name] = r.bound->latency_ms[i];
    }
    nlohmann::json speed = nlohmann::json::object();
    for (const auto& [pu, k] : r.pu_speed) speed[pu] = k;
    j["bound"] = {{"throughput_rps", r.bound->throughput_rps},
                  {"latency_ms", lat},
                  {"profile", r.bound_source},
                  {"profile_throughput_rps", r.profile_bound ? r.profile_bound->throughput_rps : 0},
                  {"method", r.probes > 0 ? "profile scaled by the fastest speed probe" : "profile"},
                  {"probes", r.probes},
                  {"pu_speed", speed}};
    j["bound_ratio"] = r.baton_ran ? OptionalNumber(r.BoundRatio(r.baton)) : nlohmann::json(nullptr);
  } else {
    j["bound"] = nullptr;
    j["bound_ratio"] = nullptr;
  }
  if (!r.plan_policy.empty()) {
    j["plan"] = {{"policy", r.plan_policy},
                 {"predicted_throughput_rps", r.predicted_rps},
                 {"profile_predicted_throughput_rps", r.profile_predicted_rps},
                 {"measured_over_predicted",
                  r.predicted_rps > 0 && r.baton_ran ? r.baton.throughput_rps() / r.predicted_rps : 0}};
  }
  j["sessions"] = r.sessions;
  j["setup_s"] = Seconds(r.setup);
  j["peak_rss_mb"] = OptionalNumber(r.peak_rss_mb);
  return j;
}

}  // namespace

std::string ModeLabel(const ModeOutcome& m) {
  if (m.name == "baton") return "";
  return m.ort_defaults ? "ORT defaults" : m.name == "whole_on_one_pu" ? "static placement" : "tuned";
}

std::string RunReportJson(const RunReport& r) {
  // Names are checked to be UTF-8 at load; a stray byte is replaced rather than thrown on.
  return ReportObject(r).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace baton::harness
