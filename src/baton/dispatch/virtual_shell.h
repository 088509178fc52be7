// The deterministic virtual-time shell: one HighLevelCore and N LowLevelCores
// (devices) driven by an event queue ordered by (time, sequence number), with a
// VirtualExecutor standing in for real PUs. No threads, no clock, no sleeps:
// the same inputs and seed give the same event trace, run after run. Tests use
// it now; the simulator will use it with cost-model executors.
//
// Wiring (the same shape the threaded runtime and the gRPC agent use):
//   client --Submit--> HL core --SendAssignment--> LowLevelPort(device)
//          <-finished-         <--CompletionSink--  LL core --StartOnPu--> VirtualExecutor
// Each device's port is a VirtualPort: Submit delivers the assignment to that
// device's LL core `link_delay` later; completions come back `link_delay` later.
// The shell ticks every core at its NextExpiry, so expired work is dropped on
// time even when nothing else happens.
//
// Example:
//   FakeExecutor executor;
//   VirtualShell shell(&executor, {.seed = 7});
//   shell.AddDevice({.device = DeviceId(0), .pus = {{PuId(0), "cpu"}}}, std::move(policy), &latency);
//   shell.AddModel(ModelId(1), graph);
//   shell.Submit(ModelId(1), std::move(inputs), {.deadline = Time(FromMillis(5))}, kTimeZero);
//   shell.RunUntilIdle();
//   // shell.finished(): one RequestRecord per request, with status and latency.
//
// Thread-safety: not thread-safe; one thread drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/high_level.h"
#include "baton/dispatch/low_level.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/observer.h"
#include "baton/dispatch/port.h"
#include "baton/dispatch/workload.h"
#include "baton/policy/policy.h"

namespace baton::dispatch {

// Stands in for the PUs in virtual time. Called once per run, when the LL core
// starts it; must be deterministic for the trace to be.
class VirtualExecutor {
 public:
  virtual ~VirtualExecutor() = default;
  // How long `assignment` runs on PU `pu` of `device`.
  virtual Duration RunTime(DeviceId device, PuId pu, const Assignment& assignment) = 0;
  // What it produces: the partition's outputs by name, or the error it fails with.
  virtual absl::StatusOr<NamedTensors> Outputs(DeviceId device, PuId pu, const Assignment& assignment) = 0;
};

// One answered request.
struct RequestRecord {
  RequestId id;
  ModelId model;
  absl::Status status;
  NamedTensors outputs;  // empty unless OK and keep_outputs
  Time submitted{};      // the arrival instant given to Submit
  Time finished{};
  std::optional<uint32_t> stream;  // index of the stream that issued it (AddStream order)
  uint64_t stream_index = 0;       // its index within that stream
  Duration latency() const { return finished - submitted; }
};

struct VirtualShellOptions {
  Duration link_delay{0};   // one way, between the HL core and every device
  bool keep_outputs = true;  // keep OK requests' outputs in finished()
  uint64_t seed = 1;         // seeds every stream's Rng
};

class VirtualShell {
 public:
  // `executor` is borrowed and must outlive the shell.
  explicit VirtualShell(VirtualExecutor* executor, VirtualShellOptions options = {});
  ~VirtualShell();
  VirtualShell(const VirtualShell&) = delete;
  VirtualShell& operator=(const VirtualShell&) = delete;

  // A device with its LL core (see LowLevelCore::Create for the errors; also
  // AlreadyExists for a device id used twice). `latency` is borrowed.
  absl::Status AddDevice(LowLevelOptions options, std::unique_ptr<policy::LowLevelPolicy> policy,
                         const policy::LatencyModel* latency);
  // A model (see HighLevelCore::AddModel); every partition's device must exist.
  absl::Status AddModel(ModelId id, ModelGraph graph, ModelOptions options = {});

  // One request arriving at `at` (clamped to now() if earlier). Returns its id.
  RequestId Submit(ModelId model, NamedTensors inputs, RequestOptions options, Time at);
  // A stream of requests (see workload.h). Errors: no `make`, a non-positive
  // period, rate or concurrency.
  absl::Status AddStream(StreamSpec spec);

  // Processes events until none is left.
  void RunUntilIdle();
  // Processes events up to and including `t`; now() is `t` afterwards.
  void RunUntil(Time t);
  Time now() const { return now_; }

  // Answered requests, in answer order.
  std::vector<RequestRecord>& finished() { return finished_; }
  // Submitted requests not answered yet.
  size_t pending() const { return pending_.size(); }
  // Answers for requests that were not pending: a broken exactly-once
  // invariant. Stays 0.
  uint64_t duplicate_answers() const { return duplicate_answers_; }
  uint64_t events_processed() const { return events_processed_; }

  // Called for each answered request before it is stored in finished()
  // (it may move the outputs out).
  void set_on_finish(std::function<void(RequestRecord&)> callback) { on_finish_ = std::move(callback); }
  // Attached to the HL core and every LL core (also ones added later).
  void set_observer(DispatchObserver* observer);

  const HighLevelCore& high_level() const { return hl_; }
  // nullptr for an unknown device.
  const LowLevelCore* low_level(DeviceId device) const;
  // The port the HL side uses to reach `device` (nullptr if unknown); its
  // completions go to the HL core. For port contract tests.
  LowLevelPort* port(DeviceId device);

 private:
  struct Device;
  class VirtualPort;
  struct Stream {
    StreamSpec spec;
    Rng rng;
    uint64_t issued = 0;
  };
  struct Pending {
    Time submitted{};
    std::optional<uint32_t> stream;
    uint64_t stream_index = 0;
  };
  // Event payloads.
  struct ArriveRequest {
    RequestId id;
    ModelId model;
    NamedTensors inputs;
    RequestOptions options;
  };
  struct StreamNext {
    uint32_t stream;
  };
  struct DeliverAssignment {
    uint32_t device;  // index into devices_
    Assignment assignment;
  };
  struct DeliverCancel {
    uint32_t device;
    std::vector<AssignmentId> ids;
  };
  struct PuDone {
    uint32_t device;
    PuResult result;
  };
  struct DeliverCompletion {
    Completion completion;
  };
  struct TickHighLevel {};
  struct TickLowLevel {
    uint32_t device;
  };
  using Payload = std::variant<ArriveRequest, StreamNext, DeliverAssignment, DeliverCancel, PuDone,
                               DeliverCompletion, TickHighLevel, TickLowLevel>;
  struct Event {
    Time at;
    uint64_t seq;
    Payload payload;
  };

  void Schedule(Time at, Payload payload);
  void Step();
  void Handle(ArriveRequest& e);
  void Handle(StreamNext& e);
  void Handle(DeliverAssignment& e);
  void Handle(DeliverCancel& e);
  void Handle(PuDone& e);
  void Handle(DeliverCompletion& e);
  void Handle(TickHighLevel& e);
  void Handle(TickLowLevel& e);
  void Apply(HighLevelActions actions);
  void Apply(Device& device, LowLevelActions actions);
  void IssueFromStream(uint32_t stream);
  void ScheduleTicks();

  VirtualExecutor* executor_;
  VirtualShellOptions options_;
  HighLevelCore hl_;
  std::vector<std::unique_ptr<Device>> devices_;
  absl::flat_hash_map<DeviceId, uint32_t> device_index_;
  std::vector<Stream> streams_;
  std::vector<Event> queue_;  // a min-heap on (at, seq)
  uint64_t next_seq_ = 0;
  Time now_{};
  uint64_t next_request_ = 1;
  absl::flat_hash_map<RequestId, Pending> pending_;
  std::vector<RequestRecord> finished_;
  uint64_t duplicate_answers_ = 0;
  uint64_t events_processed_ = 0;
  std::optional<Time> hl_tick_;  // the earliest HL tick already scheduled
  std::function<void(RequestRecord&)> on_finish_;
  DispatchObserver* observer_ = nullptr;
};

}  // namespace baton::dispatch
