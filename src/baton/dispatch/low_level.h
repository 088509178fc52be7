// The low-level (LL) dispatcher core: one per device.
//
// A state machine. It owns the device's PU descriptions, a bounded ready queue,
// the low-level policy and a (borrowed) latency model; it owns no thread and
// reads no clock. A shell calls the On* events with the current time and
// carries out the actions: start each StartOnPu's assignment on its PU (an
// executor), and deliver each Completion to the HL dispatcher (the completion
// sink of the port, see port.h).
//
// After every event the core drops queued work whose deadline has passed,
// builds a policy::Snapshot (ready items in arrival order; PU states with
// expected_free from the latency model) and applies the policy's Decisions:
//   kRun  item on pu  -> StartOnPu; the PU is busy until OnPuFinished
//   kDrop item        -> Completion DeadlineExceeded
// The policy is called once per event while the queue is non-empty, unless
// every PU is busy and no queued item has a deadline or the policy never drops
// (LowLevelPolicy::MayDrop; no decision could be legal then); a policy may
// leave PUs idle on purpose.
//
// Exactly once: every OnAssignment is answered by exactly one Completion with
// its id, in the actions of that event or a later one:
//   OK / executor error  it ran (OnPuFinished reports the status and outputs)
//   ResourceExhausted    the ready queue was full (max_queue)
//   DeadlineExceeded     its deadline passed while queued, or the policy dropped it
//   FailedPrecondition   no PU of this device can run it (latency model says
//                        nullopt for all), or its fixed_pu is not such a PU
//   AlreadyExists        an assignment with that id is queued or running
// Work that is running is not interrupted for its deadline (the HL judges
// that), only for its execution timeout (below).
//
// Execution timeout: with LowLevelOptions::exec_timeout set, each run has a
// limit: its Assignment::exec_timeout, else max(floor, factor x the latency
// model's expected time), never more than `cap`. Once a run is past it
// (OnTick at NextRunTimeout), the core answers the assignment Aborted at once,
// asks the shell to stop the run (LowLevelActions::cancels), and keeps the PU
// busy until the shell reports the run finished; that late report is then
// dropped (the assignment was already answered).
//
// Contract enforcement: a decision for an unknown or already decided item, for
// an unknown or busy PU, onto a PU that cannot run the item, or a kDrop of an
// item without a deadline, is a policy bug; so is an OnPuFinished that does not
// match what the PU is running (a shell bug). With ContractMode::kAbort (the
// default in debug builds) the process aborts with a message; with kIgnore
// (release builds) the decision or report is ignored and counted.
//
// Thread-safety: not thread-safe; drive it from one thread (or under one lock).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/observer.h"
#include "baton/policy/policy.h"

namespace baton::dispatch {

struct PuSpec {
  PuId id;           // unique within the device
  std::string kind;  // "cpu", "gpu", "emu", ... (passed to the policy)
};

enum class ContractMode { kAbort, kIgnore };
#ifdef NDEBUG
inline constexpr ContractMode kDefaultContractMode = ContractMode::kIgnore;
#else
inline constexpr ContractMode kDefaultContractMode = ContractMode::kAbort;
#endif

struct ExecTimeoutRule {
  double factor = 10;             // x the expected run time
  Duration floor = std::chrono::seconds(1);
  std::optional<Duration> cap;    // upper limit for every run (an agent's own cap)
};

struct LowLevelOptions {
  DeviceId device;
  std::vector<PuSpec> pus;
  size_t max_queue = 256;  // ready (not running) assignments; more are rejected at once
  ContractMode contract = kDefaultContractMode;
  // nullopt: runs have no execution timeout (the virtual-time shell, whose
  // runs always end).
  std::optional<ExecTimeoutRule> exec_timeout = std::nullopt;
};

// Action: run `assignment` on `pu` now; report the result with OnPuFinished.
struct StartOnPu {
  PuId pu;
  Assignment assignment;
};

struct LowLevelActions {
  std::vector<StartOnPu> starts;
  std::vector<Completion> completions;  // to the HL dispatcher
  // Runs past their execution timeout, already answered: stop them if the
  // executor can (each PU still reports OnPuFinished when its run ends).
  std::vector<PuId> cancels;
};

// What an executor reports when a run started by StartOnPu ends.
struct PuResult {
  PuId pu;
  AssignmentId assignment;
  absl::Status status;  // OK, or why the run failed
  NamedTensors outputs;  // the partition outputs when status is OK
  Time start{};          // measured by the executor
  Time end{};
};

struct LowLevelStats {
  uint64_t assignments = 0;         // OnAssignment calls
  uint64_t started = 0;
  uint64_t finished = 0;            // OnPuFinished reports accepted (of runs answered early too)
  uint64_t rejected_full = 0;       // ResourceExhausted
  uint64_t rejected_unrunnable = 0; // FailedPrecondition / AlreadyExists
  uint64_t dropped_expired = 0;     // deadline passed while queued (by the core)
  uint64_t dropped_by_policy = 0;   // kDrop decisions
  uint64_t violations = 0;          // ignored decisions and reports (kIgnore)
  uint64_t timed_out = 0;           // runs past their execution timeout (answered Aborted)
  uint64_t cancelled = 0;           // withdrawn by OnCancel (queued or running)
  uint64_t cancelled_queued = 0;    // of those, withdrawn while queued
};

class LowLevelCore {
 public:
  // Errors: no PUs, duplicate PU ids, max_queue == 0, null policy or latency.
  // `latency` is borrowed (a shell may update an online model between events)
  // and must outlive the core.
  static absl::StatusOr<LowLevelCore> Create(LowLevelOptions options,
                                             std::unique_ptr<policy::LowLevelPolicy> policy,
                                             const policy::LatencyModel* latency);

  LowLevelCore(LowLevelCore&&) noexcept = default;
  LowLevelCore& operator=(LowLevelCore&&) noexcept = default;

  LowLevelActions OnAssignment(Assignment assignment, Time now);
  LowLevelActions OnPuFinished(PuResult result, Time now);
  LowLevelActions OnTick(Time now);
  // Withdraws assignments (the sender no longer wants them): each one still
  // queued is answered `status` and removed; each one running is answered
  // `status` at once and its PU asked to stop (`cancels`; the PU stays busy
  // until it reports, and that late report is dropped, as after an execution
  // timeout). Ids not queued or running (answered already, unknown) are
  // ignored.
  LowLevelActions OnCancel(std::span<const AssignmentId> ids, const absl::Status& status, Time now);

  // When OnTick next has something to do (the earliest ExpiryTime of a queued
  // item), or nullopt.
  std::optional<Time> NextExpiry() const;
  // When the earliest running run passes its execution timeout (OnTick then
  // answers it), or nullopt. Runs start on any event, so a threaded shell
  // watches this from its own thread (DeviceShell's watchdog).
  std::optional<Time> NextRunTimeout() const;

  DeviceId device() const { return options_.device; }
  const std::string& policy_name() const { return policy_name_; }
  size_t queued() const { return ready_.size(); }
  size_t running() const;
  std::span<const policy::PuState> pus() const { return pu_states_; }
  const LowLevelStats& stats() const { return stats_; }
  // The message of the last contract violation ("" when none).
  const std::string& last_violation() const { return last_violation_; }

  // Not owned; nullptr detaches. Must outlive the core or be detached.
  void set_observer(DispatchObserver* observer) { observer_ = observer; }

  // How long a model's PU time counts towards WorkItem::service_ms at full weight.
  static constexpr Duration kServiceHalfLife = std::chrono::milliseconds(500);

 private:
  struct Running {
    AssignmentId id;
    RequestId request;
    ModelId model;
    PartitionId partition;
    Time start{};
    Time expected_end{};
    std::optional<Time> timeout_at = std::nullopt;  // past it (now > timeout_at) the run is answered Aborted
    Duration limit = Duration(0);
    bool timed_out = false;          // answered (timed out or cancelled); waiting for the PU to report
  };

  // A model's decayed PU time on this device, as of `at`.
  struct Served {
    double ms = 0;
    Time at{};
  };

  LowLevelCore(LowLevelOptions options, std::unique_ptr<policy::LowLevelPolicy> policy,
               const policy::LatencyModel* latency);

  // Drops expired work, asks the policy, applies its decisions.
  void Schedule(Time now, LowLevelActions& out);
  void DropExpired(Time now, LowLevelActions& out);
  void TimeOutRuns(Time now, LowLevelActions& out);
  // Answers the run on PU index `i` with `status` now and asks its PU to stop
  // it; the PU stays busy until it reports, and that report is dropped.
  void AnswerRunning(size_t i, absl::Status status, Time now, LowLevelActions& out);
  std::optional<Duration> RunLimit(const Assignment& a, Duration expected) const;
  // Erases the ready items flagged in `remove` (indexed like ready_), keeping order.
  void RemoveFromReady(const std::vector<bool>& remove);
  // A Completion of this device for one assignment, without outputs or times.
  Completion AnswerFor(AssignmentId id, RequestId request, ModelId model, PartitionId partition,
                       absl::Status status) const;
  // Answers an assignment that never ran.
  void Reject(const Assignment& a, absl::Status status, Time now, LowLevelActions& out);
  void Violation(std::string message);
  // Adds a run of `model` that took `took` to its served time, decayed to `now`.
  void Charge(ModelId model, Duration took, Time now);
  // Sets every ready item's service_ms for `now`.
  void SetService(Time now);
  std::optional<size_t> PuIndex(PuId pu) const;
  void Trace(TraceKind kind, Time now, const Assignment& a, std::optional<PuId> pu,
             absl::StatusCode code = absl::StatusCode::kOk);

  LowLevelOptions options_;
  std::unique_ptr<policy::LowLevelPolicy> policy_;
  std::string policy_name_;
  const policy::LatencyModel* latency_;
  absl::flat_hash_map<PuId, size_t> pu_index_;
  std::vector<policy::PuState> pu_states_;
  std::vector<std::optional<Running>> running_;  // per PU index
  // The ready queue, in arrival order: the policy's view and the payloads.
  std::vector<policy::WorkItem> ready_;
  std::vector<Assignment> ready_assignments_;
  absl::flat_hash_map<ModelId, Served> served_;
  uint64_t next_seq_ = 0;
  uint64_t decisions_so_far_ = 0;
  LowLevelStats stats_;
  std::string last_violation_;
  DispatchObserver* observer_ = nullptr;
};

}  // namespace baton::dispatch
