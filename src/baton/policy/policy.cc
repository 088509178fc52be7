#include "baton/policy/policy.h"

#include <functional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/policy/edf.h"
#include "baton/policy/fifo.h"
#include "baton/policy/fixed.h"
#include "baton/policy/heft.h"
#include "baton/policy/lsf.h"
#include "baton/policy/placement.h"
#include "baton/policy/priority.h"
#include "baton/policy/round_robin.h"
#include "baton/policy/sel.h"
#include "baton/policy/share.h"

namespace baton::policy {
namespace {

using Factory = std::function<std::unique_ptr<LowLevelPolicy>(const PolicyOptions&)>;

struct NamedFactory {
  const char* name;
  Factory make;
};

// The one list of low-level policies; LowLevelPolicyNames() and the error
// message are derived from it.
const std::vector<NamedFactory>& Factories() {
  static const auto* const kFactories = new std::vector<NamedFactory>{
      {"fifo", [](const PolicyOptions&) { return std::make_unique<FifoPolicy>(); }},
      {"round_robin", [](const PolicyOptions&) { return std::make_unique<RoundRobinPolicy>(); }},
      {"fixed", [](const PolicyOptions&) { return std::make_unique<FixedPolicy>(); }},
      {"sel", [](const PolicyOptions&) { return std::make_unique<ShortestExpectedLatencyPolicy>(); }},
      {"share", [](const PolicyOptions& options) { return std::make_unique<SharePolicy>(options.split); }},
      {"heft", [](const PolicyOptions&) { return std::make_unique<HeftPolicy>(); }},
      {"lsf", [](const PolicyOptions&) { return std::make_unique<LeastSlackFirstPolicy>(); }},
      {"edf", [](const PolicyOptions&) { return std::make_unique<EarliestDeadlineFirstPolicy>(); }},
      {"priority",
       [](const PolicyOptions& options) {
         return std::make_unique<PriorityPolicy>(options.priority_classes);
       }},
  };
  return *kFactories;
}

}  // namespace

std::string ToString(const Decision& decision) {
  switch (decision.kind) {
    case Decision::Kind::kRun:
      return absl::StrCat("run ", decision.item.value, " on pu ", decision.pu.value);
    case Decision::Kind::kDrop:
      return absl::StrCat("drop ", decision.item.value);
  }
  return absl::StrCat("decision of unknown kind ", static_cast<int>(decision.kind), " for item ",
                      decision.item.value);
}

std::ostream& operator<<(std::ostream& os, const Decision& decision) { return os << ToString(decision); }

absl::Status PolicyOptions::Validate() const {
  if (priority_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy option priority_classes is ", priority_classes, "; it must be at least 1"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDecisions(const Snapshot& snapshot, std::span<const Decision> decisions) {
  if (snapshot.latency == nullptr) return absl::InternalError("snapshot has no latency model");
  absl::flat_hash_map<AssignmentId, const WorkItem*> items;
  for (const WorkItem& item : snapshot.ready) items[item.id] = &item;
  absl::flat_hash_map<PuId, const PuState*> pus;
  for (const PuState& pu : snapshot.pus) pus[pu.id] = &pu;
  auto broken = [](const Decision& decision, const auto&... why) {
    return absl::InternalError(absl::StrCat("policy decided '", ToString(decision), "' but ", why...));
  };

  absl::flat_hash_set<AssignmentId> decided_items;
  absl::flat_hash_set<PuId> used_pus;
  for (const Decision& decision : decisions) {
    auto item_it = items.find(decision.item);
    if (item_it == items.end()) return broken(decision, "item ", decision.item.value, " is not ready");
    if (!decided_items.insert(decision.item).second) {
      return broken(decision, "item ", decision.item.value, " was already decided in this call");
    }
    const WorkItem& item = *item_it->second;
    switch (decision.kind) {
      case Decision::Kind::kRun: {
        auto pu_it = pus.find(decision.pu);
        if (pu_it == pus.end()) return broken(decision, "pu ", decision.pu.value, " is not in the snapshot");
        if (pu_it->second->busy) return broken(decision, "pu ", decision.pu.value, " is busy");
        if (!used_pus.insert(decision.pu).second) {
          return broken(decision, "pu ", decision.pu.value, " was already given an item in this call");
        }
        if (!snapshot.latency->Expected(item.model, item.partition, decision.pu)) {
          return broken(decision, "pu ", decision.pu.value, " cannot run model ", item.model.value,
                        " partition ", item.partition.value);
        }
        break;
      }
      case Decision::Kind::kDrop:
        if (!item.deadline) return broken(decision, "item ", decision.item.value, " has no deadline");
        if (!BestLatency(snapshot, item)) {
          return broken(decision, "no pu can run item ", decision.item.value,
                        "; unrunnable items are the core's to report");
        }
        break;
      default:
        return broken(decision, "its kind is unknown");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LowLevelPolicy>> MakeLowLevelPolicy(const std::string& name,
                                                                   const PolicyOptions& options) {
  BATON_RETURN_IF_ERROR(options.Validate());
  for (const NamedFactory& factory : Factories()) {
    if (name == factory.name) return factory.make(options);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown low-level policy '", name, "'; valid names: ", absl::StrJoin(LowLevelPolicyNames(), ", ")));
}

std::vector<std::string> LowLevelPolicyNames() {
  std::vector<std::string> names;
  for (const NamedFactory& factory : Factories()) names.push_back(factory.name);
  return names;
}

}  // namespace baton::policy
