// The narrow port between the high-level dispatcher and one low-level
// dispatcher: submit an assignment; receive a completion.
//
// A local LL dispatcher (threaded runtime), a remote one (gRPC agent) and a
// simulated one (VirtualShell) all implement LowLevelPort, so the HL side never
// knows which it talks to. The contract every implementation keeps (and the
// port contract test checks):
//   * Submit takes ownership of the assignment and returns without waiting for
//     it to run; it never fails synchronously.
//   * Every submitted assignment is answered by exactly one Completion with the
//     same AssignmentId, delivered to the port's CompletionSink: OK with the
//     outputs, or an error (ResourceExhausted, DeadlineExceeded, the executor's
//     error, Unavailable when the LL side is unreachable).
//   * The sink is never called from inside Submit (callers may hold the HL lock
//     while submitting).
//   * Cancel withdraws assignments submitted earlier whose answers nobody
//     wants any more: each one still queued or running is answered Cancelled
//     (a running one is asked to stop; it may still finish first and be
//     answered with its result). Ids already answered or unknown are ignored.
//     Every assignment is still answered exactly once.
//
// Thread-safety: implementation-defined; the threaded runtime's ports accept
// Submit from the HL thread and call the sink from the LL thread, so a sink must
// only move the completion into the HL's mailbox.
#pragma once

#include <functional>
#include <span>

#include "baton/dispatch/messages.h"

namespace baton::dispatch {

class LowLevelPort {
 public:
  virtual ~LowLevelPort() = default;
  virtual void Submit(Assignment assignment) = 0;
  virtual void Cancel(std::span<const AssignmentId> ids) = 0;
};

// Where a port delivers completions.
using CompletionSink = std::function<void(Completion)>;

}  // namespace baton::dispatch
