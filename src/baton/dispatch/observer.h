// Observing what the dispatcher cores do: one TraceEvent per step of a
// request's life, stamped with the time the driving shell passed in.
//
// The cores call DispatchObserver::OnEvent synchronously from inside their
// event handlers when an observer is attached, and do nothing at all when none
// is (one null check). Tracing, metrics and the profiler subscribe here; the
// threaded runtime and the virtual-time shell emit the same events, so their
// traces can be diffed.
//
// Thread-safety: an observer is called on the thread that drives the core it is
// attached to; an observer shared by cores driven from several threads must
// synchronise itself. TraceRecorder is not synchronised.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"

namespace baton::dispatch {

enum class TraceKind {
  kRequestArrived,     // HL: a request reached the HL core (it may be rejected at once)
  kRequestFinished,    // HL: the request was answered with `code` (exactly once per request)
  kAssignmentSent,     // HL: a partition became ready (entering node) and went to `device`
  kCompletionIgnored,  // HL: a completion for an unknown, finished or dropped request was dropped
  kEnqueued,           // LL: an assignment entered `device`'s ready queue
  kStarted,            // LL: the policy started it on `pu`
  kFinished,           // LL: `pu` finished it with `code`
  kDropped,            // LL: answered without running (`code`: DeadlineExceeded, ResourceExhausted...)
};

const char* TraceKindName(TraceKind kind);

struct TraceEvent {
  TraceKind kind = TraceKind::kRequestArrived;
  Time time{};
  RequestId request;
  ModelId model;
  std::optional<PartitionId> partition;
  std::optional<AssignmentId> assignment;
  std::optional<DeviceId> device;
  std::optional<PuId> pu;
  absl::StatusCode code = absl::StatusCode::kOk;
  // kFinished: when the PU began this run (the event's time is when the core
  // learned it ended), so an observer can draw the run without pairing events.
  std::optional<Time> started;
};

// One line, e.g. "1500 started r=3 m=1 p=2 a=7 d=0 pu=1".
std::string ToString(const TraceEvent& event);

class DispatchObserver {
 public:
  virtual ~DispatchObserver() = default;
  virtual void OnEvent(const TraceEvent& event) = 0;
};

// Keeps every event, in order (tests, small traces).
class TraceRecorder : public DispatchObserver {
 public:
  void OnEvent(const TraceEvent& event) override { events_.push_back(event); }
  const std::vector<TraceEvent>& events() const { return events_; }
  std::vector<std::string> Lines() const;

 private:
  std::vector<TraceEvent> events_;
};

}  // namespace baton::dispatch
