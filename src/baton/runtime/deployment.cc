#include "baton/runtime/deployment.h"

#include <bit>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/dispatch/from_plan.h"
#include "baton/graph/extract.h"

namespace baton::runtime {

const char* CutName(Cut policy) {
  switch (policy) {
    case Cut::kWhole: return "whole";
    case Cut::kCapability: return "capability";
    case Cut::kBalanced: return "balanced";
  }
  return "?";
}

absl::StatusOr<Cut> ParseCut(const std::string& name) {
  for (Cut p : {Cut::kWhole, Cut::kCapability, Cut::kBalanced}) {
    if (name == CutName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown cut '", name, "'; use one of: whole, capability, balanced"));
}

namespace {

constexpr size_t kMaxPusPerDevice = 64;  // capability masks are 64-bit

// The model's whole node list as one partition (placed nodes only: the plan
// builder drops free constants itself).
absl::StatusOr<partition::PartitionPlan> WholePlan(const graph::Model& model) {
  std::vector<NodeId> all;
  for (NodeId id : model.topo_order()) all.push_back(id);
  return partition::BuildPlan(model, {std::move(all)});
}

}  // namespace

absl::StatusOr<std::unique_ptr<Deployment>> Deployment::Build(const std::vector<DeployDevice>& devices,
                                                              std::vector<DeployModel> models,
                                                              const DeployProgress& progress) {
  std::unique_ptr<Deployment> d(new Deployment());
  absl::flat_hash_map<DeviceId, const DeployDevice*> device_by_id;
  for (const DeployDevice& dev : devices) {
    if (dev.pus.size() > kMaxPusPerDevice) {
      return absl::InvalidArgumentError(absl::StrCat("device '", dev.name, "' has ", dev.pus.size(),
                                                     " PUs; at most ", kMaxPusPerDevice, " are supported per device"));
    }
    for (const DeployPu& pu : dev.pus) {
      if (pu.executor == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("device '", dev.name, "' PU '", pu.name, "' has no executor"));
      }
    }
    device_by_id.emplace(dev.id, &dev);
  }

  for (DeployModel& m : models) {
    auto dit = device_by_id.find(m.device);
    if (dit == device_by_id.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", m.name, "' is placed on device ", m.device.value, ", which does not exist"));
    }
    const DeployDevice& dev = *dit->second;
    const graph::Model& model = *m.model;

    // Which PUs (by index in the device) may run this model at all.
    uint64_t allowed = 0;
    for (size_t u = 0; u < dev.pus.size(); ++u) {
      if (!m.fixed_pu || dev.pus[u].id == *m.fixed_pu) allowed |= uint64_t{1} << u;
    }
    if (allowed == 0) {
      return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "' is fixed to PU ", m.fixed_pu->value,
                                                     ", which device '", dev.name, "' does not have"));
    }
    std::vector<uint64_t> support(model.nodes().size(), 0);
    for (size_t u = 0; u < dev.pus.size(); ++u) {
      if (!(allowed >> u & 1)) continue;
      std::vector<bool> capable = dev.pus[u].executor->QueryCapability(model);
      for (size_t n = 0; n < capable.size() && n < support.size(); ++n) {
        if (capable[n]) support[n] |= uint64_t{1} << u;
      }
    }

    absl::StatusOr<partition::PartitionPlan> plan;
    // BuildPlan renumbers partitions in a topological order: map them back to groups by their nodes.
    std::vector<std::optional<size_t>> group_of(model.nodes().size());
    if (!m.groups.empty()) {
      if (!m.group_pus.empty() && m.group_pus.size() != m.groups.size()) {
        return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': ", m.groups.size(), " partitions but ",
                                                       m.group_pus.size(), " PU lists; give one list per partition"));
      }
      if (!m.group_shares.empty() && m.group_shares.size() != m.group_pus.size()) {
        return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': ", m.group_pus.size(),
                                                       " PU lists but ", m.group_shares.size(),
                                                       " share lists; give one per partition or none"));
      }
      plan = partition::BuildPlan(model, m.groups);
      for (size_t gi = 0; gi < m.groups.size(); ++gi) {
        for (NodeId n : m.groups[gi]) group_of[n.value] = gi;
      }
    } else {
      switch (m.cut) {
        case Cut::kWhole: plan = WholePlan(model); break;
        case Cut::kCapability: plan = partition::CutForPus(model, support, 1); break;
        case Cut::kBalanced: {
          const int k = m.stages > 0 ? m.stages : static_cast<int>(std::popcount(allowed));
          plan = partition::CutForPus(model, support, k);
          break;
        }
      }
    }
    if (!plan.ok()) {
      return absl::Status(plan.status().code(), absl::StrCat("model '", m.name, "': ", plan.status().message()));
    }

    DeployedModel out;
    out.id = m.id;
    out.name = m.name;
    out.model = m.model;
    std::vector<dispatch::Placement> placement;
    std::vector<std::vector<DeviceId>> fallback_of;  // per partition (plan order)
    for (const partition::Partition& p : plan->partitions) {
      uint64_t mask = allowed;
      for (NodeId n : p.nodes) mask &= support[n.value];
      std::optional<PuId> fixed_pu = m.fixed_pu;
      std::optional<size_t> gi;
      for (NodeId n : p.nodes) {
        if (!gi) gi = group_of[n.value];
      }
      if (!m.group_pus.empty() && gi && !m.group_pus[*gi].empty()) {
        uint64_t listed = 0;
        for (PuId want : m.group_pus[*gi]) {
          bool found = false;
          for (size_t u = 0; u < dev.pus.size(); ++u) {
            if (dev.pus[u].id != want) continue;
            found = true;
            if (!(mask >> u & 1)) {
              return absl::FailedPreconditionError(absl::StrCat("model '", m.name, "' partition '", p.name,
                                                                "' is planned on PU '", dev.pus[u].name,
                                                                "', which does not support all of its nodes"));
            }
            listed |= uint64_t{1} << u;
          }
          if (!found) {
            return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "' partition '", p.name,
                                                           "' is planned on PU ", want.value, ", which device '",
                                                           dev.name, "' does not have"));
          }
        }
        if (!m.other_pus) mask = listed;
        fixed_pu = m.group_pus[*gi][0];
      }
      std::vector<policy::PuShare> shares;
      if (!m.group_shares.empty() && gi && !m.group_shares[*gi].empty()) {
        const std::vector<double>& given = m.group_shares[*gi];
        if (given.size() != m.group_pus[*gi].size()) {
          return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "' partition '", p.name, "': ",
                                                         m.group_pus[*gi].size(), " PUs but ", given.size(),
                                                         " shares; give one share per PU"));
        }
        for (size_t i = 0; i < given.size(); ++i) shares.push_back(policy::PuShare{m.group_pus[*gi][i], given[i]});
      }
      out.shares.push_back(std::move(shares));
      std::vector<PuId> capable;
      if (mask == 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "model '", m.name, "' partition '", p.name, "' (cut ", CutName(m.cut),
            "): no single PU of device '", dev.name,
            "' supports all of its nodes; use policy.high_level: capability or balanced, which cut where op support "
            "changes"));
      }
      BATON_ASSIGN_OR_RETURN(graph::Submodel sub, graph::ExtractSubmodel(model, p.nodes, p.name));
      absl::flat_hash_map<std::string, const backend::PreparedPartition*> shared;
      for (size_t u = 0; u < dev.pus.size(); ++u) {
        if (!(mask >> u & 1)) continue;
        const DeployPu& pu = dev.pus[u];
        const backend::PreparedPartition* runner = nullptr;
        if (auto it = shared.find(pu.share_key); !pu.share_key.empty() && it != shared.end()) {
          runner = it->second;
        } else {
          absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> prepared = pu.executor->Prepare(model, sub);
          if (!prepared.ok()) {
            return absl::Status(prepared.status().code(),
                                absl::StrCat("model '", m.name, "' partition '", p.name, "' on PU '", pu.name,
                                             "': ", prepared.status().message()));
          }
          runner = prepared->get();
          d->prepared_.push_back(std::move(*prepared));
          if (!pu.share_key.empty()) shared.emplace(pu.share_key, runner);
        }
        d->runners_.Set(m.id, p.id, pu.id, runner);
        capable.push_back(pu.id);
        if (progress) progress(m.name, p.name, pu.name);
      }
      out.capable_pus.push_back(std::move(capable));
      placement.push_back(dispatch::Placement{m.device, fixed_pu});

      // Fallback devices: the partition is also prepared on every PU of them
      // that supports all its nodes (shared where PUs share sessions), so the
      // HL can re-route it when its device is lost. A device where no PU can
      // run it, or where preparing fails, is not a fallback; warnings() says
      // which and why.
      std::vector<DeviceId> fallbacks;
      for (DeviceId fd : m.fallback_devices) {
        auto fit = device_by_id.find(fd);
        if (fd == m.device || fit == device_by_id.end()) continue;
        const DeployDevice& other = *fit->second;
        absl::flat_hash_map<std::string, const backend::PreparedPartition*> other_shared;
        bool any = false;
        std::vector<std::string> failures;
        for (const DeployPu& pu : other.pus) {
          std::vector<bool> can = pu.executor->QueryCapability(model);
          bool all = true;
          for (NodeId n : p.nodes) all = all && n.value < can.size() && can[n.value];
          if (!all) continue;
          const backend::PreparedPartition* runner = nullptr;
          if (auto it = other_shared.find(pu.share_key); !pu.share_key.empty() && it != other_shared.end()) {
            runner = it->second;
          } else {
            absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> prepared = pu.executor->Prepare(model, sub);
            if (!prepared.ok()) {
              failures.push_back(absl::StrCat("preparing it on PU '", pu.name, "' failed: ", prepared.status().message()));
              continue;
            }
            runner = prepared->get();
            d->prepared_.push_back(std::move(*prepared));
            if (!pu.share_key.empty()) other_shared.emplace(pu.share_key, runner);
          }
          d->runners_.Set(m.id, p.id, pu.id, runner);
          any = true;
        }
        if (any) fallbacks.push_back(fd);
        if (!any && failures.empty()) failures.push_back("none of its PUs supports all of the partition's nodes");
        for (const std::string& why : failures) {
          d->warnings_.push_back(absl::StrCat("model '", m.name, "' partition '", p.name, "': fallback device '",
                                              other.name, "' ", any ? "keeps its other PUs; " : "is not used; ", why));
        }
      }
      fallback_of.push_back(std::move(fallbacks));
    }
    BATON_ASSIGN_OR_RETURN(out.graph, dispatch::ModelGraphFromPlan(*plan, placement));
    for (size_t k = 0; k < out.graph.partitions.size() && k < fallback_of.size(); ++k) {
      out.graph.partitions[k].fallback_devices = fallback_of[k];
    }
    out.graph.name = m.name;
    out.plan = std::move(*plan);
    d->models_.push_back(std::move(out));
  }
  return d;
}

}  // namespace baton::runtime
