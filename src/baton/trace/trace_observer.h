// A Chrome/Perfetto trace built from the dispatcher's events
// (dispatch::DispatchObserver): attach it to a runtime before Start, and
// write it after Stop.
//
// What it draws (trace/chrome_trace.h):
//   * per device a process, per PU a lane with one slice per partition run
//     ("<model>.p<partition>", args: model, request, partition, ok), from the
//     LL core's kFinished events (which carry when the run began) — for a
//     remote device from its completions, which the runtime reports as
//     kFinished events, since its LL core runs in the agent;
//   * per device a "queue" lane: an instant per assignment enqueued and per
//     assignment dropped (with the reason), and a counter of the queue depth;
//   * a "requests" process with an instant per request arrival and per answer
//     that is not OK (deadline, rejection, failure).
// Memory is bounded: after `max_events` stored events the rest are counted in
// dropped_events() and left out (the trace says so in its metadata).
//
// Thread-safety: OnEvent may be called from any number of threads at once
// (the runtime calls it from its dispatcher and PU threads); WriteTo and the
// accessors take the same lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/time.h"
#include "baton/dispatch/observer.h"
#include "baton/trace/chrome_trace.h"

namespace baton::trace {

struct TraceNames {
  std::vector<std::string> devices;  // by DeviceId
  struct Pu {
    DeviceId device;
    std::string name;  // lane name, e.g. "cpu0 (cpu)"
  };
  std::vector<Pu> pus;               // by PuId
  std::vector<std::string> models;   // by ModelId
};

class TraceObserver : public dispatch::DispatchObserver {
 public:
  static constexpr size_t kDefaultMaxEvents = 1'000'000;

  explicit TraceObserver(TraceNames names, size_t max_events = kDefaultMaxEvents);

  void OnEvent(const dispatch::TraceEvent& event) override;

  // Lanes, runs, queue events and request events into `trace`; device d is
  // process d, the requests process is devices.size(), so a caller may add
  // its own lanes after those.
  void WriteTo(ChromeTrace& trace) const;

  size_t runs() const;            // partition runs recorded
  size_t dropped_events() const;  // left out over max_events

 private:
  const TraceNames names_;
  const size_t max_events_;
  mutable std::mutex mu_;
  std::vector<dispatch::TraceEvent> events_;  // guarded by mu_
  size_t runs_ = 0;                           // guarded by mu_
  size_t dropped_ = 0;                        // guarded by mu_
};

}  // namespace baton::trace
