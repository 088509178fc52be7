// `baton run [CONFIG.yaml] [--json FILE] [--trace FILE] [--verify] ...`: runs
// many models at once on the configured PUs with baton's dispatcher, and, in
// the same invocation and interleaved, the plain-ONNX-Runtime baselines (and
// "each model whole on one PU" when some PU is not a CPU); prints throughput,
// latency percentiles, deadline misses, rejections, PU utilisation and the
// speed-ups. Without CONFIG it runs the embedded default workload.
// Exit status: 0 done, 1 a request failed or --verify found a mismatch,
// 2 usage, config or setup errors.
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "baton/config/run_config.h"
#include "baton/core/file.h"
#include "baton/serve/auth.h"
#include "baton/serve/grpc_client.h"
#include "baton/policy/policy.h"
#include "baton/harness/report_json.h"
#include "baton/trace/summary.h"
#include "commands.h"
#include "validators.h"
#include "library.h"
#include "format.h"

namespace baton::cli {

namespace {

struct RunArgs {
  std::string config;
  std::string json;
  std::string trace;
  bool verify = false;
  double duration_s = 0;  // 0 = from the config
  double warmup_s = -1;   // < 0 = from the config
  int slices = 0;
  bool no_baselines = false;
  std::vector<std::string> baselines;  // --baselines LIST
  bool no_baton = false;
  std::string high_level;
  std::string low_level;
  int stages = -1;
  bool print_config = false;
  bool quiet = false;
  std::string cache_dir;
  std::string plan;
  std::string profile;
  bool no_profile = false;
  std::string server;      // --server HOST:PORT: a running `baton serve` takes the workload
  std::string token_file;  // its bearer token
  std::string tls_ca;      // its CA, for TLS
  std::string shared_memory = "none";  // "system": inputs through client shared memory
  bool streaming = false;              // every call on one ModelStreamInfer stream
};

void PrintTable(const std::vector<std::vector<std::string>>& rows, const std::string& indent = "  ") {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line = indent;
    for (size_t c = 0; c < rows[r].size(); ++c) {
      // First column left-aligned, numbers right-aligned.
      const std::string& cell = rows[r][c];
      const std::string pad(width[c] - cell.size(), ' ');
      line += c == 0 ? cell + pad : pad + cell;
      if (c + 1 < rows[r].size()) line += "  ";
    }
    std::cout << line << "\n";
  }
}

std::string F1(double v) { return absl::StrFormat("%.1f", v); }
std::string F2(double v) { return absl::StrFormat("%.2f", v); }

double Seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

std::string Percent(double fraction) { return absl::StrFormat("%.1f", 100.0 * fraction); }

void PrintReport(const RunReport& r) {
  const config::RunConfig& c = r.config;
  std::vector<std::string> pus;
  for (const auto& d : c.devices) {
    for (const auto& p : d.pus) pus.push_back(absl::StrCat(p.name, "(", p.kind, ")"));
  }
  if (!r.server.empty()) {
    std::cout << "\nbaton run: " << c.models.size() << " models sent to the server at " << r.server
              << (r.server_shared_memory == "system" ? ", inputs through shared memory" : "")
              << (r.server_streaming ? ", on one stream" : "")
              << " (its own devices, PUs and plan; measured here); " << c.run.duration_s << " s in " << c.run.slices
              << " slices; setup " << F1(Seconds(r.setup)) << " s\n\n";
  } else {
    std::cout << "\nbaton run: " << c.models.size() << " models on " << c.devices.size() << " device(s), "
              << pus.size() << " PUs [" << absl::StrJoin(pus, " ") << "]; policies " << c.policy.high_level << " + "
              << c.policy.low_level << "; " << c.run.duration_s << " s per mode in " << c.run.slices
              << " interleaved slices; setup " << F1(Seconds(r.setup)) << " s, " << r.sessions << " sessions\n\n";
  }
  for (const DeviceOutcome& d : r.devices) {
    if (d.policy_violations > 0) {
      std::cout << "POLICY CONTRACT VIOLATED: the low-level policy '" << c.policy.low_level << "' on device '"
                << d.name << "' made " << d.policy_violations
                << " decisions the dispatcher had to ignore (a bug in the policy; see docs/dispatch.md, "
                << "Policy contract)\n\n";
    }
  }
  if (r.interrupted) {
    std::cout << "INTERRUPTED by a signal after " << r.slices_run << " of " << c.run.slices
              << " slices: the numbers cover what ran (each mode's measured time is its own)\n\n";
  }

  std::vector<std::vector<std::string>> rows = {{"model", "partitions", "params", "GFLOPs", "arrival", "SLO ms"}};
  for (size_t i = 0; i < r.models.size(); ++i) {
    const config::ArrivalConfig& a = c.models[i].arrival;
    std::string arrival = a.mode == config::ArrivalConfig::Mode::kClosed
                              ? absl::StrCat("closed x", a.concurrency,
                                             a.think_ms > 0 ? absl::StrCat(", think ", a.think_ms, " ms") : "")
                          : a.mode == config::ArrivalConfig::Mode::kPeriodic ? absl::StrCat(a.fps, " fps")
                                                                             : absl::StrCat("poisson ", a.rate, "/s");
    if (c.models[i].deadline_ms) absl::StrAppend(&arrival, ", deadline ", *c.models[i].deadline_ms, " ms");
    if (c.models[i].max_batch > 1 && r.models[i].max_batch <= 1 && r.server.empty()) {
      absl::StrAppend(&arrival, ", batching off");
    } else if (c.models[i].max_batch > 1) {
      absl::StrAppend(&arrival, ", batch <= ", r.models[i].max_batch > 1 ? r.models[i].max_batch : c.models[i].max_batch,
                      " within ", c.models[i].max_queue_delay_ms, " ms");
      if (r.models[i].batches > 0) {
        absl::StrAppend(&arrival, absl::StrFormat(" (mean %.2f)", static_cast<double>(r.models[i].batched_requests) /
                                                                     static_cast<double>(r.models[i].batches)));
      }
    }
    rows.push_back({r.models[i].name,
                    r.baton_ran && r.server.empty() ? std::to_string(r.models[i].partitions) : "-",
                    HumanBytes(r.models[i].param_bytes), F2(r.models[i].gflops), arrival,
                    c.models[i].slo_ms ? absl::StrCat(*c.models[i].slo_ms) : "-"});
  }
  PrintTable(rows);

  if (r.baton_ran) {
    std::cout << "\nbaton:\n";
    rows = {{"model", "completed", "req/s", "goodput/s", "SLO %", "p50 ms", "p95 ms", "p99 ms", "missed", "rejected",
             "failed"}};
    for (size_t i = 0; i < r.baton.models.size(); ++i) {
      const ModelOutcome& m = r.baton.models[i];
      const trace::LatencySummary s = trace::Summarize(m.latencies);
      const trace::SloSummary slo = m.Slo(r.baton.measured);
      rows.push_back({m.name, std::to_string(m.completed), F1(r.baton.model_throughput_rps(i)), F1(slo.goodput_rps),
                      Percent(slo.attainment), F2(s.p50_ms), F2(s.p95_ms), F2(s.p99_ms),
                      std::to_string(m.deadline_missed), std::to_string(m.rejected), std::to_string(m.failed)});
    }
    const trace::LatencySummary all = trace::Summarize(r.baton.AllLatencies());
    const trace::SloSummary slo = r.baton.Slo();
    uint64_t missed = 0, rejected = 0, failed = 0;
    for (const ModelOutcome& m : r.baton.models) {
      missed += m.deadline_missed;
      rejected += m.rejected;
      failed += m.failed;
    }
    rows.push_back({"all", std::to_string(r.baton.completed()), F1(r.baton.throughput_rps()), F1(slo.goodput_rps),
                    Percent(slo.attainment), F2(all.p50_ms), F2(all.p95_ms), F2(all.p99_ms), std::to_string(missed),
                    std::to_string(rejected), std::to_string(failed)});
    PrintTable(rows);
    for (const ModelOutcome& m : r.baton.models) {
      if (!m.first_error.empty()) std::cout << "  " << m.name << ": first error: " << m.first_error << "\n";
      if (m.arrivals_missed > 0) {
        std::cout << "  " << m.name << ": the arrival generator missed " << m.arrivals_missed
                  << " arrivals (more than " << ToMillis(kMaxArrivalLag)
                  << " ms late, not sent): this process cannot issue the configured rate\n";
      }
    }

    if (!r.server.empty()) {
      std::cout << "\nPU utilisation: the server's (its /metrics: baton_pu_busy_seconds_total)";
    } else {
      std::cout << "\nPU utilisation (baton):";
    }
    for (const PuOutcome& p : r.baton.pus) {
      std::cout << "  " << p.name << " "
                << F1(100.0 * Seconds(p.busy) / std::max(1e-9, Seconds(r.baton.measured))) << " %";
    }
    std::cout << "\n";
    if (r.devices.size() > 1 || (!r.devices.empty() && !r.devices[0].address.empty())) {
      std::cout << "\ndevice utilisation (baton):";
      for (const DeviceOutcome& d : r.devices) {
        std::cout << "  " << d.name << (d.address.empty() ? "" : absl::StrCat(" @", d.address)) << " "
                  << F1(100.0 * d.utilization) << " %";
        // `returned`: assignments the device handed back (JSON devices[].returned).
        if (d.lost > 0) std::cout << " (lost " << d.lost << "x, " << d.returned << " handed back)";
        if (!d.reachable) std::cout << " [unreachable]";
      }
      std::cout << "\n";
      // The run-wide counts, as in the JSON's reissued and rerouted.
      if (r.reissued > 0 || r.rerouted > 0) {
        std::cout << "  failover: " << r.reissued << " assignments re-issued after their device was lost, "
                  << r.rerouted << " sent to a fallback device\n";
      }
      if (r.withdrawn > 0) {
        std::cout << "  withdrawn: " << r.withdrawn
                  << " assignments whose request was already answered (a sibling failed or the deadline "
                     "passed)\n";
      }
    }
  }
  if (r.abandoned > 0) {
    std::cout << "  " << r.abandoned
              << " requests were still in flight after their window ended (the run waits as long as a window "
                 "lasts, at least 1 s) and were abandoned (counted unfinished)\n";
  }
  if (r.server_streaming && r.server_unary_calls > 0) {
    std::cout << "  " << r.server_unary_calls << " of " << r.server_stream_calls + r.server_unary_calls
              << " calls went as ModelInfer calls, made while no stream was open (after abandoned requests "
                 "cancelled it)\n";
  }

  std::cout << "\ncomparison (same PUs, same time, interleaved):\n";
  rows = {{"mode", "req/s", "goodput/s", "SLO %", "p50 ms", "p99 ms", "baton speed-up", "bound ratio", "kind"}};
  auto mode_row = [&](const ModeOutcome& m) {
    const trace::LatencySummary s = trace::Summarize(m.AllLatencies());
    const trace::SloSummary slo = m.Slo();
    std::string speedup = "-";
    if (r.baton_ran && m.name != "baton" && m.throughput_rps() > 0) {
      speedup = absl::StrFormat("%.2fx", r.baton.throughput_rps() / m.throughput_rps());
    }
    const std::optional<double> ratio = r.BoundRatio(m);
    rows.push_back({m.name, F1(m.throughput_rps()), F1(slo.goodput_rps), Percent(slo.attainment), F2(s.p50_ms),
                    F2(s.p99_ms), speedup, ratio ? F2(*ratio) : "-", ModeLabel(m)});
  };
  if (r.baton_ran) mode_row(r.baton);
  for (const ModeOutcome& b : r.baselines) mode_row(b);
  PrintTable(rows);
  // Per model: a higher total can hide a starved model; these tables show it.
  std::vector<const ModeOutcome*> shown;
  if (r.baton_ran) shown.push_back(&r.baton);
  for (const ModeOutcome& b : r.baselines) shown.push_back(&b);
  std::vector<std::string> header = {"model"};
  for (const ModeOutcome* m : shown) header.push_back(m->name);
  std::cout << "\n  req/s per model:\n";
  rows = {header};
  for (size_t i = 0; i < c.models.size(); ++i) {
    std::vector<std::string> row = {c.models[i].name};
    for (const ModeOutcome* m : shown) row.push_back(F1(m->model_throughput_rps(i)));
    rows.push_back(std::move(row));
  }
  PrintTable(rows, "    ");
  std::cout << "\n  p99 ms / SLO % per model:\n";
  rows = {header};
  for (size_t i = 0; i < c.models.size(); ++i) {
    std::vector<std::string> row = {c.models[i].name};
    for (const ModeOutcome* m : shown) {
      const trace::LatencySummary s = trace::Summarize(m->models[i].latencies);
      row.push_back(c.models[i].slo_ms
                        ? absl::StrCat(F2(s.p99_ms), " / ", Percent(m->models[i].Slo(m->measured).attainment))
                        : absl::StrCat(F2(s.p99_ms), " / -"));
    }
    rows.push_back(std::move(row));
  }
  PrintTable(rows, "    ");
  for (const ModeOutcome& b : r.baselines) {
    if (!b.note.empty()) std::cout << "  " << b.name << ": " << b.note << "\n";
    for (const ModelOutcome& m : b.models) {
      if (m.failed > 0) {
        std::cout << "  " << b.name << ": " << m.name << ": " << m.failed << " requests failed; first error: "
                  << m.first_error << "\n";
      }
    }
  }
  if (!r.baselines_note.empty()) std::cout << "  note: " << r.baselines_note << "\n";
  if (r.baton_ran) {
    if (const ModeOutcome* best = r.BestBaseline(); best != nullptr && best->throughput_rps() > 0) {
      std::cout << "\nspeed-up vs best baseline (" << best->name << ", " << ModeLabel(*best)
                << "): " << absl::StrFormat("%.2fx", r.baton.throughput_rps() / best->throughput_rps()) << "\n";
    }
    if (const ModeOutcome* best = r.BestGoodputBaseline(); best != nullptr && best->Slo().goodput_rps > 0) {
      std::cout << "goodput vs best baseline (" << best->name << "): "
                << absl::StrFormat("%.2fx", r.baton.Slo().goodput_rps / best->Slo().goodput_rps) << "\n";
    }
  }
  if (r.bound) {
    std::vector<std::string> speeds;
    for (const auto& [pu, k] : r.pu_speed) speeds.push_back(absl::StrFormat("%s x%.2f", pu, k));
    std::cout << absl::StrFormat("bound: %.1f req/s, from profile %s (%.1f req/s as profiled)", r.bound->throughput_rps,
                                 r.bound_source, r.profile_bound ? r.profile_bound->throughput_rps : 0);
    if (r.probes > 0) {
      std::cout << absl::StrFormat(" scaled by the fastest of %d speed probes (%s)", r.probes,
                                   absl::StrJoin(speeds, ", "));
    }
    if (r.baton_ran) {
      std::cout << absl::StrFormat("; baton reached %.2f of it", r.BoundRatio(r.baton).value_or(0));
    }
    if (!r.plan_policy.empty() && r.predicted_rps > 0 && r.baton_ran) {
      std::cout << absl::StrFormat("; plan (%s) predicted %.1f req/s, measured/predicted %.2f", r.plan_policy,
                                   r.predicted_rps, r.baton.throughput_rps() / r.predicted_rps);
    }
    std::cout << "\n";
    for (const profile::BoundViolation& v : r.bound_violations) {
      std::cout << absl::StrFormat(
          "BOUND VIOLATED: %s did %.1f req/s, above the bound of %.1f req/s (the profile or the probes "
          "under-state what these PUs can do; see docs/planning.md)\n",
          v.mode, v.throughput_rps, v.bound_rps);
    }
  }
  if (r.peak_rss_mb) std::cout << absl::StrFormat("peak RSS: %.0f MB\n", *r.peak_rss_mb);
  if (r.verified > 0 || r.mismatches > 0) {
    std::cout << "verify: " << r.verified << " outputs checked against whole-model ONNX Runtime, " << r.mismatches
              << " mismatches\n";
    if (!r.first_mismatch.empty()) std::cout << "  first mismatch: " << r.first_mismatch << "\n";
  }
}

int Run(const RunArgs& args) {
  StopOnSignal stop_signal;  // before any thread starts
  absl::StatusOr<config::RunConfig> loaded =
      args.config.empty()
          ? absl::StatusOr<config::RunConfig>(
                config::DefaultRunConfig(static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))))
          : config::LoadRunConfig(args.config);
  if (!loaded.ok()) {
    std::cerr << "baton run: " << loaded.status().message() << "\n";
    return 2;
  }
  config::RunConfig config = std::move(*loaded);
  if (args.duration_s > 0) config.run.duration_s = args.duration_s;
  if (args.warmup_s >= 0) config.run.warmup_s = args.warmup_s;
  if (args.slices > 0) config.run.slices = args.slices;
  if (!args.baselines.empty()) {
    const bool special = std::any_of(args.baselines.begin(), args.baselines.end(),
                                     [](const std::string& n) { return n == "all" || n == "none"; });
    if (special && args.baselines.size() > 1) {
      std::cerr << "baton run: --baselines " << absl::StrJoin(args.baselines, ",")
                << ": 'all' and 'none' stand alone; give one of them, or a list of baselines\n";
      return 2;
    }
    config.run.baselines = true;
    config.run.baseline_modes.clear();
    for (const std::string& name : args.baselines) {
      if (name == "none") config.run.baselines = false;
      if (name != "all" && name != "none") config.run.baseline_modes.push_back(name);
    }
  }
  if (args.no_baselines) config.run.baselines = false;
  if (!args.high_level.empty()) config.policy.high_level = args.high_level;
  if (!args.low_level.empty()) config.policy.low_level = args.low_level;
  if (args.stages >= 0) config.policy.stages = args.stages;
  if (absl::Status s = config::Validate(config); !s.ok()) {
    std::cerr << "baton run: " << s.message() << "\n";
    return 2;
  }
  if (args.print_config) {
    std::cout << config::ToYaml(config);
    return 0;
  }

  RunOptions options;
  options.verify = args.verify;
  options.trace_path = args.trace;
  options.cache_dir = args.cache_dir;
  options.plan_path = args.plan;
  options.profile_path = args.profile;
  options.no_profile = args.no_profile;
  options.no_baton = args.no_baton;
  options.progress = StderrProgress(args.quiet);
  options.profile_progress = ProfileBar(args.quiet);
  options.interrupt = stop_signal.stop();
  absl::StatusOr<RunReport> report = absl::UnknownError("not run");
  if (args.server.empty()) {
    if (!args.token_file.empty() || !args.tls_ca.empty() || args.shared_memory != "none" || args.streaming) {
      std::cerr << "baton run: --token-file, --tls-ca, --shared-memory and --streaming are for --server; give --server "
                   "HOST:PORT or drop them\n";
      return 2;
    }
    report = RunSession(config, options);
  } else {
    serve::GrpcClientOptions client_options;
    client_options.tls_ca = args.tls_ca;
    client_options.shared_memory = args.shared_memory == "system";
    client_options.stream = args.streaming;
    if (!args.token_file.empty()) {
      absl::StatusOr<std::string> token = serve::ReadTokenFile(args.token_file);
      if (!token.ok()) {
        std::cerr << "baton run: " << token.status().message() << "\n";
        return 2;
      }
      client_options.token = *std::move(token);
    }
    absl::StatusOr<std::unique_ptr<serve::GrpcClient>> client = serve::GrpcClient::Connect(args.server, client_options);
    absl::Status checked = client.ok() ? absl::OkStatus() : client.status();
    if (checked.ok()) {
      std::vector<std::string> names;
      for (const config::ModelConfig& m : config.models) names.push_back(m.name);
      checked = (*client)->CheckModels(names);
    }
    if (!checked.ok()) {
      std::cerr << "baton run: " << checked.message() << "\n";
      return 2;
    }
    harness::ServerTarget target;
    target.address = args.server;
    target.shared_memory = args.shared_memory;
    target.streaming = args.streaming;
    target.infer = [c = client->get()](const std::string& model, Tensors inputs, const InferOptions& o,
                                       std::function<void(Result<Tensors>)> done) {
      c->InferAsync(model, std::move(inputs), o, std::move(done));
    };
    target.cancel_all = [c = client->get()] { c->CancelAll(); };
    target.call_counts = [c = client->get()] {
      const serve::GrpcClient::Counts n = c->counts();
      return std::pair(n.stream_calls, n.unary_calls);
    };
    report = harness::RunAgainstServer(config, options, target);
  }
  if (!report.ok()) {
    std::cerr << "baton run: " << report.status().message() << "\n";
    // A signal during set-up ends it at its next step, with nothing to report.
    if (stop_signal.signal() != 0 && report.status().code() == absl::StatusCode::kCancelled) {
      return 128 + stop_signal.signal();
    }
    return 2;
  }
  PrintReport(*report);
  if (!args.json.empty()) {
    std::ofstream out(args.json, std::ios::trunc);
    out << harness::RunReportJson(*report) << "\n";
    if (!out) {
      std::cerr << "baton run: cannot write '" << args.json << "'; check the folder exists and is writable\n";
      return 2;
    }
  }
  // Interrupted: the report and files are written; the exit status says why it stopped.
  if (report->interrupted) return 128 + stop_signal.signal();
  uint64_t failed = 0;
  for (const ModelOutcome& m : report->baton.models) failed += m.failed;
  if (report->mismatches > 0 || failed > 0) return 1;
  return 0;
}

}  // namespace

void AddRunCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Run many models at once on the configured PUs and compare with plain ONNX Runtime.\n"
      "Without CONFIG: the embedded default (4 zoo models in closed loop, one 1-thread CPU PU per core).\n"
      "baton and the baselines run interleaved, on the same PUs, for the same time:\n"
      "  ort_tuned        a session per model with 1 intra-op thread, spinning off, a thread per request in flight\n"
      "  ort_pinned       each model whole on one CPU PU (best static assignment), a pinned thread per PU\n"
      "  ort_global_pool  one global intra-op pool over the CPU PUs' cores, a thread per request in flight\n"
      "  ort_sequential   (ORT defaults) one session per model over all the CPU cores, one request at a time\n"
      "  ort_concurrent   (ORT defaults) one thread and one default-threaded session per model\n"
      "  whole_on_one_pu  (configs with non-CPU PUs) each model whole on one PU, best static assignment\n"
      "Settings of each: docs/benchmarks.md. The bound comes from the profile and speed probes taken\n"
      "between slices, never from the modes' own run times (docs/planning.md).\n"
      "Exit status: 0 done, 1 a request failed or --verify found a mismatch, 2 usage/config/setup error,\n"
      "128 + the signal when SIGINT/SIGTERM stopped it (during set-up: at its next step, with no report).\n"
      "Config reference: docs/config.md.");
  cmd->add_option("CONFIG", args->config, "YAML run configuration (default: the embedded workload)");
  cmd->add_option("--json", args->json, "Write the results as JSON to this file");
  cmd->add_option("--trace", args->trace, "Write a Chrome/Perfetto trace of baton's PU runs to this file");
  cmd->add_flag("--verify", args->verify, "Check every completed request's outputs against whole-model ORT");
  cmd->add_option("--duration", args->duration_s, "Measured seconds per mode (overrides run.duration_s)")
      ->check(kPositive);
  cmd->add_option("--warmup", args->warmup_s, "Warm-up seconds (overrides run.warmup_s)")
      ->check(kNonNegative);
  cmd->add_option("--slices", args->slices, "Interleaved slices per mode (overrides run.slices)")
      ->check(IntIn(1, 1000));
  cmd->add_flag("--no-baselines", args->no_baselines, "Run baton only");
  cmd->add_option("--baselines", args->baselines,
                  absl::StrCat("Baselines to run, comma-separated, or all / none (overrides run.baselines; default: "
                               "all that apply): ",
                               absl::StrJoin(config::BaselineNames(), ", ")))
      ->delimiter(',');
  cmd->add_flag("--no-baton", args->no_baton,
                "Run only the baselines (baton's sessions are never made), e.g. to measure one baseline's memory");
  cmd->add_option("--high-level", args->high_level, "High-level policy: whole, capability, balanced, lp, search");
  cmd->add_option("--low-level", args->low_level,
                  absl::StrCat("Low-level policy: ", absl::StrJoin(policy::LowLevelPolicyNames(), ", ")));
  cmd->add_option("--stages", args->stages, "Partitions per model for balanced (0 = number of PUs)")
      ->check(IntIn(0, 64));
  cmd->add_flag("--print-config", args->print_config, "Print the effective configuration as YAML and exit");
  cmd->add_flag("--quiet", args->quiet, "No progress lines on stderr");
  cmd->add_option("--plan", args->plan, "Carry out this plan (from `baton plan`) instead of planning now");
  cmd->add_option("--profile", args->profile,
                  "Profile for the bounds and the planner (default: the plan's, else one measured on first use and "
                  "cached per config)");
  cmd->add_flag("--no-profile", args->no_profile,
                "No profile and no bounds: plan from estimated costs (high-level whole, capability, balanced)");
  cmd->add_option("--server", args->server,
                  "Send the workload to a running `baton serve` at HOST:PORT (its gRPC endpoint) and report what "
                  "this client measured; no baselines");
  cmd->add_option("--token-file", args->token_file, "With --server: file with the server's bearer token");
  cmd->add_option("--tls-ca", args->tls_ca, "With --server: PEM CA that signed the server's certificate (TLS)");
  cmd->add_option("--shared-memory", args->shared_memory,
                  "With --server: none (inputs in the gRPC messages, the default) or system (inputs through POSIX "
                  "shared memory; the server must run on this machine with --allow-client-shm)")
      ->check(CLI::IsMember({"none", "system"}));
  cmd->add_flag("--streaming", args->streaming,
                "With --server: send every request as a message on one ModelStreamInfer stream instead of a "
                "ModelInfer call of its own");
  cmd->add_option("--cache-dir", args->cache_dir, "Where zoo models are generated (default: $BATON_CACHE_DIR or "
                                                  "~/.cache/baton)");
  cmd->callback([args, exit_code] { *exit_code = Run(*args); });
}

}  // namespace baton::cli
