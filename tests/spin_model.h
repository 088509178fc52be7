// A model that runs (practically) forever (zoo::SpinModel). Used by the
// execution timeout tests (engine, runtime, CLI, baselines).
#pragma once

#include <string>

#include "baton/zoo/zoo.h"

namespace baton::testing {

inline absl::StatusOr<std::string> SpinModelBytes() { return zoo::SpinModel(); }

}  // namespace baton::testing
