#include "baton/harness/run_session.h"

#include "baton/app/assembly.h"
#include "baton/app/remote.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "baton/backend/emu/emu_executor.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/baseline/ort_baseline.h"
#include "baton/dispatch/workload.h"
#include "baton/graph/model.h"
#include "baton/plan/whole_assignment.h"
#include "baton/policy/latency_model.h"
#include "baton/core/process.h"
#include "baton/backend/ort/ort_runner.h"
#include "baton/runtime/speed_probe.h"
#include "baton/runtime/batcher.h"
#include "baton/runtime/deployment.h"
#include "baton/runtime/runtime.h"
#include "baton/trace/chrome_trace.h"
#include "baton/trace/trace_observer.h"
#include "baton/verify/verify.h"
#include "baton/app/planning.h"
#include "baton/app/setup.h"

namespace baton::harness {

using namespace baton::app;  // NOLINT: the harness runs what the composition root builds

namespace fs = std::filesystem;
using dispatch::NamedTensors;

uint64_t ModeOutcome::completed() const {
  uint64_t n = 0;
  for (const ModelOutcome& m : models) n += m.completed;
  return n;
}

double ModeOutcome::throughput_rps() const {
  const double seconds = std::chrono::duration<double>(measured).count();
  return seconds > 0 ? static_cast<double>(completed()) / seconds : 0;
}

double ModeOutcome::model_throughput_rps(size_t model) const {
  const double s = std::chrono::duration<double>(measured).count();
  return s > 0 && model < models.size() ? static_cast<double>(models[model].completed) / s : 0;
}

std::vector<Duration> ModeOutcome::AllLatencies() const {
  std::vector<Duration> all;
  for (const ModelOutcome& m : models) all.insert(all.end(), m.latencies.begin(), m.latencies.end());
  return all;
}

std::optional<double> RunReport::BoundRatio(const ModeOutcome& mode) const {
  if (!bound || bound->throughput_rps <= 0) return std::nullopt;
  return mode.throughput_rps() / bound->throughput_rps;
}

const ModeOutcome* RunReport::BestBaseline() const {
  const ModeOutcome* best = nullptr;
  for (const ModeOutcome& b : baselines) {
    if (best == nullptr || b.throughput_rps() > best->throughput_rps()) best = &b;
  }
  return best;
}

const ModeOutcome* RunReport::BestGoodputBaseline() const {
  const ModeOutcome* best = nullptr;
  for (const ModeOutcome& b : baselines) {
    if (best == nullptr || b.Slo().goodput_rps > best->Slo().goodput_rps) best = &b;
  }
  return best;
}

trace::SloSummary ModelOutcome::Slo(Duration measured) const {
  std::optional<Duration> slo;
  if (slo_ms) slo = FromMillis(*slo_ms);
  return trace::SummarizeSlo(latencies, answered, slo, measured);
}

trace::SloSummary ModeOutcome::Slo() const {
  trace::SloSummary all;
  for (const ModelOutcome& m : models) all = all + m.Slo(measured);
  return all;
}

namespace {

constexpr int kSamplesPerModel = 4;  // request i of a model feeds sample i % 4

NamedTensors CloneAll(const NamedTensors& in) {
  NamedTensors out;
  out.reserve(in.size());
  for (const auto& [name, t] : in) out.emplace_back(name, t.Clone());
  return out;
}

// Tensors over `in`'s bytes (which must outlive them and stay unchanged);
// STRING tensors, which have no flat bytes, are cloned.
NamedTensors LendAll(const NamedTensors& in) {
  NamedTensors out;
  out.reserve(in.size());
  for (const auto& [name, t] : in) {
    if (t.elem_type() == dtype::kString) {
      out.emplace_back(name, t.Clone());
    } else {
      auto* data = const_cast<std::byte*>(t.bytes().data());
      out.emplace_back(name, Tensor::Borrow(t.elem_type(), t.shape(), data, t.byte_size()));
    }
  }
  return out;
}

dispatch::Arrival ToArrival(const config::ArrivalConfig& a) {
  switch (a.mode) {
    case config::ArrivalConfig::Mode::kPeriodic:
      return dispatch::Periodic{Duration(static_cast<Duration::rep>(1e9 / a.fps))};
    case config::ArrivalConfig::Mode::kPoisson:
      return dispatch::Poisson{a.rate};
    case config::ArrivalConfig::Mode::kClosed:
      break;
  }
  return dispatch::ClosedLoop{a.concurrency, FromMillis(a.think_ms)};
}

std::optional<Duration> DeadlineOf(const config::ModelConfig& m) {
  if (!m.deadline_ms) return std::nullopt;
  return FromMillis(*m.deadline_ms);
}

// ---- Driving a target with the configured arrivals for one slice -----------

// Where a window's requests go: baton's in-process runtime, or a running
// `baton serve` (RunAgainstServer).
class RequestTarget {
 public:
  virtual ~RequestTarget() = default;
  virtual Time Now() const = 0;
  // `model`: an index into the session's models. `done` is called exactly once, from any thread.
  virtual void Submit(size_t model, NamedTensors inputs, dispatch::RequestOptions options,
                      runtime::DoneCallback done) = 0;
  // True when Submit has copied the inputs' bytes (into a message) by the
  // time it returns: the driver then lends it the samples instead of a clone
  // per request, as an application writes its data once, into the message.
  virtual bool CopiesInputs() const { return false; }
  // The measured window starts.
  virtual void ResetStats() = 0;
  // PU busy time since ResetStats, up to `until` (the window's end), and runs
  // (none for a server's PUs).
  virtual std::vector<PuOutcome> Pus(Time until) const = 0;
  // Returns once every request submitted so far has been answered. Requests
  // still in flight after `limit` are answered UNAVAILABLE at once (none = no
  // limit).
  virtual void Drain(std::optional<Duration> limit) = 0;
};

// A runtime of this process, with the batcher of batched models (may be null).
class RuntimeTarget final : public RequestTarget {
 public:
  RuntimeTarget(runtime::Runtime& rt, runtime::Batcher* batcher, const std::vector<config::DeviceConfig>& devices,
                const std::vector<LoadedModel>& models)
      : rt_(rt), batcher_(batcher), devices_(devices), models_(models) {}
  Time Now() const override { return rt_.Now(); }
  void Submit(size_t model, NamedTensors inputs, dispatch::RequestOptions options,
              runtime::DoneCallback done) override {
    if (batcher_ != nullptr) {
      batcher_->Submit(models_[model].id, std::move(inputs), options, std::move(done));
    } else {
      rt_.Submit(models_[model].id, std::move(inputs), options, std::move(done));
    }
  }
  void ResetStats() override { rt_.ResetStats(); }
  std::vector<PuOutcome> Pus(Time until) const override {
    // The runtime's DeviceIds are indices into config.devices (see MakeRuntime).
    std::vector<PuOutcome> pus;
    for (const runtime::PuStats& s : rt_.pu_stats(until)) {
      pus.push_back(PuOutcome{s.name, s.kind, devices_.at(s.device.value).name, s.busy, s.runs, s.run_cpu});
    }
    return pus;
  }
  void Drain(std::optional<Duration> limit) override {
    // Requests waiting in the batcher are not in the runtime yet: send them,
    // and again for any a closed loop submitted meanwhile.
    const Time until = limit ? rt_.Now() + *limit : Time::max();
    do {
      if (batcher_ != nullptr) batcher_->Flush();
      if (!limit) {
        rt_.Drain();
      } else if (!rt_.Drain(std::max(Duration(0), until - rt_.Now()))) {
        rt_.Abandon(absl::UnavailableError(absl::StrCat(
            "abandoned: still in flight ", std::chrono::duration<double>(*limit).count(),
            " s after the measured window ended")));
      }
    } while (batcher_ != nullptr && batcher_->waiting() > 0);
  }

 private:
  runtime::Runtime& rt_;
  runtime::Batcher* batcher_;
  const std::vector<config::DeviceConfig>& devices_;
  const std::vector<LoadedModel>& models_;
};

// A running `baton serve`, reached through ServerTarget::infer. Times are this
// process's steady clock.
class ServerRequestTarget final : public RequestTarget {
 public:
  ServerRequestTarget(const ServerTarget& server, const std::vector<LoadedModel>& models)
      : server_(server), models_(models) {}
  ~ServerRequestTarget() override { Drain(std::nullopt); }
  bool CopiesInputs() const override { return true; }  // the gRPC client copies them into the request
  Time Now() const override {
    return Time(std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now().time_since_epoch()));
  }
  void Submit(size_t model, NamedTensors inputs, dispatch::RequestOptions options,
              runtime::DoneCallback done) override {
    InferOptions o;
    const Time submitted = Now();
    if (options.deadline) o.deadline = std::max(Duration(0), *options.deadline - submitted);
    // No priority: the server's own (its plan's, else its config's) applies,
    // as baton's in-process run uses its plan's.
    Tensors in;
    for (auto& [name, t] : inputs) in.emplace(name, std::move(t));
    const RequestId id(next_id_.fetch_add(1));
    {
      std::lock_guard lock(mu_);
      ++in_flight_;
    }
    server_.infer(models_[model].config->name, std::move(in), o,
                  [this, model, id, submitted, done = std::move(done)](Result<Tensors> r) {
                    runtime::RequestResult result;
                    result.id = id;
                    result.model = models_[model].id;
                    result.submitted = submitted;
                    result.finished = Now();
                    if (!r.ok()) {
                      std::optional<absl::Status> gave_up;
                      if (r.status().code() == StatusCode::kCancelled) {
                        std::lock_guard lock(mu_);
                        if (give_up_) {
                          gave_up = give_up_;
                          ++abandoned_;
                        }
                      }
                      result.status = gave_up ? *gave_up
                                              : absl::Status(static_cast<absl::StatusCode>(r.status().code()),
                                                             r.status().message());
                    } else {
                      // In the model's output order, as whole-model ORT gives them.
                      for (const std::string& name : models_[model].baseline_model().outputs()) {
                        auto it = r->find(name);
                        if (it == r->end()) {
                          result.status = absl::InternalError(absl::StrCat("the server's answer lacks output '", name, "'"));
                          result.outputs.clear();
                          break;
                        }
                        result.outputs.emplace_back(name, std::move(it->second));
                      }
                    }
                    done(std::move(result));
                    std::lock_guard lock(mu_);
                    if (--in_flight_ == 0) drained_.notify_all();
                  });
  }
  void ResetStats() override {}
  std::vector<PuOutcome> Pus(Time) const override { return {}; }
  // Every call ends: the client gives each one a deadline. Those still in
  // flight after `limit` are cancelled (ServerTarget::cancel_all), answered
  // UNAVAILABLE as the in-process run answers them, and counted (abandoned).
  void Drain(std::optional<Duration> limit) override {
    std::unique_lock lock(mu_);
    const auto drained = [&] { return in_flight_ == 0; };
    if (!limit || !server_.cancel_all) {
      drained_.wait(lock, drained);
      return;
    }
    if (drained_.wait_for(lock, *limit, drained)) return;
    give_up_ = absl::UnavailableError(absl::StrCat("abandoned: still in flight ",
                                                   std::chrono::duration<double>(*limit).count(),
                                                   " s after the measured window ended"));
    lock.unlock();
    server_.cancel_all();
    lock.lock();
    drained_.wait(lock, drained);  // a cancelled call always completes
    give_up_.reset();
  }
  uint64_t abandoned() const {
    std::lock_guard lock(mu_);
    return abandoned_;
  }

 private:
  const ServerTarget& server_;
  const std::vector<LoadedModel>& models_;
  std::atomic<uint64_t> next_id_{1};
  mutable std::mutex mu_;
  std::condition_variable drained_;
  uint64_t in_flight_ = 0;                // guarded by mu_
  std::optional<absl::Status> give_up_;  // guarded by mu_; set while Drain cancels what is left
  uint64_t abandoned_ = 0;                // guarded by mu_
};

class WindowDriver {
 public:
  // `priorities`: per model, the priority of its requests.
  WindowDriver(RequestTarget& target, const std::vector<LoadedModel>& models, std::vector<int> priorities, bool verify)
      : rt_(target),
        models_(models),
        priorities_(std::move(priorities)),
        verify_(verify),
        out_(models.size()),
        seq_(models.size()),
        failures_(models.size()) {
    for (size_t i = 0; i < models.size(); ++i) out_[i].name = models[i].config->name;
    for (auto& s : seq_) s.store(0);
    for (auto& f : failures_) f.store(0);
  }

  // Warm-up, then the measured window. Returns per-model outcomes; fills `pus`
  // with the PU busy time over the window.
  void Run(Duration warmup, Duration duration, uint64_t seed, std::vector<PuOutcome>& pus) {
    const Time start = rt_.Now();
    t0_ = start + warmup;
    t1_ = t0_ + duration;
    struct Open {
      size_t model;
      Time next;
      dispatch::Rng rng;
    };
    std::vector<Open> open;
    for (size_t i = 0; i < models_.size(); ++i) {
      const config::ArrivalConfig& a = models_[i].config->arrival;
      if (a.mode == config::ArrivalConfig::Mode::kClosed) {
        for (int c = 0; c < a.concurrency; ++c) Submit(i, /*closed=*/true);
      } else {
        open.push_back(Open{i, start, dispatch::Rng(seed * 7919 + i)});
      }
    }
    bool reset = false;
    while (true) {
      Time until = reset ? t1_ : t0_;
      for (const Open& o : open) until = std::min(until, o.next);
      {
        std::unique_lock lock(mu_);
        if (!timers_.empty()) until = std::min(until, timers_.front().first);
        const Time now = rt_.Now();
        if (until > now) {
          timer_cv_.wait_for(lock, until - now);  // a new timer or a spurious wake-up just loops
        }
      }
      const Time now = rt_.Now();
      if (!reset && now >= t0_) {
        rt_.ResetStats();
        cpu_at_t0_ = ProcessCpuSeconds();
        reset = true;
      }
      if (now >= t1_) break;
      for (Open& o : open) {
        // Arrivals due by now; one more than kMaxArrivalLag late is counted
        // missed instead of sent (the generator cannot keep up), which also
        // bounds this loop when sending is slower than the arrival rate.
        while (o.next <= now) {
          if (rt_.Now() - o.next > kMaxArrivalLag) {
            if (o.next >= t0_ && o.next < t1_) {
              std::lock_guard lock(record_mu_);
              ++out_[o.model].arrivals_missed;
            }
          } else {
            Submit(o.model, /*closed=*/false);
          }
          const config::ArrivalConfig& a = models_[o.model].config->arrival;
          o.next += a.mode == config::ArrivalConfig::Mode::kPeriodic
                        ? Duration(static_cast<Duration::rep>(1e9 / a.fps))
                        : o.rng.Exponential(Duration(static_cast<Duration::rep>(1e9 / a.rate)));
        }
      }
      // Closed-loop streams whose think time is over.
      std::vector<size_t> due;
      {
        std::lock_guard lock(mu_);
        while (!timers_.empty() && timers_.front().first <= now) {
          std::pop_heap(timers_.begin(), timers_.end(), std::greater<>());
          due.push_back(timers_.back().second);
          timers_.pop_back();
        }
      }
      for (size_t i : due) Submit(i, /*closed=*/true);
    }
    pus = rt_.Pus(t1_);
    if (const std::optional<double> cpu = ProcessCpuSeconds(); cpu && cpu_at_t0_) {
      process_cpu_ = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(*cpu - *cpu_at_t0_));
    }
    stop_.store(true);
    // Closed loops that submitted before they saw stop_ included. What is
    // still in flight a while after the window is abandoned (it counts as
    // unfinished either way), so one stuck request cannot hold the run.
    rt_.Drain(std::max(kMaxDrainAfterWindow, duration));
  }

  std::vector<ModelOutcome>& outcomes() { return out_; }
  uint64_t verified() const { return verified_; }
  // This process's CPU time over the measured window (0 if unknown).
  Duration process_cpu() const { return process_cpu_; }
  uint64_t mismatches() const { return mismatches_; }
  const std::string& first_mismatch() const { return first_mismatch_; }

 private:
  void Submit(size_t i, bool closed) {
    const LoadedModel& m = models_[i];
    const uint64_t seq = seq_[i].fetch_add(1);
    const size_t sample = seq % m.samples.size();
    dispatch::RequestOptions options;
    const std::optional<Duration> deadline = DeadlineOf(*m.config);
    if (deadline) options.deadline = rt_.Now() + *deadline;
    options.priority = priorities_.at(i);
    auto done = [this, i, sample, closed, deadline](runtime::RequestResult r) {
      Record(i, sample, deadline, r);
      if (!closed || stop_.load()) return;
      double think_ms = models_[i].config->arrival.think_ms;
      // A closed-loop client whose request failed (rejected, device lost, an
      // error; not a missed deadline, which is load) waits before it tries
      // again: 1 ms, doubling per failure in a row, at most kMaxBackoffMs.
      if (r.status.ok() || r.status.code() == absl::StatusCode::kDeadlineExceeded) {
        failures_[i].store(0);
      } else {
        const int in_a_row = std::min(failures_[i].fetch_add(1) + 1, 30);
        think_ms = std::max(think_ms, std::min(kMaxBackoffMs, std::ldexp(1.0, in_a_row - 1)));
      }
      if (think_ms <= 0) {
        Submit(i, true);
        return;
      }
      // The driver thread submits it when the think time is over.
      {
        std::lock_guard lock(mu_);
        timers_.emplace_back(rt_.Now() + FromMillis(think_ms), i);
        std::push_heap(timers_.begin(), timers_.end(), std::greater<>());
      }
      timer_cv_.notify_one();
    };
    rt_.Submit(i, rt_.CopiesInputs() ? LendAll(m.samples[sample]) : CloneAll(m.samples[sample]), options,
               std::move(done));
  }

  void Record(size_t i, size_t sample, std::optional<Duration> deadline, const runtime::RequestResult& r) {
    if (r.submitted < t0_ || r.submitted >= t1_) return;
    std::lock_guard lock(record_mu_);
    ModelOutcome& o = out_[i];
    if (r.finished > t1_) {
      ++o.unfinished;
      return;
    }
    ++o.answered;
    switch (r.status.code()) {
      case absl::StatusCode::kOk:
        ++o.completed;
        o.latencies.push_back(r.finished - r.submitted);
        if (deadline && r.finished - r.submitted > *deadline) ++o.deadline_missed;
        break;
      case absl::StatusCode::kDeadlineExceeded: ++o.deadline_missed; break;
      case absl::StatusCode::kResourceExhausted:
        ++o.rejected;
        o.rejection_latencies.push_back(r.finished - r.submitted);
        break;
      default:
        ++o.failed;
        if (o.first_error.empty()) o.first_error = std::string(r.status.message());
    }
    if (verify_ && r.status.ok()) {
      const NamedTensors& want = models_[i].expected[sample];
      ++verified_;
      std::string problem;
      if (r.outputs.size() != want.size()) {
        problem = absl::StrCat(r.outputs.size(), " outputs instead of ", want.size());
      } else {
        for (size_t k = 0; k < want.size() && problem.empty(); ++k) {
          verify::Comparison c = verify::Compare(want[k].second, r.outputs[k].second);
          if (!c.ok) problem = absl::StrCat("output '", want[k].first, "': ", c.message);
        }
      }
      if (!problem.empty()) {
        ++mismatches_;
        if (first_mismatch_.empty()) {
          first_mismatch_ = absl::StrCat("model '", o.name, "' request ", r.id.value, ": ", problem);
        }
      }
    }
  }

  RequestTarget& rt_;
  const std::vector<LoadedModel>& models_;
  const std::vector<int> priorities_;
  const bool verify_;
  Time t0_{}, t1_{};
  // Written by Record under record_mu_ (answers may come from several
  // threads, e.g. a server client's); read after Drain.
  std::mutex record_mu_;
  std::vector<ModelOutcome> out_;
  uint64_t verified_ = 0, mismatches_ = 0;
  std::string first_mismatch_;
  std::vector<std::atomic<uint64_t>> seq_;
  std::atomic<bool> stop_{false};
  // Per model: failed answers in a row of its closed-loop streams (backoff).
  std::vector<std::atomic<int>> failures_;
  static constexpr double kMaxBackoffMs = 100;
  // Closed-loop streams waiting out their think time: (when, model), a min-heap.
  std::mutex mu_;
  std::condition_variable timer_cv_;
  std::vector<std::pair<Time, size_t>> timers_;
  std::optional<double> cpu_at_t0_;  // driver thread only
  Duration process_cpu_{};
};

// Adds `part` (one slice) into `total`.
void Accumulate(ModeOutcome& total, const std::vector<ModelOutcome>& part, const std::vector<PuOutcome>& pus,
                Duration measured) {
  total.measured += measured;
  for (size_t i = 0; i < part.size(); ++i) {
    ModelOutcome& t = total.models[i];
    const ModelOutcome& p = part[i];
    t.completed += p.completed;
    t.deadline_missed += p.deadline_missed;
    t.rejected += p.rejected;
    t.failed += p.failed;
    t.unfinished += p.unfinished;
    t.arrivals_missed += p.arrivals_missed;
    t.answered += p.answered;
    t.latencies.insert(t.latencies.end(), p.latencies.begin(), p.latencies.end());
    t.rejection_latencies.insert(t.rejection_latencies.end(), p.rejection_latencies.begin(),
                                 p.rejection_latencies.end());
    if (t.first_error.empty()) t.first_error = p.first_error;
  }
  if (total.pus.empty()) {
    total.pus = pus;
  } else {
    for (size_t u = 0; u < pus.size() && u < total.pus.size(); ++u) {
      total.pus[u].busy += pus[u].busy;
      total.pus[u].runs += pus[u].runs;
      total.pus[u].run_cpu += pus[u].run_cpu;
    }
  }
}

ModeOutcome EmptyMode(const std::string& name, const std::vector<LoadedModel>& models) {
  ModeOutcome m;
  m.name = name;
  for (const LoadedModel& lm : models) {
    ModelOutcome o;
    o.name = lm.config->name;
    o.slo_ms = lm.config->slo_ms;
    m.models.push_back(std::move(o));
  }
  return m;
}

// The median of 3 timed calls of `run_once` after a warm-up call; +inf when
// one fails. `run_once` returns the time one call took, or nullopt.
template <typename RunOnce>
double MedianMs(RunOnce run_once) {
  std::vector<double> ms;
  for (int i = 0; i < 4; ++i) {
    const std::optional<Duration> took = run_once();
    if (!took) return std::numeric_limits<double>::infinity();
    if (i > 0) ms.push_back(ToMillis(*took));  // run 0 warms up
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// One request of `sample` on a prepared partition (an emulated PU's charged
// time counts when it is longer than the call).
double MedianRunMs(const backend::PreparedPartition& runner, const NamedTensors& sample) {
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (const auto& [n, t] : sample) feeds.emplace_back(n, &t);
  return MedianMs([&]() -> std::optional<Duration> {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<backend::RunResult> r = runner.Run(feeds);
    if (!r.ok()) return std::nullopt;
    return std::max<Duration>(std::chrono::steady_clock::now() - start, r->busy);
  });
}

// One request of `sample` on a plain ORT session.
double MedianOrtRunMs(const ort::OrtRunner& runner, const NamedTensors& sample) {
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (const auto& [n, t] : sample) feeds.emplace_back(n, &t);
  return MedianMs([&]() -> std::optional<Duration> {
    const auto start = std::chrono::steady_clock::now();
    if (!runner.Run(feeds).ok()) return std::nullopt;
    return std::chrono::steady_clock::now() - start;
  });
}

// Each speed probe: every PU cycles through its partitions this many times
// (all PUs at once), for at most this long.
constexpr int kProbeRounds = 3;
constexpr Duration kProbeMaxTime = std::chrono::milliseconds(300);

absl::StatusOr<RunReport> RunResolved(const config::RunConfig& config, const RunOptions& options,
                                     Remotes* remotes);

}  // namespace

absl::StatusOr<RunReport> RunSession(const config::RunConfig& config, const RunOptions& options) {
  BATON_RETURN_IF_ERROR(config::Validate(config));
  AssembleOptions connect;
  connect.plan_path = options.plan_path;
  connect.profile_path = options.profile_path;
  connect.say = options.progress;
  connect.stop = options.interrupt;
  BATON_ASSIGN_OR_RETURN(std::unique_ptr<Remotes> remotes, ConnectRemoteDevices(config, connect));
  if (!remotes) return RunResolved(config, options, nullptr);
  RunOptions remote_options = options;
  remote_options.no_profile = true;
  return RunResolved(remotes->resolved, remote_options, remotes.get());
}

namespace {

absl::StatusOr<RunReport> RunResolved(const config::RunConfig& config, const RunOptions& options,
                                     Remotes* remotes) {
  if (options.verify) {
    for (const auto& dev : config.devices) {
      for (const auto& pu : dev.pus) {
        if (pu.kind == "emu" && !pu.compute) {
          return absl::InvalidArgumentError(absl::StrCat("--verify needs real outputs, but emu PU '", pu.name,
                                                         "' has compute: false (zeros); set compute: true on it"));
        }
      }
    }
  }
  auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  const auto setup_start = std::chrono::steady_clock::now();
  RunReport report;
  report.config = config;
  report.baton_ran = !options.no_baton;
  if (options.no_baton && !options.trace_path.empty()) {
    return absl::InvalidArgumentError("--trace records baton's PU runs, and --no-baton leaves baton out; drop one");
  }
  if (options.no_baton && options.verify) {
    return absl::InvalidArgumentError("--verify checks baton's answers, and --no-baton leaves baton out; drop one");
  }
  // Which baselines to run: every one that applies, or the listed ones.
  auto wanted = [&](const std::string& name) {
    if (!config.run.baselines || remotes != nullptr) return false;
    const std::vector<std::string>& list = config.run.baseline_modes;
    return list.empty() || std::find(list.begin(), list.end(), name) != list.end();
  };
  std::vector<std::string> skipped;  // why a wanted baseline did not run
  // ONNX Runtime fixes its global thread pool when its environment is created,
  // so ort_global_pool's pool is set up before anything creates a session.
  bool global_pool_ready = false;
  if (wanted(baseline::ModeName(baseline::Mode::kGlobalPool))) {
    int cores = 0;
    for (const config::DeviceConfig& d : config.devices) {
      for (const config::PuConfig& pu : d.pus) cores += pu.kind == "cpu" ? pu.threads : 0;
    }
    if (cores > 0) {
      absl::Status pool = ort::ConfigureGlobalThreadPool(std::min(cores, ort::kMaxGlobalPoolThreads));
      global_pool_ready = pool.ok();
      if (!pool.ok()) skipped.push_back(absl::StrCat("ort_global_pool skipped: ", pool.message()));
    }
  }

  // Models, PUs, profile, plan, sessions and runtime: the library's one path.
  AssembleOptions assemble;
  assemble.cache_dir = options.cache_dir;
  assemble.plan_path = options.plan_path;
  assemble.profile_path = options.profile_path;
  assemble.no_profile = options.no_profile;
  assemble.samples = kSamplesPerModel;
  assemble.with_expected = options.verify;
  assemble.deploy = !options.no_baton;
  // The trace: baton's cores' events, from every device (remote ones included).
  std::unique_ptr<trace::TraceObserver> tracer;
  if (!options.trace_path.empty()) tracer = std::make_unique<trace::TraceObserver>(TraceNamesOf(config));
  assemble.observer = tracer.get();
  assemble.say = say;
  assemble.profile_progress = options.profile_progress;
  assemble.stop = options.interrupt;
  BATON_ASSIGN_OR_RETURN(Assembly assembly, Assemble(config, remotes, assemble));
  std::vector<LoadedModel>& models = assembly.models;
  const PuSet& pu_set = assembly.pus;
  const std::vector<runtime::DeployDevice>& devices = pu_set.devices;
  const bool all_cpu = pu_set.all_cpu;
  const int cpu_threads = pu_set.cpu_threads;
  const std::vector<int>& cpu_cores = pu_set.cpu_cores;
  const bool cpu_cores_complete = pu_set.cpu_cores_complete;
  const auto pu_count = static_cast<uint32_t>(pu_set.profiler_pus.size());
  const std::optional<Planning>& planning = assembly.planning;
  std::vector<runtime::DeployModel>& deploy = assembly.deploy;
  const std::optional<profile::Placement>& planned_placement = assembly.planned_placement;
  std::unique_ptr<runtime::Deployment>& baton_deployment = assembly.deployment;
  RuntimeBundle& baton_rt = assembly.runtime;
  const std::vector<int>& configured_priorities = assembly.configured_priorities;
  const std::vector<int>& baton_priorities = assembly.priorities;
  if (planning) {
    report.bound = planning->bounds;
    report.profile_bound = planning->bounds;
    report.bound_source = assembly.profile_source;
  }
  if (assembly.plan) report.plan_policy = assembly.plan->policy;
  if (assembly.plan && !assembly.estimated) {
    report.profile_predicted_rps = assembly.profile_predicted_rps;
    report.predicted_rps = assembly.profile_predicted_rps;
  }
  if (baton_deployment) report.sessions = baton_deployment->prepared_count();
  // Per model, per partition: its PUs in report order (for the run counts).
  std::vector<std::vector<std::vector<PuId>>> placed_pus(models.size());
  for (size_t i = 0; i < models.size(); ++i) {
    const graph::Model& g = *models[i].model;
    // Size and FLOPs of the model as loaded (a batching copy's free batch
    // dimension has no FLOP count).
    const graph::Model& loaded = models[i].baseline_model();
    ModelPlanInfo info{models[i].config->name, models[i].source, 0, {}, loaded.total_param_bytes(),
                       static_cast<double>(loaded.total_flops()) / 1e9, config.devices[deploy[i].device.value].name};
    info.priority = baton_priorities[i];
    if (i < assembly.batching.size()) {
      info.max_batch = assembly.batching[i].batch;
      info.batch_per_request_ratio = assembly.batching[i].per_request_ratio;
      info.batching_reason = assembly.batching[i].reason;
    }
    if (baton_deployment) {
      const runtime::DeployedModel& dm = baton_deployment->models()[i];
      info.partitions = static_cast<int>(dm.plan.partitions.size());
      for (size_t p = 0; p < dm.plan.partitions.size(); ++p) {
        PlacedPartition placed;
        for (NodeId n : dm.plan.partitions[p].nodes) placed.nodes.push_back(g.node(n).name);
        std::vector<PuId> order = dm.capable_pus[p];
        if (const std::optional<PuId>& fixed = dm.graph.partitions[p].fixed_pu) {
          std::stable_partition(order.begin(), order.end(), [&](PuId u) { return u == *fixed; });
        }
        for (PuId u : order) placed.pus.push_back(pu_set.profiler_pus[u.value].name);
        info.placement.push_back(std::move(placed));
        placed_pus[i].push_back(std::move(order));
      }
    }
    report.models.push_back(std::move(info));
  }

  // The local PUs, numbered as MakeRuntime numbers them (PuId order).
  struct LocalPu {
    PuId id;
    const config::PuConfig* config;
  };
  std::vector<LocalPu> local_pus;
  {
    uint32_t pu_id = 0;
    for (const config::DeviceConfig& d : config.devices) {
      for (const config::PuConfig& pu : d.pus) local_pus.push_back(LocalPu{PuId(pu_id++), &pu});
    }
  }

  // Modes to interleave.
  struct Mode {
    ModeOutcome outcome;
    std::function<absl::Status(Duration warmup, Duration duration, uint64_t seed, ModeOutcome& total)> run;
  };
  std::vector<Mode> modes;
  uint64_t verified = 0, mismatches = 0;
  std::string first_mismatch;
  // Only baton's answers are verified (the fixed baseline may run emulators without outputs).
  auto runtime_mode = [&](runtime::Runtime* rt, runtime::Batcher* batcher, const std::vector<int>& priorities,
                          bool verify) {
    return [&, rt, batcher, priorities, verify](Duration warmup, Duration duration, uint64_t seed,
                                                ModeOutcome& total) -> absl::Status {
      RuntimeTarget target(*rt, batcher, config.devices, models);
      WindowDriver driver(target, models, priorities, verify);
      std::vector<PuOutcome> pus;
      driver.Run(warmup, duration, seed, pus);
      Accumulate(total, driver.outcomes(), pus, duration);
      total.process_cpu += driver.process_cpu();
      verified += driver.verified();
      mismatches += driver.mismatches();
      if (first_mismatch.empty()) first_mismatch = driver.first_mismatch();
      return absl::OkStatus();
    };
  };
  // Dynamic batching of baton's requests, for the models that ask for it.
  std::unique_ptr<runtime::Batcher> batcher;
  if (baton_rt.rt) {
    BATON_ASSIGN_OR_RETURN(batcher, MakeBatcher(baton_rt.rt.get(), models, assembly.batching, assembly.deployment.get(),
                                                config.run.max_in_flight));
    modes.push_back(Mode{EmptyMode("baton", models),
                         runtime_mode(baton_rt.rt.get(), batcher.get(), baton_priorities, options.verify)});
  }

  // Each model whole on one PU (the fair baseline when ORT cannot use every PU).
  std::unique_ptr<runtime::Deployment> whole_deployment;
  RuntimeBundle whole_rt;
  if (remotes != nullptr && config.run.baselines) {
    skipped.push_back(
        "baselines skipped: they run on local PUs only, and this config has remote devices (compare with the "
        "same PUs in one process instead, see docs/agent.md)");
  } else if (!all_cpu && wanted("whole_on_one_pu")) {
    say("whole_on_one_pu: measuring each model whole on each PU");
    std::vector<runtime::DeployModel> whole;
    for (const runtime::DeployModel& dm : deploy) {
      runtime::DeployModel w = dm;
      w.cut = runtime::Cut::kWhole;
      w.groups.clear();
      w.group_pus.clear();
      w.group_shares.clear();
      whole.push_back(w);
    }
    absl::StatusOr<std::unique_ptr<runtime::Deployment>> built = runtime::Deployment::Build(pu_set.devices, whole);
    if (!built.ok()) {
      skipped.push_back(absl::StrCat("whole_on_one_pu skipped: ", built.status().message()));
    } else {
      whole_deployment = std::move(*built);
      // Latency of every model whole on every PU of its device (inf where it cannot run).
      std::vector<std::vector<double>> latency_ms(models.size(), std::vector<double>(pu_count, 1e300));
      for (size_t i = 0; i < models.size(); ++i) {
        for (const runtime::DeployDevice& dev : devices) {
          for (const runtime::DeployPu& pu : dev.pus) {
            if (const auto* r = whole_deployment->runners().Find(models[i].id, PartitionId(0), pu.id)) {
              latency_ms[i][pu.id.value] = MedianRunMs(*r, models[i].samples[0]);
            }
          }
        }
      }
      const std::vector<size_t> assignment = plan::BestWholeAssignment(latency_ms);
      std::vector<runtime::DeployModel> fixed = whole;
      std::vector<std::string> described;
      std::vector<std::string> pu_names;
      for (const auto& dev : devices) {
        for (const auto& pu : dev.pus) pu_names.push_back(pu.name);
      }
      for (size_t i = 0; i < fixed.size(); ++i) {
        fixed[i].fixed_pu = PuId(static_cast<uint32_t>(assignment[i]));
        // A model goes to the device of its PU.
        for (const auto& dev : devices) {
          for (const auto& pu : dev.pus) {
            if (pu.id.value == assignment[i]) fixed[i].device = dev.id;
          }
        }
        described.push_back(absl::StrFormat("%s->%s (%.2f ms)", models[i].config->name, pu_names[assignment[i]],
                                            latency_ms[i][assignment[i]]));
      }
      whole_deployment.reset();  // its sessions, before the fixed ones are made
      absl::StatusOr<std::unique_ptr<runtime::Deployment>> fixed_built = runtime::Deployment::Build(devices, fixed);
      if (!fixed_built.ok()) {
        skipped.push_back(absl::StrCat("whole_on_one_pu skipped: ", fixed_built.status().message()));
      } else {
        whole_deployment = std::move(*fixed_built);
        BATON_ASSIGN_OR_RETURN(whole_rt, MakeRuntime(config, *whole_deployment, "fixed", /*fixed=*/true));
        ModeOutcome outcome = EmptyMode("whole_on_one_pu", models);
        outcome.note = absl::StrJoin(described, ", ");
        modes.push_back(
            Mode{std::move(outcome), runtime_mode(whole_rt.rt.get(), nullptr, configured_priorities, false)});
      }
    }
  } else if (all_cpu && !config.run.baseline_modes.empty() && wanted("whole_on_one_pu")) {
    skipped.push_back("whole_on_one_pu skipped: it is for configs with non-CPU PUs; on CPU PUs see ort_pinned");
  }

  // Plain ONNX Runtime baselines over the CPU PUs' cores.
  std::vector<std::unique_ptr<baseline::OrtBaseline>> ort_baselines;
  bool any_ort_wanted = false;
  for (baseline::Mode mode : baseline::AllModes()) any_ort_wanted = any_ort_wanted || wanted(baseline::ModeName(mode));
  if (any_ort_wanted && cpu_threads == 0) {
    skipped.push_back("the ORT baselines need CPU PUs; this config has none");
  } else if (any_ort_wanted) {
    // The serialized models, once. Without baton nothing else needs the
    // loaded graphs: free them first, so that a baseline run alone holds what
    // a plain ORT program holds (its sessions), not baton's copy of the model.
    std::vector<std::string> onnx_bytes;
    // The baselines run each model as loaded (not baton's batching copy).
    for (const LoadedModel& lm : models) onnx_bytes.push_back(lm.baseline_model().SerializeToString());
    const bool release_graphs = options.no_baton && !whole_rt.rt;
    if (release_graphs) {
      deploy.clear();
      for (LoadedModel& lm : models) {
        lm.model.reset();
        lm.unbatched.reset();
      }
      malloc_trim(0);  // hand the freed pages back, or they stay in the peak
    }
    baseline::Mode last_ort_mode = baseline::Mode::kTuned;
    for (baseline::Mode mode : baseline::AllModes()) {
      if (wanted(baseline::ModeName(mode))) last_ort_mode = mode;
    }
    // The CPU PUs, for ort_pinned.
    std::vector<LocalPu> cpu_pus;
    for (const LocalPu& pu : local_pus) {
      if (pu.config->kind == "cpu") cpu_pus.push_back(pu);
    }
    for (baseline::Mode mode : baseline::AllModes()) {
      const std::string name = baseline::ModeName(mode);
      if (!wanted(name)) continue;
      if (mode == baseline::Mode::kGlobalPool && !global_pool_ready) continue;  // said why above
      std::vector<baseline::ModelSpec> specs;
      size_t spec_index = 0;
      for (const LoadedModel& lm : models) {
        baseline::ModelSpec spec;
        spec.name = lm.config->name;
        // The last baseline takes the bytes; Create frees each once its session exists.
        spec.onnx_bytes = last_ort_mode == mode ? std::move(onnx_bytes[spec_index]) : onnx_bytes[spec_index];
        ++spec_index;
        for (const NamedTensors& s : lm.samples) spec.samples.push_back(CloneAll(s));
        spec.arrival = ToArrival(lm.config->arrival);
        spec.deadline = DeadlineOf(*lm.config);
        spec.max_in_flight = config.run.max_in_flight;
        if (lm.config->execution_timeout_ms) {
          spec.execution_timeout = std::chrono::duration_cast<Duration>(
              std::chrono::duration<double, std::milli>(*lm.config->execution_timeout_ms));
        }
        specs.push_back(std::move(spec));
      }
      baseline::BaselineOptions bo;
      bo.threads = cpu_threads;
      if (cpu_cores_complete && static_cast<int>(cpu_cores.size()) == cpu_threads) bo.cores = cpu_cores;
      std::string note;
      if (mode == baseline::Mode::kPinned) {
        // Each model whole on one CPU PU: the assignment with the least loaded
        // busiest PU, from the profile's whole-model times (measured with a
        // session per model and PU when there is no profile).
        std::vector<std::vector<double>> latency_ms(models.size(), std::vector<double>(cpu_pus.size(), 1e300));
        for (size_t u = 0; u < cpu_pus.size(); ++u) {
          bo.pus.push_back(baseline::PinnedPu{cpu_pus[u].config->threads, cpu_pus[u].config->cores});
          for (size_t i = 0; i < models.size(); ++i) {
            std::optional<double> ms;
            if (planning) {
              const profile::ProblemModel& pm = planning->problem.models[i];
              if (pm.atoms() > 0) {
                ms = planning->problem.RangeMs(static_cast<int>(i), 0, pm.atoms(), static_cast<int>(cpu_pus[u].id.value));
              }
            } else {
              ort::SessionOptions so;
              so.intra_op_threads = cpu_pus[u].config->threads;
              so.allow_spinning = false;
              absl::StatusOr<std::unique_ptr<ort::OrtRunner>> r = ort::OrtRunner::Create(specs[i].onnx_bytes, so, name);
              if (r.ok()) ms = MedianOrtRunMs(**r, models[i].samples[0]);
            }
            if (ms) latency_ms[i][u] = *ms;
          }
        }
        bo.pu_of_model = plan::BestWholeAssignment(latency_ms);
        std::vector<std::string> described;
        for (size_t i = 0; i < models.size(); ++i) {
          const size_t u = bo.pu_of_model[i];
          described.push_back(absl::StrFormat("%s->%s (%.2f ms)", models[i].config->name, cpu_pus[u].config->name,
                                              latency_ms[i][u]));
        }
        note = absl::StrJoin(described, ", ");
      }
      say(absl::StrCat(name, ": creating sessions"));
      absl::StatusOr<std::unique_ptr<baseline::OrtBaseline>> created =
          baseline::OrtBaseline::Create(mode, std::move(specs), bo);
      if (!created.ok()) {
        // A baseline that cannot run here (e.g. more requests in flight than
        // threads it may start) is reported, not fatal: baton still runs.
        skipped.push_back(absl::StrCat(name, " skipped: ", created.status().message()));
        continue;
      }
      baseline::OrtBaseline* raw = created->get();
      ort_baselines.push_back(*std::move(created));
      ModeOutcome outcome = EmptyMode(name, models);
      outcome.ort_defaults = baseline::IsOrtDefaults(mode);
      outcome.note = note;
      modes.push_back(Mode{std::move(outcome),
                           [raw](Duration warmup, Duration duration, uint64_t seed, ModeOutcome& total) -> absl::Status {
                             BATON_ASSIGN_OR_RETURN(baseline::SliceResult r, raw->RunFor(duration, warmup, seed));
                             std::vector<ModelOutcome> part;
                             for (const baseline::ModelResult& m : r.models) {
                               ModelOutcome o;
                               o.completed = m.completed;
                               o.deadline_missed = m.deadline_missed;
                               o.failed = m.failed;
                               o.unfinished = m.unfinished;
                               o.rejected = m.rejected;
                               o.answered = m.completed + m.failed + m.rejected;
                               o.latencies = m.latencies;
                               o.first_error = m.first_error;
                               part.push_back(std::move(o));
                             }
                             Accumulate(total, part, {}, r.elapsed);
                             return absl::OkStatus();
                           }});
    }
  }
  report.baselines_note = absl::StrJoin(skipped, "; ");
  if (modes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "nothing to run: --no-baton leaves baton out and no baseline ran",
        skipped.empty() ? std::string(" (run.baselines is false or empty)") : absl::StrCat(" (", report.baselines_note, ")"),
        "; drop --no-baton or pick a baseline that applies"));
  }

  // Speed probes for the bound: baton's partitions on every local PU at once,
  // between rounds of slices, outside every mode.
  std::unique_ptr<runtime::SpeedProbe> probe;
  std::vector<std::vector<double>> probe_speeds;  // per probe, per PU
  if (planning && baton_deployment && remotes == nullptr) {
    std::vector<runtime::ProbePu> probe_pus;
    for (const LocalPu& pu : local_pus) {
      probe_pus.push_back(runtime::ProbePu{pu.id, pu.config->name, PinCoresOf(*pu.config)});
    }
    std::vector<NamedTensors> samples;
    for (const LoadedModel& lm : models) samples.push_back(CloneAll(lm.samples[0]));
    BATON_ASSIGN_OR_RETURN(probe, runtime::SpeedProbe::Create(*baton_deployment, std::move(probe_pus), samples));
  }
  auto take_probe = [&]() -> absl::Status {
    if (!probe) return absl::OkStatus();
    BATON_ASSIGN_OR_RETURN(std::vector<runtime::ProbeRun> runs, probe->Run(kProbeRounds, kProbeMaxTime));
    BATON_ASSIGN_OR_RETURN(std::vector<double> speed, ProbeSpeeds(*planning, *baton_deployment, runs));
    probe_speeds.push_back(std::move(speed));
    return absl::OkStatus();
  };
  report.setup = std::chrono::steady_clock::now() - setup_start;

  // Interleaved slices; the order of the modes rotates every slice.
  const int slices = config.run.slices;
  const Duration slice = FromMillis(config.run.duration_s * 1000.0 / slices);
  const Duration first_warmup = FromMillis(config.run.warmup_s * 1000.0);
  const Duration later_warmup = std::min(first_warmup, Duration(std::chrono::milliseconds(250)));
  std::vector<bool> warmed(modes.size(), false);
  // Which mode ran when (on the baton runtime's clock), for the trace.
  struct Turn {
    std::string mode;
    int slice;
    Time start, end;
  };
  std::vector<Turn> turns;
  auto now = [&] { return baton_rt.rt ? baton_rt.rt->Now() : kTimeZero; };
  auto interrupted = [&] { return options.interrupt != nullptr && options.interrupt->load(); };
  for (int s = 0; s < slices && !report.interrupted; ++s) {
    BATON_RETURN_IF_ERROR(take_probe());
    for (size_t k = 0; k < modes.size(); ++k) {
      if (interrupted()) {
        report.interrupted = true;
        say(absl::StrFormat("interrupted: stopping after %d slice turns", static_cast<int>(turns.size())));
        break;
      }
      const size_t m = (k + static_cast<size_t>(s)) % modes.size();
      Mode& mode = modes[m];
      const Duration warmup = warmed[m] ? later_warmup : first_warmup;
      warmed[m] = true;
      const Time began = now();
      BATON_RETURN_IF_ERROR(mode.run(warmup, slice, config.run.seed + static_cast<uint64_t>(s), mode.outcome));
      turns.push_back(Turn{mode.outcome.name, s + 1, began, now()});
      report.slices_run = s + 1;
      say(absl::StrFormat("slice %d/%d  %-16s %8.1f req/s so far", s + 1, slices, mode.outcome.name,
                          mode.outcome.throughput_rps()));
    }
  }
  BATON_RETURN_IF_ERROR(take_probe());

  // Per-device utilisation and failures.
  if (baton_rt.rt) {
    const runtime::RuntimeStats stats = baton_rt.rt->stats();
    report.reissued = stats.high_level.reissued;
    report.abandoned = stats.abandoned;
    report.answered_twice = stats.answered_twice;
    report.rerouted = stats.high_level.rerouted;
    report.withdrawn = stats.high_level.withdrawn;
    for (size_t d = 0; d < config.devices.size(); ++d) {
      DeviceOutcome o;
      o.name = config.devices[d].name;
      o.address = config.devices[d].address;
      double busy_s = 0;
      for (const PuOutcome& p : modes[0].outcome.pus) {
        if (p.device != o.name) continue;
        ++o.pus;
        busy_s += ToMillis(p.busy) / 1000.0;
      }
      const double measured_s = ToMillis(modes[0].outcome.measured) / 1000.0;
      if (o.pus > 0 && measured_s > 0) o.utilization = busy_s / measured_s / static_cast<double>(o.pus);
      if (d < stats.status.size()) {
        o.reachable = stats.status[d].reachable;
        o.lost = stats.status[d].lost;
        o.returned = stats.status[d].returned;
      }
      if (d < stats.devices.size()) o.policy_violations = stats.devices[d].violations;
      report.devices.push_back(std::move(o));
    }

    // Runs per partition and PU.
    if (batcher) {
      batcher->Stop();
      for (size_t i = 0; i < models.size(); ++i) {
        const runtime::BatcherStats b = batcher->stats(models[i].id);
        report.models[i].batches = b.batches;
        report.models[i].batched_requests = b.requests;
      }
    }
    baton_rt.rt->Stop();
    for (size_t i = 0; i < models.size(); ++i) {
      if (!config.devices[deploy[i].device.value].address.empty()) continue;  // remote: its agent measures
      const runtime::DeployedModel& dm = baton_deployment->models()[i];
      for (size_t p = 0; p < placed_pus[i].size(); ++p) {
        for (PuId u : placed_pus[i][p]) {
          report.models[i].placement[p].runs.push_back(
              baton_rt.latency->Observations(dm.id, dm.plan.partitions[p].id, u));
        }
      }
    }
    // The plan's prediction, calibrated by baton's own run times (how well
    // the plan's model of this run held; not used for the bound).
    if (planning && planned_placement) {
      BATON_ASSIGN_OR_RETURN(Calibration c,
                             Calibrate(*planning, *baton_deployment, *baton_rt.latency, planned_placement));
      report.predicted_rps = c.predicted_rps;
    }
  }
  // The bound: the profile's costs scaled per PU by the fastest probe.
  if (planning) {
    std::vector<double> speed(planning->problem.pus.size(), 1.0);
    if (!probe_speeds.empty()) {
      speed = probe_speeds[0];
      for (const std::vector<double>& p : probe_speeds) {
        for (size_t u = 0; u < speed.size() && u < p.size(); ++u) speed[u] = std::min(speed[u], p[u]);
      }
      BATON_ASSIGN_OR_RETURN(profile::Bounds scaled, profile::ComputeBounds(planning->problem.Scaled(speed)));
      report.bound = std::move(scaled);
    }
    report.probes = static_cast<int>(probe_speeds.size());
    for (size_t u = 0; u < speed.size(); ++u) report.pu_speed.emplace_back(planning->problem.pus[u].name, speed[u]);
  }
  if (whole_rt.rt) whole_rt.rt->Stop();
  if (tracer && baton_rt.rt) {
    trace::ChromeTrace trace;
    tracer->WriteTo(trace);
    // One more lane: which mode had the PUs when (warm-up included).
    const auto run_pid = static_cast<uint32_t>(config.devices.size() + 1);
    trace.AddLane(run_pid, "baton run", 0, "mode");
    for (const Turn& t : turns) {
      trace.AddSlice(run_pid, 0, t.mode, t.start, t.end, {{"slice", std::to_string(t.slice)}});
    }
    BATON_RETURN_IF_ERROR(trace.Write(options.trace_path));
    say(absl::StrCat("trace: ", tracer->runs(), " partition runs written to ", options.trace_path,
                     tracer->dropped_events() > 0
                         ? absl::StrCat(" (", tracer->dropped_events(), " events over the limit left out)")
                         : std::string()));
  }

  for (Mode& mode : modes) {
    if (mode.outcome.name == "baton") {
      report.baton = std::move(mode.outcome);
    } else {
      report.baselines.push_back(std::move(mode.outcome));
    }
  }
  if (!report.baton_ran) report.baton = EmptyMode("baton", models);
  if (report.bound) {
    std::vector<std::pair<std::string, double>> measured;
    if (report.baton_ran) measured.emplace_back("baton", report.baton.throughput_rps());
    for (const ModeOutcome& b : report.baselines) measured.emplace_back(b.name, b.throughput_rps());
    report.bound_violations = profile::FindBoundViolations(report.bound->throughput_rps, measured);
  }
  report.verified = verified;
  report.mismatches = mismatches;
  report.first_mismatch = first_mismatch;
  report.peak_rss_mb = PeakRssMb();
  return report;
}

}  // namespace

absl::StatusOr<RunReport> RunAgainstServer(const config::RunConfig& config, const RunOptions& options,
                                           const ServerTarget& server) {
  if (!options.plan_path.empty() || !options.trace_path.empty() || options.no_baton) {
    return absl::InvalidArgumentError(
        "--server sends the workload to a running `baton serve`, which has its own plan and PUs: --plan, --trace "
        "and --no-baton do not apply; give them to `baton serve` or drop them");
  }
  auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  const auto setup_start = std::chrono::steady_clock::now();
  RunReport report;
  report.config = config;
  report.server = server.address;
  report.server_shared_memory = server.shared_memory;
  report.server_streaming = server.streaming;
  report.baselines_note = absl::StrCat("baselines skipped: --server ", server.address,
                                       " measures a running server, whose PUs this process does not hold");
  // The models, for their samples (and whole-model outputs with --verify);
  // nothing is deployed here.
  AssembleOptions assemble;
  assemble.cache_dir = options.cache_dir;
  assemble.no_profile = true;
  assemble.samples = kSamplesPerModel;
  assemble.with_expected = options.verify;
  assemble.deploy = false;
  assemble.say = say;
  assemble.stop = options.interrupt;
  // The server plans; here no plan is made (`whole` needs no profile).
  config::RunConfig local = config;
  local.policy.high_level = "whole";
  BATON_ASSIGN_OR_RETURN(Assembly assembly, Assemble(local, nullptr, assemble));
  std::vector<LoadedModel>& models = assembly.models;
  for (size_t i = 0; i < models.size(); ++i) {
    ModelPlanInfo info;
    info.name = models[i].config->name;
    info.source = models[i].source;
    info.device = server.address;
    info.priority = assembly.configured_priorities[i];
    const graph::Model& g = models[i].baseline_model();
    info.param_bytes = g.total_param_bytes();
    info.gflops = static_cast<double>(g.total_flops()) / 1e9;
    report.models.push_back(std::move(info));
  }
  report.setup = std::chrono::steady_clock::now() - setup_start;

  ServerRequestTarget target(server, models);
  report.baton = EmptyMode("baton", models);
  uint64_t verified = 0, mismatches = 0;
  const int slices = config.run.slices;
  const Duration slice = FromMillis(config.run.duration_s * 1000.0 / slices);
  const Duration first_warmup = FromMillis(config.run.warmup_s * 1000.0);
  const Duration later_warmup = std::min(first_warmup, Duration(std::chrono::milliseconds(250)));
  for (int s = 0; s < slices; ++s) {
    if (options.interrupt != nullptr && options.interrupt->load()) {
      report.interrupted = true;
      say(absl::StrFormat("interrupted: stopping after %d slices", s));
      break;
    }
    WindowDriver driver(target, models, assembly.configured_priorities, options.verify);
    std::vector<PuOutcome> pus;
    driver.Run(s == 0 ? first_warmup : later_warmup, slice, config.run.seed + static_cast<uint64_t>(s), pus);
    Accumulate(report.baton, driver.outcomes(), pus, slice);
    report.baton.process_cpu += driver.process_cpu();
    verified += driver.verified();
    mismatches += driver.mismatches();
    if (report.first_mismatch.empty()) report.first_mismatch = driver.first_mismatch();
    report.slices_run = s + 1;
    say(absl::StrFormat("slice %d/%d  baton via %s %8.1f req/s so far", s + 1, slices, server.address,
                        report.baton.throughput_rps()));
  }
  report.verified = verified;
  report.mismatches = mismatches;
  report.abandoned = target.abandoned();
  if (server.call_counts) std::tie(report.server_stream_calls, report.server_unary_calls) = server.call_counts();
  report.peak_rss_mb = PeakRssMb();
  return report;
}

}  // namespace baton::harness
