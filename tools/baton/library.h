// What the commands call: the library's composition root (app/) and the
// comparison harness (harness/), and the CLI's progress printer.
#pragma once

#include <chrono>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "baton/app/planning.h"
#include "baton/app/remote.h"
#include "baton/app/setup.h"
#include "baton/harness/run_session.h"

namespace baton::cli {

using namespace baton::app;      // NOLINT: the commands are thin front-ends over these
using namespace baton::harness;  // NOLINT

// Progress lines on stderr with the time since this call, or nothing when quiet.
inline Say StderrProgress(bool quiet) {
  if (quiet) return nullptr;
  const auto start = std::chrono::steady_clock::now();
  return [start](const std::string& line) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cerr << absl::StrFormat("[%5.1fs] ", s) << line << "\n";
  };
}

}  // namespace baton::cli
