// The configuration of `baton run`: devices and their PUs, models with their
// arrival processes, policies and run length. Plain structs, a YAML loader and
// validation; no other layer is involved (the CLI turns a RunConfig into
// executors, plans and a runtime).
//
// YAML form (every key optional unless marked; see docs/config.md):
//   devices:                         # required, at least one
//     - name: local                  # required, unique
//       pus:                         # required, at least one (local devices)
//         - {name: cpu0, kind: cpu, threads: 1, cores: [0]}
//         - {name: npu0, kind: emu, speed: 4.0, op_speed: {Conv: 30},
//            unsupported_ops: [Softmax], compute: false}
//     - {name: edge1, address: edge1.lan:50051, token_file: edge1.token, ca_cert: ca.pem}  # a baton agent
//   models:                          # required, at least one
//     - {name: det, path: zoo:yolo, arrival: {mode: periodic, fps: 10},
//        deadline_ms: 200, slo_ms: 100, priority: 1, partitions: 3,
//        max_batch: 4, max_queue_delay_ms: 2}
//     - {name: cls, path: models/resnet.onnx, arrival: {mode: closed, concurrency: 2}}
//     - {name: cam, path: zoo:squeezenet, arrival: {mode: closed, concurrency: 1, think_ms: 30}}
//     - {name: vad, path: zoo:lstm, arrival: {mode: poisson, rate: 20}}
//   policy: {high_level: balanced, low_level: heft, stages: 0}
//   run: {duration_s: 20, warmup_s: 2, seed: 1, baselines: true, slices: 3,   # or baselines: [ort_tuned, ...]
//         max_queue: 256, max_in_flight: 64}
//
// Errors name the key by its path (e.g. "models[1].arrival.fps"), what is
// wrong with it, and the fix (for an unknown key: the known keys).
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/core/status.h"

namespace baton::config {

struct PuConfig {
  std::string name;         // unique over all devices
  std::string kind = "cpu"; // "cpu" or "emu"
  // cpu only
  int threads = 1;          // intra-op threads of each session on this PU (1..1024)
  std::vector<int> cores;   // empty, or exactly `threads` logical CPU ids
  // 1-thread PUs only: PUs with this set share one prepared session per
  // partition (a 1-thread session has no pool, so sharing saves memory and
  // start-up); false gives this PU sessions of its own.
  bool share_session = true;
  // How many nice steps (0..19) the PU's worker thread runs above the rest
  // of the process (at most nice 19). Above 0, threads that wake on the
  // PU's cores (clients, the server's transport, the dispatcher, a UI) run
  // at once instead of after the worker's time slice, and the worker gets a
  // smaller share against other busy processes (docs/config.md).
  int nice = 0;
  // How Linux schedules the PU's worker thread: "batch" (SCHED_BATCH: the
  // same share of the CPU, but the scheduler treats it as CPU-bound and
  // favours threads that wake on its cores, such as the server's transport
  // and the clients) or "normal" (SCHED_OTHER, as the rest of the process).
  std::string scheduling = "batch";
  // emu only
  double speed = 4.0;                      // speed-up over one host CPU thread (> 0)
  std::map<std::string, double> op_speed;  // per-op speed-up (> 0)
  std::vector<std::string> unsupported_ops;
  bool compute = false;  // true: real outputs (computed on the host); false: zeros

  friend bool operator==(const PuConfig&, const PuConfig&) = default;
};

struct DeviceConfig {
  std::string name;  // unique
  std::vector<PuConfig> pus;  // a local device's PUs; empty for a remote device
  // A remote device (a `baton agent`, see docs/agent.md): its host:port. Its
  // PUs are the agent's (learned when connecting). Files are relative to the
  // config file's folder.
  std::string address;
  std::string token_file;   // bearer token ("" = none)
  std::string ca_cert;      // PEM CA of the agent's certificate ("" = plaintext)
  std::string client_cert;  // PEM client certificate + key, for agents that require one
  std::string client_key;
  std::string server_name;  // TLS name to check instead of the address's host
  // The link to a remote device, when known (else measured on connect).
  std::optional<double> link_latency_ms;  // one way (>= 0)
  std::optional<double> link_mbps;        // bandwidth (> 0)
  bool remote() const { return !address.empty(); }

  friend bool operator==(const DeviceConfig&, const DeviceConfig&) = default;
};

struct ArrivalConfig {
  enum class Mode { kClosed, kPeriodic, kPoisson };
  Mode mode = Mode::kClosed;
  int concurrency = 1;  // closed: requests in flight (1..4096)
  double think_ms = 0;  // closed: pause between an answer and the next request (>= 0)
  double fps = 0;       // periodic: requests per second (> 0)
  double rate = 0;      // poisson: mean requests per second (> 0)

  friend bool operator==(const ArrivalConfig&, const ArrivalConfig&) = default;
};

struct ModelConfig {
  std::string name;  // unique
  std::string path;  // an ONNX file (relative to the config file's folder) or "zoo:NAME"
  ArrivalConfig arrival;
  std::optional<double> deadline_ms;  // relative to arrival (> 0)
  int priority = 0;                   // larger = more important
  std::optional<int> partitions;      // overrides policy.stages for this model (1..64)
  // Service-level objective: an answer within slo_ms of arrival is "good"
  // (goodput, SLO attainment in `baton run`'s report); none = best effort.
  std::optional<double> slo_ms;
  // How long one run of one of its partitions may take before the device stops
  // it (ONNX Runtime's terminate flag) and its request fails ABORTED; none =
  // 10x the expected run time, at least 1 s (dispatch::ExecTimeoutRule).
  std::optional<double> execution_timeout_ms;
  // Dynamic batching (off with max_batch 1): up to max_batch requests of this
  // model that wait at most max_queue_delay_ms run as one, stacked along their
  // leading dimension (runtime/batcher.h). The model must compute row by row;
  // `baton run` checks that on its inputs before it runs.
  int max_batch = 1;                // 1..1024
  double max_queue_delay_ms = 0;    // >= 0; only with max_batch > 1
  // auto: the planner batches only when the profile shows batching pays
  // (profile::ChooseBatch; off without a profile); on: always up to max_batch.
  std::string batching = "auto";
  // Class labels for the classification extension (`baton serve`): a text
  // file (relative to the config file's folder) with one label per line,
  // line i naming class index i of any output asked for its top classes.
  std::optional<std::string> labels;

  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

struct PolicyConfig {
  std::string high_level = "search";  // whole | capability | balanced | lp | search
  std::string low_level = "share";      // any name policy::LowLevelPolicyNames() lists
  int stages = 0;                       // balanced: partitions per model (0..64); 0 = number of PUs
  // Which device each model goes to: round_robin | transfer_aware | auto
  // (= transfer_aware when some device is remote, else round_robin).
  std::string device_placement = "auto";

  friend bool operator==(const PolicyConfig&, const PolicyConfig&) = default;
};

struct RunSettings {
  double duration_s = 10;   // measured time per mode (> 0)
  double warmup_s = 1;      // unmeasured time before it (>= 0)
  uint64_t seed = 1;        // inputs and Poisson arrivals
  bool baselines = true;    // also run the plain ONNX Runtime baselines
  // Which ones (YAML: `baselines: [ort_tuned, ort_pinned]`); empty = every
  // one that applies. Names: BaselineNames().
  std::vector<std::string> baseline_modes;
  int slices = 3;           // interleaving: each mode runs duration_s / slices at a time (>= 1)
  int max_queue = 256;      // per device ready queue (>= 1)
  int max_in_flight = 64;   // per model requests in flight (>= 1)

  friend bool operator==(const RunSettings&, const RunSettings&) = default;
};

struct RunConfig {
  std::vector<DeviceConfig> devices;
  std::vector<ModelConfig> models;
  PolicyConfig policy;
  RunSettings run;
  std::string base_dir;  // folder that relative model paths are resolved against ("" = cwd)

  // Field by field (doubles exactly). Used by the ToYaml round trip.
  friend bool operator==(const RunConfig&, const RunConfig&) = default;
};

// Parses and validates YAML text. `source` names it in errors (a file name).
absl::StatusOr<RunConfig> ParseRunConfig(std::string_view yaml, const std::string& source);
// Reads and parses a file; base_dir becomes the file's folder. NotFound when unreadable.
absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path);
// Semantic checks on a config built in code (the parsers call it too).
absl::Status Validate(const RunConfig& config);

// The embedded default workload: one device "local" with one 1-thread CPU PU
// per core in `cores` (pinned), and a mix of zoo models in closed loop: three
// frame-by-frame streams (one request at a time with a pause between them, like
// a camera or microphone pipeline) and one stream that keeps two requests in
// flight (a throughput job).
RunConfig DefaultRunConfig(int cores);

// The baselines `baton run` knows, in report order: ort_tuned, ort_pinned,
// ort_global_pool, ort_sequential, ort_concurrent, whole_on_one_pu.
std::vector<std::string> BaselineNames();

// YAML text that ParseRunConfig reads back into an equal config (base_dir is
// not written; keys that do not apply to a PU's kind or a model's arrival mode
// are left out, so those fields read back as their defaults).
std::string ToYaml(const RunConfig& config);

// "zoo:resnet" -> "resnet"; nullopt for a file path.
std::optional<std::string> ZooName(const std::string& path);

// The PUs of a `baton agent` (AGENT.yaml): one local device, written as
//   name: edge1                      # optional; default "agent" (`--name` overrides)
//   pus:                             # required, at least one; keys as in devices[].pus
//     - {name: cpu0, kind: cpu, threads: 1, cores: [0]}
//     - {name: npu0, kind: emu, speed: 4, unsupported_ops: [Softmax], compute: true}
// Unknown keys are errors; PUs are validated like those of a RunConfig.
// `source` names the text in errors (a file name).
absl::StatusOr<DeviceConfig> ParseAgentConfig(std::string_view yaml, const std::string& source);
// Reads and parses a file; NotFound when unreadable.
absl::StatusOr<DeviceConfig> LoadAgentConfig(const std::string& path);
// The default agent device: `name` with one 1-thread CPU PU per core (cpu0 on
// core 0, ...), pinned; a non-positive count still gets one PU.
DeviceConfig DefaultAgentDevice(const std::string& name, int cores);

}  // namespace baton::config
