// Plan files: what `baton plan` writes and `baton run --plan` carries out.
// A plan is a scheduling sequence in the paper's sense: each model's
// partitions (by node names), the PUs each may run on (preferred first; the
// `fixed` low-level policy runs it there) and the share of its runs each of
// them gets (the `share` low-level policy follows it), per PU the partitions it serves in
// priority order, and what the planner predicts (throughput, latency, PU
// load) next to the lower bounds.
//
// Format: JSON meant for people too (see docs/plans.md); node lists are
// written one partition per line.
//
// Thread-safety: value types.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/core/status.h"

namespace baton::plan {

struct PlanPartition {
  std::vector<std::string> nodes;  // node names, topological order
  std::vector<std::string> pus;    // PU names, preferred first
  double predicted_ms = 0;         // run time on pus[0]
  // Per entry of `pus`: the fraction of this partition's runs the planner's
  // LP puts there (sums to 1); the `share` low-level policy follows it.
  // Empty when the plan gives no split (plans written before it existed, or
  // a model the prediction serves at rate 0).
  std::vector<double> shares = {};

  friend bool operator==(const PlanPartition&, const PlanPartition&) = default;
};

struct PlanModel {
  std::string name;
  std::string content_hash;  // of the model it was planned for (profile::HashHex)
  std::vector<PlanPartition> partitions;
  double predicted_rps = 0;
  double predicted_latency_ms = 0;
  double latency_bound_ms = 0;
  // The priority its requests get when the plan is carried out (larger
  // first; plan::PlannedPriorities). Absent in plans written before it
  // existed: the config's `priority` then applies.
  std::optional<int> priority = {};
  // For a model with max_batch > 1: the batch size the planner chose (1 =
  // no batching; app::ChooseBatching); `baton run --plan` follows it, up to
  // the config's max_batch. Absent: decided from the profile at run time.
  std::optional<int> max_batch = {};

  friend bool operator==(const PlanModel&, const PlanModel&) = default;
};

struct PlanPu {
  std::string name;
  std::string kind_key;  // profile kind key: a plan made for other PU settings is refused
  std::string device;
  double predicted_busy = 0;       // fraction of time
  std::vector<std::string> order;  // "model.pI" it may run, highest priority first

  friend bool operator==(const PlanPu&, const PlanPu&) = default;
};

struct PlanFile {
  static constexpr int kVersion = 1;
  std::string policy;     // the high-level policy that made it
  std::string objective;  // what that policy optimizes
  std::string profile;    // the profile it was made from (path, for people)
  std::vector<PlanPu> pus;
  std::vector<PlanModel> models;
  double predicted_throughput_rps = 0;
  double bound_throughput_rps = 0;

  std::string ToJson() const;
  // InvalidArgument naming the field (`source` names the text).
  static absl::StatusOr<PlanFile> Parse(std::string_view json, const std::string& source);
  // Largest plan file Load reads (a plan of hundreds of models is far smaller).
  static constexpr size_t kMaxFileBytes = size_t{64} << 20;
  static absl::StatusOr<PlanFile> Load(const std::string& path);
  absl::Status Save(const std::string& path) const;

  friend bool operator==(const PlanFile&, const PlanFile&) = default;
};

}  // namespace baton::plan
