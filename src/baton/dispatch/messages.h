// The messages that cross between the high-level (HL) and the low-level (LL)
// dispatcher: an Assignment (HL -> LL: run this partition of this request) and
// a Completion (LL -> HL: it ran, or could not; here are its outputs).
//
// Both are plain data (ids, strings, tensors, times, a status; no pointers), so
// a remote port can serialise them field by field. Inside one process they are
// move-only, because Tensor is: tensors move by ownership from the request to
// the assignment, to the executor, into the completion and on to the next
// partition, and are never copied on the way.
//
// Times are absolute points on the clock of the shell that drives the cores
// (see core/time.h). A remote port translates them between clocks.
//
// Deadline rule, shared by every stage: work with deadline `d` is on time when
// it finishes at or before `d`, and its deadline has *passed* when now > d. A
// shell that wants to drop work as soon as possible ticks the cores at
// ExpiryTime(d) = d + 1 ns.
//
// Thread-safety: value types; not synchronised.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/tensor.h"
#include "baton/core/time.h"

namespace baton::dispatch {

// Tensors by name, in a defined order. Lists are short (a partition's interface),
// so look-ups are linear.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// The tensor called `name`, or nullptr.
Tensor* FindTensor(NamedTensors& tensors, const std::string& name);
const Tensor* FindTensor(const NamedTensors& tensors, const std::string& name);

// True when `deadline` is set and `now` is past it (see the rule above).
inline bool DeadlinePassed(const std::optional<Time>& deadline, Time now) {
  return deadline.has_value() && now > *deadline;
}
// The first instant at which `deadline` counts as passed.
inline Time ExpiryTime(Time deadline) { return deadline + Duration(1); }

// HL -> LL: one partition of one request, with all its inputs present (the
// entering node is satisfied). Ids are unique per HL core (AssignmentId) and per
// system (RequestId); PartitionId is the partition's id within its model.
struct Assignment {
  AssignmentId id;
  RequestId request;
  ModelId model;
  PartitionId partition;
  NamedTensors inputs;            // exactly the partition's inputs, in its order
  std::optional<Time> deadline;   // absolute; the request's deadline
  int priority = 0;               // larger = more important
  std::optional<PuId> fixed_pu;   // placement fixed by the plan, if any
  // How long one run of it may take on a PU before the device stops it and
  // answers Aborted (the model's execution_timeout_ms); nullopt = the device's
  // rule (LowLevelOptions::exec_timeout).
  std::optional<Duration> exec_timeout = std::nullopt;
};

// LL -> HL: the answer to exactly one Assignment (same id). `status` is OK when
// the partition ran; otherwise it says why not (ResourceExhausted: queue full;
// DeadlineExceeded: dropped; Aborted: it ran past its execution timeout;
// anything else: the executor failed) and `outputs`
// is empty. `pu` is the PU it ran on, nullopt when it never started; then
// start == end == the instant it was answered.
struct Completion {
  AssignmentId id;
  RequestId request;
  ModelId model;
  PartitionId partition;
  DeviceId device;
  absl::Status status;
  NamedTensors outputs;  // the partition's outputs (by name) when status is OK
  std::optional<PuId> pu;
  Time start{};
  Time end{};
};

}  // namespace baton::dispatch
