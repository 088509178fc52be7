// High-level policies (plan/high_level_policy.h has the list): from a
// planning Problem (profile/problem.h) to a Placement (each model's atoms
// grouped into partitions, each with the PUs it may run on). Pure: a policy
// reads the problem and returns decisions; it never measures, sleeps or reads
// a clock. Each states its objective.
//
//   whole       objective: none (no cut). Each model is one partition, listed
//               on every PU that can run all of it, fastest first.
//   capability  objective: none (the baseline cut). One partition per
//               capability unit, listed on every PU that can run it, fastest
//               first.
//   balanced    objective: throughput of a pipeline. Per model (heaviest
//               first), dynamic programming over the atom order: cut into at
//               most `max_stages` contiguous stages, each on a distinct PU,
//               minimizing the largest (PU load already placed + stage time x
//               model weight); contiguous ranges of a topological order are
//               convex, so every stage is a valid partition. State: (atoms
//               done, set of PUs used) -> 2^P x n states, P <= 16.
//   lp          objective: throughput. Solve the fractional throughput LP
//               over atoms (profile/bounds.h), give each atom the PU with its
//               largest share, merge consecutive atoms on the same PU into one
//               partition, and list as further PUs of a partition the other
//               PUs that carry at least 10 % of its atoms' work in the LP.
//   search      objective: throughput first, then mean latency. A bounded
//               local search (deterministic, `iterations` moves) from the best
//               of the other three: move one atom boundary, move a partition
//               to another PU, add or drop a secondary PU; keep a move when
//               Predict improves (throughput up by > 0.1 %, or equal and
//               latency down).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "baton/core/status.h"
#include "baton/plan/high_level_policy.h"
#include "baton/profile/problem.h"

namespace baton::plan {

const char* HighLevelPolicyName(HighLevelPolicy policy);
// A name of kHighLevelPolicies; InvalidArgument listing them otherwise.
absl::StatusOr<HighLevelPolicy> ParseHighLevelPolicy(const std::string& name);
// The objective each policy optimizes, in words (for plans and reports).
const char* HighLevelPolicyObjective(HighLevelPolicy policy);

struct PlanOptions {
  int max_stages = 0;      // balanced: stages per model; 0 = number of PUs
  int iterations = 2000;   // search: moves tried
  uint64_t seed = 1;       // search: move order
  // balanced: per model (problem order), its own stage limit (0 or absent = max_stages).
  std::vector<int> model_stages = {};
};

// The priority each model's requests get when a plan is carried out
// (larger first; the `share` low-level policy places higher-priority items
// first). When `configured` (one per model of the problem, the config's
// `priority`) holds any non-zero value, it is returned as is: the user
// decided. Otherwise paced streams get 1 and saturating ones 0: a closed
// loop with a pause, or periodic or Poisson arrivals (Demand kClosed,
// kRate), before a closed loop without a pause (kSaturating). Why: a paced
// stream's rate is concurrency / (pause + latency), so its time queued behind
// a saturating job's work is throughput lost, while a saturating job, with
// requests always waiting, loses only the PU time the stream takes, which
// the plan counts already (docs/planning.md). InvalidArgument when the sizes
// disagree.
absl::StatusOr<std::vector<int>> PlannedPriorities(const profile::Problem& problem, const std::vector<int>& configured);

// Errors: InvalidArgument naming the model and atom when an atom can run on
// no PU, or when the options are out of range.
absl::StatusOr<profile::Placement> MakePlacement(HighLevelPolicy policy, const profile::Problem& problem,
                                                 const PlanOptions& options = {});

}  // namespace baton::plan
