// Reads a field of /proc/PID/task/TID/stat for the thread named `name` (its
// comm) of this process or another, e.g. the user CPU time in clock ticks
// (field 14), the nice value (field 19) or the scheduling policy (field 41;
// SCHED_BATCH is 3). Header-only test helper.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>

namespace baton::testing {

inline constexpr int kStatUserTicks = 14;
inline constexpr int kStatNice = 19;
inline constexpr int kStatPolicy = 41;

// nullopt if no thread has that name (or it ended while being read).
// `process`: "self", or another process's pid.
inline std::optional<long> ThreadStatField(const std::string& name, int field, const std::string& process = "self") {
  // Without exceptions: a thread that ends while the folder is read is skipped.
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + process + "/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::filesystem::directory_entry& task = *it;
    std::ifstream comm_file(task.path() / "comm");
    std::string comm;
    std::getline(comm_file, comm);
    if (comm != name) continue;
    std::ifstream stat_file(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    const size_t comm_end = stat.rfind(')');
    if (comm_end == std::string::npos || comm_end + 2 > stat.size()) continue;  // it ended meanwhile
    std::istringstream after(stat.substr(comm_end + 2));  // field 3 onwards
    std::string value;
    for (int i = 3; i <= field && after >> value; ++i) {
      if (i == field) return std::stol(value);
    }
  }
  return std::nullopt;
}

}  // namespace baton::testing
