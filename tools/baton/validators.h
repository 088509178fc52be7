// Checks of numeric command-line options, with messages that name the bound
// (CLI11's own number checks print DBL_MAX as a 309-digit number and let NaN
// through).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace baton::cli {

// A finite number > 0 (or >= 0 with zero_ok).
inline CLI::Validator FiniteNumber(bool zero_ok) {
  return CLI::Validator(
      [zero_ok](std::string& text) -> std::string {
        double v = 0;
        if (!absl::SimpleAtod(text, &v) || !std::isfinite(v) || v < 0 || (!zero_ok && v == 0)) {
          return absl::StrCat("must be a finite number ", zero_ok ? ">= 0" : "> 0", ", got ", text);
        }
        return "";
      },
      zero_ok ? "NUMBER>=0" : "NUMBER>0");
}
inline const CLI::Validator kPositive = FiniteNumber(false);
inline const CLI::Validator kNonNegative = FiniteNumber(true);

// An integer in [lo, hi].
inline CLI::Validator IntIn(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        int64_t v = 0;
        if (!absl::SimpleAtoi(text, &v) || v < lo || v > hi) {
          return absl::StrCat("must be an integer in ", lo, "..", hi, ", got ", text);
        }
        return "";
      },
      absl::StrCat("INT in ", lo, "..", hi));
}

}  // namespace baton::cli
