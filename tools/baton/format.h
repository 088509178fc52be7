// Human-readable numbers for CLI output.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"

namespace baton::cli {

inline std::string HumanCount(int64_t n) {
  double v = static_cast<double>(n);
  if (v >= 1e9) return absl::StrFormat("%.2fG", v / 1e9);
  if (v >= 1e6) return absl::StrFormat("%.2fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%d", n);
}

inline std::string HumanBytes(int64_t n) {
  double v = static_cast<double>(n);
  if (v >= 1 << 30) return absl::StrFormat("%.2f GiB", v / (1 << 30));
  if (v >= 1 << 20) return absl::StrFormat("%.2f MiB", v / (1 << 20));
  if (v >= 1 << 10) return absl::StrFormat("%.1f KiB", v / (1 << 10));
  return absl::StrFormat("%d B", n);
}

}  // namespace baton::cli
