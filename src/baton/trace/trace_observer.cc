#include "baton/trace/trace_observer.h"

#include <algorithm>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace baton::trace {

using dispatch::TraceEvent;
using dispatch::TraceKind;

TraceObserver::TraceObserver(TraceNames names, size_t max_events) : names_(std::move(names)), max_events_(max_events) {}

void TraceObserver::OnEvent(const TraceEvent& event) {
  switch (event.kind) {
    case TraceKind::kFinished:
    case TraceKind::kEnqueued:
    case TraceKind::kStarted:
    case TraceKind::kDropped:
    case TraceKind::kRequestArrived:
    case TraceKind::kRequestFinished:
      break;
    default:
      return;  // not drawn
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.size() >= max_events_) {
    ++dropped_;
    return;
  }
  if (event.kind == TraceKind::kFinished && event.started.has_value() && event.pu.has_value()) ++runs_;
  events_.push_back(event);
}

size_t TraceObserver::runs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return runs_;
}

size_t TraceObserver::dropped_events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void TraceObserver::WriteTo(ChromeTrace& trace) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto model_name = [&](ModelId m) {
    return m.value < names_.models.size() ? names_.models[m.value] : absl::StrCat("model", m.value);
  };
  const auto devices = static_cast<uint32_t>(names_.devices.size());
  // Lanes: PUs are tids 0..P-1 of their device's process; each device's queue
  // lane is tid P (after every PU id, so ids never clash).
  const auto queue_tid = static_cast<uint32_t>(names_.pus.size());
  for (size_t u = 0; u < names_.pus.size(); ++u) {
    const TraceNames::Pu& pu = names_.pus[u];
    const std::string& device = pu.device.value < devices ? names_.devices[pu.device.value] : "device";
    trace.AddLane(pu.device.value, device, static_cast<uint32_t>(u), pu.name);
  }
  for (uint32_t d = 0; d < devices; ++d) trace.AddLane(d, names_.devices[d], queue_tid, "queue");
  trace.AddLane(devices, "requests", 0, "arrivals and failed answers");

  std::map<uint32_t, int64_t> depth;  // per device: assignments queued
  std::vector<const TraceEvent*> ordered;
  ordered.reserve(events_.size());
  for (const TraceEvent& e : events_) ordered.push_back(&e);
  // Counters must be in time order; the threads report in nearly that order.
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const TraceEvent* a, const TraceEvent* b) { return a->time < b->time; });
  for (const TraceEvent* e : ordered) {
    const std::string model = model_name(e->model);
    const std::string request = std::to_string(e->request.value);
    switch (e->kind) {
      case TraceKind::kFinished:
        if (e->started.has_value() && e->pu.has_value() && e->device.has_value()) {
          const uint32_t partition = e->partition ? e->partition->value : 0;
          trace.AddSlice(e->device->value, e->pu->value, absl::StrCat(model, ".p", partition), *e->started, e->time,
                         {{"model", model},
                          {"request", request},
                          {"partition", std::to_string(partition)},
                          {"ok", e->code == absl::StatusCode::kOk ? "true" : "false"}});
        }
        break;
      case TraceKind::kEnqueued:
      case TraceKind::kStarted:
      case TraceKind::kDropped: {
        if (!e->device.has_value()) break;
        const uint32_t d = e->device->value;
        int64_t& n = depth[d];
        if (e->kind == TraceKind::kEnqueued) {
          ++n;
          trace.AddInstant(d, queue_tid, absl::StrCat("enqueue ", model), e->time, {{"request", request}});
        } else if (e->kind == TraceKind::kDropped) {
          n = std::max<int64_t>(0, n - 1);
          trace.AddInstant(d, queue_tid, absl::StrCat("drop ", model), e->time,
                           {{"request", request}, {"reason", absl::StatusCodeToString(e->code)}});
        } else {
          n = std::max<int64_t>(0, n - 1);
        }
        trace.AddCounter(d, "queued", e->time, static_cast<double>(n));
        break;
      }
      case TraceKind::kRequestArrived:
        trace.AddInstant(devices, 0, absl::StrCat("arrive ", model), e->time, {{"request", request}});
        break;
      case TraceKind::kRequestFinished:
        if (e->code != absl::StatusCode::kOk) {
          trace.AddInstant(devices, 0, absl::StrCat(absl::StatusCodeToString(e->code), " ", model), e->time,
                           {{"request", request}});
        }
        break;
      default:
        break;
    }
  }
  if (dropped_ > 0) trace.AddMetadata("dropped_events", std::to_string(dropped_));
}

}  // namespace baton::trace
