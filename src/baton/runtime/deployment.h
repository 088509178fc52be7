// Deployment: from models and PUs to what the runtime runs. For each model it
// asks every PU of the model's device which nodes it can run (capability),
// cuts the model with the high-level policy, extracts each partition as a
// standalone ONNX model, and prepares it on every PU that can run all of its
// nodes. The result is a RunnerTable and one ModelGraph per model.
//
// A model comes with explicit partitions (a plan's node groups: what baton's
// high-level policies, plan/high_level_policy.h, decide), or with a Cut, the
// mechanism tests, benchmarks and the whole-model baselines use:
//   whole       no cut: each model is one partition (it runs only on PUs that
//               support every node; an error if there is none)
//   capability  cut only where the set of PUs that support a node changes
//   balanced    the capability cuts plus equal cuts into `stages` partitions
//               (0 = as many as the device has PUs) by estimated cost (FLOPs;
//               see partition::CostOf), not by PU speed
//
// Weights are not duplicated per PU where sessions can be shared: PUs with the
// same non-empty `share_key` (1-thread CPU PUs: the session has no thread pool
// of its own, so it runs on whichever PU thread calls it) share one prepared
// partition, so its weights are in memory once however many such PUs exist.
//
// Thread-safety: Build is a pure function of its inputs; the built Deployment
// is read-only.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/dispatch/model_graph.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "baton/policy/split.h"
#include "baton/runtime/runtime.h"

namespace baton::runtime {

enum class Cut { kWhole, kCapability, kBalanced };
const char* CutName(Cut policy);
// "whole" | "capability" | "balanced"; InvalidArgument listing them otherwise.
// (A Cut is a mechanism, not a policy: see above.)
absl::StatusOr<Cut> ParseCut(const std::string& name);

struct DeployPu {
  PuId id;  // unique over all devices
  std::string name;
  const backend::Executor* executor = nullptr;  // borrowed; outlives the Deployment
  std::string share_key;                        // see above; "" = never shared
};

struct DeployDevice {
  DeviceId id;
  std::string name;
  std::vector<DeployPu> pus;
};

struct DeployModel {
  ModelId id;
  std::string name;
  std::shared_ptr<const graph::Model> model;
  Cut cut = Cut::kBalanced;
  int stages = 0;                // balanced: partitions; 0 = the device's PU count
  DeviceId device;               // every partition of the model runs on this device
  std::optional<PuId> fixed_pu;  // pin every partition to this PU (and prepare only there)
  // A plan's partitions (from `baton plan`): explicit node groups, and per
  // group the PUs it may run on, preferred first (empty = every PU of the
  // device that supports it). The preferred PU becomes the partition's
  // fixed_pu (used by the `fixed` low-level policy). When set, `cut`
  // and `stages` are ignored.
  std::vector<std::vector<NodeId>> groups;
  std::vector<std::vector<PuId>> group_pus;
  // Per group (optional; empty = none): the plan's share of the group's runs
  // for each PU of group_pus, in the same order (the `share` low-level policy).
  std::vector<std::vector<double>> group_shares = {};
  // With group_pus: also prepare each group on the device's other PUs that
  // support it, so that an online low-level policy may move it (the listed
  // first PU stays its fixed_pu, which `fixed` follows).
  bool other_pus = false;
  // Devices that also get every partition this model has (on their PUs that
  // support it), as fallbacks when `device` is lost (a remote agent).
  std::vector<DeviceId> fallback_devices = {};
};

struct DeployedModel {
  ModelId id;
  std::string name;
  std::shared_ptr<const graph::Model> model;
  partition::PartitionPlan plan;
  dispatch::ModelGraph graph;
  // Per partition (plan order): the PUs it was prepared on.
  std::vector<std::vector<PuId>> capable_pus;
  // Per partition (plan order): the plan's split of its runs (group_shares);
  // empty for a partition without one.
  std::vector<std::vector<policy::PuShare>> shares = {};
};

// Called after each prepared partition: (model, partition, pu) names.
using DeployProgress = std::function<void(const std::string& model, const std::string& partition,
                                          const std::string& pu)>;

class Deployment {
 public:
  // Errors name the model and partition: an unknown device or fixed PU, a
  // node no PU supports, a `whole` model no single PU can run, extraction or
  // session creation failures.
  static absl::StatusOr<std::unique_ptr<Deployment>> Build(const std::vector<DeployDevice>& devices,
                                                           std::vector<DeployModel> models,
                                                           const DeployProgress& progress = nullptr);

  const RunnerTable& runners() const { return runners_; }
  const std::vector<DeployedModel>& models() const { return models_; }
  // Prepared partitions (sessions) created, after sharing.
  size_t prepared_count() const { return prepared_.size(); }
  // Fallback devices a partition lost, and why (no PU of the device supports
  // all of its nodes, or preparing it there failed); the build succeeds
  // without them. Owners print these: a missing fallback must not be silent.
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  Deployment() = default;
  std::vector<std::unique_ptr<backend::PreparedPartition>> prepared_;
  RunnerTable runners_;
  std::vector<DeployedModel> models_;
  std::vector<std::string> warnings_;
};

}  // namespace baton::runtime
