#include "baton/profiler/profiler.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "baton/core/tensor_ops.h"
#include "baton/graph/builder.h"
#include "baton/graph/extract.h"
#include "baton/verify/verify.h"

namespace baton::profiler {

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Runs `fn` on a new thread pinned to `cores` (like the PU's own thread).
template <typename Fn>
void OnPinnedThread(const std::vector<int>& cores, Fn&& fn) {
  std::thread t([&] {
    if (!cores.empty()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      for (int c : cores) CPU_SET(c, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort, as the runtime
    }
    fn();
  });
  t.join();
}

// Measured run times of `runner` (ms; an emulated PU's charged time when longer).
absl::StatusOr<std::vector<double>> Measure(const backend::PreparedPartition& runner,
                                            std::span<const std::pair<std::string, const Tensor*>> feeds,
                                            const ProfilerOptions& o, const std::vector<int>& cores) {
  absl::Status status;
  std::vector<double> samples;
  OnPinnedThread(cores, [&] {
    for (int i = 0; i < o.warmup_runs; ++i) {
      absl::StatusOr<backend::RunResult> r = runner.Run(feeds);
      if (!r.ok()) {
        status = r.status();
        return;
      }
    }
    double total = 0;
    while (static_cast<int>(samples.size()) < o.max_runs &&
           (static_cast<int>(samples.size()) < o.min_runs || total < o.min_time_ms)) {
      const auto start = Clock::now();
      absl::StatusOr<backend::RunResult> r = runner.Run(feeds);
      const double wall = Ms(Clock::now() - start);
      if (!r.ok()) {
        status = r.status();
        return;
      }
      const double t = std::max(wall, Ms(r->busy));
      samples.push_back(t);
      total += t;
    }
  });
  if (!status.ok()) return status;
  return samples;
}

std::string AtomsKey(const graph::Model& model, const partition::Atoms& atoms) {
  std::string text;
  for (const partition::Atom& a : atoms.atoms) {
    absl::StrAppend(&text, "#", a.unit, ":");
    for (NodeId n : a.nodes) absl::StrAppend(&text, model.node(n).name, "\n");
  }
  return profile::HashHex(text);
}

std::string RangeKey(const graph::Model& model, const std::vector<NodeId>& nodes) {
  std::string text;
  for (NodeId n : nodes) absl::StrAppend(&text, model.node(n).name, "\n");
  return profile::HashHex(text);
}

// The one-node partition whose run time is the fixed cost of any partition run.
absl::StatusOr<double> MeasureOverhead(const ProfilerPu& pu, const ProfilerOptions& o) {
  graph::GraphBuilder b("overhead");
  b.AddInput("x", dtype::kFloat, {1, 4});
  b.AddNode("Identity", {"x"}, {"y"}, {}, "identity");
  b.AddOutput("y", dtype::kFloat, {1, 4});
  BATON_ASSIGN_OR_RETURN(std::string bytes, b.Serialize());
  BATON_ASSIGN_OR_RETURN(std::shared_ptr<const graph::Model> model, graph::Model::LoadBytes(bytes, "overhead"));
  BATON_ASSIGN_OR_RETURN(graph::Submodel sub, graph::ExtractSubmodel(*model, model->topo_order(), "overhead"));
  BATON_ASSIGN_OR_RETURN(std::unique_ptr<backend::PreparedPartition> runner, pu.executor->Prepare(*model, sub));
  Tensor x(dtype::kFloat, {1, 4});
  std::vector<std::pair<std::string, const Tensor*>> feeds{{"x", &x}};
  ProfilerOptions many = o;
  many.min_runs = std::max(o.min_runs, 200);
  many.max_runs = std::max(many.min_runs, o.max_runs);
  BATON_ASSIGN_OR_RETURN(std::vector<double> samples, Measure(*runner, feeds, many, pu.pin_cores));
  return profile::StatsOf(std::move(samples)).median_ms;
}

// One-way handover between two threads through a mutex and a condition
// variable, as the runtime hands a finished partition's outputs on.
double MeasureHandoverMs() {
  constexpr int kRounds = 2000;
  std::mutex mu;
  std::condition_variable cv;
  int turn = 0;  // even: main's turn, odd: the other's
  std::thread other([&] {
    for (int i = 0; i < kRounds; ++i) {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return turn % 2 == 1; });
      ++turn;
      cv.notify_all();
    }
  });
  const auto start = Clock::now();
  for (int i = 0; i < kRounds; ++i) {
    std::unique_lock lock(mu);
    ++turn;
    cv.notify_all();
    cv.wait(lock, [&] { return turn % 2 == 0; });
  }
  const double ms = Ms(Clock::now() - start);
  other.join();
  return ms / (2.0 * kRounds);
}

}  // namespace

absl::Status ProfilerOptions::Validate() const {
  auto bad = [](const char* field, const std::string& rule) {
    return absl::InvalidArgumentError(absl::StrCat("profiler option ", field, " ", rule));
  };
  if (budget < 1) return bad("budget", "must be at least 1");
  if (min_atoms < 0) return bad("min_atoms", "must be 0 (automatic) or more");
  if (warmup_runs < 0) return bad("warmup_runs", "must be 0 or more");
  if (min_runs < 1) return bad("min_runs", "must be at least 1");
  if (max_runs < min_runs) return bad("max_runs", "must be at least min_runs");
  if (min_time_ms < 0) return bad("min_time_ms", "must be 0 or more");
  return absl::OkStatus();
}

std::string CpuKindKey(int threads) { return absl::StrCat("cpu/threads=", threads); }

std::string EmuKindKey(double speed, const std::vector<std::pair<std::string, double>>& op_speed,
                       std::vector<std::string> unsupported_ops, bool compute) {
  std::vector<std::pair<std::string, double>> ops = op_speed;
  std::sort(ops.begin(), ops.end());
  std::sort(unsupported_ops.begin(), unsupported_ops.end());
  std::vector<std::string> parts;
  for (const auto& [op, s] : ops) parts.push_back(absl::StrFormat("%s:%g", op, s));
  return absl::StrFormat("emu/speed=%g/op_speed=%s/unsupported=%s/compute=%d", speed, absl::StrJoin(parts, ","),
                         absl::StrJoin(unsupported_ops, ","), compute ? 1 : 0);
}

absl::StatusOr<ModelCut> CutModel(const graph::Model& model, const std::vector<ProfilerPu>& pus,
                                  const ProfilerOptions& options) {
  BATON_RETURN_IF_ERROR(options.Validate());
  if (pus.empty() || pus.size() > 64) return absl::InvalidArgumentError("the profiler needs 1 to 64 PUs");
  ModelCut cut;
  cut.support.assign(model.nodes().size(), 0);
  for (size_t u = 0; u < pus.size(); ++u) {
    std::vector<bool> capable = pus[u].executor->QueryCapability(model);
    for (size_t n = 0; n < capable.size() && n < cut.support.size(); ++n) {
      if (capable[n]) cut.support[n] |= uint64_t{1} << u;
    }
  }
  const int min_atoms = std::min(
      options.budget, options.min_atoms > 0 ? options.min_atoms : std::max(4, 2 * static_cast<int>(pus.size())));
  BATON_ASSIGN_OR_RETURN(cut.atoms, partition::MakeAtoms(model, cut.support, min_atoms, options.budget));
  BATON_ASSIGN_OR_RETURN(cut.candidates, partition::Candidates(cut.atoms, options.budget));
  cut.atoms_key = AtomsKey(model, cut.atoms);
  return cut;
}

namespace {

// The whole model at each batch size to measure, on each CPU kind in `reps`
// (emulated PUs calibrate on fixed shapes and cannot take a free batch
// dimension): its random inputs stacked `batch` times. Kept measurements are
// not taken again.
absl::Status MeasureBatches(const ProfilerModel& pm, uint64_t seed, const std::vector<ProfilerPu>& pus,
                            const std::vector<size_t>& reps, const ProfilerOptions& options,
                            profile::ProfiledModel& entry) {
  if (pm.max_batch <= 1) return absl::OkStatus();
  const graph::Model& model = *pm.model;
  auto fail = [&](const absl::Status& st, const std::string& what) {
    return absl::Status(st.code(), absl::StrCat("model '", pm.name, "' ", what, ": ", st.message()));
  };
  std::optional<graph::Submodel> whole;
  std::optional<backend::NamedTensors> one;
  for (size_t r : reps) {
    const ProfilerPu& pu = pus[r];
    if (!pu.is_cpu) continue;
    std::unique_ptr<backend::PreparedPartition> runner;
    for (int batch : profile::BatchSizesToMeasure(pm.max_batch)) {
      if (entry.batched[batch].contains(pu.kind_key)) continue;
      const std::string what = absl::StrFormat("at batch %d on PU '%s'", batch, pu.name);
      if (!whole) {
        std::vector<NodeId> nodes;
        for (size_t n = 0; n < model.nodes().size(); ++n) nodes.push_back(NodeId(static_cast<uint32_t>(n)));
        absl::StatusOr<graph::Submodel> sub = graph::ExtractSubmodel(model, nodes, absl::StrCat(pm.name, ".whole"));
        if (!sub.ok()) return fail(sub.status(), what);
        whole = std::move(*sub);
        absl::StatusOr<backend::NamedTensors> in = verify::RandomInputs(model, seed);
        if (!in.ok()) return fail(in.status(), what);
        one = std::move(*in);
      }
      if (!runner) {
        absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> prepared = pu.executor->Prepare(model, *whole);
        if (!prepared.ok()) return fail(prepared.status(), what);
        runner = std::move(*prepared);
      }
      backend::NamedTensors stacked;
      for (const auto& [name, t] : *one) {
        std::vector<const Tensor*> parts(static_cast<size_t>(batch), &t);
        absl::StatusOr<Tensor> s = ConcatDim0(parts);
        if (!s.ok()) return fail(s.status(), absl::StrCat(what, ", stacking input '", name, "'"));
        stacked.emplace_back(name, std::move(*s));
      }
      std::vector<std::pair<std::string, const Tensor*>> feeds;
      for (const auto& [name, t] : stacked) feeds.emplace_back(name, &t);
      absl::StatusOr<std::vector<double>> samples = Measure(*runner, feeds, options, pu.pin_cores);
      if (!samples.ok()) return fail(samples.status(), what);
      entry.batched[batch][pu.kind_key] = profile::StatsOf(std::move(*samples));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ProfileModels(const std::vector<ProfilerModel>& models, const std::vector<ProfilerPu>& pus,
                           const ProfilerOptions& options, profile::Profile& profile,
                           const std::function<absl::Status(const profile::Profile&)>& checkpoint,
                           const Progress& progress) {
  BATON_RETURN_IF_ERROR(options.Validate());
  // One representative PU per kind key, in PU order.
  std::vector<size_t> reps;
  for (size_t u = 0; u < pus.size(); ++u) {
    bool seen = false;
    for (size_t r : reps) seen = seen || pus[r].kind_key == pus[u].kind_key;
    if (!seen) reps.push_back(u);
  }
  profile.budget = options.budget;
  profile.min_atoms = options.min_atoms;
  profile.warmup_runs = options.warmup_runs;
  profile.min_runs = options.min_runs;
  profile.min_time_ms = options.min_time_ms;
  for (size_t r : reps) profile.pu_kinds[pus[r].kind_key] = pus[r].name;

  std::vector<ModelCut> cuts;
  int total = 0;
  for (const ProfilerModel& pm : models) {
    absl::StatusOr<ModelCut> cut = CutModel(*pm.model, pus, options);
    if (!cut.ok()) return absl::Status(cut.status().code(), absl::StrCat("model '", pm.name, "': ", cut.status().message()));
    for (const partition::Candidate& c : cut->candidates) {
      for (size_t r : reps) total += (c.support >> r & 1) ? 1 : 0;
    }
    cuts.push_back(std::move(*cut));
  }

  // Fixed costs first: they are small and every plan uses them.
  for (size_t r : reps) {
    if (!pus[r].is_cpu) continue;
    BATON_ASSIGN_OR_RETURN(profile.partition_overhead_ms, MeasureOverhead(pus[r], options));
    break;
  }
  profile.same_device = profile::LinkCost{MeasureHandoverMs(), 0};  // tensors move by ownership: no per-byte cost

  int done = 0;
  for (size_t mi = 0; mi < models.size(); ++mi) {
    const ProfilerModel& pm = models[mi];
    const graph::Model& model = *pm.model;
    const ModelCut& cut = cuts[mi];
    profile::ProfiledModel* entry = profile.FindModel(pm.name);
    if (entry == nullptr || entry->content_hash != pm.content_hash || entry->atoms_key != cut.atoms_key) {
      if (entry == nullptr) {
        profile.models.emplace_back();
        entry = &profile.models.back();
      }
      *entry = profile::ProfiledModel{};
      entry->name = pm.name;
      entry->content_hash = pm.content_hash;
      entry->atoms_key = cut.atoms_key;
    }
    const int n = static_cast<int>(cut.atoms.atoms.size());
    entry->atoms = n;
    entry->unit_of_atom.clear();
    for (const partition::Atom& a : cut.atoms.atoms) entry->unit_of_atom.push_back(a.unit);
    entry->cut_bytes = cut.atoms.cut_bytes;
    entry->edges.clear();
    for (const partition::AtomEdge& e : cut.atoms.edges) entry->edges.push_back(profile::AtomEdge{e.from, e.to, e.bytes});
    for (const partition::Candidate& c : cut.candidates) {
      if (entry->Find(c.first, c.last) != nullptr) continue;
      const std::vector<NodeId> nodes = partition::NodesOf(cut.atoms, c.first, c.last);
      profile::ProfiledRange r;
      r.first = c.first;
      r.last = c.last;
      r.key = RangeKey(model, nodes);
      r.first_node = model.node(nodes.front()).name;
      r.last_node = model.node(nodes.back()).name;
      entry->ranges.push_back(std::move(r));
    }

    if (pm.max_batch > 1) {
      if (options.stop != nullptr && options.stop->load()) {
        if (checkpoint) BATON_RETURN_IF_ERROR(checkpoint(profile));
        return absl::CancelledError(
            absl::StrFormat("interrupted after %d of %d measurements; those are saved", done, total));
      }
      BATON_RETURN_IF_ERROR(MeasureBatches(pm, options.seed + mi, pus, reps, options, *entry));
      if (progress) progress(done, total, absl::StrCat(pm.name, ": batch sizes"));
      if (checkpoint) BATON_RETURN_IF_ERROR(checkpoint(profile));
    }

    bool need = false;
    for (size_t r : reps) {
      for (const partition::Candidate& c : cut.candidates) {
        if (c.support >> r & 1) need = need || !entry->Find(c.first, c.last)->latency.contains(pus[r].kind_key);
      }
    }
    if (!need) {  // resumed: all measured already
      for (size_t r : reps) {
        for (const partition::Candidate& c : cut.candidates) done += (c.support >> r & 1) ? 1 : 0;
      }
      if (progress) progress(done, total, absl::StrCat(pm.name, ": already profiled"));
      continue;
    }

    // Every tensor a candidate may read: the model's inputs pushed through the
    // atoms in order, each on a PU that supports it (a CPU when one does).
    auto fail = [&](const absl::Status& st, const std::string& what) {
      return absl::Status(st.code(), absl::StrCat("model '", pm.name, "' ", what, ": ", st.message()));
    };
    absl::StatusOr<backend::NamedTensors> inputs = verify::RandomInputs(model, options.seed + mi);
    if (!inputs.ok()) return fail(inputs.status(), "inputs");
    absl::flat_hash_map<std::string, Tensor> tensors;
    for (auto& [name, t] : *inputs) tensors.emplace(name, std::move(t));
    auto feeds_for = [&](const graph::Submodel& sub) -> absl::StatusOr<std::vector<std::pair<std::string, const Tensor*>>> {
      std::vector<std::pair<std::string, const Tensor*>> feeds;
      for (const std::string& in : sub.interface.inputs) {
        auto it = tensors.find(in);
        if (it == tensors.end()) return absl::InternalError(absl::StrCat("no tensor '", in, "' was produced"));
        feeds.emplace_back(in, &it->second);
      }
      return feeds;
    };
    std::vector<graph::Submodel> atom_subs;
    for (int a = 0; a < n; ++a) {
      const std::string what = absl::StrCat("atom ", a);
      const partition::Atom& atom = cut.atoms.atoms[static_cast<size_t>(a)];
      absl::StatusOr<graph::Submodel> sub = graph::ExtractSubmodel(model, atom.nodes, absl::StrCat(pm.name, ".a", a));
      if (!sub.ok()) return fail(sub.status(), what);
      std::optional<size_t> producer;
      for (size_t u = 0; u < pus.size(); ++u) {
        if (!(atom.support >> u & 1)) continue;
        if (!producer || (pus[u].is_cpu && !pus[*producer].is_cpu)) producer = u;
      }
      if (!producer) return absl::InvalidArgumentError(absl::StrCat("model '", pm.name, "' atom ", a, ": no PU can run it"));
      absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> runner = pus[*producer].executor->Prepare(model, *sub);
      if (!runner.ok()) return fail(runner.status(), absl::StrCat(what, " on PU '", pus[*producer].name, "'"));
      BATON_ASSIGN_OR_RETURN(auto feeds, feeds_for(*sub));
      absl::StatusOr<backend::RunResult> out = (*runner)->Run(feeds);
      if (!out.ok()) return fail(out.status(), absl::StrCat(what, " on PU '", pus[*producer].name, "'"));
      for (auto& [name, t] : out->outputs) tensors.insert_or_assign(name, std::move(t));
      atom_subs.push_back(std::move(*sub));
    }

    for (size_t r : reps) {
      const ProfilerPu& pu = pus[r];
      for (const partition::Candidate& c : cut.candidates) {
        if (!(c.support >> r & 1)) continue;
        profile::ProfiledRange* range = entry->Find(c.first, c.last);
        const std::string what = absl::StrFormat("%s [%d, %d) on %s", pm.name, c.first, c.last, pu.kind_key);
        if (!range->latency.contains(pu.kind_key)) {
          if (options.stop != nullptr && options.stop->load()) {
            if (checkpoint) BATON_RETURN_IF_ERROR(checkpoint(profile));
            return absl::CancelledError(
                absl::StrFormat("interrupted after %d of %d measurements; those are saved", done, total));
          }
          std::optional<graph::Submodel> extracted;
          const graph::Submodel* sub = nullptr;
          if (c.last == c.first + 1) {
            sub = &atom_subs[static_cast<size_t>(c.first)];
          } else {
            absl::StatusOr<graph::Submodel> s = graph::ExtractSubmodel(
                model, partition::NodesOf(cut.atoms, c.first, c.last), absl::StrCat(pm.name, ".r", c.first, "_", c.last));
            if (!s.ok()) return fail(s.status(), what);
            extracted = std::move(*s);
            sub = &*extracted;
          }
          absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> runner = pu.executor->Prepare(model, *sub);
          if (!runner.ok()) return fail(runner.status(), absl::StrFormat("range [%d, %d) on PU '%s'", c.first, c.last, pu.name));
          BATON_ASSIGN_OR_RETURN(auto feeds, feeds_for(*sub));
          absl::StatusOr<std::vector<double>> samples = Measure(**runner, feeds, options, pu.pin_cores);
          if (!samples.ok()) {
            return fail(samples.status(), absl::StrFormat("range [%d, %d) on PU '%s'", c.first, c.last, pu.name));
          }
          range->latency[pu.kind_key] = profile::StatsOf(std::move(*samples));
        }
        ++done;
        if (progress) progress(done, total, what);
      }
      if (checkpoint) BATON_RETURN_IF_ERROR(checkpoint(profile));
    }
  }
  return absl::OkStatus();
}

std::vector<Seeded> SeedFromOtherProfiles(
    profile::Profile& profile, const std::vector<ProfilerModel>& models, const std::vector<ProfilerPu>& pus,
    const ProfilerOptions& options, const std::vector<std::pair<std::string, const profile::Profile*>>& others) {
  std::vector<std::string> kinds;
  for (const ProfilerPu& pu : pus) {
    if (std::find(kinds.begin(), kinds.end(), pu.kind_key) == kinds.end()) kinds.push_back(pu.kind_key);
  }
  const auto ours = [&](const std::string& kind) { return std::find(kinds.begin(), kinds.end(), kind) != kinds.end(); };
  // `entry` with only this machine's PU kinds kept; how many measurements remain.
  const auto keep_ours = [&](profile::ProfiledModel& entry) {
    int kept = 0;
    for (profile::ProfiledRange& r : entry.ranges) {
      std::erase_if(r.latency, [&](const auto& kv) { return !ours(kv.first); });
      kept += static_cast<int>(r.latency.size());
    }
    for (auto& [batch, by_kind] : entry.batched) {
      std::erase_if(by_kind, [&](const auto& kv) { return !ours(kv.first); });
      kept += static_cast<int>(by_kind.size());
    }
    std::erase_if(entry.batched, [](const auto& kv) { return kv.second.empty(); });
    return kept;
  };
  std::vector<Seeded> seeded;
  for (const ProfilerModel& pm : models) {
    const profile::ProfiledModel* have = profile.FindModel(pm.name);
    if (have != nullptr && have->content_hash == pm.content_hash) continue;
    std::optional<profile::ProfiledModel> best;
    Seeded found;
    for (const auto& [source, other] : others) {
      if (other == nullptr || other->budget != options.budget || other->min_atoms != options.min_atoms) continue;
      for (const profile::ProfiledModel& candidate : other->models) {
        if (candidate.content_hash != pm.content_hash) continue;
        profile::ProfiledModel copy = candidate;
        const int kept = keep_ours(copy);
        if (kept > found.measurements) {
          found = Seeded{pm.name, source, candidate.name, kept};
          best = std::move(copy);
        }
      }
    }
    if (!best) continue;
    best->name = pm.name;  // ProfileModels names the PU kinds (pu_kinds) itself
    if (profile::ProfiledModel* slot = profile.FindModel(pm.name)) {
      *slot = std::move(*best);
    } else {
      profile.models.push_back(std::move(*best));
    }
    seeded.push_back(std::move(found));
  }
  return seeded;
}

}  // namespace baton::profiler
