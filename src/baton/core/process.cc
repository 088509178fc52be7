#include "baton/core/process.h"

#include <fstream>
#include <sstream>
#include <string>

namespace baton {

std::optional<double> PeakRssMb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    double kib = 0;
    std::string unit;
    if (fields >> kib >> unit && unit == "kB" && kib >= 0) return kib / 1024.0;
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace baton
