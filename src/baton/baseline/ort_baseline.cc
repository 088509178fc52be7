#include "baton/baseline/ort_baseline.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/backend/ort/ort_runner.h"
#include "baton/core/run_cancel.h"

namespace baton::baseline {

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kSequential: return "ort_sequential";
    case Mode::kConcurrent: return "ort_concurrent";
    case Mode::kTuned: return "ort_tuned";
    case Mode::kPinned: return "ort_pinned";
    case Mode::kGlobalPool: return "ort_global_pool";
  }
  return "unknown";
}

std::vector<Mode> AllModes() {
  return {Mode::kTuned, Mode::kPinned, Mode::kGlobalPool, Mode::kSequential, Mode::kConcurrent};
}

std::optional<Mode> ModeFromName(std::string_view name) {
  for (Mode m : AllModes()) {
    if (name == ModeName(m)) return m;
  }
  return std::nullopt;
}

bool IsOrtDefaults(Mode mode) { return mode == Mode::kSequential || mode == Mode::kConcurrent; }

namespace {

using Clock = std::chrono::steady_clock;
using Feeds = std::vector<std::pair<std::string, const Tensor*>>;

// Poisson rates above this would round the mean gap to 0 ns.
constexpr double kMaxPerSecond = 1e9;

absl::Status CheckArrival(const ModelSpec& spec) {
  const std::string where = absl::StrCat("model '", spec.name, "': ");
  if (const auto* p = std::get_if<dispatch::Periodic>(&spec.arrival)) {
    if (p->period <= Duration::zero()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "periodic arrivals need a period > 0 (got ", p->period.count(), " ns)"));
    }
  } else if (const auto* q = std::get_if<dispatch::Poisson>(&spec.arrival)) {
    if (!(q->per_second > 0) || !(q->per_second <= kMaxPerSecond)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "Poisson arrivals need 0 < per_second <= 1e9 (got ", q->per_second, ")"));
    }
  } else {
    const auto& c = std::get<dispatch::ClosedLoop>(spec.arrival);
    if (c.concurrency < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "closed-loop concurrency is ", c.concurrency, "; it must be >= 1"));
    }
    if (c.think < Duration::zero()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "closed-loop think time is ", c.think.count(), " ns; it must be >= 0"));
    }
  }
  if (spec.deadline.has_value() && *spec.deadline < Duration::zero()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "deadline is ", spec.deadline->count(), " ns; it must be >= 0 (relative to arrival)"));
  }
  return absl::OkStatus();
}

// The requests of one model, served in arrival order by one thread: Head() is
// the arrival instant of the oldest request not yet taken (possibly in the
// future); the serving thread Take()s it when it starts it and Pop()s it once
// it has been answered at `finish`.
//
// Open loop (periodic, Poisson): arrivals are generated lazily, one at a time,
// and admitted as baton admits them: while fewer than `limit` requests of the
// model are in flight (waiting or running; 0 = no limit). An arrival beyond
// that is rejected at once (rejected(): those in the measured window). Arrivals
// are admitted up to each Take and Pop instant, before the number in flight
// changes, so each one is judged by what was in flight when it arrived.
// Closed loop: `concurrency` requests arrive at the slice start; each answer
// makes the next one arrive `think` after it.
class Stream {
 public:
  Stream(const dispatch::Arrival& arrival, Clock::time_point start, uint64_t rng_seed, size_t limit,
         Clock::time_point window_from, Clock::time_point window_end)
      : arrival_(arrival), start_(start), rng_(rng_seed), limit_(limit), from_(window_from), end_(window_end) {
    next_ = start;
    if (const auto* c = std::get_if<dispatch::ClosedLoop>(&arrival_)) {
      pending_.assign(static_cast<size_t>(c->concurrency), start);
    }
  }

  Clock::time_point Head() const {
    if (IsClosed()) return pending_.front();
    return waiting_.empty() ? next_ : waiting_.front();
  }
  uint64_t index() const { return index_; }  // of the request at the head
  uint64_t rejected() const { return rejected_; }

  // The head request starts at `now` (>= Head()).
  void Take(Clock::time_point now) {
    if (IsClosed()) return;
    Admit(now);
    running_ = true;
  }

  void Pop(Clock::time_point finish) {
    ++index_;
    if (const auto* c = std::get_if<dispatch::ClosedLoop>(&arrival_)) {
      pending_.pop_front();
      pending_.push_back(finish + c->think);
      return;
    }
    Admit(finish);
    waiting_.pop_front();
    running_ = false;
  }

  // Requests not yet taken that arrive in [from, to), after admitting every
  // arrival before `to`. Consumes the stream.
  uint64_t CountUntaken(Clock::time_point from, Clock::time_point to) {
    uint64_t n = 0;
    if (IsClosed()) {
      for (Clock::time_point a : pending_) n += (a >= from && a < to) ? 1 : 0;
      return n;
    }
    running_ = false;
    Admit(to - Duration(1));
    for (Clock::time_point a : waiting_) n += (a >= from && a < to) ? 1 : 0;
    return n;
  }

 private:
  bool IsClosed() const { return std::holds_alternative<dispatch::ClosedLoop>(arrival_); }

  void Admit(Clock::time_point now) {
    while (next_ <= now) {
      const size_t in_flight = waiting_.size() + (running_ ? 1 : 0);
      if (limit_ > 0 && in_flight >= limit_) {
        if (next_ >= from_ && next_ < end_) ++rejected_;
      } else {
        waiting_.push_back(next_);
      }
      ++arrivals_;
      if (const auto* p = std::get_if<dispatch::Periodic>(&arrival_)) {
        // From the count, not by accumulation: exact however long the slice.
        next_ = start_ + p->period * static_cast<Duration::rep>(arrivals_);
      } else {
        const double per_second = std::get<dispatch::Poisson>(arrival_).per_second;
        next_ += rng_.Exponential(Duration(static_cast<Duration::rep>(std::llround(1e9 / per_second))));
      }
    }
  }

  dispatch::Arrival arrival_;
  Clock::time_point start_;
  dispatch::Rng rng_;
  size_t limit_;
  Clock::time_point from_, end_;            // the measured window
  uint64_t index_ = 0;                      // requests taken so far
  // Open loop.
  Clock::time_point next_;                  // the next arrival not yet admitted or rejected
  uint64_t arrivals_ = 0;                   // admitted or rejected so far
  std::deque<Clock::time_point> waiting_;   // admitted, not taken yet
  bool running_ = false;                    // the head is running
  uint64_t rejected_ = 0;
  // Closed loop.
  std::deque<Clock::time_point> pending_;   // nondecreasing
};

// Pins the calling thread to `core` (ORT never pins the thread that calls Run).
absl::Status PinCallingThread(int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (core < 0 || core >= CPU_SETSIZE) {
    return absl::InvalidArgumentError(absl::StrCat("core ", core, " is outside 0..", CPU_SETSIZE - 1));
  }
  CPU_SET(core, &set);
  if (int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); err != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot pin the serving thread to core ",
                                                   core, ": ", std::strerror(err),
                                                   " (hint: pick cores this process may run on; see `baton devices`)"));
  }
  return absl::OkStatus();
}

// Holds the serving threads until all of them are ready (pinned), then starts
// the slice clock once for all of them.
struct StartGate {
  std::mutex mu;
  std::condition_variable cv;
  int ready = 0;
  bool released = false;
  bool abort = false;
  Clock::time_point start;
  int ended = 0;  // serving threads that have returned (the watchdog waits for all)
};

// The run a serving thread is in, for the watchdog that stops runs past their
// execution timeout or the slice's end.
struct RunWatch {
  std::mutex mu;
  RunCancel cancel;                          // reset under mu before each run
  std::optional<Clock::time_point> started;  // guarded by mu; a run in progress since
  size_t model = 0;                          // guarded by mu; its model
  bool timed_out = false;                    // guarded by mu; the watchdog stopped it past its timeout
};

// One request stream a serving thread owns: a model's arrivals, or one of the
// `concurrency` slots of a closed loop (then a closed loop of 1).
struct Unit {
  size_t model = 0;
  dispatch::Arrival arrival;
  uint64_t sample_offset = 0;  // request i of the unit feeds sample (offset + i) % n
};

// What one OS thread serves, and the core it pins itself to.
struct Group {
  std::vector<Unit> units;
  std::optional<int> pin_core;
};

// The serving threads of `mode` (see the header).
std::vector<Group> MakeGroups(Mode mode, const std::vector<ModelSpec>& models, const BaselineOptions& options) {
  std::vector<Group> groups;
  switch (mode) {
    case Mode::kSequential: {
      Group g;
      for (size_t m = 0; m < models.size(); ++m) g.units.push_back(Unit{m, models[m].arrival, 0});
      if (!options.cores.empty()) g.pin_core = options.cores[0];
      groups.push_back(std::move(g));
      break;
    }
    case Mode::kConcurrent:
      for (size_t m = 0; m < models.size(); ++m) groups.push_back(Group{{Unit{m, models[m].arrival, 0}}, {}});
      break;
    case Mode::kPinned:
      groups.resize(options.pus.size());
      for (size_t u = 0; u < options.pus.size(); ++u) {
        if (!options.pus[u].cores.empty()) groups[u].pin_core = options.pus[u].cores[0];
      }
      for (size_t m = 0; m < models.size(); ++m) {
        groups[options.pu_of_model[m]].units.push_back(Unit{m, models[m].arrival, 0});
      }
      std::erase_if(groups, [](const Group& g) { return g.units.empty(); });
      break;
    case Mode::kTuned:
    case Mode::kGlobalPool:
      // One thread per request in flight.
      for (size_t m = 0; m < models.size(); ++m) {
        if (const auto* c = std::get_if<dispatch::ClosedLoop>(&models[m].arrival)) {
          for (int k = 0; k < c->concurrency; ++k) {
            groups.push_back(Group{{Unit{m, dispatch::ClosedLoop{1, c->think}, static_cast<uint64_t>(k)}}, {}});
          }
        } else {
          groups.push_back(Group{{Unit{m, models[m].arrival, 0}}, {}});
        }
      }
      break;
  }
  return groups;
}

// The number of serving threads MakeGroups would make, without making them
// (a closed loop's concurrency may be huge).
int64_t CountThreads(Mode mode, const std::vector<ModelSpec>& models, const BaselineOptions& options) {
  switch (mode) {
    case Mode::kSequential: return 1;
    case Mode::kConcurrent: return static_cast<int64_t>(models.size());
    case Mode::kPinned: return static_cast<int64_t>(options.pus.size());
    case Mode::kTuned:
    case Mode::kGlobalPool: break;
  }
  int64_t n = 0;
  for (const ModelSpec& m : models) {
    const auto* c = std::get_if<dispatch::ClosedLoop>(&m.arrival);
    n += c != nullptr ? std::max(c->concurrency, 1) : 1;
  }
  return n;
}

class OrtBaselineImpl final : public OrtBaseline {
 public:
  OrtBaselineImpl(Mode mode, std::vector<ModelSpec> models, BaselineOptions options,
                  std::vector<std::unique_ptr<ort::OrtRunner>> runners)
      : mode_(mode), models_(std::move(models)), options_(std::move(options)), runners_(std::move(runners)) {
    groups_ = MakeGroups(mode_, models_, options_);
    // Borrowed feeds, built once: pointers into models_[m].samples, which never
    // change after construction.
    feeds_.resize(models_.size());
    for (size_t m = 0; m < models_.size(); ++m) {
      for (const dispatch::NamedTensors& sample : models_[m].samples) {
        Feeds feeds;
        for (const auto& [name, tensor] : sample) feeds.emplace_back(name, &tensor);
        feeds_[m].push_back(std::move(feeds));
      }
    }
  }

  Mode mode() const override { return mode_; }

  absl::StatusOr<SliceResult> RunFor(Duration duration, Duration warmup, uint64_t seed) override;

 private:
  struct Window {
    Clock::time_point measure_from;
    Clock::time_point end;
  };
  // Serves `group` on the calling thread from `start` until `window.end`,
  // always taking the pending request with the earliest arrival (ties: the
  // lower unit index); adds into results[m] (one entry per model).
  void Serve(const Group& group, Clock::time_point start, Window window, uint64_t seed,
             std::vector<ModelResult>& results, RunWatch& watch) const;
  // Until every serving thread has returned: stops runs past their model's
  // execution timeout (counted failed) and, 1 s after `window.end`, every run.
  void Watch(StartGate& gate, int threads, std::vector<RunWatch>& watches, Window window) const;
  // The body of one serving thread: pins itself if asked, waits at the gate,
  // serves. Writes only `results` and statuses[slot].
  void ServingThread(const Group& group, StartGate& gate, Duration warmup, Duration duration, uint64_t seed,
                     std::vector<ModelResult>& results, std::vector<absl::Status>& statuses,
                     size_t slot, RunWatch& watch) const noexcept;

  Mode mode_;
  std::vector<ModelSpec> models_;
  BaselineOptions options_;
  std::vector<std::unique_ptr<ort::OrtRunner>> runners_;
  std::vector<Group> groups_;
  std::vector<std::vector<Feeds>> feeds_;  // [model][sample]
  std::atomic<bool> running_{false};
};

void OrtBaselineImpl::Serve(const Group& group, Clock::time_point start, Window window, uint64_t seed,
                            std::vector<ModelResult>& results, RunWatch& watch) const {
  std::vector<Stream> streams;
  streams.reserve(group.units.size());
  for (size_t k = 0; k < group.units.size(); ++k) {
    const Unit& unit = group.units[k];
    // The same per-stream seed derivation as the virtual shell (open-loop
    // units are one per model, so the model index identifies the stream).
    streams.emplace_back(unit.arrival, start, seed ^ (0x9E3779B97F4A7C15ull * (unit.model + 1)),
                         static_cast<size_t>(std::max(0, models_[unit.model].max_in_flight)), window.measure_from,
                         window.end);
  }
  auto in_window = [&](Clock::time_point arrival) {
    return arrival >= window.measure_from && arrival < window.end;
  };
  for (;;) {
    size_t best = 0;
    for (size_t s = 1; s < streams.size(); ++s) {
      if (streams[s].Head() < streams[best].Head()) best = s;
    }
    const Clock::time_point arrival = streams[best].Head();
    Clock::time_point now = Clock::now();
    if (now >= window.end) break;
    if (arrival > now) {
      // Nothing pending: sleep until the next arrival (or the end). Arrivals are
      // generated by this thread, so nothing can come earlier.
      std::this_thread::sleep_until(std::min(arrival, window.end));
      continue;
    }
    streams[best].Take(now);
    const size_t m = group.units[best].model;
    const std::vector<Feeds>& samples = feeds_[m];
    const size_t sample = (group.units[best].sample_offset + streams[best].index()) % samples.size();
    const Feeds* feeds = &samples[sample];
    // A fresh copy of the inputs per request, as an application hands over a
    // new frame (baton's requests pay the same copy).
    dispatch::NamedTensors copy;
    Feeds copied;
    if (options_.copy_inputs) {
      const dispatch::NamedTensors& original = models_[m].samples[sample];
      copy.reserve(original.size());
      for (const auto& [name, tensor] : original) copy.emplace_back(name, tensor.Clone());
      for (const auto& [name, tensor] : copy) copied.emplace_back(name, &tensor);
      feeds = &copied;
    }
    {
      std::lock_guard lock(watch.mu);
      watch.cancel.Reset();
      watch.started = Clock::now();
      watch.model = m;
      watch.timed_out = false;
    }
    absl::StatusOr<std::vector<Tensor>> outputs = runners_[m]->Run(*feeds, {}, &watch.cancel);
    const Clock::time_point finish = Clock::now();
    bool timed_out = false;
    {
      std::lock_guard lock(watch.mu);
      watch.started.reset();
      timed_out = watch.timed_out;
    }
    if (timed_out && !outputs.ok()) {
      outputs = absl::DeadlineExceededError(absl::StrCat(
          "model '", models_[m].name, "': a run took longer than its execution timeout of ",
          std::chrono::duration_cast<std::chrono::milliseconds>(*models_[m].execution_timeout).count(),
          " ms and was stopped; raise the model's execution_timeout_ms if it is legitimately this slow"));
    }
    streams[best].Pop(finish);
    if (!in_window(arrival)) continue;  // warm-up: discarded
    ModelResult& r = results[m];
    if (finish > window.end) {
      ++r.unfinished;  // started in time, answered too late to count
    } else if (!outputs.ok()) {
      ++r.failed;
      if (r.first_error.empty()) r.first_error = std::string(outputs.status().message());
    } else {
      const Duration latency = std::chrono::duration_cast<Duration>(finish - arrival);
      ++r.completed;
      r.latencies.push_back(latency);
      if (models_[m].deadline.has_value() && latency > *models_[m].deadline) ++r.deadline_missed;
    }
  }
  for (size_t s = 0; s < streams.size(); ++s) {
    results[group.units[s].model].unfinished += streams[s].CountUntaken(window.measure_from, window.end);
    results[group.units[s].model].rejected += streams[s].rejected();
  }
}

void OrtBaselineImpl::ServingThread(const Group& group, StartGate& gate, Duration warmup, Duration duration,
                                    uint64_t seed, std::vector<ModelResult>& results,
                                    std::vector<absl::Status>& statuses, size_t slot, RunWatch& watch) const noexcept {
  struct Ended {  // tells the watchdog, however this returns
    StartGate& gate;
    ~Ended() {
      std::lock_guard lock(gate.mu);
      ++gate.ended;
      gate.cv.notify_all();
    }
  };
  absl::Status pinned = group.pin_core.has_value() ? PinCallingThread(*group.pin_core) : absl::OkStatus();
  if (!pinned.ok()) pinned = absl::Status(pinned.code(), absl::StrCat("baseline ", ModeName(mode_), ": ", pinned.message()));
  Clock::time_point start;
  {
    std::unique_lock lock(gate.mu);
    statuses[slot] = std::move(pinned);
    ++gate.ready;
    gate.cv.notify_all();
    gate.cv.wait(lock, [&] { return gate.released; });
    if (gate.abort) return;
    start = gate.start;
  }
  const Ended ended{gate};
  const Window window{start + warmup, start + warmup + duration};
  try {
    Serve(group, start, window, seed, results, watch);
  } catch (const std::exception& e) {
    // Only allocation can throw here; report it rather than terminate.
    statuses[slot] = absl::InternalError(absl::StrCat("baseline ", ModeName(mode_), ": serving failed: ", e.what()));
  }
}

absl::StatusOr<SliceResult> OrtBaselineImpl::RunFor(Duration duration, Duration warmup, uint64_t seed) {
  const std::string mode_name = ModeName(mode_);
  if (duration <= Duration::zero()) {
    return absl::InvalidArgumentError(
        absl::StrCat("baseline ", mode_name, ": duration is ", duration.count(), " ns; it must be > 0"));
  }
  if (warmup < Duration::zero()) {
    return absl::InvalidArgumentError(
        absl::StrCat("baseline ", mode_name, ": warm-up is ", warmup.count(), " ns; it must be >= 0"));
  }
  if (running_.exchange(true)) {
    return absl::FailedPreconditionError(
        absl::StrCat("baseline ", mode_name, ": RunFor is already running on this object; run slices one at a time"));
  }
  struct Reset {
    std::atomic<bool>& flag;
    ~Reset() { flag.store(false); }
  } reset{running_};

  // Each thread writes its own results; they are added up after the join.
  std::vector<std::vector<ModelResult>> per_thread(groups_.size(), std::vector<ModelResult>(models_.size()));
  std::vector<absl::Status> statuses(groups_.size());
  StartGate gate;
  std::vector<RunWatch> watches(groups_.size());
  absl::Status spawn_status;
  {
    std::vector<std::jthread> threads;
    try {
      for (size_t g = 0; g < groups_.size(); ++g) {
        threads.emplace_back([this, g, &gate, warmup, duration, seed, &per_thread, &statuses, &watches] {
          ServingThread(groups_[g], gate, warmup, duration, seed, per_thread[g], statuses, g, watches[g]);
        });
      }
    } catch (const std::system_error& e) {
      spawn_status = absl::ResourceExhaustedError(
          absl::StrCat("baseline ", mode_name, ": cannot start serving thread ", threads.size() + 1, " of ",
                       groups_.size(), ": ", e.what(), " (hint: fewer models or fewer requests in flight)"));
    }
    std::unique_lock lock(gate.mu);
    gate.cv.wait(lock, [&] { return gate.ready == static_cast<int>(threads.size()); });
    gate.abort = !spawn_status.ok();
    for (const absl::Status& s : statuses) gate.abort = gate.abort || !s.ok();
    gate.start = Clock::now();
    gate.released = true;
    const bool abort = gate.abort;
    const Window window{gate.start + warmup, gate.start + warmup + duration};
    lock.unlock();
    gate.cv.notify_all();
    // On this thread, which would otherwise only wait for the joins.
    if (!abort) Watch(gate, static_cast<int>(threads.size()), watches, window);
  }  // joins
  BATON_RETURN_IF_ERROR(spawn_status);
  for (const absl::Status& s : statuses) BATON_RETURN_IF_ERROR(s);
  SliceResult result;
  result.models.resize(models_.size());
  for (const std::vector<ModelResult>& part : per_thread) {
    for (size_t m = 0; m < models_.size(); ++m) {
      ModelResult& t = result.models[m];
      const ModelResult& p = part[m];
      t.completed += p.completed;
      t.deadline_missed += p.deadline_missed;
      t.failed += p.failed;
      t.unfinished += p.unfinished;
      t.rejected += p.rejected;
      t.latencies.insert(t.latencies.end(), p.latencies.begin(), p.latencies.end());
      if (t.first_error.empty()) t.first_error = p.first_error;
    }
  }
  result.elapsed = duration;  // the window [start + warmup, start + warmup + duration) on the steady clock
  return result;
}

// How long after a slice's end a run still going is let finish before it is stopped.
constexpr Duration kLetFinish = std::chrono::seconds(1);

void OrtBaselineImpl::Watch(StartGate& gate, int threads, std::vector<RunWatch>& watches, Window window) const {
  // Looks this often while a model has an execution timeout (a run overruns it
  // by at most a quarter), and otherwise only at stop_all; after that, every
  // 10 ms until the serving threads have returned.
  std::optional<Duration> shortest;
  for (const ModelSpec& spec : models_) {
    if (spec.execution_timeout) shortest = std::min(shortest.value_or(*spec.execution_timeout), *spec.execution_timeout);
  }
  const Duration tick = shortest ? std::clamp<Duration>(*shortest / 4, std::chrono::milliseconds(1),
                                                        std::chrono::milliseconds(100))
                                 : Duration::max();
  // Runs going at the end are let finish for a while (a usual run ends in
  // milliseconds, and a stopped one makes ONNX Runtime log an error).
  const Clock::time_point stop_all = window.end + kLetFinish;
  std::unique_lock lock(gate.mu);
  while (gate.ended < threads) {
    const Clock::time_point now = Clock::now();
    for (RunWatch& w : watches) {
      std::lock_guard run_lock(w.mu);
      if (!w.started) continue;
      const std::optional<Duration>& timeout = models_[w.model].execution_timeout;
      if (now >= stop_all) {
        w.cancel.Cancel();  // answered too late to count: counted unfinished
      } else if (timeout && now - *w.started > *timeout && !w.timed_out) {
        w.timed_out = true;
        w.cancel.Cancel();
      }
    }
    const Clock::time_point next =
        now >= stop_all ? now + std::chrono::milliseconds(10)
        : tick == Duration::max() ? stop_all
                                  : std::min(stop_all, now + tick);
    gate.cv.wait_until(lock, next);
  }
}

// The session options of model `m` under `mode`.
ort::SessionOptions SessionFor(Mode mode, size_t m, const BaselineOptions& options) {
  ort::SessionOptions session;
  switch (mode) {
    case Mode::kSequential:
      session.intra_op_threads = options.threads;
      session.pinned_cores = options.cores;
      break;
    case Mode::kConcurrent:
      session.ort_default_threading = true;
      break;
    case Mode::kTuned:
      session.intra_op_threads = 1;
      session.inter_op_threads = 1;
      session.allow_spinning = false;
      break;
    case Mode::kPinned: {
      const PinnedPu& pu = options.pus[options.pu_of_model[m]];
      session.intra_op_threads = pu.threads;
      session.pinned_cores = pu.cores;
      session.allow_spinning = false;
      break;
    }
    case Mode::kGlobalPool:
      session.global_thread_pool = true;
      session.allow_spinning = false;
      break;
  }
  return session;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OrtBaseline>> OrtBaseline::Create(Mode mode, std::vector<ModelSpec> models,
                                                                 BaselineOptions options) {
  if (!ModeFromName(ModeName(mode)).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("baseline mode ", static_cast<int>(mode), " is unknown"));
  }
  const std::string mode_name = ModeName(mode);
  if (models.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("baseline ", mode_name, ": no models; give at least one"));
  }
  for (const ModelSpec& spec : models) {
    BATON_RETURN_IF_ERROR(CheckArrival(spec));
    if (spec.execution_timeout && *spec.execution_timeout <= Duration::zero()) {
      return absl::InvalidArgumentError(absl::StrCat("baseline ", mode_name, ": model '", spec.name,
                                                     "': execution timeout must be > 0"));
    }
  }
  if (mode == Mode::kPinned) {
    if (options.pus.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("baseline ", mode_name, ": no PUs to pin models to; give at least one in BaselineOptions::pus"));
    }
    if (options.pu_of_model.size() != models.size()) {
      return absl::InvalidArgumentError(absl::StrCat("baseline ", mode_name, ": ", options.pu_of_model.size(),
                                                     " PU assignments for ", models.size(),
                                                     " models; give one PU index per model"));
    }
    for (size_t m = 0; m < models.size(); ++m) {
      if (options.pu_of_model[m] >= options.pus.size()) {
        return absl::InvalidArgumentError(absl::StrCat("baseline ", mode_name, ": model '", models[m].name,
                                                       "' is assigned to PU ", options.pu_of_model[m], " of ",
                                                       options.pus.size(), "; give an index below ",
                                                       options.pus.size()));
      }
    }
  }
  if (const int64_t threads = CountThreads(mode, models, options); threads > kMaxServingThreads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "baseline ", mode_name, ": ", threads, " requests in flight would need as many serving threads; at most ",
        kMaxServingThreads, " (hint: lower the closed-loop concurrency, or leave this baseline out)"));
  }
  if (mode == Mode::kGlobalPool && ort::GlobalThreadPoolThreads() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("baseline ", mode_name,
                     ": this process has no ONNX Runtime global thread pool (hint: call "
                     "ort::ConfigureGlobalThreadPool before the first session is created)"));
  }
  std::vector<std::unique_ptr<ort::OrtRunner>> runners;
  for (size_t m = 0; m < models.size(); ++m) {
    const ModelSpec& spec = models[m];
    if (spec.samples.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", spec.name, "': no input samples; give at least one set of inputs (request i feeds sample i % n)"));
    }
    const ort::SessionOptions session = SessionFor(mode, m, options);
    if (absl::Status s = ort::ValidateSessionOptions(session); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("baseline ", mode_name, ": threads/cores: ", s.message()));
    }
    absl::StatusOr<std::unique_ptr<ort::OrtRunner>> runner = ort::OrtRunner::Create(spec.onnx_bytes, session, spec.name);
    if (!runner.ok()) {
      // OrtRunner's message already names the model.
      return absl::Status(runner.status().code(),
                          absl::StrCat("baseline ", mode_name, ": ", runner.status().message()));
    }
    // Check the sample names here, so that a typo fails now rather than as
    // every request failing; types and shapes are checked by every Run.
    const std::vector<std::string> input_names = (*runner)->input_names();
    for (size_t i = 0; i < spec.samples.size(); ++i) {
      const dispatch::NamedTensors& sample = spec.samples[i];
      for (const std::string& name : input_names) {
        if (dispatch::FindTensor(sample, name) == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("model '", spec.name, "': sample ", i, " does not feed input '", name,
                           "' (inputs: ", absl::StrJoin(input_names, ", "), "); give one tensor per model input"));
        }
      }
      for (const auto& [name, tensor] : sample) {
        if (std::find(input_names.begin(), input_names.end(), name) == input_names.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("model '", spec.name, "': sample ", i, " feeds '", name,
                           "', which is not an input (inputs: ", absl::StrJoin(input_names, ", "), ")"));
        }
      }
    }
    runners.push_back(*std::move(runner));
    // ONNX Runtime keeps no reference to the bytes: free them, as an
    // application would once its session exists.
    std::string().swap(models[m].onnx_bytes);
  }
  return std::unique_ptr<OrtBaseline>(
      new OrtBaselineImpl(mode, std::move(models), std::move(options), std::move(runners)));
}

}  // namespace baton::baseline
