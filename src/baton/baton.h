// baton's public API: an Engine an application opens on a configuration and
// sends inference requests to (docs/embedding.md).
//
//   auto engine = baton::Engine::Open("models.yaml");
//   if (!engine.ok()) { std::cerr << engine.status().ToString(); return 1; }
//   baton::Tensors in;
//   in.emplace("input", baton::Tensor::Borrow(baton::dtype::kFloat, {1, 3, 64, 64}, buf.data(), buf.size() * 4));
//   baton::InferOptions opt;
//   opt.deadline = std::chrono::milliseconds(50);
//   baton::Result<baton::Tensors> out = (*engine)->Infer("camera", std::move(in), opt);
//
// Open loads and validates the models, builds the devices and their PUs
// (local, and remote `baton agent`s), profiles them when no cached profile
// fits the configuration, plans with the configured high-level policy (or
// carries out a given plan), deploys and starts the runtime: what `baton run`
// does before it measures, through the same library code.
//
// Errors are values (Status, Result<T>); nothing here throws. Every request
// is answered exactly once: outputs, or an error naming what went wrong.
// Inputs are checked against the model before any work runs (names, element
// types, shapes; -1 in a declared shape is a free dimension).
//
// Ownership: inputs move into the engine. A Tensor may own its bytes, adopt
// the caller's buffer with a keep-alive handle, or borrow one the caller keeps
// alive and unchanged until the request is answered (core/tensor.h); ONNX
// Runtime reads inputs in place, so no input is copied on its way to the
// session. An answer never comes while the engine still holds a lent buffer
// (a partition may still be running when a deadline passes: the answer then
// waits for it). Outputs are owned by the returned tensors.
//
// Thread-safety: every member function may be called from many threads at
// once, except that Close and the destructor must not run concurrently with
// each other. Infer's calling thread does the dispatching and, on an idle PU,
// the run itself. Callbacks of InferAsync run on one of baton's threads (its
// dispatcher, or a PU worker): keep them short, and never call Infer or Close
// from one.
//
// Only the standard library and baton's own small types appear here, so an
// application needs no ONNX, ONNX Runtime, gRPC, protobuf or Abseil headers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/tensor.h"

namespace baton {

// gRPC's status codes (absl::StatusCode has the same values).
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "OK", "INVALID_ARGUMENT", ...
const char* StatusCodeName(StatusCode code);

class Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;  // "INVALID_ARGUMENT: model 'x': ..."

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the error that stopped it.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}              // NOLINT: implicit, like absl::StatusOr
  Result(Status error) : v_(std::move(error)) {           // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Status(StatusCode::kInternal, "Result made from an OK status");
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  // The value; only when ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

// Tensors by input or output name.
using Tensors = std::map<std::string, Tensor>;

// One input or output of a model. shape: -1 for a free dimension; empty with
// rank_known false when the model does not say.
struct TensorInfo {
  std::string name;
  ElemType elem_type = dtype::kUndefined;
  std::string type_name;  // "float32", "int64", ...
  std::vector<int64_t> shape;
  bool rank_known = true;
};

struct ModelInfo {
  std::string name;    // as configured
  std::string source;  // the file loaded
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
  std::string device;          // the device its partitions run on
  int partitions = 0;          // as deployed
  std::optional<double> slo_ms;  // the config's
  // Class labels from the config's `labels` file: labels[i] names class
  // index i (empty: none). `baton serve`'s classification answers use them.
  std::vector<std::string> labels;
};

// Cancels requests the caller no longer wants (InferOptions::cancel), e.g.
// those of a client that has gone. Cancel answers every request given the
// token that is not answered yet CANCELLED, soon (from baton's dispatcher)
// and still exactly once, and withdraws its work: partitions waiting are
// dropped and a running one is stopped (as for a deadline). A request given
// a token that is cancelled already is answered CANCELLED without running.
// A request waiting in a model's dynamic batcher leaves it; one whose batch
// has left is answered at once, and the batch runs on for the others (or is
// withdrawn when all of its requests are). One token may serve many requests (a
// connection's) or one. Thread-safe; Cancel may be called from any thread, a
// callback included, and more than once.
//
//   auto token = std::make_shared<baton::CancelToken>();
//   opt.cancel = token;
//   engine->InferAsync("camera", std::move(in), opt, done);
//   token->Cancel();  // the client went away: done gets CANCELLED
class CancelToken {
 public:
  void Cancel();
  bool cancelled() const;
  // Calls `hook` once, on the thread that calls Cancel (or here, at once,
  // when cancelled already), unless removed before. Cancel calls the hooks
  // newest first, so the requests that wait go before the older ones whose
  // end would let them start. Returns the key Remove
  // takes. The engine ties the requests given the token to it this way; a
  // front-end may tie its own work. A hook must not call Remove.
  uint64_t OnCancel(std::function<void()> hook);
  // Forgets a hook (a no-op once it has been called). A hook that Cancel has
  // already taken may still be running when this returns.
  void Remove(uint64_t key);

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;
  uint64_t next_key_ = 1;
  std::map<uint64_t, std::function<void()>> hooks_;
};

struct InferOptions {
  // Time from now after which the request is dropped and answered
  // DEADLINE_EXCEEDED (work not started yet is skipped). Unset: the model's
  // configured deadline_ms, else none.
  std::optional<std::chrono::nanoseconds> deadline;
  // Larger is more important; passed to the low-level policy. Unset: the
  // plan's or the config's priority of the model.
  std::optional<int> priority;
  // An answer within this time is "good" in Stats(); unset: the model's slo_ms.
  std::optional<std::chrono::nanoseconds> slo;
  // InferAsync only. Nonzero: when this model's recent runs took at most this
  // long (a moving average of the PU time of its answered requests, once it
  // has some), the calling thread does what Infer's does (dispatching, and
  // the runs that start on an idle PU it may use) and `done` may then be
  // called on it before InferAsync returns; a request for a busy PU is left
  // to baton's threads as usual. For front-ends whose threads may be held
  // about that long: handing a run to a PU worker and its answer back costs
  // two thread wake-ups, more than a tiny model's run. Zero: never.
  std::chrono::nanoseconds run_here_up_to{0};
  // Set: Cancel on it answers this request CANCELLED (CancelToken).
  std::shared_ptr<CancelToken> cancel;
};

struct LatencyStats {
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  double mean_ms = 0;
};

struct ModelStats {
  std::string name;
  uint64_t submitted = 0;
  uint64_t completed = 0;          // answered OK
  uint64_t deadline_exceeded = 0;  // dropped for their deadline
  uint64_t cancelled = 0;          // answered CANCELLED (InferOptions::cancel)
  uint64_t rejected = 0;           // RESOURCE_EXHAUSTED: queue or in-flight limit
  uint64_t invalid = 0;            // refused before any work (bad inputs, engine closed)
  uint64_t failed = 0;             // any other error
  uint64_t slo_met = 0;            // completed within their SLO (requests with one)
  uint64_t with_slo = 0;           // answered requests that had an SLO
  // Of the completed requests (the last kLatencyWindow of them).
  LatencyStats latency;
  // Every completed request since Open: a cumulative histogram of its
  // latency (latency_bucket_counts[i] = requests that took at most
  // kLatencyBucketsS[i] seconds), their sum in seconds, and their count
  // (= completed). The Prometheus histogram of `baton serve`.
  std::vector<uint64_t> latency_bucket_counts;
  double latency_sum_s = 0;
  // The same split in two for completed requests (same buckets): compute is
  // the time PUs spent running the request's partitions (summed over its
  // partitions; a batched request counts its batch's), queue is the rest of
  // its latency (waiting in queues, hand-overs, transfers; never negative).
  std::vector<uint64_t> queue_bucket_counts;
  double queue_sum_s = 0;
  std::vector<uint64_t> compute_bucket_counts;
  double compute_sum_s = 0;
  // Executions of the model answered OK (Triton's execution_count): a batch
  // of the dynamic batcher counts once; without batching, = completed.
  uint64_t executions = 0;
  // The same by batch size, smallest first (Triton's batch_stats): a size
  // is a number of requests run as one execution.
  struct BatchSize {
    int64_t size = 0;
    uint64_t executions = 0;
    double compute_s = 0;  // the PU time those executions took
  };
  std::vector<BatchSize> batch_sizes;
  // Requests answered with an error (deadline_exceeded + cancelled + rejected
  // + invalid + failed) and the sum of their latencies.
  double failed_sum_s = 0;
  // When the last request was answered, in milliseconds since the Unix epoch; 0 = none yet.
  uint64_t last_answer_unix_ms = 0;
};

// Upper bounds (seconds) of the latency histogram's buckets (ModelStats).
inline constexpr double kLatencyBucketsS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25,  0.5,    1,     2.5,  5,     10};

struct PuStatsView {
  std::string name;
  std::string kind;    // "cpu", "emu", "remote"
  std::string device;
  uint64_t runs = 0;       // partitions run
  double busy_s = 0;       // time spent running them
  double utilization = 0;  // busy / time since Open
  // CPU time of the threads that ran them (0 for a remote device's PUs, whose
  // agents do not report it). For a CPU PU, run_cpu_s / busy_s is the share
  // of its runs' time it had a core: other threads on its cores lower it.
  double run_cpu_s = 0;
};

struct DeviceStatsView {
  std::string name;
  bool remote = false;
  bool reachable = true;
  uint64_t queued = 0;   // assignments waiting in its ready queue (local devices)
  uint64_t running = 0;  // assignments running on its PUs (local devices)
  // Decisions of its low-level policy the dispatcher ignored for breaking the
  // policy contract (a bug in the policy; local devices).
  uint64_t policy_violations = 0;
  // Remote devices: times it was found unreachable, and assignments it
  // handed back unanswered when lost (the dispatcher gave them to others).
  uint64_t lost = 0;
  uint64_t returned = 0;
};

struct EngineStats {
  double uptime_s = 0;
  std::vector<ModelStats> models;    // config order
  std::vector<PuStatsView> pus;      // local PUs, PuId order
  std::vector<DeviceStatsView> devices;  // config order
  uint64_t in_flight = 0;
};

struct EngineOptions {
  std::string plan_path;     // carry out this plan (`baton plan`); "" = plan now
  std::string profile_path;  // use this profile; "" = the plan's, else one cached per configuration
  std::string cache_dir;     // zoo models and profiles; "" = $BATON_CACHE_DIR, else ~/.cache/baton
  bool no_profile = false;   // no profiling: plan from estimated costs (whole, capability, balanced only)
  // Start-up progress ("loading models", "profiling", ...); null = silent.
  std::function<void(const std::string&)> progress;
  // Profiling progress: measurements done out of total, and what.
  std::function<void(int done, int total, const std::string& what)> profile_progress;
  // How long Close (and the destructor) waits for requests in flight; those
  // still unanswered then are answered UNAVAILABLE. Zero or less = no limit.
  std::chrono::milliseconds close_timeout{30000};
  // Record the dispatcher's events for Engine::WriteTrace: each partition
  // run on each PU, queue depths and drops, request arrivals and answers
  // that were not OK. At most trace_max_events are kept (the first ones);
  // later events are counted and left out.
  bool trace = false;
  size_t trace_max_events = 1'000'000;
  // Set from any thread (e.g. a signal handler's thread) to stop Open while
  // it starts: Open then returns CANCELLED at its next step (before loading,
  // connecting, profiling, planning, creating sessions), profiling within one
  // measurement, keeping what it measured so that the next Open resumes it.
  // Borrowed: it must outlive Open. Null = Open runs to the end.
  const std::atomic<bool>* stop = nullptr;
  // Open only these of the config's models (by name, each at most once; the
  // config's order is kept); empty = all of them. An unknown name is
  // InvalidArgument naming the config's models. What `baton serve
  // --model-control-mode explicit` opens as models are loaded and unloaded.
  std::vector<std::string> models;
};

// What Engine::WriteTrace wrote.
struct TraceSummary {
  size_t runs = 0;            // partition runs in the file
  size_t dropped_events = 0;  // events left out over EngineOptions::trace_max_events
};

class Engine {
 public:
  // Completed requests kept per model for the latency percentiles of Stats().
  static constexpr size_t kLatencyWindow = 4096;

  // From a YAML config file (relative model paths resolve against its folder).
  static Result<std::unique_ptr<Engine>> Open(const std::string& config_path, EngineOptions options = {});
  // From YAML (or JSON) text; relative model paths resolve against `base_dir`
  // ("" = the working directory).
  static Result<std::unique_ptr<Engine>> OpenText(std::string_view yaml, const std::string& base_dir = "",
                                                  EngineOptions options = {});

  ~Engine();  // Close()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::vector<ModelInfo>& Models() const;
  // The model called `name`, or nullptr.
  const ModelInfo* FindModel(std::string_view name) const;

  // Runs one request and waits for its answer.
  Result<Tensors> Infer(const std::string& model, Tensors inputs, const InferOptions& options = {});
  std::future<Result<Tensors>> InferAsync(const std::string& model, Tensors inputs, const InferOptions& options = {});
  // `done` is called exactly once, on one of baton's threads (see above), or
  // on the caller's thread when the request is refused before it starts or
  // runs there (InferOptions::run_here_up_to).
  void InferAsync(const std::string& model, Tensors inputs, const InferOptions& options,
                  std::function<void(Result<Tensors>)> done);

  EngineStats Stats() const;

  // Writes what has been recorded so far (EngineOptions::trace) to `path` as
  // a Chrome/Perfetto trace (open it at ui.perfetto.dev): per device a
  // process with a lane per PU and a queue lane, and a "requests" process.
  // May be called while requests run, and after Close. FailedPrecondition
  // when the engine was opened without EngineOptions::trace; an error naming
  // the file when it cannot be written.
  Result<TraceSummary> WriteTrace(const std::string& path) const;

  // Waits for every request in flight to be answered (at most
  // EngineOptions::close_timeout; what is left is answered UNAVAILABLE), then
  // stops the runtime. Later requests are answered FAILED_PRECONDITION.
  // Idempotent.
  void Close();

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Runs the ONNX model file at `model_path` once, whole, in plain ONNX Runtime
// (one session with one intra-op thread, made for this call and dropped), and
// returns every output of the model: the reference that baton's partitioned
// answers are checked against (`baton run --verify`, the tests). For checks,
// not for serving: each call loads the model and creates a session. Errors:
// the model does not load, an input the model has is missing, or ONNX Runtime
// refuses the inputs or fails (with its message).
Result<Tensors> RunWholeModel(const std::string& model_path, Tensors inputs);

}  // namespace baton
