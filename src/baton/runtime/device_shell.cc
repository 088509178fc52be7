#include "baton/runtime/device_shell.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/process.h"

namespace baton::runtime {

void RunnerTable::Set(ModelId model, PartitionId partition, PuId pu, const backend::PreparedPartition* runner) {
  // Borrowed: an empty owner, so the table never deletes it.
  Set(model, partition, pu, std::shared_ptr<const backend::PreparedPartition>(std::shared_ptr<void>(), runner));
}

void RunnerTable::Set(ModelId model, PartitionId partition, PuId pu,
                      std::shared_ptr<const backend::PreparedPartition> runner) {
  std::unique_lock lock(mu_);
  table_[policy::LatencyKey{model, partition, pu}] = std::move(runner);
}

void RunnerTable::Erase(ModelId model, PartitionId partition, PuId pu) {
  std::unique_lock lock(mu_);
  table_.erase(policy::LatencyKey{model, partition, pu});
}

const backend::PreparedPartition* RunnerTable::Find(ModelId model, PartitionId partition, PuId pu) const {
  std::shared_lock lock(mu_);
  auto it = table_.find(policy::LatencyKey{model, partition, pu});
  return it == table_.end() ? nullptr : it->second.get();
}

std::shared_ptr<const backend::PreparedPartition> RunnerTable::Hold(ModelId model, PartitionId partition,
                                                                   PuId pu) const {
  std::shared_lock lock(mu_);
  auto it = table_.find(policy::LatencyKey{model, partition, pu});
  return it == table_.end() ? nullptr : it->second;
}

struct DeviceShell::Pu {
  PuSetup setup;
  std::optional<dispatch::StartOnPu> slot;  // guarded by mu_
  // The runner of the run just started (slot or a direct run), taken when the
  // LL core starts it: from then on an agent's Unload cannot take it away.
  std::shared_ptr<const backend::PreparedPartition> runner;  // guarded by mu_
  std::atomic<bool> has_work{false};        // slot is filled (read without mu_ by the flush)
  std::condition_variable cv;               // signalled when `slot` is filled or on stop
  Duration busy{};                          // guarded by mu_
  Duration run_cpu{};                       // guarded by mu_
  uint64_t runs = 0;                        // guarded by mu_
  uint64_t failures = 0;                    // guarded by mu_
  RunCancel cancel;                         // reset under mu_ when a run is handed over
  std::optional<Time> running_since;        // guarded by mu_; the run in progress began then
  // The last kRecentRuns counted runs, as counted: [max(start, window start), end].
  std::deque<std::pair<Time, Time>> recent;  // guarded by mu_
  std::thread thread;
};

namespace {

// The DirectCatcher installed on this thread, if any.
thread_local DeviceShell::DirectCatcher* t_catcher = nullptr;

// Pins the calling thread to `cores`; an error message, or "" on success.
std::string PinThisThread(const std::vector<int>& cores) {
  if (cores.empty()) return "";
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cores) CPU_SET(c, &set);
  const int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (rc == 0) return "";
  return absl::StrCat("could not pin to cores [", absl::StrJoin(cores, ", "), "] (error ", rc,
                      "); the PU runs unpinned. Check the cores the process may use (taskset -p $$)");
}

// Makes the calling thread `steps` nicer than it is (at most 19); Linux nice
// values are per thread (setpriority on the thread's id). Raising one needs
// no privilege.
std::string NiceThisThread(int steps) {
  if (steps <= 0) return "";
  const id_t tid = static_cast<id_t>(gettid());
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);
  if (errno == 0 && setpriority(PRIO_PROCESS, tid, std::min(now + steps, 19)) == 0) return "";
  return absl::StrCat("could not make the worker thread ", steps, " steps nicer (", std::strerror(errno),
                      "); it runs at the process's priority");
}

// Puts the calling thread under SCHED_BATCH (sched(7)): the same weight as
// SCHED_OTHER at its nice value, but the scheduler treats it as CPU-bound and
// disfavours it in wake-up decisions, so threads that wake on its core for a
// moment run sooner. Needs no privilege. Only from SCHED_OTHER: a process
// someone started under another policy (chrt) keeps it.
std::string BatchScheduleThisThread(bool batch) {
  if (!batch || sched_getscheduler(0) != SCHED_OTHER) return "";
  const sched_param param{};
  if (sched_setscheduler(0, SCHED_BATCH, &param) == 0) return "";
  return absl::StrCat("could not put the worker thread under SCHED_BATCH (", std::strerror(errno),
                      "); it runs under the process's policy");
}

}  // namespace

void SleepUntilPrecisely(std::chrono::steady_clock::time_point until) {
  const int slack = prctl(PR_GET_TIMERSLACK);
  if (slack > 1) prctl(PR_SET_TIMERSLACK, 1UL);
  std::this_thread::sleep_until(until);
  if (slack > 1) prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(slack));
}

DeviceShell::DeviceShell(DeviceId id, std::string name, policy::OnlineLatencyModel* latency,
                         const RunnerTable* runners, std::chrono::steady_clock::time_point epoch, Sink sink,
                         Flush flush)
    : id_(id),
      name_(std::move(name)),
      latency_(latency),
      runners_(runners),
      epoch_(epoch),
      sink_(std::move(sink)),
      flush_(std::move(flush)) {}

DeviceShell::DirectCatcher::DirectCatcher(RequestId request) : request_(request) { t_catcher = this; }

DeviceShell::DirectCatcher::~DirectCatcher() {
  if (t_catcher == this) t_catcher = nullptr;
}

void DeviceShell::DirectCatcher::RunJob() {
  if (!job_) return;
  dispatch::StartOnPu job = std::move(*job_);
  job_.reset();
  shell_->RunDirect(*pu_, std::move(job));
}

absl::StatusOr<std::unique_ptr<DeviceShell>> DeviceShell::Create(
    DeviceId id, std::string name, std::vector<PuSetup> pus, std::unique_ptr<policy::LowLevelPolicy> policy,
    size_t max_queue, policy::OnlineLatencyModel* latency, const RunnerTable* runners,
    std::chrono::steady_clock::time_point epoch, Sink sink, dispatch::ExecTimeoutRule exec_timeout,
    Flush flush) {
  std::unique_ptr<DeviceShell> shell(
      new DeviceShell(id, std::move(name), latency, runners, epoch, std::move(sink), std::move(flush)));
  dispatch::LowLevelOptions ll;
  ll.device = id;
  ll.max_queue = max_queue;
  ll.exec_timeout = exec_timeout;
  for (PuSetup& pu : pus) {
    ll.pus.push_back(dispatch::PuSpec{pu.id, pu.kind});
    latency->SetPuKind(pu.id, pu.kind);
    shell->pu_setups_.push_back(pu);
    auto p = std::make_unique<Pu>();
    p->setup = std::move(pu);
    shell->pu_by_id_.emplace(p->setup.id, p.get());
    shell->pus_.push_back(std::move(p));
  }
  BATON_ASSIGN_OR_RETURN(dispatch::LowLevelCore core,
                         dispatch::LowLevelCore::Create(std::move(ll), std::move(policy), latency));
  shell->core_.emplace(std::move(core));
  return shell;
}

DeviceShell::~DeviceShell() { Stop(); }

Time DeviceShell::Now() const { return Time(std::chrono::steady_clock::now() - epoch_); }

void DeviceShell::Start() {
  std::unique_lock lock(mu_);
  if (started_ || stop_) return;
  started_ = true;
  for (auto& pu : pus_) pu->thread = std::thread([this, p = pu.get()] { PuLoop(*p); });
  watchdog_ = std::thread([this] { WatchdogLoop(); });
  // Returns with every worker named, pinned and at its nice value, so what
  // the caller sees of them (ps, /proc, its first run) is as configured.
  workers_cv_.wait(lock, [&] { return workers_ready_ == pus_.size(); });
}

void DeviceShell::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
    // Nobody waits for these runs any more.
    for (auto& pu : pus_) pu->cancel.Cancel();
  }
  for (auto& pu : pus_) pu->cv.notify_all();
  watch_cv_.notify_all();
  for (auto& pu : pus_) {
    if (pu->thread.joinable()) pu->thread.join();
  }
  if (watchdog_.joinable()) watchdog_.join();
}

void DeviceShell::WatchdogLoop() {
  NameThisThread("pu-watchdog");
  std::unique_lock lock(mu_);
  while (!stop_) {
    std::optional<Time> due = core_->NextRunTimeout();
    if (!due) {
      watch_until_.reset();
      watch_cv_.wait(lock);
      continue;
    }
    const Time now = Now();
    if (now < *due) {
      watch_until_ = due;
      watch_cv_.wait_until(lock, epoch_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                              due->time_since_epoch()));
      continue;
    }
    if (ApplyLocked(core_->OnTick(now)) && flush_) {
      static const std::atomic<bool> kNoWork{false};
      lock.unlock();
      flush_(kNoWork);
      lock.lock();
    }
  }
}

void DeviceShell::Submit(dispatch::Assignment assignment) {
  std::lock_guard lock(mu_);
  ApplyLocked(core_->OnAssignment(std::move(assignment), Now()));
}

void DeviceShell::Cancel(std::span<const AssignmentId> ids, const absl::Status& status) {
  std::lock_guard lock(mu_);
  ApplyLocked(core_->OnCancel(ids, status, Now()));
}

void DeviceShell::Cancel(std::span<const AssignmentId> ids) {
  static const absl::Status kWithdrawn =
      absl::CancelledError("withdrawn by the dispatcher: its request was already answered");
  Cancel(ids, kWithdrawn);
}

std::optional<Time> DeviceShell::TickIfDue(Time now) {
  std::lock_guard lock(mu_);
  if (std::optional<Time> t = core_->NextExpiry(); t && *t <= now) ApplyLocked(core_->OnTick(now));
  return core_->NextExpiry();
}

bool DeviceShell::ApplyLocked(dispatch::LowLevelActions actions) {
  for (PuId id : actions.cancels) pu_by_id_.at(id)->cancel.Cancel();
  for (dispatch::StartOnPu& start : actions.starts) {
    Pu* pu = pu_by_id_.at(start.pu);
    // Before any timeout of this run can cancel it (the PU was idle, so no
    // earlier run can be cancelled any more).
    pu->cancel.Reset();
    pu->runner = runners_->Hold(start.assignment.model, start.assignment.partition, pu->setup.id);
    DirectCatcher* catcher = t_catcher;
    if (catcher != nullptr && !catcher->job_ && !stop_ && catcher->request_ == start.assignment.request &&
        (pu->setup.pin_cores.empty() ||
         std::find(pu->setup.pin_cores.begin(), pu->setup.pin_cores.end(), sched_getcpu()) !=
             pu->setup.pin_cores.end())) {
      pu->running_since = Now();
      catcher->shell_ = this;
      catcher->pu_ = pu;
      catcher->job_.emplace(std::move(start));
      continue;
    }
    pu->slot.emplace(std::move(start));
    pu->has_work.store(true);
    pu->cv.notify_one();
  }
  if (!actions.starts.empty()) {
    // Wake the watchdog only when it must look earlier than it will anyway.
    const std::optional<Time> due = core_->NextRunTimeout();
    if (due && (!watch_until_ || *due < *watch_until_)) watch_cv_.notify_all();
  }
  if (actions.completions.empty()) return false;
  sink_(std::move(actions.completions));
  return true;
}

void DeviceShell::PuLoop(Pu& pu) {
  NameThisThread(absl::StrCat("pu:", pu.setup.name));
  if (std::string error = PinThisThread(pu.setup.pin_cores); !error.empty()) {
    std::fprintf(stderr, "baton: PU '%s': %s\n", pu.setup.name.c_str(), error.c_str());
  }
  if (std::string error = NiceThisThread(pu.setup.nice); !error.empty()) {
    std::fprintf(stderr, "baton: PU '%s': %s\n", pu.setup.name.c_str(), error.c_str());
  }
  if (std::string error = BatchScheduleThisThread(pu.setup.batch_scheduling); !error.empty()) {
    std::fprintf(stderr, "baton: PU '%s': %s\n", pu.setup.name.c_str(), error.c_str());
  }
  std::unique_lock lock(mu_);
  ++workers_ready_;
  workers_cv_.notify_all();
  while (true) {
    pu.cv.wait(lock, [&] { return pu.slot.has_value() || stop_; });
    if (!pu.slot) return;
    dispatch::StartOnPu job = std::move(*pu.slot);
    std::shared_ptr<const backend::PreparedPartition> runner = std::move(pu.runner);
    pu.slot.reset();
    pu.has_work.store(false);
    const Time started = Now();
    pu.running_since = started;
    lock.unlock();
    Duration cpu{};
    dispatch::PuResult result = Execute(pu, job, started, runner.get(), cpu);
    runner.reset();  // before the lock: the last owner frees the session
    lock.lock();
    if (FinishLocked(pu, std::move(result), cpu) && flush_) {
      lock.unlock();
      flush_(pu.has_work);
      lock.lock();
    }
  }
}

void DeviceShell::RunDirect(Pu& pu, dispatch::StartOnPu job) {
  std::shared_ptr<const backend::PreparedPartition> runner;
  {
    std::lock_guard lock(mu_);
    runner = std::move(pu.runner);
  }
  Duration cpu{};
  dispatch::PuResult result = Execute(pu, job, Now(), runner.get(), cpu);
  runner.reset();
  std::lock_guard lock(mu_);
  FinishLocked(pu, std::move(result), cpu);
}

dispatch::PuResult DeviceShell::Execute(Pu& pu, const dispatch::StartOnPu& job, Time started,
                                        const backend::PreparedPartition* runner, Duration& cpu) {
  const dispatch::Assignment& a = job.assignment;
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  feeds.reserve(a.inputs.size());
  for (const auto& [name, tensor] : a.inputs) feeds.emplace_back(name, &tensor);
  dispatch::PuResult result;
  result.pu = pu.setup.id;
  result.assignment = a.id;
  result.start = started;
  const std::optional<double> cpu_before = ThisThreadCpuSeconds();
  absl::StatusOr<backend::RunResult> run =
      runner != nullptr
          ? runner->Run(feeds, &pu.cancel)
          : absl::StatusOr<backend::RunResult>(absl::FailedPreconditionError(absl::StrCat(
                "PU '", pu.setup.name, "' has no runner for model ", a.model.value, " partition ", a.partition.value)));
  result.end = Now();
  if (const std::optional<double> cpu_after = ThisThreadCpuSeconds(); cpu_before && cpu_after) {
    cpu = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(std::max(0.0, *cpu_after - *cpu_before)));
  }
  if (run.ok()) {
    // An emulated accelerator may charge more than the call took: hold the PU
    // (asleep, no CPU) until the charged end.
    const Time charged_end = result.start + run->busy;
    if (charged_end > result.end) {
      SleepUntilPrecisely(epoch_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                       charged_end.time_since_epoch()));
      result.end = std::max(charged_end, Now());
    }
    latency_->Observe(a.model, a.partition, pu.setup.id, result.end - result.start);
    result.outputs = std::move(run->outputs);
  } else {
    result.status = run.status();
  }
  return result;
}

bool DeviceShell::FinishLocked(Pu& pu, dispatch::PuResult result, Duration cpu) {
  pu.running_since.reset();
  if (result.end > window_start_) {
    const Time from = std::max(result.start, window_start_);
    pu.busy += result.end - from;
    // The run's CPU time in the same proportion as its time in the window.
    const Duration span = result.end - result.start;
    pu.run_cpu += from > result.start && span > Duration(0)
                      ? std::chrono::duration_cast<Duration>(cpu * (std::chrono::duration<double>(result.end - from) /
                                                                    std::chrono::duration<double>(span)))
                      : cpu;
    pu.recent.emplace_back(from, result.end);
    if (pu.recent.size() > kRecentRuns) pu.recent.pop_front();
  }
  ++pu.runs;
  if (!result.status.ok()) ++pu.failures;
  return ApplyLocked(core_->OnPuFinished(std::move(result), Now()));
}

std::vector<PuStats> DeviceShell::pu_stats(std::optional<Time> until) const {
  std::vector<PuStats> out;
  const Time now = Now();
  std::lock_guard lock(mu_);
  for (const auto& pu : pus_) {
    Duration busy = pu->busy;
    if (until) {
      for (const auto& [from, end] : pu->recent) {
        if (end > *until) busy -= end - std::max(from, *until);
      }
      if (pu->running_since) {
        const Time from = std::max(*pu->running_since, window_start_);
        const Time to = std::min(now, *until);
        if (to > from) busy += to - from;
      }
    }
    out.push_back(PuStats{pu->setup.id, id_, pu->setup.name, pu->setup.kind, std::max(busy, Duration(0)), pu->runs,
                          pu->failures, pu->run_cpu});
  }
  return out;
}

dispatch::LowLevelStats DeviceShell::core_stats() const {
  std::lock_guard lock(mu_);
  return core_->stats();
}

size_t DeviceShell::queued() const {
  std::lock_guard lock(mu_);
  return core_->queued();
}

size_t DeviceShell::running() const {
  std::lock_guard lock(mu_);
  return core_->running();
}

void DeviceShell::ResetStats(Time now) {
  std::lock_guard lock(mu_);
  window_start_ = now;
  for (auto& pu : pus_) {
    pu->busy = Duration(0);
    pu->run_cpu = Duration(0);
    pu->runs = 0;
    pu->failures = 0;
    pu->recent.clear();
  }
}

void DeviceShell::set_observer(dispatch::DispatchObserver* observer) {
  std::lock_guard lock(mu_);
  core_->set_observer(observer);
}

}  // namespace baton::runtime
