// DeviceShell: one low-level dispatcher with real PUs — a LowLevelCore behind
// a mutex plus one worker thread per PU that runs the partitions the core
// starts. The threaded runtime owns one per local device; the gRPC agent
// (baton agent) owns one for the PUs of its machine. Both drive the same core.
//
// Threads: Submit and TickIfDue run the core under the device mutex on the
// caller's thread; each PU worker runs one partition at a time, outside the
// mutex, and reports it to the core under the mutex. Completions go to the
// sink, called with the device mutex held: a sink must only move them into
// a mailbox (lock order: device mutex, then the sink's own lock).
//
// It is a dispatch::LowLevelPort with one difference: rejections (a full
// queue, work no PU can run) reach the sink inside Submit. Its owner's sink
// therefore only enqueues (the runtime's mailbox), which keeps the port
// contract for the HL core behind it (tests/port_contract_test.cc).
//
// Execution timeout: a watchdog thread ticks the core when a run passes its
// execution timeout (LowLevelCore::NextRunTimeout); the core answers it
// Aborted and the shell stops the run through the PU's RunCancel (ONNX
// Runtime's terminate flag). The PU takes new work once the run returns.
//
// Flush: when the sink was called on a PU worker or the watchdog thread, the
// shell calls `flush` there after letting go of the device mutex, so that the
// owner can handle the completions on that thread (the runtime does; the
// agent passes none). Its argument turns true when that PU has been given its
// next run meanwhile: the owner should then stop soon (false on the watchdog).
//
// Direct runs: a thread that waits for a request may run that request's
// partitions itself (DirectCatcher below) instead of waking a PU's worker.
//
// Time: Now() = steady_clock since `epoch`, the clock of the owner.
//
// Thread-safety: Submit, TickIfDue, NextExpiry, pu_stats, core_stats,
// ResetStats and set_observer may be called from any thread; Start
// once; Stop (idempotent) joins the workers.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "baton/backend/executor.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/low_level.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/observer.h"
#include "baton/dispatch/port.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"

namespace baton::runtime {

struct PuSetup {
  PuId id;                     // unique over the whole runtime (all devices)
  std::string name;            // for reports and traces
  std::string kind;            // "cpu", "emu", ...
  std::vector<int> pin_cores;  // the PU's worker thread pins itself to these; empty = not pinned
  int nice = 0;                // the worker thread runs this many nice steps above the process (0..19)
  bool batch_scheduling = false;  // the worker thread runs under SCHED_BATCH (see config::PuConfig::scheduling)
};

// Which prepared partition runs partition `p` of model `m` on PU `u`.
// A runner is either borrowed (Set with a pointer: it must outlive every
// reader) or shared (Set with a shared_ptr: the table keeps it alive, and so
// does each Hold, so an agent may Erase a partition while one of its runs is
// still going; the run keeps it until it returns).
// Thread-safety: thread-safe (an agent adds and removes partitions while its PUs run).
class RunnerTable {
 public:
  void Set(ModelId model, PartitionId partition, PuId pu, const backend::PreparedPartition* runner);
  void Set(ModelId model, PartitionId partition, PuId pu, std::shared_ptr<const backend::PreparedPartition> runner);
  void Erase(ModelId model, PartitionId partition, PuId pu);
  const backend::PreparedPartition* Find(ModelId model, PartitionId partition, PuId pu) const;
  // The runner, kept alive while the result is (nullptr when there is none).
  std::shared_ptr<const backend::PreparedPartition> Hold(ModelId model, PartitionId partition, PuId pu) const;

 private:
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<policy::LatencyKey, std::shared_ptr<const backend::PreparedPartition>> table_;  // guarded by mu_
};

// Sleeps until `until` with the calling thread's timer slack at 1 ns, then
// gives the thread its slack back. An emulated PU holds itself asleep until
// its charged end; with Linux's default slack of 50 us that sleep overran by
// a median of ~85 us on the 2-core machine (~25 us at 1 ns), 2-5 % of an
// emulated accelerator's mean run on docs/bench/hetero.yaml. The runtime (on
// a PU thread or a caller's) and the speed probe sleep through it.
void SleepUntilPrecisely(std::chrono::steady_clock::time_point until);

struct PuStats {
  PuId pu;
  DeviceId device;
  std::string name;
  std::string kind;
  Duration busy{};  // since the last ResetStats
  uint64_t runs = 0;
  uint64_t failures = 0;
  // CPU time of the threads that ran its finished runs (the part of each run
  // after the last ResetStats), from their thread CPU clocks. Below `busy`
  // where other threads took the PU's core during its runs; about 0 for an
  // accelerator, whose runs wait.
  Duration run_cpu{};
};

class DeviceShell : public dispatch::LowLevelPort {
 public:
  using Sink = std::function<void(std::vector<dispatch::Completion>)>;
  using Flush = std::function<void(const std::atomic<bool>& pu_has_work)>;
  struct Pu;

  // While alive on a thread, makes that thread the runner of the next run of
  // `request` that a DeviceShell's LL core starts from this thread (inside
  // Submit or TickIfDue) on an idle PU which is not pinned, or is pinned to
  // the CPU this thread is on (so a direct run never takes another PU's
  // core). The PU stays busy for the LL core as usual; its worker is just not
  // woken. The owner must call RunJob for a caught run, then look at its
  // mailbox (the completion went to the sink). One at a time per thread.
  class DirectCatcher {
   public:
    explicit DirectCatcher(RequestId request);
    ~DirectCatcher();
    DirectCatcher(const DirectCatcher&) = delete;
    DirectCatcher& operator=(const DirectCatcher&) = delete;
    bool has_job() const { return job_.has_value(); }
    // Runs the caught run on this thread (stopped by the run's execution
    // timeout or the shell's Stop like any other) and reports it.
    void RunJob();

   private:
    friend class DeviceShell;
    RequestId request_;
    DeviceShell* shell_ = nullptr;
    Pu* pu_ = nullptr;
    std::optional<dispatch::StartOnPu> job_;
  };

  // Errors: LowLevelCore::Create's. `latency` and `runners` are borrowed.
  static absl::StatusOr<std::unique_ptr<DeviceShell>> Create(
      DeviceId id, std::string name, std::vector<PuSetup> pus, std::unique_ptr<policy::LowLevelPolicy> policy,
      size_t max_queue, policy::OnlineLatencyModel* latency, const RunnerTable* runners,
      std::chrono::steady_clock::time_point epoch, Sink sink, dispatch::ExecTimeoutRule exec_timeout = {},
      Flush flush = {});
  ~DeviceShell() override;  // Stop()
  DeviceShell(const DeviceShell&) = delete;
  DeviceShell& operator=(const DeviceShell&) = delete;

  void Start();
  // Stops the runs in progress (RunCancel) and joins the PU workers and the
  // watchdog; work still queued is not answered (drain first).
  void Stop();

  void Submit(dispatch::Assignment assignment) override;
  // Withdraws assignments (LowLevelCore::OnCancel): queued ones are answered
  // `status` through the sink; running ones too, and their runs are stopped.
  void Cancel(std::span<const AssignmentId> ids, const absl::Status& status);
  // LowLevelPort: the same, answered Cancelled (their request was answered).
  void Cancel(std::span<const AssignmentId> ids) override;
  // Drops expired work when due; returns the next expiry, or nullopt.
  std::optional<Time> TickIfDue(Time now);

  DeviceId id() const { return id_; }
  const std::string& name() const { return name_; }
  const std::vector<PuSetup>& pu_setups() const { return pu_setups_; }
  Time Now() const;
  // Busy time since ResetStats. With `until`, only the busy time up to that
  // instant: a run still in progress counts up to it, and a run that ended
  // after it only its part before it (for a window that ended at `until`
  // but is read a little later; exact for the last kRecentRuns runs per PU).
  std::vector<PuStats> pu_stats(std::optional<Time> until = std::nullopt) const;
  static constexpr size_t kRecentRuns = 64;
  dispatch::LowLevelStats core_stats() const;
  size_t queued() const;
  size_t running() const;
  void ResetStats(Time now);
  void set_observer(dispatch::DispatchObserver* observer);

 private:
  DeviceShell(DeviceId id, std::string name, policy::OnlineLatencyModel* latency, const RunnerTable* runners,
              std::chrono::steady_clock::time_point epoch, Sink sink, Flush flush);
  // Under mu_: starts runs on PUs and sends completions to the sink; true
  // when it called the sink.
  bool ApplyLocked(dispatch::LowLevelActions actions);
  void PuLoop(Pu& pu);
  // Runs `job` on the calling thread (not under mu_).
  // Runs `job` with `runner` (held by the caller; nullptr = none: the run fails).
  // `cpu`: the calling thread's CPU time during the run.
  dispatch::PuResult Execute(Pu& pu, const dispatch::StartOnPu& job, Time started,
                             const backend::PreparedPartition* runner, Duration& cpu);
  // Under mu_: counts a finished run and reports it to the core; true when
  // the sink was called.
  bool FinishLocked(Pu& pu, dispatch::PuResult result, Duration cpu);
  void RunDirect(Pu& pu, dispatch::StartOnPu job);
  // Ticks the core when a run passes its execution timeout.
  void WatchdogLoop();

  const DeviceId id_;
  const std::string name_;
  policy::OnlineLatencyModel* latency_;
  const RunnerTable* runners_;
  const std::chrono::steady_clock::time_point epoch_;
  const Sink sink_;
  const Flush flush_;
  std::vector<PuSetup> pu_setups_;

  mutable std::mutex mu_;
  std::optional<dispatch::LowLevelCore> core_;  // guarded by mu_
  std::vector<std::unique_ptr<Pu>> pus_;
  absl::flat_hash_map<PuId, Pu*> pu_by_id_;
  Time window_start_{};  // guarded by mu_
  bool stop_ = false;    // guarded by mu_
  bool started_ = false; // guarded by mu_
  size_t workers_ready_ = 0;              // guarded by mu_: PU workers named, pinned and niced
  std::condition_variable workers_cv_;    // signalled as each worker becomes ready
  std::condition_variable watch_cv_;  // signalled on stop and when a run's timeout is due earlier
  std::optional<Time> watch_until_;   // guarded by mu_: the watchdog's timer; none = asleep for good
  std::thread watchdog_;
};

}  // namespace baton::runtime
