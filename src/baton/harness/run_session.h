// One `baton run`: builds executors, partitions and the runtime from a
// RunConfig, then runs baton and the baselines interleaved in slices on the
// same PUs for the same time, and returns what was measured.
//
// Modes (each runs run.duration_s in total, split into run.slices slices that
// alternate between the modes, the order rotating every slice):
//   baton            the configured high- and low-level policies (left out
//                    with RunOptions::no_baton)
//   ort_tuned        plain ONNX Runtime as tuned for many sessions: 1 intra-op
//                    thread per session, spinning off, one OS thread per request
//                    in flight (baseline/ort_baseline.h has every setting)
//   ort_pinned       plain ONNX Runtime, the best static assignment of whole
//                    models to the CPU PUs, one pinned thread per PU
//   ort_global_pool  plain ONNX Runtime, one global intra-op pool over the CPU
//                    PUs' cores, one OS thread per request in flight
//   ort_sequential   ORT defaults: one session per model over all the CPU PUs'
//                    cores, one request at a time
//   ort_concurrent   ORT defaults: a thread and a default-threaded session per
//                    model
//   whole_on_one_pu  only when a PU is not a CPU (ORT cannot use it): each model
//                    whole on one PU, the best such static assignment, run by
//                    baton's own runtime with `fixed` placement
// run.baselines picks them (all that apply by default). The ORT baselines use
// the CPU PUs only; with none they are skipped (and said so).
//
// The bound: the profile's costs, scaled per PU by the fastest of the speed
// probes taken between rounds of slices (runtime/speed_probe.h), so that it
// comes from measurements no mode under test influences. Every mode's
// throughput is checked against it (bound_violations).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "baton/baton.h"
#include "baton/config/run_config.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/profile/bounds.h"
#include "baton/trace/summary.h"

namespace baton::harness {

struct ModelOutcome {
  std::string name;
  uint64_t completed = 0;        // answered OK within the window
  uint64_t deadline_missed = 0;  // DeadlineExceeded, or OK but later than the deadline
  uint64_t rejected = 0;         // ResourceExhausted (queue or in-flight limit)
  uint64_t failed = 0;           // any other error
  uint64_t unfinished = 0;       // arrived in the window, answered after it
  // Open-loop arrivals in the window the generator could not send on time
  // (more than kMaxArrivalLag late, e.g. a rate this process cannot issue):
  // counted here and not sent, so the others keep their schedule.
  uint64_t arrivals_missed = 0;
  // Answered in the window, OK or not (completed, dropped for a deadline,
  // rejected, failed): what SLO attainment is counted over.
  uint64_t answered = 0;
  std::vector<Duration> latencies;  // of the completed ones
  // Of the rejected ones (submit to answer): a full queue must answer at once.
  std::vector<Duration> rejection_latencies;
  std::string first_error;
  std::optional<double> slo_ms;  // the config's
  trace::SloSummary Slo(Duration measured) const;
};

// How late an open-loop arrival may be sent before it counts as missed.
inline constexpr Duration kMaxArrivalLag = std::chrono::milliseconds(10);
// How long a measured window waits, after it ends, for the requests still in
// flight (or the window's length, if longer); the rest are abandoned
// (answered UNAVAILABLE, counted unfinished) so the next slice can start.
inline constexpr Duration kMaxDrainAfterWindow = std::chrono::seconds(1);

struct PuOutcome {
  std::string name;
  std::string kind;
  std::string device;
  Duration busy{};
  uint64_t runs = 0;
  Duration run_cpu{};  // CPU time of the threads that ran its runs (runtime::PuStats::run_cpu)
};

struct ModeOutcome {
  std::string name;      // "baton", "ort_sequential", ...
  Duration measured{};   // total measured time over all slices
  std::vector<ModelOutcome> models;  // config order
  std::vector<PuOutcome> pus;        // runtime modes only
  // CPU time of this whole process over the measured windows (baton's mode
  // and --server runs; 0 where not measured): in process the PUs, the
  // dispatcher and the load generator; with --server the client alone.
  Duration process_cpu{};
  std::string note;                  // e.g. the whole_on_one_pu assignment
  bool ort_defaults = false;         // ort_sequential, ort_concurrent: ORT's default threading
  uint64_t completed() const;
  double throughput_rps() const;
  double model_throughput_rps(size_t model) const;  // models[model].completed / measured
  std::vector<Duration> AllLatencies() const;       // of every model's completed requests
  trace::SloSummary Slo() const;  // over all models
};

struct PlacedPartition {
  std::vector<std::string> nodes;  // node names
  std::vector<std::string> pus;    // the PUs it was prepared on, the plan's preferred one first
  // Per entry of `pus`: how many times baton ran the partition there over the
  // whole run, the unmeasured warm-up periods included, each PU's first run
  // of it left out (as the latency model leaves it out). Empty on a remote
  // device, whose runs its agent measures.
  std::vector<int64_t> runs;
};

struct ModelPlanInfo {
  std::string name;
  std::string source;  // the file that was loaded
  int partitions = 0;
  std::vector<PlacedPartition> placement;  // baton's deployment
  int64_t param_bytes = 0;
  double gflops = 0;
  std::string device = {};  // the device its partitions are placed on
  int priority = 0;         // of its requests in baton's run: the plan's, else the config's
  // Dynamic batching in baton's run (max_batch > 1): batches sent and the
  // requests in them, warm-up periods included.
  uint64_t batches = 0;
  uint64_t batched_requests = 0;
  // The batch size baton ran it with (1 = off) and why (Assembly::batching).
  int max_batch = 1;
  double batch_per_request_ratio = 1;
  std::string batching_reason = {};
};

// One device of baton's run: utilisation is the mean over its PUs of busy /
// measured time; lost/returned count remote-agent failures.
struct DeviceOutcome {
  std::string name;
  std::string address;  // "" for a local device
  size_t pus = 0;
  double utilization = 0;
  bool reachable = true;  // at the end of the run
  uint64_t lost = 0;      // times it was found unreachable
  uint64_t returned = 0;  // assignments it handed back, re-issued elsewhere
  // Decisions of its low-level policy that broke the policy contract and
  // that the core ignored (a bug in the policy; 0 for a remote device, whose
  // agent counts its own).
  uint64_t policy_violations = 0;
};

struct RunReport {
  config::RunConfig config;  // as run (after command-line overrides)
  std::vector<ModelPlanInfo> models;
  ModeOutcome baton;
  std::vector<ModeOutcome> baselines;
  std::string baselines_note;  // why a baseline was skipped, "" if none
  uint64_t verified = 0;       // --verify: outputs compared
  uint64_t mismatches = 0;
  std::string first_mismatch;
  size_t sessions = 0;  // prepared partitions (after sharing) for baton
  // Lower bounds (absent with --no-profile): from the profile's costs scaled
  // per PU by what this run measured (see docs/planning.md, "calibration"),
  // and as profiled.
  std::optional<profile::Bounds> bound;
  std::optional<profile::Bounds> profile_bound;
  // Per PU: probed / profiled run time, the fastest probe (1 without probes).
  std::vector<std::pair<std::string, double>> pu_speed;
  int probes = 0;            // speed probes taken (0: the bound is the profile's)
  std::string bound_source;  // the profile they come from
  // Modes whose throughput exceeded the bound (none, if the bound holds).
  std::vector<profile::BoundViolation> bound_violations;
  std::string plan_policy;   // the high-level policy that made baton's plan ("" = no plan)
  double predicted_rps = 0;          // the plan's predicted throughput, calibrated like the bound
  double profile_predicted_rps = 0;  // the same from the profile alone
  Duration setup{};     // loading, partitioning, session creation
  std::vector<DeviceOutcome> devices;  // baton's run, config order
  uint64_t reissued = 0;  // assignments sent again after their device was lost
  // baton's requests still in flight at a drain limit, answered UNAVAILABLE
  // (counted unfinished too), and second answers dropped (always 0).
  uint64_t abandoned = 0;
  uint64_t answered_twice = 0;
  uint64_t rerouted = 0;  // assignments sent to a fallback device
  // Assignments withdrawn from their devices because their request was
  // already answered (a sibling partition failed, or the deadline passed).
  uint64_t withdrawn = 0;
  bool baton_ran = true;  // false with RunOptions::no_baton
  // Stopped early by RunOptions::interrupt after `slices_run` of the
  // configured slices (each mode's own measured time is in its outcome).
  bool interrupted = false;
  int slices_run = 0;
  std::optional<double> peak_rss_mb;  // of this process, at the end of the run
  std::string server;  // RunAgainstServer: the server's address ("" = baton ran in this process)
  std::string server_shared_memory;  // RunAgainstServer: how inputs went ("none", "system")
  bool server_streaming = false;     // RunAgainstServer: on one ModelStreamInfer stream
  // RunAgainstServer with server_streaming: the calls (warm-up included) that
  // went on a stream, and those that went as ModelInfer calls (made while no
  // stream was open, e.g. right after abandoned requests cancelled it).
  uint64_t server_stream_calls = 0, server_unary_calls = 0;

  // mode's throughput over the bound's (nullopt without a bound).
  std::optional<double> BoundRatio(const ModeOutcome& mode) const;
  // The fastest baseline that ran (ORT defaults included: it is a fact of the
  // run), and the one with the highest goodput; null when none ran.
  const ModeOutcome* BestBaseline() const;
  const ModeOutcome* BestGoodputBaseline() const;
};

struct RunOptions {
  bool verify = false;
  std::string trace_path;  // "" = no trace
  std::string cache_dir;   // zoo models are generated here on first use
  std::string plan_path;     // carry out this plan (`baton plan`)
  std::string profile_path;  // use this profile; "" = the plan's, else an automatic one cached per config
  bool no_profile = false;   // no profile, no bounds: plan from estimated costs (whole, capability, balanced only)
  // Run only the baselines (e.g. to measure one baseline's memory alone):
  // baton's sessions are never created. The bound is then the profile's.
  bool no_baton = false;
  // Progress lines (phase by phase) go here; nullptr = silent.
  std::function<void(const std::string&)> progress;
  // Profiling progress (measurements done of all), when the set-up profiles; nullptr = none.
  std::function<void(int done, int total, const std::string& what)> profile_progress;
  // Set (e.g. by a SIGINT handler) to stop early: the slice running then
  // finishes, no further slice starts, and the report covers what ran
  // (RunReport::interrupted). Set during set-up, the set-up ends at its next
  // step with CANCELLED (app::AssembleOptions::stop). Null = never.
  const std::atomic<bool>* interrupt = nullptr;
};

absl::StatusOr<RunReport> RunSession(const config::RunConfig& config, const RunOptions& options);

// `baton run --server`: a running `baton serve` that takes the workload
// instead of an in-process runtime. `infer` sends one request and calls `done`
// exactly once, from any thread (serve::GrpcClient::InferAsync fits).
struct ServerTarget {
  std::string address;  // for the report
  std::string shared_memory = "none";  // for the report: how the inputs travel ("none": in the messages, "system")
  bool streaming = false;              // for the report: the calls go on one ModelStreamInfer stream
  std::function<void(const std::string& model, Tensors inputs, const InferOptions& options,
                     std::function<void(Result<Tensors>)> done)>
      infer;
  // Cancels every call in flight (GrpcClient::CancelAll): what is still in
  // flight a while after a measured window then ends at once (counted as
  // abandoned). Unset: the run waits for each call's own deadline.
  std::function<void()> cancel_all;
  // How many calls so far went on a stream and as ModelInfer calls (for the
  // report; GrpcClient::counts). Unset: not reported.
  std::function<std::pair<uint64_t, uint64_t>()> call_counts;
};

// The config's workload (models, arrivals, deadlines, priorities, slices,
// warm-up) sent to `server`, measured at this client: throughput, latency,
// SLO and errors of baton's run (RunReport::baton, named "baton"). The
// devices of `config` are not used: the server runs its own. No baselines,
// no bound and no PU times (they belong to the server). With
// options.verify, answers are compared with whole-model ONNX Runtime here.
absl::StatusOr<RunReport> RunAgainstServer(const config::RunConfig& config, const RunOptions& options,
                                           const ServerTarget& server);

}  // namespace baton::harness
