// The threaded runtime shell: the same HighLevelCore and LowLevelCores that
// the virtual-time shell drives, driven here by real time, real threads and
// real executors (backend::PreparedPartition).
//
// Threads and who owns what:
//   * the HL core has one owner at a time, "the dispatcher": whichever thread
//     holds the dispatcher role (a flag under the mailbox mutex) drains the
//     mailbox (client requests, completions, device events), runs the HL
//     core, hands assignments to the devices' ports, ticks every core at its
//     NextExpiry, and calls the clients' callbacks. The role is taken inline
//     by the thread that posts the mail when nobody holds it — the caller of
//     Submit, or a PU worker that just finished a run — so a request on an
//     idle runtime crosses no extra thread. A PU worker whose PU already has
//     its next run goes straight to it and wakes the dispatcher thread
//     instead (on a busy device, a pass of dispatcher work between two runs
//     left the PU idle ~120 us per run). A dispatcher thread takes it for
//     everything else (timers, remote devices' events, callbacks that an
//     inline caller may not run; see Submit);
//   * each local device is a DeviceShell (device_shell.h): its LL core behind
//     the device's mutex, Submit runs OnAssignment under it on the dispatcher's
//     thread, and one worker thread per PU (pinned when the PU says so) runs
//     one partition at a time and reports it under the mutex;
//   * each remote device is a RemoteDevice (a `baton agent`, see net/): it
//     delivers completions, hands back the work of a lost agent, and reports
//     reachability from its own threads. The dispatcher re-routes that work
//     through the HL core (OnReturned, SetDeviceAvailable).
// Everything from the LL side goes to the mailbox (never into the HL core
// directly), so the HL core is only ever touched by the role's holder.
// Lock order: device mutex, then mailbox mutex; nothing is called while the
// mailbox mutex is held.
// RuntimeOptions::inline_dispatch = false keeps every piece of dispatcher
// work on the dispatcher thread (the behaviour before the role could move;
// kept to measure against).
//
// Time: Now() is steady_clock time since the runtime was created; deadlines in
// RequestOptions are on this clock (Now() + budget).
//
// Exactly once: every Submit is answered by exactly one callback, OK with the
// model outputs or an error (see HighLevelCore for the codes; Unavailable when
// submitted after Stop).
//
// Example:
//   RunnerTable runners;  runners.Set(model, partition, pu, prepared.get());
//   auto rt = Runtime::Create(std::move(devices), &latency, &runners);
//   (*rt)->AddModel(model, graph);
//   (*rt)->Start();
//   auto answer = (*rt)->Submit(model, std::move(inputs), {.deadline = (*rt)->Now() + 50ms}).get();
//   (*rt)->Stop();
//
// Thread-safety: Submit, Run, Now, Drain, pu_stats, stats and ResetStats may
// be called from any thread (Submit also from inside a callback); AddModel and
// set_observer only before Start. Callbacks run on the dispatcher thread or on
// a PU worker thread, one at a time, never on the thread inside Submit: keep
// them short, and never call Run, Drain or Stop from one.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "baton/backend/executor.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/high_level.h"
#include "baton/dispatch/low_level.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/observer.h"
#include "baton/dispatch/port.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"
#include "baton/runtime/device_shell.h"
#include "baton/runtime/remote_device.h"

namespace baton::runtime {

using dispatch::NamedTensors;

// A local device (PUs run by this process), or a remote one (`remote` set: a
// `baton agent`; `pus` then only names its PUs, and `policy` is unused — the
// agent runs its own low-level dispatcher).
struct DeviceSetup {
  DeviceId id;
  std::string name;
  std::vector<PuSetup> pus;
  std::unique_ptr<policy::LowLevelPolicy> policy;
  size_t max_queue = 256;
  std::shared_ptr<RemoteDevice> remote;
};

struct RequestResult {
  RequestId id;
  ModelId model;
  absl::Status status;
  NamedTensors outputs;  // the model outputs when OK
  Time submitted{};      // Now() when Submit was called
  Time finished{};       // when the HL core answered it
  Duration compute{};    // PU time its partitions took (FinishRequest::compute)
};
using DoneCallback = std::function<void(RequestResult)>;

struct DeviceStatus {
  DeviceId id;
  std::string name;
  bool remote = false;
  bool reachable = true;
  uint64_t lost = 0;     // times it was found unreachable
  uint64_t returned = 0; // assignments it handed back unanswered (re-issued elsewhere)
};

struct RuntimeStats {
  dispatch::HighLevelStats high_level;
  std::vector<dispatch::LowLevelStats> devices;  // in DeviceSetup order (remote: zeros)
  std::vector<DeviceStatus> status;              // in DeviceSetup order
  Duration window{};  // time since the last ResetStats (or Start)
  // Requests answered by Abandon or by Stop's drain limit (since Start).
  uint64_t abandoned = 0;
  // A second answer for a request already answered, dropped before the
  // client (since Start; the HL core answers once, so this stays 0).
  uint64_t answered_twice = 0;
};

struct RuntimeOptions {
  // Attached to every core before the threads start (e.g. a
  // trace::TraceObserver); borrowed, must outlive the runtime; called from
  // several threads at once, so it synchronises itself.
  dispatch::DispatchObserver* observer = nullptr;
  // Let the thread that posts dispatcher work (Submit's caller, a PU worker
  // that finished a run) do it at once when no other thread is doing it,
  // instead of waking the dispatcher thread (see the top of this file).
  bool inline_dispatch = true;
  // Let Run's caller run its request's partitions itself when the LL core
  // starts one on an idle local PU that is unpinned or pinned to the CPU the
  // caller is on (DeviceShell::DirectCatcher). Needs inline_dispatch.
  bool caller_runs = true;
};

class Runtime {
 public:
  // Errors: no devices, duplicate device or PU ids, a device the LL core
  // refuses (see LowLevelCore::Create), null latency or runners. `latency`
  // and `runners` are borrowed; the runtime Observes every measured run time
  // into `latency` and marks PUs without a runner incapable.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(std::vector<DeviceSetup> devices,
                                                         policy::OnlineLatencyModel* latency,
                                                         const RunnerTable* runners, RuntimeOptions options = {});
  ~Runtime();  // Stop()
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Before Start. Errors: HighLevelCore::AddModel's, a partition placed on an
  // unknown device, a partition with no runner on any PU of its device, or a
  // fixed_pu without a runner.
  absl::Status AddModel(ModelId id, dispatch::ModelGraph graph, dispatch::ModelOptions options = {});
  // Starts the threads. Errors: called twice, or after Stop.
  absl::Status Start();

  // A request; `done` is called exactly once (see above).
  RequestId Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done);
  std::future<RequestResult> Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options = {});
  // Submit and wait for the answer, the calling thread doing the work it
  // can: the dispatcher's for this request when no other thread holds that
  // role, and (RuntimeOptions::caller_runs) the request's partitions that the
  // LL core starts on an idle local PU it may use. On an idle runtime a
  // request then crosses no thread at all. Other clients' callbacks are never
  // run here. Not from a callback.
  RequestResult Run(ModelId model, NamedTensors inputs, dispatch::RequestOptions options = {});
  // Submit, the calling thread doing what Run's caller does, without waiting:
  // when the request's partitions start on idle PUs this thread may use, it
  // runs them and `done` is called here before this returns; what goes to a
  // busy PU is answered later from baton's threads, as after Submit. `done`
  // must be safe on this thread. Not from a callback.
  RequestId SubmitHere(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done);

  Time Now() const;
  // Blocks until every request submitted so far is answered, or `timeout`
  // (none = no limit) has passed. True when nothing is pending.
  bool Drain(std::optional<Duration> timeout = std::nullopt);
  // Answers every request in flight with `status` now (their work still
  // queued or running finishes unseen; runs stay bounded by their execution
  // timeouts). Returns once they are answered. Not from a callback.
  // Returns how many it answered.
  uint64_t Abandon(absl::Status status);
  // The client no longer wants request `id` (an id Submit or SubmitHere
  // returned): unless answered already, it is answered CANCELLED and its work
  // is withdrawn from the devices (HighLevelCore::OnCancel). Only posts: safe from
  // any thread, under any lock, and from a callback; the answer comes from
  // the dispatcher.
  void Cancel(RequestId id);
  // Stops taking requests, drains for at most `drain_timeout` (none = no
  // limit), answers what is left UNAVAILABLE, then stops the devices (runs in
  // progress are cancelled) and joins every thread. Idempotent.
  void Stop(std::optional<Duration> drain_timeout = std::nullopt);

  // Requests submitted and not answered yet.
  size_t pending() const { return pending_.load(); }
  // Busy times of every PU (see DeviceShell::pu_stats for `until`; a remote
  // device's come from its agent and ignore it).
  std::vector<PuStats> pu_stats(std::optional<Time> until = std::nullopt) const;
  RuntimeStats stats() const;
  // Zeroes the PU busy times and run counts and restarts the stats window
  // (the start of a measurement).
  void ResetStats();

  // Attached to every core; called from several threads (the dispatcher and
  // the PU workers), so it must synchronise itself. Before Start only.
  void set_observer(dispatch::DispatchObserver* observer);

 private:
  struct Device;
  struct Returned {
    DeviceId from;
    std::vector<dispatch::Assignment> assignments;
  };
  struct Reachability {
    DeviceId device;
    bool reachable;
    std::string why;
  };
  struct AbandonAll {
    absl::Status status;
  };
  struct CancelRequest {
    RequestId id;
  };
  struct NewRequest {
    RequestId id;
    ModelId model;
    NamedTensors inputs;
    dispatch::RequestOptions options;
    DoneCallback done;
    Time submitted{};
    bool any_thread = false;
  };
  struct Client {
    DoneCallback done;
    Time submitted{};
    // Safe on any thread (Run's own hand-over): run even by a dispatcher that
    // may not call clients back (see DrainMail).
    bool any_thread = false;
  };
  struct Answer {
    Client client;
    RequestResult result;
  };
  using MailItem = std::variant<NewRequest, dispatch::Completion, Returned, Reachability, AbandonAll, CancelRequest>;

  Runtime(policy::OnlineLatencyModel* latency, const RunnerTable* runners, RuntimeOptions options);

  void DispatcherLoop();
  // Queues `request`; false (and `request` untouched) when refused, with the
  // reason in `refused`. Takes the dispatcher role when `take_role` and it is
  // free: true in `took_role`, and the caller must then call DrainMail.
  bool Enqueue(NewRequest& request, absl::Status& refused, bool take_role, bool& took_role);
  // The holder of the dispatcher role: handles the mail until there is none,
  // then gives the role up. `call_back`: may run clients' callbacks here
  // (else only `any_thread` ones; the rest go to the dispatcher thread).
  // `inline_holder` (not the dispatcher thread): at most kMaxInlinePasses
  // passes over the mailbox, then the dispatcher thread takes what is left;
  // likewise after any pass once `stop_early` is true (a PU worker whose PU
  // has its next run waiting).
  // `own`: the request the holder works for (Run, SubmitHere); its answer is
  // delivered here whatever `call_back` says.
  void DrainMail(bool call_back, bool inline_holder, const std::atomic<bool>* stop_early = nullptr,
                 std::optional<RequestId> own = std::nullopt);
  // Run's and SubmitHere's start: counts the call (Stop waits for it), then
  // Enqueue (taking the role if free); false, and no longer counted, when refused.
  bool StartHere(NewRequest& request, absl::Status& refused, bool& took_role);
  // Run's and SubmitHere's work on the caller's thread once it holds the
  // role: the mail, and each run of request `id` caught on an idle PU.
  void WorkHere(RequestId id);
  static constexpr int kMaxInlinePasses = 4;
  // Wakes the dispatcher thread when there is mail and nobody holds the role.
  void WakeDispatcher();
  // Takes the dispatcher role if it is free and there is mail; true if taken.
  bool TakeRole();
  void Handle(MailItem& item);
  void Apply(dispatch::HighLevelActions actions);
  void Deliver(Answer answer);
  void EndRun();
  // Appends one mail item (one of MailItem's alternatives), built in place:
  // moving a whole MailItem trips GCC 12's maybe-uninitialized warning on
  // the variant's other alternatives.
  template <typename Item>
  void Post(Item item);
  void PostCompletions(std::vector<dispatch::Completion> completions);
  // Drops expired work at every level (dispatcher thread); returns when to look
  // again (the earliest expiry left), or nullopt.
  std::optional<Time> TickExpired(Time now);

  policy::OnlineLatencyModel* latency_;
  const RunnerTable* runners_;
  RuntimeOptions options_;
  const std::chrono::steady_clock::time_point epoch_;

  dispatch::HighLevelCore hl_;  // dispatcher thread only (after Start)
  std::vector<std::unique_ptr<Device>> devices_;
  absl::flat_hash_map<DeviceId, Device*> device_by_id_;
  absl::flat_hash_map<RequestId, Client> clients_;  // dispatcher thread only

  mutable std::mutex mail_mu_;
  std::condition_variable mail_cv_;
  std::deque<MailItem> mail_;  // guarded by mail_mu_
  bool stopping_ = false;      // guarded by mail_mu_
  bool accepting_ = true;      // guarded by mail_mu_
  bool dispatching_ = false;   // guarded by mail_mu_: some thread holds the dispatcher role
  bool answers_waiting_ = false;  // guarded by mail_mu_: deferred_ holds answers for the dispatcher thread
  std::optional<Time> wake_;      // guarded by mail_mu_: the earliest expiry at any level
  // guarded by mail_mu_: the dispatcher thread's timer while it waits; none =
  // it waits without one, or is not waiting.
  std::optional<Time> sleeping_until_;
  std::vector<Answer> deferred_;  // the role's holder only: answers a holder could not deliver
  bool call_back_ = true;         // the role's holder only: DrainMail's `call_back`
  std::optional<RequestId> own_;  // the role's holder only: DrainMail's `own`
  size_t runs_in_progress_ = 0;   // guarded by mail_mu_: threads inside Run (Stop waits for them)
  std::condition_variable runs_cv_;

  std::atomic<uint64_t> next_request_{1};
  std::atomic<size_t> pending_{0};
  std::mutex drain_mu_;
  std::condition_variable drain_cv_;

  mutable std::mutex stats_mu_;
  Time window_start_{};  // guarded by stats_mu_
  dispatch::HighLevelStats hl_stats_;  // guarded by stats_mu_; the dispatcher's copy
  std::vector<DeviceStatus> status_;   // guarded by stats_mu_; the dispatcher's copy
  uint64_t abandoned_ = 0;             // guarded by stats_mu_
  uint64_t answered_twice_ = 0;        // guarded by stats_mu_

  enum class State { kCreated, kRunning, kStopped };
  std::atomic<State> state_{State::kCreated};
  std::mutex stop_mu_;
  std::thread dispatcher_;
  dispatch::DispatchObserver* observer_ = nullptr;
};

}  // namespace baton::runtime
