// Chrome / Perfetto trace files (the JSON "Trace Event Format"): processes
// and named thread lanes, complete ("X") slices, instants ("i") and counters
// ("C"). TraceObserver (trace_observer.h) fills one from the dispatcher's
// events. Open the file at ui.perfetto.dev or chrome://tracing.
//
// Example:
//   ChromeTrace trace;
//   trace.AddLane(0, "local", 3, "cpu0");
//   trace.AddSlice(0, 3, "resnet.p1", start, end, {{"request", "17"}});
//   BATON_RETURN_IF_ERROR(trace.Write("run.trace.json"));
//
// Thread-safety: not synchronised; fill it from one thread.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/status.h"
#include "baton/core/time.h"

namespace baton::trace {

class ChromeTrace {
 public:
  // Names process `pid` and its lane `tid` (metadata events).
  void AddLane(uint32_t pid, const std::string& process_name, uint32_t tid, const std::string& lane_name);
  // A slice from `start` to `end` (times on any common clock; written in µs).
  void AddSlice(uint32_t pid, uint32_t tid, const std::string& name, Time start, Time end,
                std::vector<std::pair<std::string, std::string>> args = {});
  // An instant ("i", thread scope) at `time`.
  void AddInstant(uint32_t pid, uint32_t tid, const std::string& name, Time time,
                  std::vector<std::pair<std::string, std::string>> args = {});
  // A counter track ("C") of process `pid` named `name`: `value` from `time` on.
  void AddCounter(uint32_t pid, const std::string& name, Time time, double value);
  // A top-level metadata entry of the trace file (e.g. what was left out).
  void AddMetadata(const std::string& key, const std::string& value);
  size_t slices() const { return slices_; }
  // The whole trace as JSON text.
  std::string ToJson() const;
  // Writes ToJson() to `path`; an error naming the path when it cannot.
  absl::Status Write(const std::string& path) const;

 private:
  struct Event {
    char phase;  // 'M' metadata, 'X' complete, 'i' instant, 'C' counter
    uint32_t pid = 0;
    uint32_t tid = 0;
    std::string name;
    double ts_us = 0;
    double dur_us = 0;
    std::vector<std::pair<std::string, std::string>> args;
    double value = 0;  // 'C': the counter's value
  };
  std::vector<Event> events_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  size_t slices_ = 0;
};

}  // namespace baton::trace
