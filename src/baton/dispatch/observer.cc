#include "baton/dispatch/observer.h"

#include "absl/strings/str_cat.h"

namespace baton::dispatch {

const char* TraceKindName(TraceKind kind) {
  switch (kind) {
    case TraceKind::kRequestArrived:
      return "arrived";
    case TraceKind::kRequestFinished:
      return "answered";
    case TraceKind::kAssignmentSent:
      return "sent";
    case TraceKind::kCompletionIgnored:
      return "ignored";
    case TraceKind::kEnqueued:
      return "enqueued";
    case TraceKind::kStarted:
      return "started";
    case TraceKind::kFinished:
      return "finished";
    case TraceKind::kDropped:
      return "dropped";
  }
  return "?";
}

std::string ToString(const TraceEvent& e) {
  std::string s = absl::StrCat(e.time.time_since_epoch().count(), " ", TraceKindName(e.kind),
                               " r=", e.request.value, " m=", e.model.value);
  if (e.partition) absl::StrAppend(&s, " p=", e.partition->value);
  if (e.assignment) absl::StrAppend(&s, " a=", e.assignment->value);
  if (e.device) absl::StrAppend(&s, " d=", e.device->value);
  if (e.pu) absl::StrAppend(&s, " pu=", e.pu->value);
  if (e.code != absl::StatusCode::kOk) {
    absl::StrAppend(&s, " ", absl::StatusCodeToString(e.code));
  }
  return s;
}

std::vector<std::string> TraceRecorder::Lines() const {
  std::vector<std::string> lines;
  lines.reserve(events_.size());
  for (const auto& e : events_) lines.push_back(ToString(e));
  return lines;
}

}  // namespace baton::dispatch
