#include "baton/app/planning.h"

#include <algorithm>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/time.h"

namespace baton::app {

namespace fs = std::filesystem;

namespace {

profile::Demand DemandOf(const config::ArrivalConfig& a) {
  profile::Demand d;
  switch (a.mode) {
    case config::ArrivalConfig::Mode::kPeriodic:
      d.kind = profile::Demand::Kind::kRate;
      d.rate = a.fps;
      break;
    case config::ArrivalConfig::Mode::kPoisson:
      d.kind = profile::Demand::Kind::kRate;
      d.rate = a.rate;
      break;
    case config::ArrivalConfig::Mode::kClosed:
      d.kind = a.think_ms > 0 ? profile::Demand::Kind::kClosed : profile::Demand::Kind::kSaturating;
      d.concurrency = a.concurrency;
      d.think_ms = a.think_ms;
      break;
  }
  return d;
}

// What a problem model takes from its cut and its config besides costs.
void SetWorkload(profile::ProblemModel& m, const profiler::ModelCut& cut, const config::ModelConfig& config) {
  m.cut_bytes = cut.atoms.cut_bytes;
  for (const partition::AtomEdge& e : cut.atoms.edges) m.edges.push_back(profile::AtomEdge{e.from, e.to, e.bytes});
  m.demand = DemandOf(config.arrival);
  m.weight = m.demand.kind == profile::Demand::Kind::kSaturating ? m.demand.concurrency : 1;
  m.deadline_ms = config.deadline_ms;
}

profiler::ProfilerOptions CutOptions(const profile::Profile& profile) {
  profiler::ProfilerOptions o;
  o.budget = profile.budget;
  o.min_atoms = profile.min_atoms;
  return o;
}

}  // namespace

std::vector<profile::BatchChoice> ChooseBatching(const std::vector<LoadedModel>& models,
                                                 const profile::Profile* profile) {
  std::vector<profile::BatchChoice> out;
  for (const LoadedModel& lm : models) {
    const config::ModelConfig& mc = *lm.config;
    if (mc.max_batch <= 1) {
      out.push_back(profile::BatchChoice{1, 1, "max_batch is 1"});
    } else if (mc.batching == "on") {
      out.push_back(profile::BatchChoice{mc.max_batch, 1, "batching: on"});
    } else if (profile == nullptr) {
      out.push_back(profile::BatchChoice{1, 1, "no profile: off"});
    } else {
      const profile::ProfiledModel* pm = profile->FindModel(mc.name);
      out.push_back(pm != nullptr ? profile::ChooseBatch(*pm, mc.max_batch)
                                  : profile::BatchChoice{1, 1, "not in the profile: off"});
    }
  }
  return out;
}

absl::StatusOr<Planning> BuildPlanning(const config::RunConfig& config, const std::vector<LoadedModel>& models,
                                       const PuSet& pus, const profile::Profile& profile, const std::string& source,
                                       const std::vector<DeviceId>& device_of) {
  auto device_of_model = [&](size_t i) { return i < device_of.size() ? device_of[i] : DeviceOfModel(config, i); };
  Planning out;
  const profiler::ProfilerOptions cut_options = CutOptions(profile);
  std::vector<profile::ExpectedModel> expected;
  for (size_t i = 0; i < models.size(); ++i) {
    const LoadedModel& lm = models[i];
    absl::StatusOr<profiler::ModelCut> cut = profiler::CutModel(*lm.model, pus.profiler_pus, cut_options);
    if (!cut.ok()) {
      return absl::Status(cut.status().code(), absl::StrCat("model '", lm.config->name, "': ", cut.status().message()));
    }
    profile::ExpectedModel e{lm.config->name, lm.content_hash, cut->atoms_key, {}};
    const DeviceId dev = device_of_model(i);
    for (size_t u = 0; u < pus.profiler_pus.size(); ++u) {
      if (pus.device_of[u] == dev.value) e.pu_kinds.emplace(pus.profiler_pus[u].kind_key, pus.profiler_pus[u].name);
    }
    expected.push_back(std::move(e));
    out.cuts.push_back(std::move(*cut));
  }
  BATON_RETURN_IF_ERROR(profile::CheckFresh(profile, source, expected));

  profile::Problem& p = out.problem;
  for (size_t u = 0; u < pus.profiler_pus.size(); ++u) {
    p.pus.push_back(profile::ProblemPu{pus.profiler_pus[u].name, pus.profiler_pus[u].kind_key, pus.device_of[u]});
  }
  p.same_device = profile.same_device;
  p.cross_device = profile.cross_device;
  p.partition_overhead_ms = profile.partition_overhead_ms;
  // A partition run crosses two thread handovers (to its PU and back).
  p.dispatch_ms = 2 * profile.same_device.fixed_ms;
  const size_t n_pus = pus.profiler_pus.size();
  for (size_t i = 0; i < models.size(); ++i) {
    const LoadedModel& lm = models[i];
    const profiler::ModelCut& cut = out.cuts[i];
    const profile::ProfiledModel& pm = *profile.FindModel(lm.config->name);
    const DeviceId dev = device_of_model(i);
    profile::ProblemModel m;
    m.name = lm.config->name;
    // Per-PU costs of a profiled range: nullopt where the PU cannot run all of it.
    auto costs = [&](const profile::ProfiledRange& r, uint64_t support, bool& missing) {
      profile::PuCosts c(n_pus);
      for (size_t u = 0; u < n_pus; ++u) {
        if (!(support >> u & 1) || pus.device_of[u] != dev.value) continue;
        auto it = r.latency.find(pus.profiler_pus[u].kind_key);
        if (it == r.latency.end()) {
          missing = true;
          continue;
        }
        c[u] = it->second.median_ms;
      }
      return c;
    };
    for (int a = 0; a < static_cast<int>(cut.atoms.atoms.size()); ++a) {
      const profile::ProfiledRange* r = pm.Find(a, a + 1);
      bool missing = r == nullptr;
      profile::PuCosts c = r ? costs(*r, cut.atoms.atoms[static_cast<size_t>(a)].support, missing) : profile::PuCosts(n_pus);
      if (missing) {
        return absl::FailedPreconditionError(absl::StrCat("profile '", source, "': model '", m.name, "' atom ", a,
                                                          " lacks measurements (the profile is incomplete); run "
                                                          "`baton profile` again to finish it"));
      }
      m.atom_ms.push_back(std::move(c));
      m.unit_of_atom.push_back(cut.atoms.atoms[static_cast<size_t>(a)].unit);
    }
    for (const partition::Candidate& c : cut.candidates) {
      if (c.last - c.first < 2) continue;
      const profile::ProfiledRange* r = pm.Find(c.first, c.last);
      if (r == nullptr) continue;
      bool missing = false;
      profile::PuCosts pc = costs(*r, c.support, missing);
      if (!missing) m.range_ms[{c.first, c.last}] = std::move(pc);
    }
    SetWorkload(m, cut, *lm.config);
    p.models.push_back(std::move(m));
  }
  BATON_ASSIGN_OR_RETURN(out.bounds, profile::ComputeBounds(p));
  out.planned = profile::Subadditive(p);
  out.batching = ChooseBatching(models, &profile);
  return out;
}

absl::StatusOr<Planning> BuildEstimatedPlanning(const config::RunConfig& config, const std::vector<LoadedModel>& models,
                                                const PuSet& pus, const std::vector<DeviceId>& device_of) {
  // Each PU's speed in 1-thread CPU equivalents, in PuId order.
  std::vector<double> speed;
  for (const config::DeviceConfig& d : config.devices) {
    for (const config::PuConfig& pu : d.pus) speed.push_back(pu.kind == "cpu" ? pu.threads : pu.speed);
  }
  const size_t n_pus = pus.profiler_pus.size();
  if (speed.size() != n_pus) {
    return absl::InternalError(absl::StrCat("estimated planning: ", speed.size(), " configured PUs, ", n_pus, " built"));
  }
  Planning out;
  profile::Problem& p = out.problem;
  for (size_t u = 0; u < n_pus; ++u) {
    p.pus.push_back(profile::ProblemPu{pus.profiler_pus[u].name, pus.profiler_pus[u].kind_key, pus.device_of[u]});
  }
  const profiler::ProfilerOptions cut_options = QuickProfilerOptions(n_pus);
  for (size_t i = 0; i < models.size(); ++i) {
    const LoadedModel& lm = models[i];
    absl::StatusOr<profiler::ModelCut> cut = profiler::CutModel(*lm.model, pus.profiler_pus, cut_options);
    if (!cut.ok()) {
      return absl::Status(cut.status().code(), absl::StrCat("model '", lm.config->name, "': ", cut.status().message()));
    }
    const DeviceId dev = i < device_of.size() ? device_of[i] : DeviceOfModel(config, i);
    profile::ProblemModel m;
    m.name = lm.config->name;
    for (const partition::Atom& atom : cut->atoms.atoms) {
      profile::PuCosts c(n_pus);
      for (size_t u = 0; u < n_pus; ++u) {
        if (!(atom.support >> u & 1) || pus.device_of[u] != dev.value || speed[u] <= 0) continue;
        // Milliseconds at 1 GFLOP/s per unit of speed: only the ratios matter.
        c[u] = std::max(atom.cost, 1.0) / (speed[u] * 1e6);
      }
      m.atom_ms.push_back(std::move(c));
      m.unit_of_atom.push_back(atom.unit);
    }
    SetWorkload(m, *cut, *lm.config);
    p.models.push_back(std::move(m));
    out.cuts.push_back(*std::move(cut));
  }
  BATON_ASSIGN_OR_RETURN(out.bounds, profile::ComputeBounds(p));
  out.planned = profile::Subadditive(p);
  out.batching = ChooseBatching(models, nullptr);
  return out;
}

absl::StatusOr<plan::PlanFile> MakePlan(const Planning& planning, const config::RunConfig& config,
                                        const std::vector<LoadedModel>& models, const PuSet& pus,
                                        plan::HighLevelPolicy policy, const plan::PlanOptions& options,
                                        const std::string& profile_source) {
  // Placed on the profile made subadditive (profile::Subadditive says why),
  // predicted on the profile as measured: the closed profile prices a whole
  // model at its hot-cache parts, and predicted 1.3x what saturating.yaml
  // then measured (0.77 against 0.97 measured/predicted).
  const profile::Problem& problem = planning.problem;
  BATON_ASSIGN_OR_RETURN(profile::Placement placement, plan::MakePlacement(policy, planning.planned, options));
  BATON_ASSIGN_OR_RETURN(profile::Prediction prediction, profile::Predict(problem, placement));
  plan::PlanFile f;
  f.policy = plan::HighLevelPolicyName(policy);
  f.objective = plan::HighLevelPolicyObjective(policy);
  f.profile = profile_source;
  f.predicted_throughput_rps = prediction.throughput_rps;
  f.bound_throughput_rps = planning.bounds.throughput_rps;
  for (size_t u = 0; u < problem.pus.size(); ++u) {
    f.pus.push_back(plan::PlanPu{problem.pus[u].name, problem.pus[u].kind,
                                 config.devices[pus.device_of[u]].name,
                                 u < prediction.pu_busy.size() ? prediction.pu_busy[u] : 0,
                                 {}});
  }
  BATON_ASSIGN_OR_RETURN(const std::vector<int> priorities,
                         plan::PlannedPriorities(problem, RequestPriorities(nullptr, models)));
  // Per PU: the partitions it may run, the more important model first.
  struct Entry {
    int priority;
    size_t model;
    size_t partition;
    std::string name;
  };
  std::vector<std::vector<Entry>> order(problem.pus.size());
  for (size_t m = 0; m < models.size(); ++m) {
    const graph::Model& g = *models[m].model;
    plan::PlanModel pm;
    pm.name = models[m].config->name;
    pm.content_hash = models[m].content_hash;
    pm.predicted_rps = prediction.model_rps.at(m);
    pm.predicted_latency_ms = prediction.latency_ms.at(m);
    pm.latency_bound_ms = planning.bounds.latency_ms.at(m);
    pm.priority = priorities.at(m);
    if (models[m].config->max_batch > 1 && m < planning.batching.size()) pm.max_batch = planning.batching[m].batch;
    for (size_t k = 0; k < placement.models[m].size(); ++k) {
      const profile::PlannedPartition& q = placement.models[m][k];
      plan::PlanPartition pp;
      for (NodeId n : partition::NodesOf(planning.cuts[m].atoms, q.first, q.last)) pp.nodes.push_back(g.node(n).name);
      for (int u : q.pus) {
        pp.pus.push_back(problem.pus[static_cast<size_t>(u)].name);
        order[static_cast<size_t>(u)].push_back(
            Entry{priorities.at(m), m, k, absl::StrCat(pm.name, ".p", k)});
      }
      pp.predicted_ms = problem.RangeMs(static_cast<int>(m), q.first, q.last, q.pus.at(0)).value_or(0);
      // The prediction's split of this partition's runs, when it runs at all.
      const std::vector<double>& split = prediction.shares.at(m).at(k);
      double sum = 0;
      for (int u : q.pus) sum += split.at(static_cast<size_t>(u));
      if (sum > 0) {
        for (int u : q.pus) pp.shares.push_back(split.at(static_cast<size_t>(u)) / sum);
      }
      pm.partitions.push_back(std::move(pp));
    }
    f.models.push_back(std::move(pm));
  }
  for (size_t u = 0; u < order.size(); ++u) {
    std::stable_sort(order[u].begin(), order[u].end(),
                     [](const Entry& a, const Entry& b) { return a.priority > b.priority; });
    for (const Entry& e : order[u]) f.pus[u].order.push_back(e.name);
  }
  return f;
}

std::vector<int> RequestPriorities(const plan::PlanFile* plan, const std::vector<LoadedModel>& models) {
  std::vector<int> priorities;
  for (const LoadedModel& lm : models) {
    priorities.push_back(lm.config->priority);
    if (plan == nullptr) continue;
    for (const plan::PlanModel& pm : plan->models) {
      if (pm.name == lm.config->name && pm.priority) priorities.back() = *pm.priority;
    }
  }
  return priorities;
}

absl::StatusOr<std::vector<runtime::DeployModel>> DeployFromPlan(const plan::PlanFile& plan, const std::string& source,
                                                                 const config::RunConfig& config,
                                                                 const std::vector<LoadedModel>& models,
                                                                 const PuSet& pus,
                                                                 const std::vector<DeviceId>& device_of) {
  auto changed = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat("plan '", source, "' no longer matches this config: ", what,
                                                      "; make the plan again with `baton plan`"));
  };
  absl::flat_hash_map<std::string, size_t> pu_by_name;
  for (size_t u = 0; u < pus.profiler_pus.size(); ++u) pu_by_name[pus.profiler_pus[u].name] = u;
  for (const plan::PlanPu& p : plan.pus) {
    auto it = pu_by_name.find(p.name);
    if (it == pu_by_name.end()) return changed(absl::StrCat("PU '", p.name, "' is in the plan but not in the config"));
    if (pus.profiler_pus[it->second].kind_key != p.kind_key) {
      return changed(absl::StrCat("PU '", p.name, "' now has other settings (", p.kind_key, " -> ",
                                  pus.profiler_pus[it->second].kind_key, ")"));
    }
  }
  for (const profiler::ProfilerPu& p : pus.profiler_pus) {
    bool found = false;
    for (const plan::PlanPu& q : plan.pus) found = found || q.name == p.name;
    if (!found) return changed(absl::StrCat("PU '", p.name, "' is in the config but not in the plan"));
  }
  for (const plan::PlanModel& pm : plan.models) {
    bool found = false;
    for (const LoadedModel& lm : models) found = found || lm.config->name == pm.name;
    if (!found) return changed(absl::StrCat("model '", pm.name, "' is in the plan but not in the config"));
  }
  std::vector<runtime::DeployModel> out;
  for (size_t i = 0; i < models.size(); ++i) {
    const LoadedModel& lm = models[i];
    const plan::PlanModel* pm = nullptr;
    for (const plan::PlanModel& m : plan.models) {
      if (m.name == lm.config->name) pm = &m;
    }
    if (pm == nullptr) return changed(absl::StrCat("model '", lm.config->name, "' is in the config but not in the plan"));
    if (pm->content_hash != lm.content_hash) {
      return changed(absl::StrCat("model '", pm->name, "' changed since it was planned (content hash ", pm->content_hash,
                                  " -> ", lm.content_hash, ")"));
    }
    runtime::DeployModel dm;
    dm.id = lm.id;
    dm.name = lm.config->name;
    dm.model = lm.model;
    dm.device = i < device_of.size() ? device_of[i] : DeviceOfModel(config, i);
    for (size_t k = 0; k < pm->partitions.size(); ++k) {
      const plan::PlanPartition& pp = pm->partitions[k];
      std::vector<NodeId> group;
      for (const std::string& node : pp.nodes) {
        std::optional<NodeId> id = lm.model->FindNode(node);
        if (!id) return changed(absl::StrCat("model '", pm->name, "' has no node '", node, "' any more"));
        group.push_back(*id);
      }
      std::vector<PuId> group_pus;
      for (const std::string& name : pp.pus) {
        auto it = pu_by_name.find(name);
        if (it == pu_by_name.end()) return changed(absl::StrCat("PU '", name, "' is not in the config"));
        if (pus.device_of[it->second] != dm.device.value) {
          return changed(absl::StrCat("model '", pm->name, "' partition ", k, " is planned on PU '", name,
                                      "', which is not on the model's device '", config.devices[dm.device.value].name,
                                      "'"));
        }
        group_pus.push_back(PuId(static_cast<uint32_t>(it->second)));
      }
      dm.groups.push_back(std::move(group));
      dm.group_pus.push_back(std::move(group_pus));
      dm.group_shares.push_back(pp.shares);
    }
    out.push_back(std::move(dm));
  }
  return out;
}

std::optional<profile::Placement> PlacementOfPlan(const plan::PlanFile& plan, const Planning& planning,
                                                  const std::vector<LoadedModel>& models, bool widen) {
  const profile::Problem& problem = planning.problem;
  profile::Placement out;
  for (size_t m = 0; m < models.size(); ++m) {
    const plan::PlanModel* pm = nullptr;
    for (const plan::PlanModel& q : plan.models) {
      if (q.name == models[m].config->name) pm = &q;
    }
    if (pm == nullptr) return std::nullopt;
    const partition::Atoms& atoms = planning.cuts[m].atoms;
    const graph::Model& g = *models[m].model;
    std::vector<profile::PlannedPartition> parts;
    int next = 0;
    for (const plan::PlanPartition& pp : pm->partitions) {
      // The atoms [next, last) whose nodes are exactly this partition's, in order.
      size_t matched = 0;
      int last = next;
      while (last < static_cast<int>(atoms.atoms.size()) && matched < pp.nodes.size()) {
        for (NodeId n : atoms.atoms[static_cast<size_t>(last)].nodes) {
          if (matched >= pp.nodes.size() || g.node(n).name != pp.nodes[matched]) return std::nullopt;
          ++matched;
        }
        ++last;
      }
      if (matched != pp.nodes.size() || last == next) return std::nullopt;
      profile::PlannedPartition q{next, last, {}};
      for (const std::string& name : pp.pus) {
        for (size_t u = 0; u < problem.pus.size(); ++u) {
          if (problem.pus[u].name == name) q.pus.push_back(static_cast<int>(u));
        }
      }
      if (widen) {
        for (size_t u = 0; u < problem.pus.size(); ++u) {
          const int ui = static_cast<int>(u);
          if (std::find(q.pus.begin(), q.pus.end(), ui) == q.pus.end() &&
              problem.RangeMs(static_cast<int>(m), q.first, q.last, ui)) {
            q.pus.push_back(ui);
          }
        }
      }
      parts.push_back(std::move(q));
      next = last;
    }
    if (next != static_cast<int>(atoms.atoms.size())) return std::nullopt;
    out.models.push_back(std::move(parts));
  }
  return out;
}

std::optional<std::pair<int, int>> AtomRangeOf(const Planning& planning, size_t m, std::span<const NodeId> nodes) {
  const partition::Atoms& atoms = planning.cuts.at(m).atoms;
  absl::flat_hash_map<uint32_t, int> atom_of;
  for (size_t a = 0; a < atoms.atoms.size(); ++a) {
    for (NodeId n : atoms.atoms[a].nodes) atom_of[n.value] = static_cast<int>(a);
  }
  int first = INT32_MAX, last = -1;
  size_t placed = 0;
  for (NodeId n : nodes) {
    auto it = atom_of.find(n.value);
    if (it == atom_of.end()) continue;
    first = std::min(first, it->second);
    last = std::max(last, it->second + 1);
    ++placed;
  }
  if (last < 0) return std::nullopt;
  size_t want = 0;
  for (int a = first; a < last; ++a) want += atoms.atoms[static_cast<size_t>(a)].nodes.size();
  if (want != placed) return std::nullopt;
  return std::pair(first, last);
}

namespace {

// Calls fn(deployed model, partition, PU, profiled ms) for every partition of
// `deployment` that is a range of the planning problem's atoms, on every PU
// it was prepared on that the profile has a time for; stops at an error.
template <typename Fn>
absl::Status ForEachProfiledRun(const Planning& planning, const runtime::Deployment& deployment, Fn fn) {
  for (size_t i = 0; i < deployment.models().size(); ++i) {
    const runtime::DeployedModel& dm = deployment.models()[i];
    for (size_t p = 0; p < dm.plan.partitions.size(); ++p) {
      const partition::Partition& part = dm.plan.partitions[p];
      const std::optional<std::pair<int, int>> range = AtomRangeOf(planning, i, part.nodes);
      if (!range) continue;
      for (PuId u : dm.capable_pus[p]) {
        const std::optional<double> ms =
            planning.problem.RangeMs(static_cast<int>(i), range->first, range->second, static_cast<int>(u.value));
        if (ms) BATON_RETURN_IF_ERROR(fn(dm, part, u, *ms));
      }
    }
  }
  return absl::OkStatus();
}

// Per PU (Problem::pus order): the measured time of every deployed partition
// that is a range of the problem's atoms, over the profile's time for as many
// runs. `measured(dm, part, u)` gives (runs, their total time). A PU without
// such runs gets the overall factor (1 when nothing was measured anywhere).
// Measured runs are executor calls, so the profile's dispatch cost is left out.
template <typename Measured>
absl::StatusOr<std::vector<double>> MeasuredOverProfiled(const Planning& planning,
                                                         const runtime::Deployment& deployment, Measured measured) {
  const profile::Problem& problem = planning.problem;
  const size_t n = problem.pus.size();
  std::vector<double> observed(n, 0), profiled(n, 0);
  BATON_RETURN_IF_ERROR(ForEachProfiledRun(
      planning, deployment,
      [&](const runtime::DeployedModel& dm, const partition::Partition& part, PuId u, double ms) {
        const auto [runs, total] = measured(dm, part, u);
        if (runs <= 0) return absl::OkStatus();
        observed[u.value] += ToMillis(total);
        profiled[u.value] += static_cast<double>(runs) * (ms - problem.dispatch_ms);
        return absl::OkStatus();
      }));
  double all_observed = 0, all_profiled = 0;
  for (size_t u = 0; u < n; ++u) {
    all_observed += observed[u];
    all_profiled += profiled[u];
  }
  std::vector<double> speed(n, all_profiled > 0 ? all_observed / all_profiled : 1);
  for (size_t u = 0; u < n; ++u) {
    if (profiled[u] > 0) speed[u] = observed[u] / profiled[u];
  }
  return speed;
}

}  // namespace

absl::Status SetPriors(const Planning& planning, const runtime::Deployment& deployment,
                       policy::OnlineLatencyModel& latency) {
  return ForEachProfiledRun(planning, deployment,
                            [&](const runtime::DeployedModel& dm, const partition::Partition& part, PuId u, double ms) {
                              return latency.SetPrior(dm.id, part.id, u, FromMillis(ms));
                            });
}

absl::StatusOr<Calibration> Calibrate(const Planning& planning, const runtime::Deployment& deployment,
                                      const policy::OnlineLatencyModel& latency,
                                      const std::optional<profile::Placement>& placement) {
  Calibration out;
  const profile::Problem& problem = planning.problem;
  BATON_ASSIGN_OR_RETURN(
      std::vector<double> speed,
      MeasuredOverProfiled(planning, deployment, [&](const runtime::DeployedModel& dm, const partition::Partition& part,
                                                     PuId u) {
        return std::pair(latency.Observations(dm.id, part.id, u), latency.ObservedTotal(dm.id, part.id, u));
      }));
  for (size_t u = 0; u < speed.size(); ++u) out.pu_speed.emplace_back(problem.pus[u].name, speed[u]);
  const profile::Problem scaled = problem.Scaled(speed);
  BATON_ASSIGN_OR_RETURN(out.bounds, profile::ComputeBounds(scaled));
  if (placement) {
    BATON_ASSIGN_OR_RETURN(profile::Prediction prediction, profile::Predict(scaled, *placement));
    out.predicted_rps = prediction.throughput_rps;
  }
  return out;
}

absl::StatusOr<std::vector<double>> ProbeSpeeds(const Planning& planning, const runtime::Deployment& deployment,
                                                std::span<const runtime::ProbeRun> runs) {
  return MeasuredOverProfiled(
      planning, deployment, [&](const runtime::DeployedModel& dm, const partition::Partition& part, PuId u) {
        for (const runtime::ProbeRun& r : runs) {
          if (r.model == dm.id && r.partition == part.id && r.pu == u) return std::pair(r.runs, r.total);
        }
        return std::pair(int64_t{0}, Duration::zero());
      });
}

profiler::ProfilerOptions QuickProfilerOptions(size_t pus) {
  profiler::ProfilerOptions o;
  o.min_atoms = std::max<int>(4, 2 * static_cast<int>(pus));
  o.budget = 2 * o.min_atoms + 4;
  o.warmup_runs = 1;
  o.min_runs = 5;
  o.max_runs = 50;
  o.min_time_ms = 30;
  return o;
}

std::string AutoProfilePath(const std::string& cache_dir, const std::vector<LoadedModel>& models, const PuSet& pus,
                            const profiler::ProfilerOptions& options) {
  std::string key = absl::StrCat("budget=", options.budget, ";min_atoms=", options.min_atoms, ";");
  for (const LoadedModel& lm : models) absl::StrAppend(&key, lm.config->name, "=", lm.content_hash, ";");
  for (const profiler::ProfilerPu& p : pus.profiler_pus) absl::StrAppend(&key, p.name, "=", p.kind_key, ";");
  return (fs::path(cache_dir) / "profiles" / (profile::HashHex(key) + ".json")).string();
}

namespace {

// The profiles in `dir` other than `skip`, newest first, within the bounds of
// ProfileInto; any that cannot be listed or read is passed over (it only
// saves measurements).
std::vector<std::pair<std::string, profile::Profile>> LoadOtherProfiles(const std::string& dir,
                                                                        const std::string& skip) {
  constexpr size_t kMaxListed = 4096;  // entries of the folder looked at, at most
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  std::error_code ec;
  size_t listed = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end && listed++ < kMaxListed; it.increment(ec)) {
    std::error_code file_ec;
    const fs::path& f = it->path();
    if (f.extension() != ".json" || !it->is_regular_file(file_ec) || fs::equivalent(f, skip, file_ec)) continue;
    const fs::file_time_type written = it->last_write_time(file_ec);
    if (!file_ec) files.emplace_back(written, f);
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::pair<std::string, profile::Profile>> out;
  uintmax_t read = 0;
  for (size_t i = 0; i < files.size() && i < static_cast<size_t>(kMaxSeedFiles); ++i) {
    std::error_code size_ec;
    const uintmax_t size = fs::file_size(files[i].second, size_ec);
    if (size_ec || read + size > kMaxSeedBytes) continue;
    read += size;
    absl::StatusOr<profile::Profile> loaded = profile::Profile::Load(files[i].second.string());
    if (loaded.ok()) out.emplace_back(files[i].second.string(), std::move(*loaded));
  }
  return out;
}

}  // namespace

absl::StatusOr<profile::Profile> ProfileInto(const std::string& path, const std::vector<LoadedModel>& models,
                                             const PuSet& pus, const profiler::ProfilerOptions& options,
                                             const profiler::Progress& progress, const std::string& seed_dir,
                                             const std::function<void(const std::vector<profiler::Seeded>&)>& seeded) {
  profile::Profile p;
  std::error_code ec;
  const bool there = fs::exists(path, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("profile '", path, "' cannot be used: ", ec.message(),
                                                   "; give a path in a folder you can write"));
  }
  if (there) {
    absl::StatusOr<profile::Profile> loaded = profile::Profile::Load(path);
    if (!loaded.ok()) return loaded.status();
    p = std::move(*loaded);
  } else if (fs::path(path).has_parent_path()) {
    fs::create_directories(fs::path(path).parent_path(), ec);  // a failure shows when the profile is saved
  }
  std::vector<profiler::ProfilerModel> pm;
  for (const LoadedModel& lm : models) {
    pm.push_back(profiler::ProfilerModel{lm.config->name, lm.model, lm.content_hash, lm.config->max_batch});
  }
  const bool lacks_some = std::any_of(pm.begin(), pm.end(), [&](const profiler::ProfilerModel& m) {
    const profile::ProfiledModel* have = p.FindModel(m.name);
    return have == nullptr || have->content_hash != m.content_hash;
  });
  if (!seed_dir.empty() && lacks_some) {
    const std::vector<std::pair<std::string, profile::Profile>> loaded = LoadOtherProfiles(seed_dir, path);
    std::vector<std::pair<std::string, const profile::Profile*>> others;
    for (const auto& [source, other] : loaded) others.emplace_back(source, &other);
    const std::vector<profiler::Seeded> taken = profiler::SeedFromOtherProfiles(p, pm, pus.profiler_pus, options, others);
    if (seeded && !taken.empty()) seeded(taken);
  }
  absl::Status measured = profiler::ProfileModels(
      pm, pus.profiler_pus, options, p, [&](const profile::Profile& now) { return now.Save(path); }, progress);
  if (absl::IsCancelled(measured)) {
    return absl::CancelledError(absl::StrCat("profiling into ", path, " stopped: ", measured.message(),
                                             " there, and the next start resumes from them"));
  }
  BATON_RETURN_IF_ERROR(measured);
  BATON_RETURN_IF_ERROR(p.Save(path));
  return p;
}

}  // namespace baton::app
