// The report of one `baton run` as JSON (`baton run --json`; the fields are
// described in docs/runtime.md), and the label of each mode.
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "baton/harness/run_session.h"

namespace baton::harness {

// The whole report, serialized and indented by 2.
std::string RunReportJson(const RunReport& report);

// What kind of setup a mode is: "" for baton, "ORT defaults", "static
// placement" (whole_on_one_pu) or "tuned".
std::string ModeLabel(const ModeOutcome& mode);

}  // namespace baton::harness
