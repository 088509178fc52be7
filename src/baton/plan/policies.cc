#include "baton/plan/policies.h"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/profile/bounds.h"

namespace baton::plan {
namespace {

using profile::Placement;
using profile::PlannedPartition;
using profile::Problem;
using profile::ProblemModel;

constexpr double kInf = std::numeric_limits<double>::infinity();
// balanced: the DP indexes PU subsets by bit mask, and bounds its steps so
// that one model plans in well under a second.
constexpr int kMaxBalancedPus = 16;
constexpr double kMaxBalancedSteps = 1 << 27;
// lp: a PU is listed as a secondary of a partition from this share of its work.
constexpr double kSecondaryShare = 0.10;
// search: a move is kept when throughput rises by more than this fraction.
constexpr double kSearchGain = 1e-3;
// Relative tolerance of "equal" for floating-point objectives.
constexpr double kRelTol = 1e-9;


size_t Z(int i) { return static_cast<size_t>(i); }
int NumPus(const Problem& problem) { return static_cast<int>(problem.pus.size()); }

std::string PuNames(const Problem& problem) {
  std::vector<std::string> names;
  for (const profile::ProblemPu& pu : problem.pus) names.push_back(pu.name);
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

// Everything RangeMs and the policies index, checked once so that no `.at()`
// can throw later.
absl::Status ValidateInputs(const Problem& problem, const PlanOptions& options) {
  if (options.max_stages < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan option max_stages = ", options.max_stages,
                     " is negative; use 0 (one stage per PU at most) or a positive count"));
  }
  if (options.iterations < 0) {
    return absl::InvalidArgumentError(absl::StrCat("plan option iterations = ", options.iterations,
                                                   " is negative; use 0 (no search moves) or a positive count"));
  }
  const size_t pus = problem.pus.size();
  for (size_t m = 0; m < problem.models.size(); ++m) {
    const ProblemModel& model = problem.models[m];
    const std::string where = absl::StrCat("planning problem, model '", model.name, "'");
    for (size_t i = 0; i < model.atom_ms.size(); ++i) {
      if (model.atom_ms[i].size() != pus) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": atom ", i, " has ", model.atom_ms[i].size(),
                                                       " costs for ", pus,
                                                       " PUs; give one per PU (nullopt: cannot run)"));
      }
    }
    if (model.unit_of_atom.size() != model.atom_ms.size()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unit_of_atom has ", model.unit_of_atom.size(),
                                                     " entries for ", model.atoms(), " atoms; give one per atom"));
    }
    for (const auto& [range, costs] : model.range_ms) {
      if (range.first < 0 || range.first >= range.second || range.second > model.atoms() || costs.size() != pus) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": measured range [", range.first, ", ", range.second,
                                                       ") with ", costs.size(), " costs does not fit ", model.atoms(),
                                                       " atoms and ", pus, " PUs; fix or drop it"));
      }
    }
    if (!(model.weight >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": weight ", model.weight, " is negative or NaN; use a weight >= 0"));
    }
    for (int i = 0; i < model.atoms(); ++i) {
      bool runnable = false;
      for (int u = 0; u < NumPus(problem); ++u)
        runnable = runnable || problem.RangeMs(static_cast<int>(m), i, i + 1, u);
      if (!runnable) {
        return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "': atom ", i,
                                                       " can run on no PU (PUs: ", PuNames(problem),
                                                       "); add a PU that supports its operators or drop the model"));
      }
    }
  }
  return absl::OkStatus();
}

// RangeMs of every range of one model, kInf where a PU cannot run it.
class RangeTable {
 public:
  RangeTable(const Problem& problem, int m) : n_(problem.models[Z(m)].atoms()), pus_(NumPus(problem)) {
    ms_.assign(Z(n_ + 1) * Z(n_ + 1) * Z(pus_), kInf);
    for (int first = 0; first < n_; ++first) {
      for (int last = first + 1; last <= n_; ++last) {
        for (int u = 0; u < pus_; ++u) {
          if (std::optional<double> t = problem.RangeMs(m, first, last, u)) ms_[Index(first, last, u)] = *t;
        }
      }
    }
  }
  int atoms() const { return n_; }
  int pus() const { return pus_; }
  double Ms(int first, int last, int u) const { return ms_[Index(first, last, u)]; }
  bool CanRun(int first, int last, int u) const { return Ms(first, last, u) < kInf; }
  // The PUs that can run [first, last), fastest first (ties: lower index).
  std::vector<int> FastestFirst(int first, int last) const {
    std::vector<int> pus;
    for (int u = 0; u < pus_; ++u) {
      if (CanRun(first, last, u)) pus.push_back(u);
    }
    std::stable_sort(pus.begin(), pus.end(), [&](int a, int b) { return Ms(first, last, a) < Ms(first, last, b); });
    return pus;
  }

 private:
  size_t Index(int first, int last, int u) const { return (Z(first) * Z(n_ + 1) + Z(last)) * Z(pus_) + Z(u); }
  int n_;
  int pus_;
  std::vector<double> ms_;
};

// Cuts [first, last) into maximal pieces, left to right, that `can_run`
// accepts. Single atoms always pass (checked in ValidateInputs or by the
// caller), so this only splits when a measured range says a PU cannot run a
// longer piece.
template <typename CanRun>
std::vector<std::pair<int, int>> GreedyPieces(int first, int last, CanRun can_run) {
  std::vector<std::pair<int, int>> pieces;
  while (first < last) {
    int end = first + 1;
    while (end < last && can_run(first, end + 1)) ++end;
    pieces.emplace_back(first, end);
    first = end;
  }
  return pieces;
}

// ---------------------------------------------------------------- capability

std::vector<PlannedPartition> CapabilityCuts(const RangeTable& table, const ProblemModel& model) {
  std::vector<PlannedPartition> parts;
  for (int first = 0; first < table.atoms();) {
    int last = first + 1;
    while (last < table.atoms() && model.unit_of_atom[Z(last)] == model.unit_of_atom[Z(first)]) ++last;
    // A unit's atoms share their PUs by construction; a hand-built problem
    // (or a measured range that failed) may not, and then the unit splits.
    for (auto [a, b] : GreedyPieces(first, last, [&](int f, int l) { return !table.FastestFirst(f, l).empty(); })) {
      parts.push_back({a, b, table.FastestFirst(a, b)});
    }
    first = last;
  }
  return parts;
}

// Each model whole: atoms [0, n) on every PU that can run all of them,
// fastest first (a model no PU can run whole gets no PU; Validate says so).
Placement Whole(const Problem& problem) {
  Placement placement;
  for (int m = 0; m < static_cast<int>(problem.models.size()); ++m) {
    const int n = problem.models[Z(m)].atoms();
    std::vector<std::pair<double, int>> pus;
    for (int u = 0; u < NumPus(problem); ++u) {
      if (std::optional<double> ms = problem.RangeMs(m, 0, n, u)) pus.emplace_back(*ms, u);
    }
    std::stable_sort(pus.begin(), pus.end());
    PlannedPartition whole{0, n, {}};
    for (const auto& [ms, u] : pus) whole.pus.push_back(u);
    placement.models.push_back(n == 0 ? std::vector<PlannedPartition>{} : std::vector<PlannedPartition>{whole});
  }
  return placement;
}

Placement Capability(const Problem& problem) {
  Placement placement;
  for (int m = 0; m < static_cast<int>(problem.models.size()); ++m) {
    placement.models.push_back(CapabilityCuts(RangeTable(problem, m), problem.models[Z(m)]));
  }
  return placement;
}

// What a request of model m asks of the PUs at best: the sum over its atoms
// of the atom's time on its fastest PU.
double FastestWorkMs(const Problem& problem, int m) {
  double work = 0;
  for (int i = 0; i < problem.models[Z(m)].atoms(); ++i) {
    double fastest = kInf;
    for (int u = 0; u < NumPus(problem); ++u)
      fastest = std::min(fastest, problem.RangeMs(m, i, i + 1, u).value_or(kInf));
    work += fastest;
  }
  return work;
}

// ------------------------------------------------------------------ balanced

struct Stage {
  int first = 0;
  int last = 0;
  int pu = 0;
  uint32_t from = 0;  // the PU subset before this stage (DP back-pointer)
};

// Cost of a stage in the DP: the load its PU already carries plus its own
// time times the model's weight.
struct StageCost {
  const RangeTable& table;
  const std::vector<double>& loads;
  double weight;
  double operator()(int first, int last, int u) const {
    const double ms = table.Ms(first, last, u);
    return ms < kInf ? loads[Z(u)] + weight * ms : kInf;
  }
};

// Lexicographic (stages, summed stage time): the second pass's objective.
struct Tie {
  int stages = std::numeric_limits<int>::max();
  double sum_ms = kInf;
  bool operator<(const Tie& o) const { return stages != o.stages ? stages < o.stages : sum_ms < o.sum_ms; }
};

// Cuts one model into stages. With `distinct_k`, into at most that many
// stages on distinct PUs: states (atoms done, PU subset used), subsets of at
// most k PUs. Without, stages may share a PU and their number is free:
// states (atoms done) alone (then a stage's cost ignores earlier stages of
// the model on its PU; only models whose capabilities alternate more often
// than there are PUs get here). Pass 1, a bottleneck DP, finds the smallest
// largest stage cost B; pass 2, among cuts whose every stage costs <= B,
// finds the fewest stages, then the least summed stage time (additive, so
// exact). nullopt when no cut exists.
//
// Example: 4 atoms of 3 ms on pu0, 1 ms on pu1, no load: B = 3 (pu0 runs one
// atom, pu1 three), beating one stage on pu1 (4).
std::optional<std::vector<Stage>> CheapestStages(const StageCost& cost, std::optional<int> distinct_k) {
  const int n = cost.table.atoms();
  const int pus = cost.table.pus();
  std::vector<uint32_t> masks{0};
  std::vector<int> index{0};
  if (distinct_k) {
    masks.clear();
    index.assign(Z(1) << pus, -1);
    for (uint32_t s = 0; s < (uint32_t{1} << pus); ++s) {
      if (std::popcount(s) > *distinct_k) continue;
      index[s] = static_cast<int>(masks.size());
      masks.push_back(s);
    }
  }
  const size_t states = masks.size();
  auto at = [&](int i, uint32_t s) { return Z(i) * states + Z(index[s]); };
  // Calls visit(from state, to state, stage, stage cost) for every
  // transition out of a state that `reached` accepts.
  auto for_each_step = [&](auto reached, auto visit) {
    for (int i = 0; i < n; ++i) {
      for (uint32_t s : masks) {
        if (!reached(at(i, s)) || (distinct_k && std::popcount(s) >= *distinct_k)) continue;
        for (int u = 0; u < pus; ++u) {
          const uint32_t bit = distinct_k ? uint32_t{1} << u : 0;
          if (s & bit) continue;
          for (int j = i + 1; j <= n; ++j) {
            const double c = cost(i, j, u);
            if (c < kInf) visit(at(i, s), at(j, s | bit), Stage{i, j, u, s}, c);
          }
        }
      }
    }
  };
  std::vector<double> bottleneck(Z(n + 1) * states, kInf);
  bottleneck[at(0, 0)] = 0;
  for_each_step([&](size_t state) { return bottleneck[state] < kInf; },
                [&](size_t from, size_t to, const Stage&, double c) {
                  bottleneck[to] = std::min(bottleneck[to], std::max(bottleneck[from], c));
                });
  double bound = kInf;
  for (uint32_t s : masks) bound = std::min(bound, bottleneck[at(n, s)]);
  if (bound == kInf) return std::nullopt;

  const double slack = bound + kRelTol * std::max(1.0, bound);
  std::vector<Tie> best(Z(n + 1) * states);
  std::vector<Stage> parent(Z(n + 1) * states);
  best[at(0, 0)] = {0, 0};
  for_each_step(
      [&](size_t state) { return best[state].sum_ms < kInf; },
      [&](size_t from, size_t to, const Stage& stage, double c) {
        if (c > slack) return;
        const Tie tie{best[from].stages + 1, best[from].sum_ms + cost.table.Ms(stage.first, stage.last, stage.pu)};
        if (tie < best[to]) {
          best[to] = tie;
          parent[to] = stage;
        }
      });
  uint32_t end = masks[0];
  for (uint32_t s : masks) end = best[at(n, s)] < best[at(n, end)] ? s : end;
  std::vector<Stage> stages;
  for (int i = n; i > 0;) {
    stages.push_back(parent[at(i, end)]);
    i = stages.back().first;
    end = stages.back().from;
  }
  std::reverse(stages.begin(), stages.end());
  return stages;
}

absl::StatusOr<Placement> Balanced(const Problem& problem, const PlanOptions& options) {
  const int pus = NumPus(problem);
  const int models = static_cast<int>(problem.models.size());
  Placement placement;
  placement.models.resize(Z(models));
  if (pus == 0) return placement;  // then no model has atoms (ValidateInputs)
  if (pus > kMaxBalancedPus) {
    return absl::InvalidArgumentError(absl::StrCat("plan policy 'balanced': ", pus, " PUs exceed the ", kMaxBalancedPus,
                                                   " its DP over PU subsets allows; use policy 'lp' or 'capability'"));
  }
  auto stages_of = [&](int m) {
    const int limit = static_cast<size_t>(m) < options.model_stages.size() && options.model_stages[Z(m)] > 0
                          ? options.model_stages[Z(m)]
                          : options.max_stages;
    return limit == 0 ? pus : std::min(limit, pus);
  };
  // Heaviest first: a model's work is the sum over its atoms of the atom's
  // time on its fastest PU, times the model's weight (what it asks of the
  // PUs at best), so the big models claim the PUs they fit before the small
  // ones fill the gaps. Ties keep the problem's order.
  std::vector<double> work(Z(models), 0);
  for (int m = 0; m < models; ++m) work[Z(m)] = FastestWorkMs(problem, m) * problem.models[Z(m)].weight;
  std::vector<int> order(Z(models));
  for (int m = 0; m < models; ++m) order[Z(m)] = m;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return work[Z(a)] > work[Z(b)]; });

  std::vector<double> loads(Z(pus), 0);
  for (int m : order) {
    const ProblemModel& model = problem.models[Z(m)];
    if (model.atoms() == 0) continue;
    const int stages_max = std::min(stages_of(m), model.atoms());
    size_t subsets = 0;
    for (uint32_t s = 0; s < (uint32_t{1} << pus); ++s) subsets += std::popcount(s) <= stages_max ? 1 : 0;
    const double steps = static_cast<double>(model.atoms() + 1) * static_cast<double>(subsets) * pus * model.atoms();
    if (steps > kMaxBalancedSteps) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan policy 'balanced': model '", model.name, "' has ", model.atoms(), " atoms on ", pus,
                       " PUs with up to ", stages_max, " stages: ", steps, " DP steps exceed the limit of ",
                       kMaxBalancedSteps, "; lower max_stages, use fewer atoms, or use policy 'lp'"));
    }
    const RangeTable table(problem, m);
    const StageCost cost{table, loads, model.weight};
    std::optional<std::vector<Stage>> stages = CheapestStages(cost, stages_max);
    if (!stages) stages = CheapestStages(cost, std::nullopt);  // finite: every atom runs somewhere
    for (const Stage& stage : *stages) {
      placement.models[Z(m)].push_back({stage.first, stage.last, {stage.pu}});
      loads[Z(stage.pu)] += model.weight * table.Ms(stage.first, stage.last, stage.pu);
    }
  }
  return placement;
}

// ------------------------------------------------------------------------ lp

// The rates the lp policy asks of the throughput LP, as Predict models them:
// kRate and kClosed models are served first, at the rate their arrivals ask
// for (kClosed: concurrency / (think time + latency bound)); kSaturating
// models share what is left by equal PU time per unit of weight
// (profile::SolveSharedLp; work = the model's atoms on their fastest PUs).
absl::StatusOr<profile::LpResult> SolveServedLp(const Problem& problem, std::span<const profile::LpUnit> units) {
  std::vector<profile::LpModel> rates(problem.models.size());
  std::optional<profile::Bounds> bounds;
  std::vector<profile::FairShare> shared;
  for (int m = 0; m < static_cast<int>(problem.models.size()); ++m) {
    const ProblemModel& model = problem.models[Z(m)];
    const profile::Demand& demand = model.demand;
    if (demand.kind == profile::Demand::Kind::kRate) {
      rates[Z(m)].min_rps = rates[Z(m)].max_rps = std::max(demand.rate, 0.0);
    } else if (demand.kind == profile::Demand::Kind::kClosed) {
      if (!bounds) {
        BATON_ASSIGN_OR_RETURN(bounds, profile::ComputeBounds(problem));
      }
      const double cycle_ms = demand.think_ms + bounds->latency_ms.at(Z(m));
      if (cycle_ms > 0) rates[Z(m)].min_rps = rates[Z(m)].max_rps = std::max(demand.concurrency, 0) * 1000.0 / cycle_ms;
    } else if (model.weight > 0 && model.atoms() > 0) {
      shared.push_back(profile::FairShare{m, model.weight, std::max(FastestWorkMs(problem, m), 1e-6)});
    }
  }
  return profile::SolveSharedLp(NumPus(problem), units, std::move(rates), shared);
}

// One model's partitions from its atoms' LP shares (share[i][u]: fraction of
// atom i's runs on PU u). An atom's main PU is its largest share (ties: lower
// index) among the PUs that can run it; an atom's size, for the secondary
// threshold, is its time on its fastest PU (a PU-independent measure of its
// work, so that a slow PU does not look busy for little).
std::vector<PlannedPartition> LpPartitions(const RangeTable& table, const std::vector<std::vector<double>>& share) {
  const int n = table.atoms();
  std::vector<int> main_pu(Z(n), -1);
  std::vector<double> size(Z(n), kInf);
  for (int i = 0; i < n; ++i) {
    for (int u = 0; u < table.pus(); ++u) {
      if (!table.CanRun(i, i + 1, u)) continue;
      size[Z(i)] = std::min(size[Z(i)], table.Ms(i, i + 1, u));
      if (main_pu[Z(i)] < 0 || share[Z(i)].at(Z(u)) > share[Z(i)][Z(main_pu[Z(i)])]) main_pu[Z(i)] = u;
    }
  }
  std::vector<PlannedPartition> parts;
  for (int first = 0; first < n;) {
    const int u = main_pu[Z(first)];
    int last = first + 1;
    while (last < n && main_pu[Z(last)] == u) ++last;
    for (auto [a, b] : GreedyPieces(first, last, [&](int f, int l) { return table.CanRun(f, l, u); })) {
      double total = 0;
      for (int i = a; i < b; ++i) total += size[Z(i)];
      std::vector<std::pair<double, int>> secondaries;  // (-carried, PU): largest first
      for (int v = 0; v < table.pus(); ++v) {
        if (v == u || !table.CanRun(a, b, v)) continue;
        double carried = 0;
        for (int i = a; i < b; ++i) carried += share[Z(i)].at(Z(v)) * size[Z(i)];
        if (carried >= (kSecondaryShare - kRelTol) * total) secondaries.emplace_back(-carried, v);
      }
      std::sort(secondaries.begin(), secondaries.end());
      parts.push_back({a, b, {u}});
      for (const auto& [neg_carried, v] : secondaries) parts.back().pus.push_back(v);
    }
    first = last;
  }
  return parts;
}

absl::StatusOr<Placement> Lp(const Problem& problem) {
  const int pus = NumPus(problem);
  const int models = static_cast<int>(problem.models.size());
  std::vector<profile::LpUnit> units;
  for (int m = 0; m < models; ++m) {
    for (const profile::PuCosts& ms : problem.models[Z(m)].atom_ms) units.push_back({m, ms});
  }
  BATON_ASSIGN_OR_RETURN(const profile::LpResult joint, SolveServedLp(problem, units));
  Placement placement;
  size_t first_unit = 0;
  for (int m = 0; m < models; ++m) {
    const ProblemModel& model = problem.models[Z(m)];
    std::vector<std::vector<double>> share(
        joint.unit_share.begin() + static_cast<std::ptrdiff_t>(first_unit),
        joint.unit_share.begin() + static_cast<std::ptrdiff_t>(first_unit + Z(model.atoms())));
    first_unit += Z(model.atoms());
    if (model.atoms() > 0 && joint.model_rps.at(Z(m)) <= kRelTol) {
      // The joint LP gives this model no rate (its demand or weight is 0, or
      // the demands of others fill the PUs): place it as if it ran alone.
      std::vector<profile::LpUnit> alone;
      for (const profile::PuCosts& ms : model.atom_ms) alone.push_back({0, ms});
      BATON_ASSIGN_OR_RETURN(const profile::LpResult solo,
                             profile::SolveThroughputLp(pus, alone, std::vector<profile::LpModel>(1)));
      share = solo.unit_share;
    }
    placement.models.push_back(LpPartitions(RangeTable(problem, m), share));
  }
  return placement;
}

// -------------------------------------------------------------------- search

struct Scored {
  Placement placement;
  double throughput_rps = 0;
  double mean_latency_ms = 0;
};

absl::StatusOr<Scored> Score(const Problem& problem, Placement placement) {
  BATON_ASSIGN_OR_RETURN(const profile::Prediction prediction, profile::Predict(problem, placement));
  double latency = 0;
  for (double l : prediction.latency_ms) latency += l;
  if (!prediction.latency_ms.empty()) latency /= static_cast<double>(prediction.latency_ms.size());
  return Scored{std::move(placement), prediction.throughput_rps, latency};
}

bool SameThroughputOrMore(double a, double b) { return a >= b - kRelTol * std::max(1.0, b); }
bool LowerLatency(const Scored& a, const Scored& b) {
  return a.mean_latency_ms < b.mean_latency_ms - kRelTol * std::max(1.0, b.mean_latency_ms);
}
// The search's acceptance rule: throughput up by more than kSearchGain, or
// not down and latency down.
bool Improves(const Scored& a, const Scored& b) {
  if (a.throughput_rps > b.throughput_rps * (1 + kSearchGain)) return true;
  return SameThroughputOrMore(a.throughput_rps, b.throughput_rps) && LowerLatency(a, b);
}

// Keeps the PUs of `part` that can run its (new) range; false when none can.
bool KeepCapable(PlannedPartition& part, const RangeTable& table) {
  std::erase_if(part.pus, [&](int u) { return !table.CanRun(part.first, part.last, u); });
  return !part.pus.empty();
}

// The placements one move away, every PU listed still capable. Moves, per
// partition k of model m: shift its right boundary by one atom either way (a
// partition left empty disappears: a merge); split it, the right piece on
// another PU (a new boundary: without it the search could never add a
// partition); make another capable PU its first (the old first is dropped);
// add a capable PU; drop a secondary PU.
std::vector<Placement> Neighbours(const Placement& placement, const std::vector<RangeTable>& tables) {
  std::vector<Placement> out;
  // Copies the placement, lets `edit` change model m's partitions, keeps the
  // copy when `edit` returns true.
  auto with = [&](int m, auto edit) {
    Placement next = placement;
    if (edit(next.models[Z(m)])) out.push_back(std::move(next));
  };
  for (int m = 0; m < static_cast<int>(placement.models.size()); ++m) {
    const RangeTable& table = tables[Z(m)];
    const int count = static_cast<int>(placement.models[Z(m)].size());
    for (int k = 0; k < count; ++k) {
      const PlannedPartition& part = placement.models[Z(m)][Z(k)];
      for (int shift : {+1, -1}) {
        if (k + 1 == count) break;
        with(m, [&](std::vector<PlannedPartition>& parts) {
          PlannedPartition& left = parts[Z(k)];
          PlannedPartition& right = parts[Z(k + 1)];
          left.last = right.first = left.last + shift;
          const bool left_empty = left.first == left.last;
          if (left_empty || right.first == right.last) {  // a merge
            if (!KeepCapable(left_empty ? right : left, table)) return false;
            parts.erase(parts.begin() + (left_empty ? k : k + 1));
            return true;
          }
          return KeepCapable(left, table) && KeepCapable(right, table);
        });
      }
      for (int at = part.first + 1; at < part.last; ++at) {
        for (int v = 0; v < table.pus(); ++v) {
          if (v == part.pus[0] || !table.CanRun(at, part.last, v)) continue;
          with(m, [&](std::vector<PlannedPartition>& parts) {
            PlannedPartition right{at, part.last, {v}};
            parts[Z(k)].last = at;
            if (!KeepCapable(parts[Z(k)], table)) return false;
            parts.insert(parts.begin() + k + 1, std::move(right));
            return true;
          });
        }
      }
      for (int v = 0; v < table.pus(); ++v) {
        if (!table.CanRun(part.first, part.last, v)) continue;
        if (v != part.pus[0]) {
          with(m, [&](std::vector<PlannedPartition>& parts) {
            std::erase(parts[Z(k)].pus, v);
            parts[Z(k)].pus[0] = v;
            return true;
          });
        }
        if (std::find(part.pus.begin(), part.pus.end(), v) == part.pus.end()) {
          with(m, [&](std::vector<PlannedPartition>& parts) {
            parts[Z(k)].pus.push_back(v);
            return true;
          });
        }
      }
      for (int j = 1; j < static_cast<int>(part.pus.size()); ++j) {
        with(m, [&](std::vector<PlannedPartition>& parts) {
          parts[Z(k)].pus.erase(parts[Z(k)].pus.begin() + j);
          return true;
        });
      }
    }
  }
  return out;
}

std::string Fingerprint(const Placement& placement) {
  std::string key;
  for (const std::vector<PlannedPartition>& parts : placement.models) {
    for (const PlannedPartition& part : parts) {
      absl::StrAppend(&key, part.first, "-", part.last, ":", absl::StrJoin(part.pus, ","), ";");
    }
    key += "|";
  }
  return key;
}

absl::StatusOr<Placement> Search(const Problem& problem, const PlanOptions& options) {
  // Start: the best of the other policies by Predict (highest throughput,
  // ties: lower latency; then the order below). A policy that cannot plan
  // this problem (balanced beyond its DP limits) is left out.
  std::optional<Scored> current;
  absl::Status first_error;
  for (HighLevelPolicy policy : {HighLevelPolicy::kLp, HighLevelPolicy::kBalanced, HighLevelPolicy::kCapability}) {
    absl::StatusOr<Placement> start = MakePlacement(policy, problem, options);
    absl::StatusOr<Scored> scored = start.ok() ? Score(problem, *std::move(start)) : start.status();
    if (!scored.ok()) {
      if (first_error.ok()) first_error = scored.status();
      continue;
    }
    if (!current || scored->throughput_rps > current->throughput_rps * (1 + kRelTol) ||
        (SameThroughputOrMore(scored->throughput_rps, current->throughput_rps) && LowerLatency(*scored, *current))) {
      current = *std::move(scored);
    }
  }
  if (!current) return first_error;

  std::vector<RangeTable> tables;
  for (int m = 0; m < static_cast<int>(problem.models.size()); ++m) tables.emplace_back(problem, m);
  // Seeded Fisher-Yates with the engine's raw output (std distributions
  // differ between standard libraries; this order does not).
  std::mt19937_64 rng(options.seed);
  std::set<std::string> seen{Fingerprint(current->placement)};
  int tried = 0;
  bool improved = true;
  while (improved && tried < options.iterations) {
    improved = false;
    std::vector<Placement> next = Neighbours(current->placement, tables);
    for (size_t i = next.size(); i > 1; --i) std::swap(next[i - 1], next[rng() % i]);
    for (Placement& candidate : next) {
      if (tried >= options.iterations) break;
      if (!seen.insert(Fingerprint(candidate)).second) continue;  // a placement seen is no better
      ++tried;
      absl::StatusOr<Scored> scored = Score(problem, std::move(candidate));
      if (scored.ok() && Improves(*scored, *current)) {
        current = *std::move(scored);
        improved = true;
        break;  // the neighbourhood changed: enumerate it again
      }
    }
  }
  return std::move(current->placement);
}

}  // namespace

const char* HighLevelPolicyName(HighLevelPolicy policy) { return InfoOf(policy).name; }

const char* HighLevelPolicyObjective(HighLevelPolicy policy) { return InfoOf(policy).objective; }

absl::StatusOr<HighLevelPolicy> ParseHighLevelPolicy(const std::string& name) {
  if (const HighLevelPolicyInfo* info = FindHighLevelPolicy(name)) return info->policy;
  std::vector<std::string> names;
  for (const HighLevelPolicyInfo& info : kHighLevelPolicies) names.push_back(info.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown high-level policy '", name, "'; use one of: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<Placement> MakePlacement(HighLevelPolicy policy, const Problem& problem, const PlanOptions& options) {
  BATON_RETURN_IF_ERROR(ValidateInputs(problem, options));
  absl::StatusOr<Placement> placement;
  switch (policy) {
    case HighLevelPolicy::kWhole:
      placement = Whole(problem);
      break;
    case HighLevelPolicy::kCapability:
      placement = Capability(problem);
      break;
    case HighLevelPolicy::kBalanced:
      placement = Balanced(problem, options);
      break;
    case HighLevelPolicy::kLp:
      placement = Lp(problem);
      break;
    case HighLevelPolicy::kSearch:
      placement = Search(problem, options);
      break;
  }
  if (!placement.ok()) return placement.status();
  // The problem checks that only the placement check makes (cut_bytes, edges,
  // times, demands) surface here, in its words.
  if (absl::Status valid = profile::ValidatePlacement(problem, *placement); !valid.ok()) {
    return absl::Status(valid.code(), absl::StrCat("plan policy '", HighLevelPolicyName(policy), "': ", valid.message()));
  }
  return placement;
}

absl::StatusOr<std::vector<int>> PlannedPriorities(const profile::Problem& problem, const std::vector<int>& configured) {
  if (configured.size() != problem.models.size()) {
    return absl::InvalidArgumentError(absl::StrCat("planned priorities: ", configured.size(),
                                                   " configured priorities for ", problem.models.size(),
                                                   " models; give one per model"));
  }
  if (std::any_of(configured.begin(), configured.end(), [](int p) { return p != 0; })) return configured;
  std::vector<int> priorities;
  for (const profile::ProblemModel& model : problem.models) {
    priorities.push_back(model.demand.kind == profile::Demand::Kind::kSaturating ? 0 : 1);
  }
  return priorities;
}

}  // namespace baton::plan
