#include "baton/config/run_config.h"

#include "baton/core/file.h"
#include "baton/core/utf8.h"
#include "baton/plan/high_level_policy.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <span>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "baton/policy/policy.h"

namespace baton::config {
namespace {

// The embedded default workload (DefaultRunConfig): the one place to tune the
// mix. Each entry becomes {name: NAME, path: zoo:NAME} in closed loop.
// Paced streams get an SLO of about one frame period; the throughput job is
// best effort (slo_ms 0 = none).
struct DefaultModel {
  const char* name;
  const char* zoo_name;
  int concurrency;
  double think_ms;
  double slo_ms;
};
constexpr std::array<DefaultModel, 4> kDefaultModels = {{
    {"camera", "squeezenet", 1, 30, 33},
    {"audio", "lstm", 1, 15, 20},
    {"text", "transformer", 1, 80, 100},
    {"batch", "mobilenetv2", 2, 0, 0},
}};
constexpr double kDefaultDurationS = 8;
constexpr double kDefaultWarmupS = 1;

constexpr size_t kMaxFileBytes = size_t{1} << 20;  // 1 MiB
constexpr int kMaxPartitions = 64;
// Far beyond any edge box, and small enough that a typo (1e9) is an error
// rather than a process that allocates until it dies.
constexpr int kMaxThreads = 1024;       // devices[].pus[].threads
constexpr int kMaxConcurrency = 4096;   // models[].arrival.concurrency
constexpr int kMaxSlices = 1000;        // run.slices
constexpr double kMinSliceS = 0.01;     // run.duration_s / run.slices: shorter slices measure nothing
constexpr int kMaxQueue = 1'000'000;    // run.max_queue, run.max_in_flight
// Upper bounds that keep later conversions to std::chrono nanoseconds (and
// periods 1/fps) far from overflow and underflow.
constexpr double kMaxSeconds = 1e6;     // duration_s, warmup_s (~11.6 days)
constexpr double kMaxDeadlineMs = 1e9;  // deadline_ms (same span)
constexpr double kMaxRate = 1e6;        // fps, rate (requests per second)
constexpr double kMaxSpeed = 1e6;       // speed, op_speed

constexpr std::array<const char*, 4> kTopKeys = {"devices", "models", "policy", "run"};
constexpr std::array<const char*, 10> kDeviceKeys = {"name",        "pus",         "address",    "token_file",
                                                    "ca_cert",     "client_cert", "client_key", "server_name",
                                                    "link_latency_ms", "link_mbps"};
constexpr std::array<const char*, 11> kPuKeys = {"name",  "kind",     "threads",         "cores",   "share_session",
                                                 "nice",  "scheduling", "speed",  "op_speed", "unsupported_ops",
                                                 "compute"};
constexpr std::array<const char*, 5> kCpuOnlyKeys = {"threads", "cores", "share_session", "nice", "scheduling"};
constexpr std::array<const char*, 2> kSchedulings = {"batch", "normal"};
constexpr int kMaxNice = 19;  // Linux's lowest priority
constexpr std::array<const char*, 4> kEmuOnlyKeys = {"speed", "op_speed", "unsupported_ops", "compute"};
constexpr std::array<const char*, 12> kModelKeys = {"name",       "path",   "arrival",   "deadline_ms",
                                                    "priority",   "partitions", "slo_ms", "max_batch",
                                                    "max_queue_delay_ms", "execution_timeout_ms", "batching",
                                                    "labels"};
constexpr int kMaxBatch = 1024;
// The modes `baton run` can compare with (run.baselines as a list).
constexpr std::array<const char*, 6> kBaselineNames = {"ort_tuned",      "ort_pinned",     "ort_global_pool",
                                                       "ort_sequential", "ort_concurrent", "whole_on_one_pu"};
constexpr std::array<const char*, 5> kArrivalKeys = {"mode", "concurrency", "think_ms", "fps", "rate"};
constexpr std::array<const char*, 4> kPolicyKeys = {"high_level", "low_level", "stages", "device_placement"};
constexpr std::array<const char*, 3> kDevicePlacements = {"auto", "round_robin", "transfer_aware"};
constexpr std::array<const char*, 7> kRunKeys = {"duration_s", "warmup_s",  "seed",         "baselines",
                                                 "slices",     "max_queue", "max_in_flight"};
constexpr std::array<const char*, 2> kKinds = {"cpu", "emu"};
constexpr std::array<const char*, 3> kModes = {"closed", "periodic", "poisson"};

bool Contains(std::span<const char* const> names, const std::string& name) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
}

// kModes is in the order of ArrivalConfig::Mode.
const char* ModeName(ArrivalConfig::Mode mode) {
  const auto index = static_cast<size_t>(mode);
  return index < kModes.size() ? kModes[index] : "unknown";
}

std::optional<ArrivalConfig::Mode> ModeFromName(const std::string& name) {
  for (size_t i = 0; i < kModes.size(); ++i) {
    if (name == kModes[i]) return static_cast<ArrivalConfig::Mode>(i);
  }
  return std::nullopt;
}

// Shortest text that reads back to exactly `value` ("0.1", "4", "1e+20").
std::string FormatDouble(double value) {
  std::array<char, 64> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  if (ec != std::errc()) return absl::StrCat(value);
  return std::string(buffer.data(), end);
}

std::string Join(std::span<const char* const> names) { return absl::StrJoin(names, ", "); }

std::string Child(const std::string& path, const std::string& key) {
  return path.empty() ? key : absl::StrCat(path, ".", key);
}
std::string Index(const std::string& path, size_t i) { return absl::StrCat(path, "[", i, "]"); }

// ---------------------------------------------------------------------------
// Validation (paths without the source prefix; the parser adds it).

absl::Status Invalid(const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(path.empty() ? problem : absl::StrCat(path, ": ", problem));
}

// A finite number in (0, max] (or [0, max] when zero_ok).
absl::Status CheckPositive(double value, const std::string& path, double max, const std::string& meaning,
                           bool zero_ok = false) {
  const bool ok = std::isfinite(value) && (zero_ok ? value >= 0 : value > 0) && value <= max;
  if (ok) return absl::OkStatus();
  return Invalid(path, absl::StrCat("must be ", zero_ok ? ">= 0" : "> 0", " and at most ", FormatDouble(max), ", got ",
                                    FormatDouble(value), "; set ", meaning));
}

absl::Status CheckInRange(int value, int min, int max, const std::string& path, const std::string& meaning) {
  if (value >= min && value <= max) return absl::OkStatus();
  return Invalid(path, absl::StrCat("must be in ", min, "..", max, ", got ", value, "; set ", meaning));
}

absl::Status ValidatePu(const PuConfig& pu, const std::string& path, unsigned host_cpus) {
  if (!Contains(kKinds, pu.kind)) {
    return Invalid(Child(path, "kind"), absl::StrCat("unknown kind '", pu.kind, "'; allowed: ", Join(kKinds)));
  }
  if (pu.kind == "cpu") {
    BATON_RETURN_IF_ERROR(CheckInRange(pu.threads, 1, kMaxThreads, Child(path, "threads"),
                                       "the intra-op threads of this PU's sessions (about one per core)"));
    BATON_RETURN_IF_ERROR(CheckInRange(pu.nice, 0, kMaxNice, Child(path, "nice"),
                                       "how many steps nicer than the process the worker thread runs (0 = as the "
                                       "process; a thread may raise its nice value but not lower it, so negative "
                                       "values are not taken)"));
    if (!Contains(kSchedulings, pu.scheduling)) {
      return Invalid(Child(path, "scheduling"),
                     absl::StrCat("unknown scheduling '", pu.scheduling, "'; allowed: ", Join(kSchedulings),
                                  " (batch: Linux's SCHED_BATCH for the worker thread, the default; normal: as the "
                                  "rest of the process)"));
    }
    if (pu.cores.empty()) return absl::OkStatus();
    const std::string cores_path = Child(path, "cores");
    if (pu.cores.size() != static_cast<size_t>(pu.threads)) {
      return Invalid(cores_path, absl::StrCat("has ", pu.cores.size(), " entries but threads is ", pu.threads,
                                              "; list exactly one logical CPU id per thread, or omit cores"));
    }
    std::set<int> seen;
    for (size_t i = 0; i < pu.cores.size(); ++i) {
      const int core = pu.cores[i];
      // hardware_concurrency() is 0 when the host cannot tell; then only the sign is checked.
      const bool in_range = core >= 0 && (host_cpus == 0 || static_cast<unsigned>(core) < host_cpus);
      if (!in_range) {
        const std::string allowed =
            host_cpus == 0 ? std::string(">= 0")
                           : absl::StrCat("0..", host_cpus - 1, " (this host has ", host_cpus, " logical CPUs)");
        return Invalid(Index(cores_path, i), absl::StrCat("CPU ", core, " does not exist; allowed: ", allowed));
      }
      if (!seen.insert(core).second) {
        return Invalid(Index(cores_path, i),
                       absl::StrCat("CPU ", core, " is listed twice; list each logical CPU once"));
      }
    }
    return absl::OkStatus();
  }
  // emu
  BATON_RETURN_IF_ERROR(
      CheckPositive(pu.speed, Child(path, "speed"), kMaxSpeed, "the speed-up over one host CPU thread"));
  for (const auto& [op, speed] : pu.op_speed) {
    if (op.empty()) {
      return Invalid(Child(path, "op_speed"), "an op name is empty; write op_speed: {OpType: speed-up}");
    }
    BATON_RETURN_IF_ERROR(
        CheckPositive(speed, Child(Child(path, "op_speed"), op), kMaxSpeed, absl::StrCat("the speed-up of op ", op)));
  }
  for (size_t i = 0; i < pu.unsupported_ops.size(); ++i) {
    if (pu.unsupported_ops[i].empty()) {
      return Invalid(Index(Child(path, "unsupported_ops"), i), "op name is empty; write an ONNX op type");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDevices(const std::vector<DeviceConfig>& devices) {
  if (devices.empty()) {
    return Invalid(
        "devices",
        "at least one device is required; add e.g. devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]");
  }
  const unsigned host_cpus = std::thread::hardware_concurrency();
  std::map<std::string, std::string> device_names;  // name -> path of first use
  std::map<std::string, std::string> pu_names;
  for (size_t d = 0; d < devices.size(); ++d) {
    const DeviceConfig& device = devices[d];
    const std::string path = Index("devices", d);
    if (device.name.empty()) return Invalid(Child(path, "name"), "must not be empty; give the device a unique name");
    if (auto [it, inserted] = device_names.emplace(device.name, path); !inserted) {
      return Invalid(Child(path, "name"), absl::StrCat("duplicate device name '", device.name, "' (also ", it->second,
                                                       "); device names must be unique"));
    }
    if (device.remote()) {
      const size_t colon = device.address.rfind(':');
      if (colon == std::string::npos) {
        return Invalid(Child(path, "address"), absl::StrCat("'", device.address, "' has no port; write HOST:PORT"));
      }
      const std::string port = device.address.substr(colon + 1);
      const bool digits =
          !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || std::stoi(port) < 1 || std::stoi(port) > 65535) {
        return Invalid(Child(path, "address"),
                       absl::StrCat("'", device.address, "': port '", port, "' is not a number in 1..65535"));
      }
      if (device.client_cert.empty() != device.client_key.empty()) {
        return Invalid(Child(path, "client_cert"), "client_cert and client_key go together; give both or neither");
      }
      if (!device.client_cert.empty() && device.ca_cert.empty()) {
        return Invalid(Child(path, "client_cert"), "a client certificate needs TLS; give ca_cert too");
      }
      if (device.link_latency_ms) {
        BATON_RETURN_IF_ERROR(CheckPositive(*device.link_latency_ms, Child(path, "link_latency_ms"), 60000,
                                            "the one-way link latency in ms", /*zero_ok=*/true));
      }
      if (device.link_mbps) {
        BATON_RETURN_IF_ERROR(
            CheckPositive(*device.link_mbps, Child(path, "link_mbps"), 1e7, "the link bandwidth in Mbit/s"));
      }
      continue;
    }
    if (!device.token_file.empty() || !device.ca_cert.empty() || !device.client_cert.empty() ||
        !device.server_name.empty() || device.link_latency_ms || device.link_mbps) {
      return Invalid(path, "token_file, ca_cert, client_cert, client_key, server_name and link_* apply to a remote "
                           "device; give its `address` or remove them");
    }
    if (device.pus.empty()) {
      return Invalid(Child(path, "pus"), "at least one PU is required; add e.g. pus: [{name: cpu0, kind: cpu}]");
    }
    for (size_t p = 0; p < device.pus.size(); ++p) {
      const PuConfig& pu = device.pus[p];
      const std::string pu_path = Index(Child(path, "pus"), p);
      if (pu.name.empty()) return Invalid(Child(pu_path, "name"), "must not be empty; give the PU a unique name");
      if (auto [it, inserted] = pu_names.emplace(pu.name, pu_path); !inserted) {
        return Invalid(Child(pu_path, "name"), absl::StrCat("duplicate PU name '", pu.name, "' (also ", it->second,
                                                            "); PU names must be unique across all devices"));
      }
      BATON_RETURN_IF_ERROR(ValidatePu(pu, pu_path, host_cpus));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateArrival(const ArrivalConfig& arrival, const std::string& path) {
  switch (arrival.mode) {
    case ArrivalConfig::Mode::kClosed:
      if (!(arrival.think_ms >= 0 && arrival.think_ms <= kMaxDeadlineMs)) {
        return Invalid(Child(path, "think_ms"), absl::StrCat("must be between 0 and ", kMaxDeadlineMs, " (got ",
                                                              arrival.think_ms, "); it is the pause in ms between an "
                                                              "answer and the next request"));
      }
      return CheckInRange(arrival.concurrency, 1, kMaxConcurrency, Child(path, "concurrency"),
                          "the number of requests kept in flight");
    case ArrivalConfig::Mode::kPeriodic:
      return CheckPositive(arrival.fps, Child(path, "fps"), kMaxRate, "the requests per second");
    case ArrivalConfig::Mode::kPoisson:
      return CheckPositive(arrival.rate, Child(path, "rate"), kMaxRate, "the mean requests per second");
  }
  return Invalid(Child(path, "mode"),
                 absl::StrCat("unknown mode ", static_cast<int>(arrival.mode), "; allowed: ", Join(kModes)));
}

absl::Status ValidateModels(const std::vector<ModelConfig>& models) {
  if (models.empty()) {
    return Invalid("models", "at least one model is required; add e.g. models: [{name: m, path: zoo:mobilenetv2}]");
  }
  std::map<std::string, std::string> names;
  for (size_t m = 0; m < models.size(); ++m) {
    const ModelConfig& model = models[m];
    const std::string path = Index("models", m);
    if (model.name.empty()) return Invalid(Child(path, "name"), "must not be empty; give the model a unique name");
    if (auto [it, inserted] = names.emplace(model.name, path); !inserted) {
      return Invalid(Child(path, "name"), absl::StrCat("duplicate model name '", model.name, "' (also ", it->second,
                                                       "); model names must be unique"));
    }
    if (model.path.empty()) {
      return Invalid(Child(path, "path"), "must not be empty; give an ONNX file or zoo:NAME");
    }
    if (std::optional<std::string> zoo = ZooName(model.path); zoo && zoo->empty()) {
      return Invalid(Child(path, "path"), "'zoo:' names no model; write zoo:NAME (`baton zoo --list` lists them)");
    }
    BATON_RETURN_IF_ERROR(ValidateArrival(model.arrival, Child(path, "arrival")));
    if (model.deadline_ms) {
      BATON_RETURN_IF_ERROR(CheckPositive(*model.deadline_ms, Child(path, "deadline_ms"), kMaxDeadlineMs,
                                          "the deadline in milliseconds after arrival, or omit it"));
    }
    if (model.slo_ms) {
      BATON_RETURN_IF_ERROR(CheckPositive(*model.slo_ms, Child(path, "slo_ms"), kMaxDeadlineMs,
                                          "the latency in milliseconds an answer must meet to count as good, or "
                                          "omit it (best effort)"));
    }
    if (model.execution_timeout_ms) {
      BATON_RETURN_IF_ERROR(CheckPositive(*model.execution_timeout_ms, Child(path, "execution_timeout_ms"),
                                          kMaxDeadlineMs,
                                          "how long one run of a partition may take before it is stopped, in "
                                          "milliseconds, or omit it (10x the expected run time, at least 1 s)"));
    }
    if (model.max_batch < 1 || model.max_batch > kMaxBatch) {
      return Invalid(Child(path, "max_batch"), absl::StrCat("must be in 1..", kMaxBatch, ", got ", model.max_batch,
                                                            "; 1 = no batching"));
    }
    if (!(model.max_queue_delay_ms >= 0 && model.max_queue_delay_ms <= kMaxDeadlineMs)) {
      return Invalid(Child(path, "max_queue_delay_ms"),
                     absl::StrCat("must be between 0 and ", kMaxDeadlineMs, " (got ", model.max_queue_delay_ms, ")"));
    }
    if (model.batching != "auto" && model.batching != "on") {
      return Invalid(Child(path, "batching"), absl::StrCat("is '", model.batching,
                                                           "'; use auto (batch when the profile shows a gain) or on "
                                                           "(always up to max_batch)"));
    }
    if (model.labels && model.labels->empty()) {
      return Invalid(Child(path, "labels"), "is empty; give a text file with one class label per line, or omit it");
    }
    if (model.max_batch == 1 && model.max_queue_delay_ms > 0) {
      return Invalid(Child(path, "max_queue_delay_ms"),
                     "applies only to batching; set max_batch > 1 as well, or drop max_queue_delay_ms");
    }
    if (model.partitions && (*model.partitions < 1 || *model.partitions > kMaxPartitions)) {
      return Invalid(Child(path, "partitions"), absl::StrCat("must be in 1..", kMaxPartitions, ", got ",
                                                             *model.partitions, "; or omit it to use policy.stages"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePolicy(const PolicyConfig& policy) {
  if (plan::FindHighLevelPolicy(policy.high_level) == nullptr) {
    std::vector<const char*> names;
    for (const plan::HighLevelPolicyInfo& info : plan::kHighLevelPolicies) names.push_back(info.name);
    return Invalid("policy.high_level", absl::StrCat("unknown high-level policy '", policy.high_level,
                                                     "'; allowed: ", Join(names)));
  }
  const std::vector<std::string> low_level = policy::LowLevelPolicyNames();
  if (std::find(low_level.begin(), low_level.end(), policy.low_level) == low_level.end()) {
    return Invalid("policy.low_level", absl::StrCat("unknown low-level policy '", policy.low_level,
                                                    "'; allowed: ", absl::StrJoin(low_level, ", ")));
  }
  if (policy.stages < 0 || policy.stages > kMaxPartitions) {
    return Invalid("policy.stages", absl::StrCat("must be in 0..", kMaxPartitions, ", got ", policy.stages,
                                                 "; 0 means one partition per PU"));
  }
  if (!Contains(kDevicePlacements, policy.device_placement)) {
    return Invalid("policy.device_placement", absl::StrCat("unknown device placement '", policy.device_placement,
                                                           "'; allowed: ", Join(kDevicePlacements)));
  }
  return absl::OkStatus();
}

absl::Status ValidateRun(const RunSettings& run) {
  BATON_RETURN_IF_ERROR(CheckPositive(run.duration_s, "run.duration_s", kMaxSeconds, "the measured seconds per mode"));
  BATON_RETURN_IF_ERROR(CheckPositive(run.warmup_s, "run.warmup_s", kMaxSeconds,
                                      "the unmeasured warm-up seconds (0 for none)", /*zero_ok=*/true));
  BATON_RETURN_IF_ERROR(
      CheckInRange(run.slices, 1, kMaxSlices, "run.slices", "how many slices each mode's time is cut into"));
  if (run.duration_s / run.slices < kMinSliceS) {
    return Invalid("run.slices",
                   absl::StrCat(run.slices, " slices of run.duration_s ", run.duration_s, " s would last ",
                                run.duration_s / run.slices * 1e3, " ms each, too short to measure; use at most ",
                                std::max(1, static_cast<int>(run.duration_s / kMinSliceS)),
                                " slices or a longer duration_s (each slice at least ", kMinSliceS * 1e3, " ms)"));
  }
  BATON_RETURN_IF_ERROR(
      CheckInRange(run.max_queue, 1, kMaxQueue, "run.max_queue", "the per-device ready-queue capacity"));
  BATON_RETURN_IF_ERROR(CheckInRange(run.max_in_flight, 1, kMaxQueue, "run.max_in_flight",
                                     "the per-model limit on requests in flight"));
  for (size_t i = 0; i < run.baseline_modes.size(); ++i) {
    const std::string& name = run.baseline_modes[i];
    const std::string where = absl::StrCat("run.baselines[", i, "]");
    if (!Contains(kBaselineNames, name)) {
      return Invalid(where, absl::StrCat("unknown baseline '", name, "'; known: ", absl::StrJoin(kBaselineNames, ", ")));
    }
    for (size_t j = 0; j < i; ++j) {
      if (run.baseline_modes[j] == name) {
        return Invalid(where, absl::StrCat("baseline '", name, "' is listed twice; list each once"));
      }
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Parsing: a walk over the yaml-cpp tree that knows every key's path.

struct Field {
  std::string key;
  YAML::Node value;
  std::string path;
};
using Fields = std::vector<Field>;

const Field* Find(const Fields& fields, const char* key) {
  for (const Field& field : fields) {
    if (field.key == key) return &field;
  }
  return nullptr;
}

// "'two'", "a list", "a map", "nothing" (for messages).
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: {
      std::string text = node.Scalar();
      if (text.size() > 40) text = absl::StrCat(text.substr(0, 40), "...");
      return absl::StrCat("'", text, "'");
    }
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

// All of `text` read as a decimal T (a leading '+' is allowed); nullopt for
// anything else, including overflow ("1e999", "99999999999999999999").
template <typename T>
std::optional<T> FromChars(std::string text) {
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.erase(0, 1);
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

class Parser {
 public:
  explicit Parser(const std::string& source) : source_(source) {}

  absl::StatusOr<RunConfig> Parse(const YAML::Node& root) {
    if (root.IsNull()) {
      return Error("", "the configuration is empty; `devices` and `models` are required (see docs/config.md)");
    }
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(root, "", kTopKeys));
    RunConfig config;
    for (const char* required : {"devices", "models"}) {
      if (!Find(fields, required)) {
        return Error("", absl::StrCat("missing required key '", required,
                                      "'; `devices` and `models` are required (see docs/config.md)"));
      }
    }
    for (const Field& f : fields) {
      if (f.key == "devices") {
        BATON_RETURN_IF_ERROR(List(f, [&](const YAML::Node& n, const std::string& p) {
          config.devices.emplace_back();
          return ParseDevice(n, p, config.devices.back());
        }));
      } else if (f.key == "models") {
        BATON_RETURN_IF_ERROR(List(f, [&](const YAML::Node& n, const std::string& p) {
          config.models.emplace_back();
          return ParseModel(n, p, config.models.back());
        }));
      } else if (f.key == "policy") {
        BATON_RETURN_IF_ERROR(ParsePolicy(f.value, f.path, config.policy));
      } else if (f.key == "run") {
        BATON_RETURN_IF_ERROR(ParseRun(f.value, f.path, config.run));
      }
    }
    return config;
  }

  // AGENT.yaml: {name, pus} (see ParseAgentConfig); the name defaults to "agent".
  absl::StatusOr<DeviceConfig> ParseAgent(const YAML::Node& root) const {
    static constexpr std::array<const char*, 2> kAgentKeys = {"name", "pus"};
    if (root.IsNull()) {
      return Error("", "the agent configuration is empty; write pus: [{name: cpu0, kind: cpu}] (see docs/agent.md)");
    }
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(root, "", kAgentKeys));
    BATON_RETURN_IF_ERROR(Required(fields, "", "pus", "[{name: cpu0, kind: cpu}]"));
    DeviceConfig device;
    device.name = "agent";
    for (const Field& f : fields) {
      if (f.key == "name") {
        BATON_RETURN_IF_ERROR(String(f, device.name));
      } else if (f.key == "pus") {
        BATON_RETURN_IF_ERROR(List(f, [&](const YAML::Node& n, const std::string& p) {
          device.pus.emplace_back();
          return ParsePu(n, p, device.pus.back());
        }));
      }
    }
    return device;
  }

 private:
  absl::Status Error(const std::string& path, const std::string& problem) const {
    return absl::InvalidArgumentError(path.empty() ? absl::StrCat(source_, ": ", problem)
                                                   : absl::StrCat(source_, ": ", path, ": ", problem));
  }
  absl::Status TypeError(const Field& f, const char* expected) const {
    return Error(f.path, absl::StrCat("expected ", expected, ", got ", Describe(f.value)));
  }

  // The entries of a map (null = empty), with unknown and duplicate keys refused.
  absl::StatusOr<Fields> Map(const YAML::Node& node, const std::string& path,
                             std::span<const char* const> known) const {
    Fields fields;
    if (node.IsNull()) return fields;
    if (!node.IsMap()) {
      return Error(path, absl::StrCat("expected a map (key: value) with keys ", Join(known), ", got ", Describe(node)));
    }
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) {
        return Error(
            path, absl::StrCat("expected a name as key, got ", Describe(entry.first), "; known keys: ", Join(known)));
      }
      const std::string key = entry.first.Scalar();
      if (!Contains(known, key)) {
        return Error(path, absl::StrCat("unknown key '", key, "'; known keys: ", Join(known)));
      }
      if (Find(fields, key.c_str())) {
        return Error(path, absl::StrCat("key '", key, "' appears twice; keep one"));
      }
      fields.push_back({key, entry.second, Child(path, key)});
    }
    return fields;
  }

  template <typename F>
  absl::Status List(const Field& f, F&& each) const {
    if (f.value.IsNull()) return absl::OkStatus();  // Validate reports what must not be empty
    if (!f.value.IsSequence()) return TypeError(f, "a list");
    for (size_t i = 0; i < f.value.size(); ++i) {
      BATON_RETURN_IF_ERROR(each(f.value[i], Index(f.path, i)));
    }
    return absl::OkStatus();
  }

  absl::Status Required(const Fields& fields, const std::string& path, const char* key, const char* hint) const {
    if (Find(fields, key)) return absl::OkStatus();
    return Error(path, absl::StrCat("missing required key '", key, "'; add ", key, ": ", hint));
  }

  // `f` belongs to another kind/mode: `actual` says what is set instead.
  absl::Status NotApplicable(const Field& f, const char* needs_key, const std::string& needs_value,
                             const std::string& actual) const {
    return Error(f.path, absl::StrCat("'", f.key, "' applies only to ", needs_key, " ", needs_value, ", but ", actual,
                                      "; remove ", f.key, ", or set ", needs_key, ": ", needs_value));
  }

  absl::Status String(const Field& f, std::string& out) const {
    if (!f.value.IsScalar()) return TypeError(f, "a string");
    out = f.value.Scalar();
    return absl::OkStatus();
  }

  absl::Status Int(const Field& f, int& out) const {
    std::optional<int64_t> value = f.value.IsScalar() ? FromChars<int64_t>(f.value.Scalar()) : std::nullopt;
    if (!value) return TypeError(f, "an integer");
    if (*value < std::numeric_limits<int>::min() || *value > std::numeric_limits<int>::max()) {
      return Error(f.path, absl::StrCat(*value, " is out of range for an integer; allowed: ",
                                        std::numeric_limits<int>::min(), "..", std::numeric_limits<int>::max()));
    }
    out = static_cast<int>(*value);
    return absl::OkStatus();
  }

  absl::Status Uint64(const Field& f, uint64_t& out) const {
    std::optional<uint64_t> value = f.value.IsScalar() ? FromChars<uint64_t>(f.value.Scalar()) : std::nullopt;
    if (!value) return TypeError(f, "a non-negative integer (0 to 18446744073709551615)");
    out = *value;
    return absl::OkStatus();
  }

  absl::Status Double(const Field& f, double& out) const {
    std::optional<double> value = f.value.IsScalar() ? FromChars<double>(f.value.Scalar()) : std::nullopt;
    if (!value) return TypeError(f, "a number");
    out = *value;
    return absl::OkStatus();
  }

  absl::Status Bool(const Field& f, bool& out) const {
    if (!f.value.IsScalar() || !YAML::convert<bool>::decode(f.value, out)) return TypeError(f, "true or false");
    return absl::OkStatus();
  }

  absl::Status StringList(const Field& f, std::vector<std::string>& out) const {
    if (f.value.IsNull()) return absl::OkStatus();
    if (!f.value.IsSequence()) return TypeError(f, "a list of strings");
    for (size_t i = 0; i < f.value.size(); ++i) {
      Field item{f.key, f.value[i], Index(f.path, i)};
      BATON_RETURN_IF_ERROR(String(item, out.emplace_back()));
    }
    return absl::OkStatus();
  }

  absl::Status IntList(const Field& f, std::vector<int>& out) const {
    if (f.value.IsNull()) return absl::OkStatus();
    if (!f.value.IsSequence()) return TypeError(f, "a list of integers");
    for (size_t i = 0; i < f.value.size(); ++i) {
      Field item{f.key, f.value[i], Index(f.path, i)};
      BATON_RETURN_IF_ERROR(Int(item, out.emplace_back()));
    }
    return absl::OkStatus();
  }

  absl::Status ParseDevice(const YAML::Node& node, const std::string& path, DeviceConfig& device) const {
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(node, path, kDeviceKeys));
    BATON_RETURN_IF_ERROR(Required(fields, path, "name", "<a unique device name>"));
    if (Find(fields, "address") == nullptr) {
      BATON_RETURN_IF_ERROR(Required(fields, path, "pus", "[{name: cpu0, kind: cpu}]"));
    } else if (const Field* pus = Find(fields, "pus")) {
      return Error(pus->path, "a remote device (with `address`) gets its PUs from its agent; list them in the "
                              "agent's --config instead");
    }
    for (const Field& f : fields) {
      if (f.key == "name") {
        BATON_RETURN_IF_ERROR(String(f, device.name));
      } else if (f.key == "address") {
        BATON_RETURN_IF_ERROR(String(f, device.address));
      } else if (f.key == "token_file") {
        BATON_RETURN_IF_ERROR(String(f, device.token_file));
      } else if (f.key == "ca_cert") {
        BATON_RETURN_IF_ERROR(String(f, device.ca_cert));
      } else if (f.key == "client_cert") {
        BATON_RETURN_IF_ERROR(String(f, device.client_cert));
      } else if (f.key == "client_key") {
        BATON_RETURN_IF_ERROR(String(f, device.client_key));
      } else if (f.key == "server_name") {
        BATON_RETURN_IF_ERROR(String(f, device.server_name));
      } else if (f.key == "link_latency_ms") {
        BATON_RETURN_IF_ERROR(Double(f, device.link_latency_ms.emplace()));
      } else if (f.key == "link_mbps") {
        BATON_RETURN_IF_ERROR(Double(f, device.link_mbps.emplace()));
      } else if (f.key == "pus") {
        BATON_RETURN_IF_ERROR(List(f, [&](const YAML::Node& n, const std::string& p) {
          device.pus.emplace_back();
          return ParsePu(n, p, device.pus.back());
        }));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParsePu(const YAML::Node& node, const std::string& path, PuConfig& pu) const {
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(node, path, kPuKeys));
    BATON_RETURN_IF_ERROR(Required(fields, path, "name", "<a PU name, unique over all devices>"));
    // The kind decides which other keys apply, so read it first.
    if (const Field* kind = Find(fields, "kind")) {
      BATON_RETURN_IF_ERROR(String(*kind, pu.kind));
      if (!Contains(kKinds, pu.kind)) {
        return Error(kind->path, absl::StrCat("unknown kind '", pu.kind, "'; allowed: ", Join(kKinds)));
      }
    }
    const bool cpu = pu.kind == "cpu";
    const std::string actual = absl::StrCat("this PU is kind ", pu.kind, Find(fields, "kind") ? "" : " (the default)");
    for (const Field& f : fields) {
      if (cpu && Contains(kEmuOnlyKeys, f.key)) return NotApplicable(f, "kind", "emu", actual);
      if (!cpu && Contains(kCpuOnlyKeys, f.key)) return NotApplicable(f, "kind", "cpu", actual);
      if (f.key == "name") {
        BATON_RETURN_IF_ERROR(String(f, pu.name));
      } else if (f.key == "threads") {
        BATON_RETURN_IF_ERROR(Int(f, pu.threads));
      } else if (f.key == "cores") {
        BATON_RETURN_IF_ERROR(IntList(f, pu.cores));
      } else if (f.key == "share_session") {
        BATON_RETURN_IF_ERROR(Bool(f, pu.share_session));
      } else if (f.key == "nice") {
        BATON_RETURN_IF_ERROR(Int(f, pu.nice));
      } else if (f.key == "scheduling") {
        BATON_RETURN_IF_ERROR(String(f, pu.scheduling));
      } else if (f.key == "speed") {
        BATON_RETURN_IF_ERROR(Double(f, pu.speed));
      } else if (f.key == "op_speed") {
        BATON_RETURN_IF_ERROR(ParseOpSpeed(f, pu.op_speed));
      } else if (f.key == "unsupported_ops") {
        BATON_RETURN_IF_ERROR(StringList(f, pu.unsupported_ops));
      } else if (f.key == "compute") {
        BATON_RETURN_IF_ERROR(Bool(f, pu.compute));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseOpSpeed(const Field& f, std::map<std::string, double>& out) const {
    if (f.value.IsNull()) return absl::OkStatus();
    if (!f.value.IsMap()) return TypeError(f, "a map of op type to speed-up (e.g. {Conv: 30})");
    for (const auto& entry : f.value) {
      if (!entry.first.IsScalar()) {
        return Error(f.path, absl::StrCat("expected an op type as key, got ", Describe(entry.first)));
      }
      const std::string op = entry.first.Scalar();
      if (out.count(op)) return Error(f.path, absl::StrCat("op '", op, "' appears twice; keep one"));
      BATON_RETURN_IF_ERROR(Double(Field{op, entry.second, Child(f.path, op)}, out[op]));
    }
    return absl::OkStatus();
  }

  absl::Status ParseModel(const YAML::Node& node, const std::string& path, ModelConfig& model) const {
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(node, path, kModelKeys));
    BATON_RETURN_IF_ERROR(Required(fields, path, "name", "<a unique model name>"));
    BATON_RETURN_IF_ERROR(Required(fields, path, "path", "<an ONNX file, or zoo:NAME>"));
    for (const Field& f : fields) {
      if (f.key == "name") {
        BATON_RETURN_IF_ERROR(String(f, model.name));
      } else if (f.key == "path") {
        BATON_RETURN_IF_ERROR(String(f, model.path));
      } else if (f.key == "arrival") {
        BATON_RETURN_IF_ERROR(ParseArrival(f.value, f.path, model.arrival));
      } else if (f.key == "deadline_ms") {
        BATON_RETURN_IF_ERROR(Double(f, model.deadline_ms.emplace()));
      } else if (f.key == "slo_ms") {
        BATON_RETURN_IF_ERROR(Double(f, model.slo_ms.emplace()));
      } else if (f.key == "execution_timeout_ms") {
        BATON_RETURN_IF_ERROR(Double(f, model.execution_timeout_ms.emplace()));
      } else if (f.key == "max_batch") {
        BATON_RETURN_IF_ERROR(Int(f, model.max_batch));
      } else if (f.key == "max_queue_delay_ms") {
        BATON_RETURN_IF_ERROR(Double(f, model.max_queue_delay_ms));
      } else if (f.key == "batching") {
        BATON_RETURN_IF_ERROR(String(f, model.batching));
      } else if (f.key == "labels") {
        BATON_RETURN_IF_ERROR(String(f, model.labels.emplace()));
      } else if (f.key == "priority") {
        BATON_RETURN_IF_ERROR(Int(f, model.priority));
      } else if (f.key == "partitions") {
        BATON_RETURN_IF_ERROR(Int(f, model.partitions.emplace()));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseArrival(const YAML::Node& node, const std::string& path, ArrivalConfig& arrival) const {
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(node, path, kArrivalKeys));
    // The mode decides which other keys apply, so read it first.
    const Field* mode_field = Find(fields, "mode");
    if (mode_field) {
      std::string name;
      BATON_RETURN_IF_ERROR(String(*mode_field, name));
      std::optional<ArrivalConfig::Mode> mode = ModeFromName(name);
      if (!mode) return Error(mode_field->path, absl::StrCat("unknown mode '", name, "'; allowed: ", Join(kModes)));
      arrival.mode = *mode;
    }
    const std::string mode = ModeName(arrival.mode);
    const std::string actual = absl::StrCat("mode is ", mode, mode_field ? "" : " (the default)");
    for (const Field& f : fields) {
      if (f.key == "concurrency") {
        if (arrival.mode != ArrivalConfig::Mode::kClosed) return NotApplicable(f, "mode", "closed", actual);
        BATON_RETURN_IF_ERROR(Int(f, arrival.concurrency));
      } else if (f.key == "think_ms") {
        if (arrival.mode != ArrivalConfig::Mode::kClosed) return NotApplicable(f, "mode", "closed", actual);
        BATON_RETURN_IF_ERROR(Double(f, arrival.think_ms));
      } else if (f.key == "fps") {
        if (arrival.mode != ArrivalConfig::Mode::kPeriodic) return NotApplicable(f, "mode", "periodic", actual);
        BATON_RETURN_IF_ERROR(Double(f, arrival.fps));
      } else if (f.key == "rate") {
        if (arrival.mode != ArrivalConfig::Mode::kPoisson) return NotApplicable(f, "mode", "poisson", actual);
        BATON_RETURN_IF_ERROR(Double(f, arrival.rate));
      }
    }
    if (arrival.mode == ArrivalConfig::Mode::kPeriodic && !Find(fields, "fps")) {
      return Error(path, "mode periodic needs 'fps'; add fps: <requests per second, > 0>");
    }
    if (arrival.mode == ArrivalConfig::Mode::kPoisson && !Find(fields, "rate")) {
      return Error(path, "mode poisson needs 'rate'; add rate: <mean requests per second, > 0>");
    }
    return absl::OkStatus();
  }

  absl::Status ParsePolicy(const YAML::Node& node, const std::string& path, PolicyConfig& policy) const {
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(node, path, kPolicyKeys));
    for (const Field& f : fields) {
      if (f.key == "high_level") {
        BATON_RETURN_IF_ERROR(String(f, policy.high_level));
      } else if (f.key == "low_level") {
        BATON_RETURN_IF_ERROR(String(f, policy.low_level));
      } else if (f.key == "stages") {
        BATON_RETURN_IF_ERROR(Int(f, policy.stages));
      } else if (f.key == "device_placement") {
        BATON_RETURN_IF_ERROR(String(f, policy.device_placement));
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseRun(const YAML::Node& node, const std::string& path, RunSettings& run) const {
    BATON_ASSIGN_OR_RETURN(Fields fields, Map(node, path, kRunKeys));
    for (const Field& f : fields) {
      if (f.key == "duration_s") {
        BATON_RETURN_IF_ERROR(Double(f, run.duration_s));
      } else if (f.key == "warmup_s") {
        BATON_RETURN_IF_ERROR(Double(f, run.warmup_s));
      } else if (f.key == "seed") {
        BATON_RETURN_IF_ERROR(Uint64(f, run.seed));
      } else if (f.key == "baselines") {
        // true (all that apply), false (none), or a list of names.
        if (f.value.IsSequence()) {
          run.baselines = true;
          run.baseline_modes.clear();
          BATON_RETURN_IF_ERROR(StringList(f, run.baseline_modes));
          if (run.baseline_modes.empty()) run.baselines = false;
        } else {
          BATON_RETURN_IF_ERROR(Bool(f, run.baselines));
        }
      } else if (f.key == "slices") {
        BATON_RETURN_IF_ERROR(Int(f, run.slices));
      } else if (f.key == "max_queue") {
        BATON_RETURN_IF_ERROR(Int(f, run.max_queue));
      } else if (f.key == "max_in_flight") {
        BATON_RETURN_IF_ERROR(Int(f, run.max_in_flight));
      }
    }
    return absl::OkStatus();
  }

  std::string source_;
};

std::string YamlErrorLocation(const YAML::Mark& mark) {
  if (mark.is_null()) return "";
  return absl::StrCat("line ", mark.line + 1, ", column ", mark.column + 1, ": ");
}

// The text of a configuration file, read with the limits every config file has.
absl::StatusOr<std::string> ReadConfigText(const std::string& path) {
  return ReadRegularFile(path, kMaxFileBytes, "config file");
}

// An agent's one device: a name and at least one valid PU with a unique name.
absl::Status ValidateAgentDevice(const DeviceConfig& device) {
  if (device.name.empty()) return Invalid("name", "must not be empty; give the agent a name");
  if (device.pus.empty()) {
    return Invalid("pus", "at least one PU is required; add e.g. pus: [{name: cpu0, kind: cpu}]");
  }
  const unsigned host_cpus = std::thread::hardware_concurrency();
  std::map<std::string, std::string> pu_names;  // name -> path of first use
  for (size_t p = 0; p < device.pus.size(); ++p) {
    const PuConfig& pu = device.pus[p];
    const std::string pu_path = Index("pus", p);
    if (pu.name.empty()) return Invalid(Child(pu_path, "name"), "must not be empty; give the PU a unique name");
    if (auto [it, inserted] = pu_names.emplace(pu.name, pu_path); !inserted) {
      return Invalid(Child(pu_path, "name"),
                     absl::StrCat("duplicate PU name '", pu.name, "' (also ", it->second, "); PU names must be unique"));
    }
    BATON_RETURN_IF_ERROR(ValidatePu(pu, pu_path, host_cpus));
  }
  return absl::OkStatus();
}

}  // namespace

// Parses one YAML document with `parse` (a Parser member) and checks it with
// `validate`; every error is prefixed with `source`. No exception leaves.
//
// Documents that have content (more than a null), counting at most
// kMaxDocuments documents in all. YAML::LoadAll is not used: in yaml-cpp 0.7
// it loops forever, allocating, on some malformed input (e.g. a leading ','),
// each round adding another null document (fixed upstream after 0.7).
class DocumentCounter final : public YAML::EventHandler {
 public:
  static constexpr int kMaxDocuments = 16;
  static int WithContent(const std::string& yaml) {
    std::stringstream in(yaml);
    YAML::Parser parser(in);
    DocumentCounter counter;
    for (int n = 0; n < kMaxDocuments && parser.HandleNextDocument(counter); ++n) {
    }
    return counter.with_content_;
  }
  void OnDocumentStart(const YAML::Mark&) override { content_ = false; }
  void OnDocumentEnd() override { with_content_ += content_ ? 1 : 0; }
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { content_ = true; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override { content_ = true; }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    content_ = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    content_ = true;
  }
  void OnMapEnd() override {}

 private:
  bool content_ = false;
  int with_content_ = 0;
};

// True when `text` has a line that is not blank, a comment, a document
// marker or an explicit null: something that should have parsed to a value.
bool HasYamlContent(std::string_view text) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    const size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string_view::npos) {
      line = line.substr(first);
      const size_t last = line.find_last_not_of(" \t\r");
      line = line.substr(0, last + 1);
      if (line[0] != '#' && line != "---" && line != "..." && line != "~" && line != "null") return true;
    }
    start = end + 1;
  }
  return false;
}

template <typename T, typename Parse, typename Check>
absl::StatusOr<T> ParseDocument(std::string_view yaml, const std::string& source, const char* what,
                                const char* doc, Parse parse, Check validate) {
  // YAML is UTF-8 here, and names and paths end up in JSON (reports, the
  // server's answers), which must be: bytes that are not UTF-8 are refused
  // where they are, not replaced (two names could then become one).
  if (const std::optional<size_t> bad = FirstInvalidUtf8(yaml)) {
    const std::string_view before = yaml.substr(0, *bad);
    const size_t line = static_cast<size_t>(std::count(before.begin(), before.end(), '\n')) + 1;
    const size_t newline = before.rfind('\n');
    const size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: line %d, column %d: byte 0x%02X is not valid UTF-8; save the %s as UTF-8 (%s)", source, line,
        *bad - line_start + 1, static_cast<unsigned char>(yaml[*bad]), what, doc));
  }
  try {
    const std::string text(yaml);
    if (const int docs = DocumentCounter::WithContent(text); docs > 1) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": holds ", docs,
                                                     docs >= DocumentCounter::kMaxDocuments ? " or more" : "",
                                                     " YAML documents (separated by '---'); baton reads one ", what,
                                                     " per file: keep one"));
    }
    const YAML::Node root = YAML::Load(text);
    if (root.IsNull() && HasYamlContent(text)) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": invalid YAML: no document could be read from it (a ",
                                                     "stray ',' or bracket at the start?); fix the syntax (", doc,
                                                     " shows the format)"));
    }
    Parser parser(source);
    BATON_ASSIGN_OR_RETURN(T value, parse(parser, root));
    if (absl::Status status = validate(value); !status.ok()) {
      return absl::Status(status.code(), absl::StrCat(source, ": ", status.message()));
    }
    return value;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", YamlErrorLocation(e.mark), "invalid YAML: ", e.msg,
                                                   "; fix the syntax (", doc, " shows the format)"));
  } catch (const std::exception& e) {
    // yaml-cpp may also throw e.g. std::bad_alloc; no exception leaves this module.
    return absl::InvalidArgumentError(absl::StrCat(source, ": cannot read the ", what, ": ", e.what()));
  }
}

absl::StatusOr<RunConfig> ParseRunConfig(std::string_view yaml, const std::string& source) {
  return ParseDocument<RunConfig>(
      yaml, source, "configuration", "docs/config.md",
      [](Parser& p, const YAML::Node& root) { return p.Parse(root); },
      [](const RunConfig& c) { return Validate(c); });
}

absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path) {
  BATON_ASSIGN_OR_RETURN(std::string text, ReadConfigText(path));
  BATON_ASSIGN_OR_RETURN(RunConfig config, ParseRunConfig(text, path));
  config.base_dir = std::filesystem::path(path).parent_path().string();
  return config;
}

absl::Status Validate(const RunConfig& config) {
  BATON_RETURN_IF_ERROR(ValidateDevices(config.devices));
  BATON_RETURN_IF_ERROR(ValidateModels(config.models));
  BATON_RETURN_IF_ERROR(ValidatePolicy(config.policy));
  return ValidateRun(config.run);
}

RunConfig DefaultRunConfig(int cores) {
  RunConfig config;
  DeviceConfig& device = config.devices.emplace_back();
  device.name = "local";
  // A non-positive count still gets one PU, so the default is always runnable.
  for (int i = 0; i < std::max(cores, 1); ++i) {
    PuConfig& pu = device.pus.emplace_back();
    pu.name = absl::StrCat("cpu", i);
    pu.kind = "cpu";
    pu.threads = 1;
    pu.cores = {i};
  }
  for (const DefaultModel& entry : kDefaultModels) {
    ModelConfig& model = config.models.emplace_back();
    model.name = entry.name;
    model.path = absl::StrCat("zoo:", entry.zoo_name);
    model.arrival.mode = ArrivalConfig::Mode::kClosed;
    model.arrival.concurrency = entry.concurrency;
    model.arrival.think_ms = entry.think_ms;
    if (entry.slo_ms > 0) model.slo_ms = entry.slo_ms;
  }
  config.policy = PolicyConfig{.high_level = "search", .low_level = "share", .stages = 0};
  config.run.duration_s = kDefaultDurationS;
  config.run.warmup_s = kDefaultWarmupS;
  return config;
}

std::vector<std::string> BaselineNames() { return {kBaselineNames.begin(), kBaselineNames.end()}; }

std::string ToYaml(const RunConfig& config) {
  // Keys that do not apply to a PU's kind or a model's mode are left out (the
  // parser refuses them), so those fields read back as their defaults.
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "devices" << YAML::Value << YAML::BeginSeq;
  for (const DeviceConfig& device : config.devices) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << device.name;
    if (device.remote()) {
      out << YAML::Key << "address" << YAML::Value << device.address;
      for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"token_file", &device.token_file},
                                       {"ca_cert", &device.ca_cert},
                                       {"client_cert", &device.client_cert},
                                       {"client_key", &device.client_key},
                                       {"server_name", &device.server_name}}) {
        if (!value->empty()) out << YAML::Key << key << YAML::Value << *value;
      }
      if (device.link_latency_ms) {
        out << YAML::Key << "link_latency_ms" << YAML::Value << FormatDouble(*device.link_latency_ms);
      }
      if (device.link_mbps) out << YAML::Key << "link_mbps" << YAML::Value << FormatDouble(*device.link_mbps);
      out << YAML::EndMap;
      continue;
    }
    out << YAML::Key << "pus" << YAML::Value << YAML::BeginSeq;
    for (const PuConfig& pu : device.pus) {
      out << YAML::Flow << YAML::BeginMap;
      out << YAML::Key << "name" << YAML::Value << pu.name;
      out << YAML::Key << "kind" << YAML::Value << pu.kind;
      if (pu.kind == "cpu") {
        out << YAML::Key << "threads" << YAML::Value << pu.threads;
        if (!pu.cores.empty()) out << YAML::Key << "cores" << YAML::Value << YAML::Flow << pu.cores;
        if (!pu.share_session) out << YAML::Key << "share_session" << YAML::Value << false;
        if (pu.nice != 0) out << YAML::Key << "nice" << YAML::Value << pu.nice;
        if (pu.scheduling != PuConfig{}.scheduling) out << YAML::Key << "scheduling" << YAML::Value << pu.scheduling;
      } else {
        out << YAML::Key << "speed" << YAML::Value << FormatDouble(pu.speed);
        if (!pu.op_speed.empty()) {
          out << YAML::Key << "op_speed" << YAML::Value << YAML::Flow << YAML::BeginMap;
          for (const auto& [op, speed] : pu.op_speed) out << YAML::Key << op << YAML::Value << FormatDouble(speed);
          out << YAML::EndMap;
        }
        if (!pu.unsupported_ops.empty()) {
          out << YAML::Key << "unsupported_ops" << YAML::Value << YAML::Flow << pu.unsupported_ops;
        }
        out << YAML::Key << "compute" << YAML::Value << pu.compute;
      }
      out << YAML::EndMap;
    }
    out << YAML::EndSeq << YAML::EndMap;
  }
  out << YAML::EndSeq;

  out << YAML::Key << "models" << YAML::Value << YAML::BeginSeq;
  for (const ModelConfig& model : config.models) {
    out << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << model.name;
    out << YAML::Key << "path" << YAML::Value << model.path;
    out << YAML::Key << "arrival" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "mode" << YAML::Value << ModeName(model.arrival.mode);
    switch (model.arrival.mode) {
      case ArrivalConfig::Mode::kClosed:
        out << YAML::Key << "concurrency" << YAML::Value << model.arrival.concurrency;
        if (model.arrival.think_ms != 0) {
          out << YAML::Key << "think_ms" << YAML::Value << FormatDouble(model.arrival.think_ms);
        }
        break;
      case ArrivalConfig::Mode::kPeriodic:
        out << YAML::Key << "fps" << YAML::Value << FormatDouble(model.arrival.fps);
        break;
      case ArrivalConfig::Mode::kPoisson:
        out << YAML::Key << "rate" << YAML::Value << FormatDouble(model.arrival.rate);
        break;
    }
    out << YAML::EndMap;
    if (model.deadline_ms) out << YAML::Key << "deadline_ms" << YAML::Value << FormatDouble(*model.deadline_ms);
    if (model.slo_ms) out << YAML::Key << "slo_ms" << YAML::Value << FormatDouble(*model.slo_ms);
    if (model.execution_timeout_ms) {
      out << YAML::Key << "execution_timeout_ms" << YAML::Value << FormatDouble(*model.execution_timeout_ms);
    }
    if (model.max_batch != 1) {
      out << YAML::Key << "max_batch" << YAML::Value << model.max_batch;
      out << YAML::Key << "max_queue_delay_ms" << YAML::Value << FormatDouble(model.max_queue_delay_ms);
      out << YAML::Key << "batching" << YAML::Value << model.batching;
    }
    out << YAML::Key << "priority" << YAML::Value << model.priority;
    if (model.partitions) out << YAML::Key << "partitions" << YAML::Value << *model.partitions;
    if (model.labels) out << YAML::Key << "labels" << YAML::Value << *model.labels;
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;

  out << YAML::Key << "policy" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "high_level" << YAML::Value << config.policy.high_level;
  out << YAML::Key << "low_level" << YAML::Value << config.policy.low_level;
  out << YAML::Key << "stages" << YAML::Value << config.policy.stages;
  if (config.policy.device_placement != "auto") {
    out << YAML::Key << "device_placement" << YAML::Value << config.policy.device_placement;
  }
  out << YAML::EndMap;

  const RunSettings& run = config.run;
  out << YAML::Key << "run" << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "duration_s" << YAML::Value << FormatDouble(run.duration_s);
  out << YAML::Key << "warmup_s" << YAML::Value << FormatDouble(run.warmup_s);
  out << YAML::Key << "seed" << YAML::Value << run.seed;
  if (run.baselines && !run.baseline_modes.empty()) {
    out << YAML::Key << "baselines" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const std::string& name : run.baseline_modes) out << name;
    out << YAML::EndSeq;
  } else {
    out << YAML::Key << "baselines" << YAML::Value << run.baselines;
  }
  out << YAML::Key << "slices" << YAML::Value << run.slices;
  out << YAML::Key << "max_queue" << YAML::Value << run.max_queue;
  out << YAML::Key << "max_in_flight" << YAML::Value << run.max_in_flight;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return absl::StrCat(out.c_str(), "\n");
}

std::optional<std::string> ZooName(const std::string& path) {
  constexpr std::string_view kPrefix = "zoo:";
  if (path.compare(0, kPrefix.size(), kPrefix) != 0) return std::nullopt;
  return path.substr(kPrefix.size());
}

absl::StatusOr<DeviceConfig> ParseAgentConfig(std::string_view yaml, const std::string& source) {
  return ParseDocument<DeviceConfig>(
      yaml, source, "agent configuration", "docs/agent.md",
      [](Parser& p, const YAML::Node& root) { return p.ParseAgent(root); },
      [](const DeviceConfig& d) { return ValidateAgentDevice(d); });
}

absl::StatusOr<DeviceConfig> LoadAgentConfig(const std::string& path) {
  BATON_ASSIGN_OR_RETURN(std::string text, ReadConfigText(path));
  return ParseAgentConfig(text, path);
}

DeviceConfig DefaultAgentDevice(const std::string& name, int cores) {
  DeviceConfig device;
  device.name = name;
  for (int i = 0; i < std::max(cores, 1); ++i) {
    PuConfig& pu = device.pus.emplace_back();
    pu.name = absl::StrCat("cpu", i);
    pu.kind = "cpu";
    pu.threads = 1;
    pu.cores = {i};
  }
  return device;
}

}  // namespace baton::config
