// The high-level (HL) dispatcher core: one per system.
//
// A state machine. It owns no thread and reads no clock: a shell calls one of
// the On* events with the current time and carries out the actions it returns
// (send each Assignment to its device's LowLevelPort; hand each finished
// request's outputs or status to the client).
//
// A request is an instance of its model's partition graph (ModelGraph):
//   * arrival: the model inputs are forwarded to the partitions that read them;
//   * entering node: a partition is ready when all its inputs are present; it is
//     sent at once as an Assignment to the device it is placed on;
//   * exiting node: on a Completion its outputs are forwarded to the partitions
//     that read them and to the model outputs. Tensors move; a tensor with n
//     readers is cloned n-1 times, at that moment, and moved into the last;
//   * the request finishes when every model output is present.
//
// Exactly once: every OnRequest call is answered by exactly one FinishRequest,
// either in the actions of that call or of a later event:
//   OK                   all model outputs present (outputs in ModelGraph order)
//   NotFound             unknown model
//   InvalidArgument      inputs do not match the model's inputs
//   AlreadyExists        the RequestId is already in flight (ids must be unique)
//   ResourceExhausted    the model already has max_in_flight requests in flight
//   DeadlineExceeded     the deadline passed (checked on every event, see
//                        messages.h for the rule), or a device dropped a partition
//   Cancelled            the client cancelled it (OnCancel)
//   any other code       a partition failed (the Completion's status, prefixed
//                        with the model, partition and device)
//   Unavailable          no device that can run a ready partition is available
// Devices can become unavailable (SetDeviceAvailable; a remote agent lost):
// a ready partition then goes to the first available device of its
// fallback_devices, and assignments a lost device hands back (OnReturned) are
// sent again, with the same AssignmentId, to such a device.
// After a request finishes, every Completion of its assignments is ignored;
// completions are de-duplicated by AssignmentId, so a late, duplicate or
// unknown Completion never answers a request twice. Assignments of a finished
// request that are still unanswered (the siblings of a partition that failed,
// or everything in flight when its deadline passed) are withdrawn from their
// devices (CancelAssignments), so they stop taking PU time.
//
// Thread-safety: not thread-safe; drive it from one thread (or under one lock).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/model_graph.h"
#include "baton/dispatch/observer.h"

namespace baton::dispatch {

struct RequestOptions {
  std::optional<Time> deadline;  // absolute, on the shell's clock
  int priority = 0;              // larger = more important; passed to the LL policy
};

struct ModelOptions {
  int max_in_flight = 64;  // requests of this model in flight at once; more are rejected
  // Each of its assignments carries this execution timeout (Assignment::exec_timeout);
  // nullopt leaves it to the devices' rule.
  std::optional<Duration> exec_timeout = std::nullopt;
};

// Action: send `assignment` to the LL dispatcher of `device` (through its port).
struct SendAssignment {
  DeviceId device;
  Assignment assignment;
};

// Action: answer request `request`. `outputs` holds the model outputs, in the
// ModelGraph's order, when `status` is OK, and is empty otherwise.
struct FinishRequest {
  RequestId request;
  ModelId model;
  absl::Status status;
  NamedTensors outputs;
  Time arrived{};   // the `now` of its OnRequest
  Time finished{};  // the `now` of the event that finished it
  // Time PUs spent running its partitions (start to end of each completion
  // that ran), summed; zero when none ran.
  Duration compute{};
};

// Action: withdraw assignments sent earlier to `device` (LowLevelPort::Cancel);
// their requests were answered, so whatever the device answers is ignored.
// Carried out after `assignments` of the same actions (an id may be in both).
struct CancelAssignments {
  DeviceId device;
  std::vector<AssignmentId> ids;
};

struct HighLevelActions {
  std::vector<SendAssignment> assignments;
  std::vector<FinishRequest> finished;
  std::vector<CancelAssignments> cancels;  // one entry per device
};

struct HighLevelStats {
  uint64_t requests = 0;              // OnRequest calls
  uint64_t answered_ok = 0;
  uint64_t rejected = 0;              // ResourceExhausted (max_in_flight, or a device's queue was full)
  uint64_t deadline_exceeded = 0;
  uint64_t cancelled = 0;             // OnCancel
  uint64_t failed = 0;                // every other error
  uint64_t assignments_sent = 0;
  uint64_t completions_ignored = 0;   // late, duplicate or unknown
  uint64_t reissued = 0;              // assignments sent again after their device was lost
  uint64_t rerouted = 0;              // assignments sent to a fallback device
  uint64_t withdrawn = 0;             // assignments cancelled because their request was answered
};

class HighLevelCore {
 public:
  HighLevelCore();
  ~HighLevelCore();
  HighLevelCore(HighLevelCore&&) noexcept;
  HighLevelCore& operator=(HighLevelCore&&) noexcept;

  // Registers a model. Errors: the id is taken, the graph is invalid
  // (ValidateModelGraph), or max_in_flight < 1.
  absl::Status AddModel(ModelId id, ModelGraph graph, ModelOptions options = {});
  // The registered graph, or nullptr.
  const ModelGraph* model(ModelId id) const;

  // A new request. `inputs` must hold each model input once, by name.
  HighLevelActions OnRequest(RequestId id, ModelId model, NamedTensors inputs, RequestOptions options,
                             Time now);
  // The answer to one Assignment this core sent.
  HighLevelActions OnCompletion(Completion completion, Time now);
  // Time passed: finishes requests whose deadline has passed.
  HighLevelActions OnTick(Time now);
  // A device became (un)available. Nothing is sent by this call; later ready
  // partitions avoid an unavailable device.
  void SetDeviceAvailable(DeviceId device, bool available);
  bool device_available(DeviceId device) const { return !unavailable_.contains(device); }
  // Assignments that device `from` will never answer: each one still wanted
  // is sent again (same id) to an available device other than `from` that can
  // run it; its request fails with Unavailable when there is none.
  HighLevelActions OnReturned(std::vector<Assignment> returned, DeviceId from, Time now);

  // The client no longer wants request `id`: it is answered `status` now
  // (Cancelled) and what it has out is withdrawn, as for a deadline. Nothing
  // when it is not in flight (answered already, or unknown).
  HighLevelActions OnCancel(RequestId id, absl::Status status, Time now);

  // Answers every request in flight with `status` now (a runtime that stops
  // before its work is done); completions that arrive for them later are
  // ignored.
  HighLevelActions AbortAll(absl::Status status, Time now);

  // When OnTick next has something to do (the earliest ExpiryTime of a request
  // in flight), or nullopt. May be early, never late.
  std::optional<Time> NextExpiry() const;

  size_t in_flight() const { return requests_.size(); }
  size_t in_flight(ModelId model) const;
  // Assignments sent and not yet answered, over all requests in flight.
  size_t outstanding_assignments() const { return outstanding_.size(); }
  const HighLevelStats& stats() const { return stats_; }

  // Not owned; nullptr detaches. Must outlive the core or be detached.
  void set_observer(DispatchObserver* observer) { observer_ = observer; }

 private:
  struct CompiledModel;
  struct Request;
  struct Outstanding {
    RequestId request;
    uint32_t partition;  // index into the compiled model's partitions
    DeviceId device;     // where it was sent last
  };
  struct Expiry {
    Time at;
    RequestId request;
    uint64_t serial;  // tells a request apart from an earlier one with the same id
    bool operator>(const Expiry& o) const { return at > o.at || (at == o.at && serial > o.serial); }
  };

  void ExpireRequests(Time now, HighLevelActions& out);
  void PruneExpiries();
  // Puts tensor `tensor` (an index into the model's tensors) where it is read;
  // appends partitions that became ready to `ready`.
  void Forward(Request& r, uint32_t tensor, Tensor value, std::vector<uint32_t>& ready);
  void SendReady(Request& r, const std::vector<uint32_t>& ready, Time now, HighLevelActions& out);
  // Where partition `node` goes now: its device if available, else the first
  // available fallback other than `exclude`; nullopt when none.
  std::optional<DeviceId> DeviceFor(const PartitionNode& node, std::optional<DeviceId> exclude) const;
  absl::Status NoDeviceError(const Request& r, const PartitionNode& node) const;
  // Answers `r` and forgets it; `r` is invalid afterwards.
  void Finish(Request& r, absl::Status status, Time now, HighLevelActions& out);
  void Answer(RequestId id, ModelId model, absl::Status status, Time now, HighLevelActions& out);
  void Trace(TraceKind kind, Time now, RequestId request, ModelId model,
             std::optional<PartitionId> partition = std::nullopt,
             std::optional<AssignmentId> assignment = std::nullopt,
             std::optional<DeviceId> device = std::nullopt,
             absl::StatusCode code = absl::StatusCode::kOk);

  absl::flat_hash_map<ModelId, std::unique_ptr<CompiledModel>> models_;
  absl::flat_hash_map<RequestId, std::unique_ptr<Request>> requests_;
  absl::flat_hash_map<AssignmentId, Outstanding> outstanding_;
  absl::flat_hash_set<DeviceId> unavailable_;
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<Expiry>> expiries_;
  uint64_t next_assignment_ = 1;
  uint64_t next_serial_ = 1;
  HighLevelStats stats_;
  DispatchObserver* observer_ = nullptr;
};

}  // namespace baton::dispatch
