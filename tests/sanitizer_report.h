// Finding a sanitizer report in a spawned process' output, so a test that
// starts `baton` (the CLI or an agent) fails when the child had one, even when
// the child's failure looks like something the test expects (a lost agent).
#pragma once

#include <string>

namespace baton::testing {

// The report in `output` from its first line on (at most `max` bytes), or ""
// when there is none.
inline std::string SanitizerReport(const std::string& output, size_t max = 6000) {
  size_t first = std::string::npos;
  for (const char* marker : {"ERROR: AddressSanitizer", "WARNING: ThreadSanitizer", "ERROR: LeakSanitizer",
                             "ERROR: ThreadSanitizer", "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer"}) {
    first = std::min(first, output.find(marker));
  }
  if (first == std::string::npos) return "";
  const size_t line = output.rfind('\n', first);
  return output.substr(line == std::string::npos ? 0 : line + 1, max);
}

}  // namespace baton::testing
