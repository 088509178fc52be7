#include "baton/trace/chrome_trace.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace baton::trace {

namespace {
double Micros(Duration d) { return std::chrono::duration<double, std::micro>(d).count(); }
}  // namespace

void ChromeTrace::AddLane(uint32_t pid, const std::string& process_name, uint32_t tid, const std::string& lane_name) {
  events_.push_back(Event{'M', pid, tid, "process_name", 0, 0, {{"name", process_name}}});
  events_.push_back(Event{'M', pid, tid, "thread_name", 0, 0, {{"name", lane_name}}});
}

void ChromeTrace::AddSlice(uint32_t pid, uint32_t tid, const std::string& name, Time start, Time end,
                           std::vector<std::pair<std::string, std::string>> args) {
  events_.push_back(Event{'X', pid, tid, name, Micros(start.time_since_epoch()), Micros(end - start), std::move(args)});
  ++slices_;
}

void ChromeTrace::AddInstant(uint32_t pid, uint32_t tid, const std::string& name, Time time,
                             std::vector<std::pair<std::string, std::string>> args) {
  events_.push_back(Event{'i', pid, tid, name, Micros(time.time_since_epoch()), 0, std::move(args)});
}

void ChromeTrace::AddCounter(uint32_t pid, const std::string& name, Time time, double value) {
  events_.push_back(Event{'C', pid, 0, name, Micros(time.time_since_epoch()), 0, {}, value});
}

void ChromeTrace::AddMetadata(const std::string& key, const std::string& value) { metadata_.emplace_back(key, value); }

std::string ChromeTrace::ToJson() const {
  nlohmann::json events = nlohmann::json::array();
  for (const Event& e : events_) {
    nlohmann::json j = {{"ph", std::string(1, e.phase)}, {"pid", e.pid}, {"tid", e.tid}, {"name", e.name}};
    nlohmann::json args = nlohmann::json::object();
    if (e.phase == 'X') {
      j["ts"] = e.ts_us;
      j["dur"] = e.dur_us;
      j["cat"] = "partition";
    } else if (e.phase == 'i') {
      j["ts"] = e.ts_us;
      j["s"] = "t";
      j["cat"] = "queue";
    } else if (e.phase == 'C') {
      j["ts"] = e.ts_us;
      args[e.name] = e.value;
    }
    for (const auto& [k, v] : e.args) args[k] = v;
    j["args"] = std::move(args);
    events.push_back(std::move(j));
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  if (!metadata_.empty()) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    doc["metadata"] = std::move(meta);
  }
  return doc.dump();
}

absl::Status ChromeTrace::Write(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write the trace to '", path, "': ", std::strerror(errno), "; check the folder exists"));
  }
  out << ToJson();
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing the trace to '", path, "' failed (disk full?)"));
  return absl::OkStatus();
}

}  // namespace baton::trace
