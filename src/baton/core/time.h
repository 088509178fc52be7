// Time in baton: every core and policy works on `Time`, an absolute point on the
// clock of whichever shell drives it (real steady_clock time in the threaded
// runtime, virtual time in the simulator), and `Duration`. Nothing outside a
// shell reads a clock.
// Thread-safety: value types.
#pragma once

#include <chrono>

namespace baton {

using Duration = std::chrono::nanoseconds;

// The clock of whichever shell drives the cores; a tag only (it has no now()).
struct ShellClock {
  using rep = Duration::rep;
  using period = Duration::period;
  using duration = Duration;
  using time_point = std::chrono::time_point<ShellClock, Duration>;
  static constexpr bool is_steady = true;
};

// Nanoseconds since the shell's epoch.
using Time = ShellClock::time_point;

inline constexpr Time kTimeZero{};

inline double ToMillis(Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
inline Duration FromMillis(double ms) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(ms));
}

}  // namespace baton
