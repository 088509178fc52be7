// baton::Engine (baton/baton.h): Assemble (app/assembly.h) behind a small
// public API, with inputs checked before any work runs and per-model stats.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <iterator>
#include <mutex>
#include <shared_mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/app/assembly.h"
#include "baton/baton.h"
#include "baton/config/run_config.h"
#include "baton/core/file.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/graph/model.h"
#include "baton/trace/chrome_trace.h"
#include "baton/trace/trace_observer.h"
#include "baton/verify/verify.h"

namespace baton {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return absl::StrCat(StatusCodeName(code_), ": ", message_);
}

namespace {

Status FromAbsl(const absl::Status& s) {
  if (s.ok()) return Status();
  return Status(static_cast<StatusCode>(static_cast<int>(s.code())), std::string(s.message()));
}

TensorInfo InfoOf(const graph::Model& model, const std::string& name) {
  TensorInfo info;
  info.name = name;
  if (const graph::Value* v = model.FindValue(name)) {
    info.elem_type = v->type.elem_type;
    if (v->type.shape.has_value()) {
      for (const graph::Dim& d : *v->type.shape) info.shape.push_back(d.size.value_or(-1));
    } else {
      info.rank_known = false;
    }
  } else {
    info.rank_known = false;
  }
  info.type_name = ElemTypeName(info.elem_type);
  return info;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Per-model counters (the ModelStats counts), a window of recent latencies
// and a latency histogram.
struct ModelCounters {
  ModelStats counts;  // the counters only; Stats() fills the rest
  std::vector<double> latencies_ms;  // ring of Engine::kLatencyWindow
  size_t next = 0;
  // Histograms (not cumulative) and sums in seconds: latency, queue, compute.
  std::vector<uint64_t> buckets = std::vector<uint64_t>(std::size(kLatencyBucketsS), 0);
  std::vector<uint64_t> queue_buckets = std::vector<uint64_t>(std::size(kLatencyBucketsS), 0);
  std::vector<uint64_t> compute_buckets = std::vector<uint64_t>(std::size(kLatencyBucketsS), 0);
  double sum_s = 0;
  double queue_sum_s = 0;
  double compute_sum_s = 0;
  // A moving average of the compute seconds of answered requests (weight 1/8
  // on the newest), for InferOptions::run_here_up_to; negative before the first.
  double recent_compute_s = -1;
};

// Counts `seconds` into the bucket it falls in (none past the last bound: +Inf is the total count).
void AddToBucket(std::vector<uint64_t>& buckets, double seconds) {
  for (size_t b = 0; b < buckets.size(); ++b) {
    if (seconds <= kLatencyBucketsS[b]) {
      ++buckets[b];
      return;
    }
  }
}

std::vector<uint64_t> Cumulative(const std::vector<uint64_t>& buckets) {
  std::vector<uint64_t> out;
  uint64_t sum = 0;
  for (uint64_t n : buckets) out.push_back(sum += n);
  return out;
}

double Percentile(std::vector<double> sorted_ms, double q) {
  if (sorted_ms.empty()) return 0;
  const size_t i = std::min(sorted_ms.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted_ms.size())));
  return sorted_ms[i];
}

// Holds back a request's answer until the engine has let go of every input
// buffer the caller lent it (adopted or borrowed): a partition may still be
// running on a PU when the request is answered (its deadline passed, a
// sibling partition failed), and the caller may free a borrowed buffer as
// soon as it has the answer.
class InputGuard {
 public:
  explicit InputGuard(std::function<void(Result<Tensors>)> done) : done_(std::move(done)) {}

  // `t` (external) becomes a tensor over the same bytes whose last copy, when
  // destroyed, releases the original and counts down.
  static Tensor Wrap(const std::shared_ptr<InputGuard>& guard, Tensor t) {
    {
      std::lock_guard lock(guard->mu_);
      ++guard->held_;
    }
    std::shared_ptr<Tensor> original(new Tensor(std::move(t)), [guard](Tensor* p) {
      delete p;
      guard->Release();
    });
    void* data = original->bytes().data();
    const size_t size = original->byte_size();
    return Tensor::Adopt(original->elem_type(), original->shape(), data, size, original);
  }

  void Answer(Result<Tensors> r) {
    std::unique_lock lock(mu_);
    if (held_ > 0) {
      answer_.emplace(std::move(r));  // delivered by the last Release
      return;
    }
    lock.unlock();
    done_(std::move(r));
  }

 private:
  void Release() {
    std::unique_lock lock(mu_);
    if (--held_ > 0 || !answer_) return;
    Result<Tensors> r = std::move(*answer_);
    answer_.reset();
    lock.unlock();
    done_(std::move(r));
  }

  std::mutex mu_;
  int held_ = 0;
  std::optional<Result<Tensors>> answer_;
  std::function<void(Result<Tensors>)> done_;
};

// Ties one request to its CancelToken: the token's hook cancels it in the
// runtime once its id is known, or takes it out of the batcher while it
// waits there, and never after it has been answered (the runtime and the
// batcher may be gone by then). Cancel may come before, during or after the
// submission, on any thread.
class CancelLink {
 public:
  void Cancel() {
    std::unique_lock lock(mu_);
    cancel_ = true;
    if (answered_) return;
    if (rt_ != nullptr) rt_->Cancel(*id_);
    if (batcher_ != nullptr) CancelBatchedLocked(lock);
  }
  // The request went to `rt` as `id`.
  void Submitted(runtime::Runtime& rt, RequestId id) {
    std::lock_guard lock(mu_);
    if (answered_) return;
    rt_ = &rt;
    id_ = id;
    if (cancel_) rt.Cancel(id);
  }
  // The request went to `batcher` as `ticket` of `model`. Cancelled, it is
  // withdrawn if it still waits there, and answered at once either way: a
  // batch that has left runs on for its other requests, and this one's rows
  // of it are dropped. `answer_now` is called under the link's lock, while
  // the request is unanswered (so the engine is open); what it returns
  // answers the request, after the lock.
  using AnswerNow = std::function<std::function<void()>()>;
  void Batched(runtime::Batcher& batcher, ModelId model, uint64_t ticket, AnswerNow answer_now) {
    std::unique_lock lock(mu_);
    if (answered_) return;
    batcher_ = &batcher;
    model_ = model;
    ticket_ = ticket;
    answer_now_ = std::move(answer_now);
    if (cancel_) CancelBatchedLocked(lock);
  }
  void Answered() {
    std::lock_guard lock(mu_);
    answered_ = true;
  }

 private:
  // Under mu_ (the batcher lives while the request is unanswered); answers
  // after letting go, as the answer takes mu_ (Answered).
  void CancelBatchedLocked(std::unique_lock<std::mutex>& lock) {
    batcher_->Withdraw(model_, ticket_);
    batcher_ = nullptr;
    std::function<void()> answer = answer_now_();
    answer_now_ = nullptr;
    lock.unlock();
    answer();
  }

  std::mutex mu_;
  bool cancel_ = false;
  bool answered_ = false;
  runtime::Runtime* rt_ = nullptr;  // set with id_
  std::optional<RequestId> id_;
  runtime::Batcher* batcher_ = nullptr;  // set with model_, ticket_ and answer_now_
  ModelId model_{};
  uint64_t ticket_ = 0;
  AnswerNow answer_now_;
};

// A request's answer that runs only the first time it is called: a
// cancelled batched request is answered at once and its batch's answer
// later finds it taken.
class OnceAnswer {
 public:
  explicit OnceAnswer(runtime::DoneCallback answer) : answer_(std::move(answer)) {}
  void operator()(runtime::RequestResult r) {
    if (!taken_.exchange(true)) answer_(std::move(r));
  }

 private:
  std::atomic<bool> taken_{false};
  runtime::DoneCallback answer_;
};

}  // namespace

struct Engine::Impl {
  // Declared so that the runtime (in assembly) goes first, then what it uses.
  config::RunConfig config;
  std::unique_ptr<trace::TraceObserver> tracer;  // EngineOptions::trace; the runtime's observer
  std::unique_ptr<app::Remotes> remotes;
  app::Assembly assembly;
  std::unique_ptr<runtime::Batcher> batcher;
  std::vector<ModelInfo> infos;
  std::vector<std::optional<Duration>> default_deadline;  // per model
  std::optional<Duration> close_timeout;                  // none = no limit
  std::chrono::steady_clock::time_point opened = std::chrono::steady_clock::now();

  std::shared_mutex close_mu;  // shared: a request being submitted; exclusive: Close
  bool closed = false;         // guarded by close_mu
  // Infer calls inside Runtime::Run and InferAsync calls inside
  // Runtime::SubmitHere (they hold no close_mu meanwhile).
  std::mutex here_mu;
  std::condition_variable here_cv;
  int here_calls = 0;  // guarded by here_mu
  void EndHereCall() {
    std::lock_guard<std::mutex> calls(here_mu);
    --here_calls;
    here_cv.notify_all();
  }

  void Request(const std::string& model, Tensors inputs, const InferOptions& options,
               std::function<void(Result<Tensors>)> done, bool here);

  mutable std::mutex stats_mu;
  std::vector<ModelCounters> counters;  // guarded by stats_mu

  const config::RunConfig& assembled_config() const { return remotes ? remotes->resolved : config; }

  std::optional<size_t> IndexOf(std::string_view name) const {
    for (size_t i = 0; i < infos.size(); ++i) {
      if (infos[i].name == name) return i;
    }
    return std::nullopt;
  }

  // The request's inputs in the model's order, or why they do not fit.
  absl::StatusOr<dispatch::NamedTensors> CheckInputs(size_t m, Tensors inputs) const {
    const ModelInfo& info = infos[m];
    dispatch::NamedTensors out;
    out.reserve(info.inputs.size());
    for (const TensorInfo& want : info.inputs) {
      auto it = inputs.find(want.name);
      if (it == inputs.end()) {
        std::vector<std::string> given;
        for (const auto& [n, t] : inputs) given.push_back(n);
        return absl::InvalidArgumentError(
            absl::StrCat("model '", info.name, "': input '", want.name, "' (", want.type_name,
                         want.rank_known ? ShapeString(want.shape) : "[?]", ") is missing; given: [",
                         absl::StrJoin(given, ", "), "]"));
      }
      const Tensor& t = it->second;
      if (want.elem_type != dtype::kUndefined && t.elem_type() != want.elem_type) {
        return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "': input '", want.name, "' is ",
                                                       ElemTypeName(t.elem_type()), ", expected ", want.type_name));
      }
      if (want.rank_known) {
        bool fits = t.shape().size() == want.shape.size();
        for (size_t d = 0; fits && d < want.shape.size(); ++d) {
          fits = want.shape[d] < 0 || want.shape[d] == t.shape()[d];
        }
        if (!fits) {
          return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "': input '", want.name,
                                                         "' has shape ", ShapeString(t.shape()), ", expected ",
                                                         ShapeString(want.shape), " (-1: any size)"));
        }
      }
      for (int64_t d : t.shape()) {
        if (d < 0) {
          return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "': input '", want.name,
                                                         "' has a negative dimension: ", ShapeString(t.shape())));
        }
      }
      if (t.elem_type() == dtype::kString) {
        if (static_cast<int64_t>(t.strings().size()) != t.num_elements()) {
          return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "': input '", want.name, "' has ",
                                                         t.strings().size(), " strings for shape ",
                                                         ShapeString(t.shape())));
        }
      } else {
        const std::optional<size_t> bytes = Tensor::ExpectedBytes(t.elem_type(), t.shape());
        if (!bytes.has_value() || *bytes != t.byte_size()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model '", info.name, "': input '", want.name, "' holds ", t.byte_size(), " bytes, but ",
              t.DebugString(), " needs ", bytes.has_value() ? absl::StrCat(*bytes) : "a valid size"));
        }
      }
    }
    if (inputs.size() != info.inputs.size()) {
      for (const auto& [n, t] : inputs) {
        bool known = false;
        for (const TensorInfo& want : info.inputs) known = known || want.name == n;
        if (!known) {
          std::vector<std::string> names;
          for (const TensorInfo& want : info.inputs) names.push_back(want.name);
          return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "' has no input '", n,
                                                         "'; its inputs: [", absl::StrJoin(names, ", "), "]"));
        }
      }
    }
    for (const TensorInfo& want : info.inputs) out.emplace_back(want.name, std::move(inputs.at(want.name)));
    return out;
  }

  // One answer of model `m`; `refused`: turned away before any work ran.
  // `compute`: PU time of its partitions (RequestResult::compute).
  void Count(size_t m, const absl::Status& status, Duration latency, Duration compute, std::optional<Duration> slo,
             bool refused) {
    const uint64_t now_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      std::chrono::system_clock::now().time_since_epoch())
                                                      .count());
    std::lock_guard<std::mutex> lock(stats_mu);
    ModelCounters& c = counters[m];
    c.counts.last_answer_unix_ms = now_ms;
    const double ms = ToMillis(latency);
    if (status.ok()) {
      ++c.counts.completed;
      const double compute_s = std::min(ToMillis(compute), ms) / 1e3;
      const double queue_s = ms / 1e3 - compute_s;
      c.sum_s += ms / 1e3;
      c.queue_sum_s += queue_s;
      c.compute_sum_s += compute_s;
      c.recent_compute_s =
          c.recent_compute_s < 0 ? compute_s : c.recent_compute_s + (compute_s - c.recent_compute_s) / 8;
      AddToBucket(c.buckets, ms / 1e3);
      AddToBucket(c.queue_buckets, queue_s);
      AddToBucket(c.compute_buckets, compute_s);
      if (c.latencies_ms.size() < kLatencyWindow) {
        c.latencies_ms.push_back(ms);
      } else {
        c.latencies_ms[c.next] = ms;
      }
      c.next = (c.next + 1) % kLatencyWindow;
    } else {
      c.counts.failed_sum_s += ms / 1e3;
      if (status.code() == absl::StatusCode::kDeadlineExceeded) {
        ++c.counts.deadline_exceeded;
      } else if (status.code() == absl::StatusCode::kCancelled) {
        ++c.counts.cancelled;
      } else if (status.code() == absl::StatusCode::kResourceExhausted) {
        ++c.counts.rejected;
      } else if (refused) {
        ++c.counts.invalid;
      } else {
        ++c.counts.failed;
      }
    }
    if (slo) {
      ++c.counts.with_slo;
      if (status.ok() && latency <= *slo) ++c.counts.slo_met;
    }
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { Close(); }

namespace {

constexpr size_t kMaxLabelsFileBytes = size_t{16} << 20;

// The model's class labels (its config's `labels` file: one per line, a
// final newline optional, "\r\n" read as "\n"), checked against its
// outputs: a file whose count of labels is no output's count of classes
// (its last dimension) is most likely another model's.
absl::StatusOr<std::vector<std::string>> LoadLabels(const config::ModelConfig& m, const std::string& base_dir,
                                                    const std::vector<TensorInfo>& outputs) {
  std::vector<std::string> labels;
  if (!m.labels) return labels;
  std::filesystem::path file(*m.labels);
  if (file.is_relative() && !base_dir.empty()) file = std::filesystem::path(base_dir) / file;
  absl::StatusOr<std::string> text = ReadRegularFile(file.string(), kMaxLabelsFileBytes, "labels file");
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("model '", m.name, "': ", text.status().message()));
  }
  size_t at = 0;
  while (at < text->size()) {
    size_t end = text->find('\n', at);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(at, end - at);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(std::move(line));
    at = end + 1;
  }
  const bool fits = std::any_of(outputs.begin(), outputs.end(), [&](const TensorInfo& o) {
    return o.shape.empty() || o.shape.back() < 0 || static_cast<size_t>(o.shape.back()) == labels.size();
  });
  if (!fits) {
    std::vector<std::string> dims;
    for (const TensorInfo& o : outputs) dims.push_back(absl::StrCat(o.name, " ", o.shape.back()));
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", m.name, "': labels file '", file.string(), "' has ", labels.size(),
        " labels, but no output has that many classes (last dimension: ", absl::StrJoin(dims, ", "),
        "); give the file with one line per class of this model"));
  }
  return labels;
}

// `config` with only the models named in `names` (all when empty).
absl::Status KeepOnly(config::RunConfig& config, const std::vector<std::string>& names) {
  if (names.empty()) return absl::OkStatus();
  std::vector<std::string> all;
  for (const config::ModelConfig& m : config.models) all.push_back(m.name);
  for (size_t i = 0; i < names.size(); ++i) {
    if (std::find(all.begin(), all.end(), names[i]) == all.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", names[i], "' is not in the config; its models: [",
                                                     absl::StrJoin(all, ", "), "]"));
    }
    if (std::find(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(i), names[i]) !=
        names.begin() + static_cast<std::ptrdiff_t>(i)) {
      return absl::InvalidArgumentError(absl::StrCat("model '", names[i], "' is named twice in the models to open"));
    }
  }
  std::erase_if(config.models, [&](const config::ModelConfig& m) {
    return std::find(names.begin(), names.end(), m.name) == names.end();
  });
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine::Impl>> OpenImpl(config::RunConfig config, const EngineOptions& options) {
  BATON_RETURN_IF_ERROR(KeepOnly(config, options.models));
  BATON_RETURN_IF_ERROR(config::Validate(config));
  auto impl = std::make_unique<Engine::Impl>();
  impl->config = std::move(config);
  app::AssembleOptions assemble;
  assemble.cache_dir = options.cache_dir;
  assemble.plan_path = options.plan_path;
  assemble.profile_path = options.profile_path;
  assemble.no_profile = options.no_profile;
  assemble.samples = 2;  // inputs for the profiler and the batching check (which stacks two)
  assemble.say = options.progress;
  assemble.profile_progress = options.profile_progress;
  assemble.stop = options.stop;
  BATON_ASSIGN_OR_RETURN(impl->remotes, app::ConnectRemoteDevices(impl->config, assemble));
  if (impl->remotes) assemble.no_profile = true;  // remote PUs have no profile yet
  if (options.trace) {
    if (options.trace_max_events == 0) {
      return absl::InvalidArgumentError("trace_max_events is 0; give at least 1 to record a trace");
    }
    impl->tracer = std::make_unique<trace::TraceObserver>(app::TraceNamesOf(impl->assembled_config()),
                                                          options.trace_max_events);
    assemble.observer = impl->tracer.get();
  }
  BATON_ASSIGN_OR_RETURN(impl->assembly, app::Assemble(impl->assembled_config(), impl->remotes.get(), assemble));
  app::Assembly& a = impl->assembly;
  const config::RunConfig& cfg = impl->assembled_config();
  BATON_ASSIGN_OR_RETURN(impl->batcher, app::MakeBatcher(a.runtime.rt.get(), a.models, a.batching, a.deployment.get(),
                                                         cfg.run.max_in_flight));
  for (size_t i = 0; i < a.models.size(); ++i) {
    const app::LoadedModel& lm = a.models[i];
    const graph::Model& g = lm.baseline_model();  // as loaded (without the batching copy's free dim)
    ModelInfo info;
    info.name = lm.config->name;
    info.source = lm.source;
    for (const std::string& n : g.inputs()) info.inputs.push_back(InfoOf(g, n));
    for (const std::string& n : g.outputs()) info.outputs.push_back(InfoOf(g, n));
    info.device = cfg.devices[a.deploy[i].device.value].name;
    info.partitions = static_cast<int>(a.deployment->models()[i].plan.partitions.size());
    info.slo_ms = lm.config->slo_ms;
    BATON_ASSIGN_OR_RETURN(info.labels, LoadLabels(*lm.config, impl->config.base_dir, info.outputs));
    impl->infos.push_back(std::move(info));
    impl->default_deadline.push_back(lm.config->deadline_ms ? std::optional<Duration>(FromMillis(*lm.config->deadline_ms))
                                                            : std::nullopt);
  }
  impl->counters.resize(impl->infos.size());
  if (options.close_timeout > std::chrono::milliseconds(0)) impl->close_timeout = options.close_timeout;
  if (options.progress) options.progress("ready");
  return impl;
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::Open(const std::string& config_path, EngineOptions options) {
  absl::StatusOr<config::RunConfig> config = config::LoadRunConfig(config_path);
  if (!config.ok()) return FromAbsl(config.status());
  absl::StatusOr<std::unique_ptr<Impl>> impl = OpenImpl(*std::move(config), options);
  if (!impl.ok()) return FromAbsl(impl.status());
  return std::unique_ptr<Engine>(new Engine(*std::move(impl)));
}

Result<std::unique_ptr<Engine>> Engine::OpenText(std::string_view yaml, const std::string& base_dir,
                                                 EngineOptions options) {
  absl::StatusOr<config::RunConfig> config = config::ParseRunConfig(yaml, "(engine config)");
  if (!config.ok()) return FromAbsl(config.status());
  config->base_dir = base_dir;
  absl::StatusOr<std::unique_ptr<Impl>> impl = OpenImpl(*std::move(config), options);
  if (!impl.ok()) return FromAbsl(impl.status());
  return std::unique_ptr<Engine>(new Engine(*std::move(impl)));
}

const std::vector<ModelInfo>& Engine::Models() const { return impl_->infos; }

const ModelInfo* Engine::FindModel(std::string_view name) const {
  const std::optional<size_t> m = impl_->IndexOf(name);
  return m ? &impl_->infos[*m] : nullptr;
}

// A request, answered through `done`. `here`: the calling thread waits for the
// answer and does the work it can itself (runtime::Runtime::Run), so `done`
// runs on it before this returns unless a lent input buffer is still held.
// Else, with options.run_here_up_to and a model that fast, it does that work
// without waiting (runtime::Runtime::SubmitHere).
void Engine::Impl::Request(const std::string& model, Tensors inputs, const InferOptions& options,
                           std::function<void(Result<Tensors>)> done, bool here) {
  Impl& impl = *this;
  const std::optional<size_t> m = impl.IndexOf(model);
  if (!m) {
    std::vector<std::string> names;
    for (const ModelInfo& i : impl.infos) names.push_back(i.name);
    done(Status(StatusCode::kNotFound,
                absl::StrCat("no model '", model, "' in this engine; its models: [", absl::StrJoin(names, ", "), "]")));
    return;
  }
  absl::StatusOr<dispatch::NamedTensors> feeds = impl.CheckInputs(*m, std::move(inputs));
  const std::optional<Duration> slo =
      options.slo ? std::optional<Duration>(*options.slo)
                  : (impl.infos[*m].slo_ms ? std::optional<Duration>(FromMillis(*impl.infos[*m].slo_ms)) : std::nullopt);
  bool run_here = false;
  {
    std::lock_guard<std::mutex> lock(impl.stats_mu);
    ++impl.counters[*m].counts.submitted;
    const double recent_s = impl.counters[*m].recent_compute_s;
    run_here = !here && options.run_here_up_to.count() > 0 && recent_s >= 0 &&
               recent_s <= std::chrono::duration<double>(options.run_here_up_to).count();
  }
  if (!feeds.ok()) {
    impl.Count(*m, feeds.status(), Duration{}, Duration{}, slo, /*refused=*/true);
    done(FromAbsl(feeds.status()));
    return;
  }
  std::shared_lock<std::shared_mutex> lock(impl.close_mu);
  if (impl.closed) {
    const absl::Status refused = absl::FailedPreconditionError(
        absl::StrCat("model '", model, "': the engine is closed; open a new one"));
    impl.Count(*m, refused, Duration{}, Duration{}, slo, /*refused=*/true);
    done(FromAbsl(refused));
    return;
  }
  if (options.cancel && options.cancel->cancelled()) {
    const absl::Status cancelled =
        absl::CancelledError(absl::StrCat("model '", model, "': cancelled by its client before it started"));
    impl.Count(*m, cancelled, Duration{}, Duration{}, slo, /*refused=*/true);
    done(FromAbsl(cancelled));
    return;
  }
  // Infer with a token goes the asynchronous way, where the request's id is
  // known before it finishes, so that another thread can cancel it.
  here = here && !impl.batcher && !options.cancel;
  run_here = run_here && !impl.batcher;
  if (here || run_here) {
    // Run may wait long (a slow run), SubmitHere runs one: Close must not wait
    // for close_mu meanwhile; it waits for here_calls instead (counted before
    // letting go).
    {
      std::lock_guard<std::mutex> calls(impl.here_mu);
      ++impl.here_calls;
    }
    lock.unlock();
  }
  runtime::Runtime& rt = *impl.assembly.runtime.rt;
  const app::Assembly& a = impl.assembly;
  dispatch::RequestOptions request;
  const std::optional<Duration> deadline =
      options.deadline ? std::optional<Duration>(*options.deadline) : impl.default_deadline[*m];
  if (deadline) request.deadline = rt.Now() + *deadline;
  request.priority = options.priority.value_or(a.priorities[*m]);
  const size_t index = *m;
  // Lent buffers: the answer waits until the engine has let go of them.
  std::shared_ptr<InputGuard> guard;
  for (auto& [name, t] : *feeds) {
    if (!t.external()) continue;
    if (!guard) guard = std::make_shared<InputGuard>(std::move(done));
    t = InputGuard::Wrap(guard, std::move(t));
  }
  // Cancellation (InferOptions::cancel) of a request the runtime or the
  // batcher holds.
  const bool batched = impl.batcher && index < a.batching.size() && a.batching[index].batch > 1;
  std::shared_ptr<CancelLink> link;
  uint64_t hook = 0;
  if (options.cancel) {
    link = std::make_shared<CancelLink>();
    hook = options.cancel->OnCancel([link] { link->Cancel(); });
  }
  auto answer = [&impl, index, slo, guard, link, hook, token = link ? options.cancel : nullptr,
                 done = std::move(done)](runtime::RequestResult r) {
    if (link) {
      link->Answered();
      token->Remove(hook);
    }
    impl.Count(index, r.status, r.finished - r.submitted, r.compute, slo, /*refused=*/false);
    auto outputs = [&r] {
      Tensors out;
      for (auto& [n, t] : r.outputs) out.emplace(n, std::move(t));
      return out;
    };
    Result<Tensors> result = r.status.ok() ? Result<Tensors>(outputs()) : Result<Tensors>(FromAbsl(r.status));
    if (guard) {
      guard->Answer(std::move(result));
    } else {
      done(std::move(result));
    }
  };
  const ModelId id = a.models[index].id;
  if (here) {
    // Close stops the runtime (which answers this request) and then waits
    // for here_calls to drop before the runtime may be destroyed.
    answer(rt.Run(id, *std::move(feeds), request));
    impl.EndHereCall();
  } else if (run_here) {
    const RequestId sent = rt.SubmitHere(id, *std::move(feeds), request, std::move(answer));
    if (link) link->Submitted(rt, sent);
    impl.EndHereCall();
  } else if (impl.batcher && batched && link) {
    auto once = std::make_shared<OnceAnswer>(std::move(answer));
    const Time submitted = rt.Now();
    const uint64_t ticket =
        impl.batcher->Submit(id, *std::move(feeds), request, [once](runtime::RequestResult r) { (*once)(std::move(r)); });
    link->Batched(*impl.batcher, id, ticket, [once, &impl, &rt, id, submitted, model]() -> std::function<void()> {
      {
        std::lock_guard<std::mutex> calls(impl.here_mu);
        ++impl.here_calls;  // Close waits for this answer too
      }
      return [once, &impl, id, submitted, finished = rt.Now(), model] {
        runtime::RequestResult r;
        r.model = id;
        r.status = absl::CancelledError(absl::StrCat("model '", model, "': cancelled by its client"));
        r.submitted = submitted;
        r.finished = finished;
        (*once)(std::move(r));
        impl.EndHereCall();
      };
    });
  } else if (impl.batcher && !link) {
    impl.batcher->Submit(id, *std::move(feeds), request, std::move(answer));
  } else {  // the batcher would pass it on as it is: straight to the runtime, where it can be cancelled
    const RequestId sent = rt.Submit(id, *std::move(feeds), request, std::move(answer));
    if (link) link->Submitted(rt, sent);
  }
}

void CancelToken::Cancel() {
  std::map<uint64_t, std::function<void()>> hooks;
  {
    std::lock_guard lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    hooks.swap(hooks_);
  }
  // Newest first: a request that waits behind an older one is withdrawn
  // before the older one's end can let it start.
  for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) it->second();
}

bool CancelToken::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

uint64_t CancelToken::OnCancel(std::function<void()> hook) {
  {
    std::lock_guard lock(mu_);
    if (!cancelled_) {
      const uint64_t key = next_key_++;
      hooks_.emplace(key, std::move(hook));
      return key;
    }
  }
  hook();
  return 0;
}

void CancelToken::Remove(uint64_t key) {
  std::lock_guard lock(mu_);
  hooks_.erase(key);
}

void Engine::InferAsync(const std::string& model, Tensors inputs, const InferOptions& options,
                        std::function<void(Result<Tensors>)> done) {
  impl_->Request(model, std::move(inputs), options, std::move(done), /*here=*/false);
}

std::future<Result<Tensors>> Engine::InferAsync(const std::string& model, Tensors inputs, const InferOptions& options) {
  auto promise = std::make_shared<std::promise<Result<Tensors>>>();
  std::future<Result<Tensors>> future = promise->get_future();
  InferAsync(model, std::move(inputs), options,
             [promise](Result<Tensors> r) { promise->set_value(std::move(r)); });
  return future;
}

Result<Tensors> Engine::Infer(const std::string& model, Tensors inputs, const InferOptions& options) {
  auto promise = std::make_shared<std::promise<Result<Tensors>>>();
  std::future<Result<Tensors>> future = promise->get_future();
  impl_->Request(model, std::move(inputs), options,
                 [promise](Result<Tensors> r) { promise->set_value(std::move(r)); }, /*here=*/true);
  return future.get();
}

Result<Tensors> RunWholeModel(const std::string& model_path, Tensors inputs) {
  absl::StatusOr<std::shared_ptr<const graph::Model>> model = graph::Model::LoadFile(model_path);
  if (!model.ok()) return FromAbsl(model.status());
  dispatch::NamedTensors feeds;
  for (const std::string& name : (*model)->inputs()) {
    auto it = inputs.find(name);
    if (it == inputs.end()) {
      return Status(StatusCode::kInvalidArgument,
                    absl::StrCat(model_path, ": input '", name, "' is missing; give every input of the model"));
    }
    feeds.emplace_back(name, std::move(it->second));
  }
  absl::StatusOr<dispatch::NamedTensors> out = verify::RunWholeModel(**model, feeds);
  if (!out.ok()) return FromAbsl(out.status());
  Tensors result;
  for (auto& [name, tensor] : *out) result.emplace(name, std::move(tensor));
  return result;
}

EngineStats Engine::Stats() const {
  const Impl& impl = *impl_;
  EngineStats s;
  const auto now = std::chrono::steady_clock::now();
  s.uptime_s = std::chrono::duration<double>(now - impl.opened).count();
  {
    std::lock_guard<std::mutex> lock(impl.stats_mu);
    for (size_t m = 0; m < impl.infos.size(); ++m) {
      const ModelCounters& c = impl.counters[m];
      ModelStats ms = c.counts;
      ms.name = impl.infos[m].name;
      ms.latency_bucket_counts = Cumulative(c.buckets);
      ms.latency_sum_s = c.sum_s;
      ms.queue_bucket_counts = Cumulative(c.queue_buckets);
      ms.queue_sum_s = c.queue_sum_s;
      ms.compute_bucket_counts = Cumulative(c.compute_buckets);
      ms.compute_sum_s = c.compute_sum_s;
      const bool batched = impl.batcher && m < impl.assembly.batching.size() && impl.assembly.batching[m].batch > 1;
      if (batched) {
        const runtime::BatcherStats bs = impl.batcher->stats(impl.assembly.models[m].id);
        for (const auto& [size, b] : bs.by_size) {
          ms.executions += b.executions;
          ms.batch_sizes.push_back({static_cast<int64_t>(size), b.executions,
                                   std::chrono::duration<double>(b.compute).count()});
        }
      } else {
        ms.executions = ms.completed;  // every request ran as an execution of its own
        if (ms.completed > 0) ms.batch_sizes.push_back({1, ms.completed, ms.compute_sum_s});
      }
      std::vector<double> sorted = c.latencies_ms;
      std::sort(sorted.begin(), sorted.end());
      if (!sorted.empty()) {
        ms.latency.p50_ms = Percentile(sorted, 0.50);
        ms.latency.p90_ms = Percentile(sorted, 0.90);
        ms.latency.p99_ms = Percentile(sorted, 0.99);
        ms.latency.max_ms = sorted.back();
        double sum = 0;
        for (double v : sorted) sum += v;
        ms.latency.mean_ms = sum / static_cast<double>(sorted.size());
      }
      s.models.push_back(std::move(ms));
    }
  }
  const runtime::Runtime& rt = *impl.assembly.runtime.rt;
  s.in_flight = rt.pending();
  const runtime::RuntimeStats rs = rt.stats();
  for (size_t d = 0; d < rs.status.size(); ++d) {
    DeviceStatsView v;
    v.name = rs.status[d].name;
    v.remote = rs.status[d].remote;
    v.reachable = rs.status[d].reachable;
    v.lost = rs.status[d].lost;
    v.returned = rs.status[d].returned;
    if (d < rs.devices.size() && !v.remote) {
      const dispatch::LowLevelStats& ll = rs.devices[d];
      const uint64_t left = ll.started + ll.rejected_full + ll.rejected_unrunnable + ll.dropped_expired +
                            ll.dropped_by_policy + ll.cancelled_queued;
      v.queued = ll.assignments > left ? ll.assignments - left : 0;
      v.running = ll.started > ll.finished ? ll.started - ll.finished : 0;
      v.policy_violations = ll.violations;
    }
    s.devices.push_back(std::move(v));
  }
  const config::RunConfig& cfg = impl.assembled_config();
  for (const runtime::PuStats& p : rt.pu_stats()) {
    PuStatsView v;
    v.name = p.name;
    v.kind = p.kind;
    v.device = p.device.value < cfg.devices.size() ? cfg.devices[p.device.value].name : "";
    v.runs = p.runs;
    v.busy_s = std::chrono::duration<double>(p.busy).count();
    v.run_cpu_s = std::chrono::duration<double>(p.run_cpu).count();
    v.utilization = s.uptime_s > 0 ? v.busy_s / s.uptime_s : 0;
    s.pus.push_back(std::move(v));
  }
  return s;
}

Result<TraceSummary> Engine::WriteTrace(const std::string& path) const {
  if (!impl_->tracer) {
    return Status(StatusCode::kFailedPrecondition,
                  "this engine records no trace; open it with EngineOptions::trace (baton serve --trace)");
  }
  trace::ChromeTrace trace;
  impl_->tracer->WriteTo(trace);
  if (absl::Status written = trace.Write(path); !written.ok()) return FromAbsl(written);
  return TraceSummary{impl_->tracer->runs(), impl_->tracer->dropped_events()};
}

void Engine::Close() {
  if (!impl_) return;
  {
    std::unique_lock<std::shared_mutex> lock(impl_->close_mu);
    if (impl_->closed) return;
    impl_->closed = true;
  }
  // Requests waiting for a batch go out now; Stop drains what is in flight.
  if (impl_->batcher) impl_->batcher->Stop();
  impl_->assembly.runtime.rt->Stop(impl_->close_timeout);
  // Infer calls still inside Run have their answers now; let them leave.
  std::unique_lock<std::mutex> lock(impl_->here_mu);
  impl_->here_cv.wait(lock, [this] { return impl_->here_calls == 0; });
}

}  // namespace baton
