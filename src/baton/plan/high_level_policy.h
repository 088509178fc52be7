// baton's high-level policies: the one list of their names, objectives and
// needs. Each name has one implementation, plan::MakePlacement over a
// planning problem (plan/policies.h); the problem's costs come from a
// measured profile or, for the policies that do not need one, from
// estimates (FLOPs per PU speed) when there is no profile.
//
//   whole       no cut: each model one partition, on every PU that can run all of it
//   capability  one partition per capability unit, on every PU that can run it
//   balanced    per model, contiguous stages on distinct PUs, smallest largest PU load
//   lp          fractional throughput LP over atoms, rounded (needs a profile)
//   search      local search from the best of the others (needs a profile)
//
// Header-only, so that the config's validation (config/) shares the list
// without linking the planner. Thread-safety: constants.
#pragma once

#include <string_view>

namespace baton::plan {

enum class HighLevelPolicy { kWhole, kCapability, kBalanced, kLp, kSearch };

struct HighLevelPolicyInfo {
  HighLevelPolicy policy;
  const char* name;
  const char* objective;  // in words, for plans and reports
  bool needs_profile;     // false: estimated costs will do without a profile
};

inline constexpr HighLevelPolicyInfo kHighLevelPolicies[] = {
    {HighLevelPolicy::kWhole, "whole", "none (each model whole, on every PU that can run it)", false},
    {HighLevelPolicy::kCapability, "capability", "none (one partition per capability unit, on every PU that can run it)",
     false},
    {HighLevelPolicy::kBalanced, "balanced", "pipeline throughput (smallest largest PU load, stage by stage)", false},
    {HighLevelPolicy::kLp, "lp", "throughput (fractional LP over atoms, rounded to each atom's main PU)", true},
    {HighLevelPolicy::kSearch, "search", "predicted throughput, then mean latency (local search)", true},
};

inline const HighLevelPolicyInfo* FindHighLevelPolicy(std::string_view name) {
  for (const HighLevelPolicyInfo& info : kHighLevelPolicies) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

inline const HighLevelPolicyInfo& InfoOf(HighLevelPolicy policy) {
  for (const HighLevelPolicyInfo& info : kHighLevelPolicies) {
    if (info.policy == policy) return info;
  }
  return kHighLevelPolicies[0];  // unreachable for a valid enum value
}

}  // namespace baton::plan
