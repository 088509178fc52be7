#include "baton/profile/bounds.h"

#include <glpk.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace baton::profile {
namespace {

// Unit times below this count as this much: keeps the LP bounded when a
// profile reports 0 ms (RangeMs uses the same floor).
constexpr double kMinUnitMs = 1e-6;
// Rates and shares below this are solver noise.
constexpr double kTiny = 1e-12;

size_t Idx(int i) { return static_cast<size_t>(i); }
bool NonNegativeFinite(double x) { return std::isfinite(x) && x >= 0; }

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// The one place that talks to GLPK.

// A linear program, maximized. Variables have a finite lower bound.
struct Lp {
  struct Var {
    double lo = 0;
    std::optional<double> hi;
    double objective = 0;
  };
  struct Row {
    std::vector<std::pair<int, double>> terms;  // (variable, coefficient), each variable once
    std::optional<double> lo;
    std::optional<double> hi;
  };
  std::vector<Var> vars;
  std::vector<Row> rows;

  int AddVar(double lo, std::optional<double> hi, double objective) {
    vars.push_back({lo, hi, objective});
    return static_cast<int>(vars.size()) - 1;
  }
};

// GLPK bound type; GLP_DB needs lo < hi (glp_simplex fails with GLP_EBOUND otherwise).
int BoundType(std::optional<double> lo, std::optional<double> hi) {
  if (lo && hi) return *lo < *hi ? GLP_DB : GLP_FX;
  if (lo) return GLP_LO;
  if (hi) return GLP_UP;
  return GLP_FR;
}

// SolveLp's body, in an initialized GLPK environment.
absl::StatusOr<std::optional<std::vector<double>>> SolveLpInEnv(const Lp& lp, std::string_view what) {
  std::unique_ptr<glp_prob, void (*)(glp_prob*)> prob(glp_create_prob(), glp_delete_prob);
  glp_prob* p = prob.get();
  glp_set_obj_dir(p, GLP_MAX);
  const int n = static_cast<int>(lp.vars.size());
  const int m = static_cast<int>(lp.rows.size());
  if (n > 0) glp_add_cols(p, n);
  if (m > 0) glp_add_rows(p, m);
  for (int j = 0; j < n; ++j) {
    const Lp::Var& v = lp.vars[Idx(j)];
    const double hi = v.hi ? std::max(*v.hi, v.lo) : 0;
    glp_set_col_bnds(p, j + 1, BoundType(v.lo, v.hi ? std::optional(hi) : std::nullopt), v.lo, hi);
    glp_set_obj_coef(p, j + 1, v.objective);
  }
  // GLPK's sparse matrix arrays are 1-based: element 0 is unused.
  std::vector<int> ia(1, 0), ja(1, 0);
  std::vector<double> ar(1, 0);
  for (int i = 0; i < m; ++i) {
    const Lp::Row& r = lp.rows[Idx(i)];
    glp_set_row_bnds(p, i + 1, BoundType(r.lo, r.hi), r.lo.value_or(0), r.hi.value_or(0));
    for (const auto& [var, coef] : r.terms) {
      ia.push_back(i + 1);
      ja.push_back(var + 1);
      ar.push_back(coef);
    }
  }
  glp_load_matrix(p, static_cast<int>(ia.size()) - 1, ia.data(), ja.data(), ar.data());

  glp_smcp parm;
  glp_init_smcp(&parm);
  parm.msg_lev = GLP_MSG_OFF;
  parm.presolve = GLP_ON;
  const int rc = glp_simplex(p, &parm);
  const int status = rc == 0 ? glp_get_status(p) : 0;
  std::optional<std::vector<double>> x;
  if (rc == 0 && status == GLP_OPT) {
    x.emplace(Idx(n));
    for (int j = 0; j < n; ++j) (*x)[Idx(j)] = glp_get_col_prim(p, j + 1);
  }

  // With the presolver on, an infeasible LP is reported as GLP_ENOPFS;
  // without it (GLPK may skip presolving), as status GLP_NOFEAS.
  if (rc == GLP_ENOPFS || (rc == 0 && status == GLP_NOFEAS)) return std::optional<std::vector<double>>();
  if (rc != 0) {
    static constexpr const char* kCodes[] = {"0",           "GLP_EBADB",  "GLP_ESING",   "GLP_ECOND",  "GLP_EBOUND",
                                             "GLP_EFAIL",   "GLP_EOBJLL", "GLP_EOBJUL",  "GLP_EITLIM", "GLP_ETMLIM",
                                             "GLP_ENOPFS",  "GLP_ENODFS", "GLP_EROOT",   "GLP_ESTOP",  "GLP_EMIPGAP",
                                             "GLP_ENOFEAS", "GLP_ENOCVG", "GLP_EINSTAB", "GLP_EDATA",  "GLP_ERANGE"};
    const char* code = rc > 0 && rc <= GLP_ERANGE ? kCodes[rc] : "unknown";
    return absl::InternalError(absl::StrFormat(
        "%s: GLPK glp_simplex failed with return code %s (%d)%s; this is a bug in the LP construction or a "
        "numerically extreme profile: check the profile's times",
        what, code, rc, rc == GLP_ENODFS ? " (no dual feasible solution: the rates are unbounded)" : ""));
  }
  if (status != GLP_OPT) {
    return absl::InternalError(absl::StrFormat(
        "%s: GLPK glp_simplex returned solution status %d (not GLP_OPT); check the profile's times", what, status));
  }
  return x;
}

// Maximizes `lp` with the simplex method (presolver on, terminal output off).
// Returns the variables' values, or nullopt when the LP is infeasible.
// `what` names the LP in errors.
absl::StatusOr<std::optional<std::vector<double>>> SolveLp(const Lp& lp, std::string_view what) {
  // GLPK keeps one environment per thread and never frees it by itself
  // (LeakSanitizer reports it when the thread ends): free it afterwards when
  // this call created it.
  const int init = glp_init_env();
  if (init != 0 && init != 1) {
    return absl::InternalError(absl::StrFormat(
        "%s: GLPK glp_init_env failed with return code %d (2: out of memory, 3: unsupported programming model)", what,
        init));
  }
  const int old_term_out = glp_term_out(GLP_OFF);
  absl::StatusOr<std::optional<std::vector<double>>> result = SolveLpInEnv(lp, what);
  glp_term_out(old_term_out);
  if (init == 0) glp_free_env();
  return result;
}

// The throughput LP.

absl::Status ValidateLpInput(int pus, std::span<const LpUnit> units, std::span<const LpModel> models,
                             std::span<const LpInService> in_service) {
  if (pus < 0) return Invalid("throughput LP: ", pus, " PUs; pass at least 0");
  for (const LpInService& row : in_service) {
    if (row.model < 0 || Idx(row.model) >= models.size() || !NonNegativeFinite(row.max) ||
        !NonNegativeFinite(row.per_rps)) {
      return Invalid("throughput LP: an in-service row for model ", row.model, " (of ", models.size(),
                     ") has max ", row.max, " and per_rps ", row.per_rps, "; use a model index and finite numbers >= 0");
    }
  }
  for (size_t m = 0; m < models.size(); ++m) {
    const LpModel& lm = models[m];
    for (const auto& [name, value] : {std::pair{"min_rps", lm.min_rps}, std::pair{"max_rps", lm.max_rps}}) {
      if (value && !NonNegativeFinite(*value)) {
        return Invalid("throughput LP: model ", m, " has ", name, " ", *value, "; use a finite rate >= 0");
      }
    }
    if (lm.min_rps && lm.max_rps && *lm.min_rps > *lm.max_rps) {
      return Invalid("throughput LP: model ", m, " has min_rps ", *lm.min_rps, " > max_rps ", *lm.max_rps,
                     "; make min_rps <= max_rps");
    }
  }
  for (size_t k = 0; k < units.size(); ++k) {
    const LpUnit& unit = units[k];
    if (unit.model < 0 || Idx(unit.model) >= models.size()) {
      return Invalid("throughput LP: unit ", k, " belongs to model ", unit.model, ", but there are ", models.size(),
                     " models");
    }
    if (unit.ms.size() != Idx(pus)) {
      return Invalid("throughput LP: unit ", k, " (model ", unit.model, ") has costs for ", unit.ms.size(),
                     " PUs, but there are ", pus, " PUs");
    }
    bool any = false;
    for (int u = 0; u < pus; ++u) {
      const std::optional<double>& t = unit.ms[Idx(u)];
      if (t && !NonNegativeFinite(*t)) {
        return Invalid("throughput LP: unit ", k, " (model ", unit.model, ") costs ", *t, " ms on PU ", u,
                       "; use a finite time >= 0");
      }
      any = any || t.has_value();
    }
    if (!any) {
      return Invalid("throughput LP: unit ", k, " (model ", unit.model,
                     ") may run on no PU; give it a cost on at least one PU");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LpResult> SolveThroughputLp(int pus, std::span<const LpUnit> units, std::span<const LpModel> models,
                                           std::span<const LpInService> in_service) {
  BATON_RETURN_IF_ERROR(ValidateLpInput(pus, units, models, in_service));
  const size_t n_models = models.size();
  std::vector<bool> has_units(n_models, false);
  for (const LpUnit& unit : units) has_units[Idx(unit.model)] = true;

  // Variables: lambda per model (fixed at 0 without units), y per unit and allowed PU.
  Lp base;
  std::vector<int> lambda(n_models);
  for (size_t m = 0; m < n_models; ++m) {
    lambda[m] = base.AddVar(0, has_units[m] ? models[m].max_rps : std::optional<double>(0), 1);
  }
  std::vector<std::vector<int>> y(units.size(), std::vector<int>(Idx(pus), -1));
  std::vector<Lp::Row> pu_rows(Idx(pus));
  for (size_t k = 0; k < units.size(); ++k) {
    Lp::Row conservation{.terms = {{lambda[Idx(units[k].model)], -1.0}}, .lo = 0.0, .hi = 0.0};
    for (int u = 0; u < pus; ++u) {
      const std::optional<double>& t = units[k].ms[Idx(u)];
      if (!t) continue;
      y[k][Idx(u)] = base.AddVar(0, std::nullopt, 0);
      conservation.terms.push_back({y[k][Idx(u)], 1.0});
      pu_rows[Idx(u)].terms.push_back({y[k][Idx(u)], std::max(*t, kMinUnitMs) / 1000});
    }
    base.rows.push_back(std::move(conservation));  // sum_u y[k,u] = lambda_m
  }
  for (Lp::Row& row : pu_rows) {
    if (row.terms.empty()) continue;
    row.hi = 1.0;  // busy fraction <= 1
    base.rows.push_back(std::move(row));
  }
  for (const LpInService& row : in_service) {
    const size_t m = Idx(row.model);
    if (!has_units[m]) continue;
    // Little's law: the PU time the model's requests hold per second, plus their pauses.
    Lp::Row little{.terms = {{lambda[m], row.per_rps}}, .lo = std::nullopt, .hi = row.max};
    for (size_t k = 0; k < units.size(); ++k) {
      if (Idx(units[k].model) != m) continue;
      for (int u = 0; u < pus; ++u) {
        if (y[k][Idx(u)] >= 0) little.terms.push_back({y[k][Idx(u)], std::max(*units[k].ms[Idx(u)], kMinUnitMs) / 1000});
      }
    }
    base.rows.push_back(std::move(little));
  }

  // The LP with every min_rps model served at least theta * min_rps.
  auto with_minima = [&](double theta) {
    Lp lp = base;
    for (size_t m = 0; m < n_models; ++m) {
      if (!has_units[m] || !models[m].min_rps) continue;
      Lp::Var& v = lp.vars[Idx(lambda[m])];
      v.lo = theta * *models[m].min_rps;
      if (v.hi) v.lo = std::min(v.lo, *v.hi);
    }
    return lp;
  };

  LpResult result;
  BATON_ASSIGN_OR_RETURN(std::optional<std::vector<double>> x, SolveLp(with_minima(1), "throughput LP"));
  if (!x) {
    // Not every min_rps fits: find the largest common factor theta that does
    // (theta = 0 always fits), then maximize the total under those minima.
    result.min_met = false;
    Lp scale = with_minima(0);
    for (Lp::Var& v : scale.vars) v.objective = 0;
    const int theta_var = scale.AddVar(0, 1.0, 1);
    for (size_t m = 0; m < n_models; ++m) {
      if (!has_units[m] || !models[m].min_rps || *models[m].min_rps <= 0) continue;
      // lambda_m - theta * min_m >= 0
      scale.rows.push_back(
          {.terms = {{lambda[m], 1.0}, {theta_var, -*models[m].min_rps}}, .lo = 0.0, .hi = std::nullopt});
    }
    BATON_ASSIGN_OR_RETURN(std::optional<std::vector<double>> s, SolveLp(scale, "throughput LP (scaling min_rps)"));
    if (!s)
      return absl::InternalError("throughput LP (scaling min_rps): infeasible even with theta = 0; this is a bug");
    // Back off a hair so that solver round-off cannot make the next LP infeasible.
    const double theta = std::clamp((*s)[Idx(theta_var)] - 1e-9, 0.0, 1.0);
    BATON_ASSIGN_OR_RETURN(x, SolveLp(with_minima(theta), "throughput LP (scaled min_rps)"));
    if (!x) {
      return absl::InternalError(
          absl::StrCat("throughput LP (scaled min_rps): infeasible at theta = ", theta, "; this is a bug"));
    }
  }

  auto value = [&](int var) { return std::max(0.0, (*x)[Idx(var)]); };
  result.model_rps.assign(n_models, 0);
  for (size_t m = 0; m < n_models; ++m) {
    result.model_rps[m] = value(lambda[m]);
    result.total_rps += result.model_rps[m];
  }
  result.unit_share.assign(units.size(), std::vector<double>(Idx(pus), 0));
  result.pu_busy.assign(Idx(pus), 0);
  for (size_t k = 0; k < units.size(); ++k) {
    double sum = 0;
    for (int u = 0; u < pus; ++u) {
      if (y[k][Idx(u)] >= 0) sum += value(y[k][Idx(u)]);
    }
    for (int u = 0; u < pus; ++u) {
      if (y[k][Idx(u)] < 0) continue;
      const double rate = value(y[k][Idx(u)]);
      if (sum > kTiny) result.unit_share[k][Idx(u)] = rate / sum;
      result.pu_busy[Idx(u)] += rate * std::max(*units[k].ms[Idx(u)], kMinUnitMs) / 1000;
    }
  }
  for (double& busy : result.pu_busy) busy = std::clamp(busy, 0.0, 1.0);
  return result;
}

namespace {

// Problem checks, lower-bound atom times, critical paths.

std::string PuName(const Problem& problem, int u) { return absl::StrCat("'", problem.pus[Idx(u)].name, "'"); }

std::string PuList(const Problem& problem) {
  return absl::StrJoin(problem.pus, ", ", [](std::string* out, const ProblemPu& pu) { out->append(pu.name); });
}

absl::Status ValidateProblem(const Problem& problem) {
  const size_t pus = problem.pus.size();
  if (!NonNegativeFinite(problem.partition_overhead_ms)) {
    return Invalid("problem: partition_overhead_ms is ", problem.partition_overhead_ms, "; use a finite time >= 0");
  }
  for (const ProblemModel& model : problem.models) {
    const std::string where = absl::StrCat("model '", model.name, "'");
    const int n = model.atoms();
    for (int i = 0; i < n; ++i) {
      const PuCosts& costs = model.atom_ms[Idx(i)];
      if (costs.size() != pus) {
        return Invalid(where, ": atom ", i, " has times for ", costs.size(), " PUs, but the problem has ", pus,
                       "; give one per PU");
      }
      bool any = false;
      for (size_t u = 0; u < pus; ++u) {
        if (costs[u] && !NonNegativeFinite(*costs[u])) {
          return Invalid(where, ": atom ", i, " takes ", *costs[u], " ms on PU '", problem.pus[u].name,
                         "'; use a finite time >= 0");
        }
        any = any || costs[u].has_value();
      }
      if (!any) {
        return Invalid(where, ": atom ", i, " can run on no PU (PUs: ", PuList(problem),
                       "); add a PU that supports its ops or leave the model out");
      }
    }
    for (const auto& [range, costs] : model.range_ms) {
      const bool bad_time = std::any_of(costs.begin(), costs.end(),
                                        [](const std::optional<double>& t) { return t && !NonNegativeFinite(*t); });
      if (range.first < 0 || range.first >= range.second || range.second > n || costs.size() != pus || bad_time) {
        return Invalid(where, ": measured range [", range.first, ", ", range.second, ") is malformed; ranges need ",
                       "0 <= first < last <= ", n, " and one finite time >= 0 or none per PU (", pus, ")");
      }
    }
    for (const AtomEdge& e : model.edges) {
      if (e.from < 0 || e.from >= e.to || e.to >= n || e.bytes < 0) {
        return Invalid(where, ": edge ", e.from, " -> ", e.to, " (", e.bytes,
                       " bytes) is malformed; edges need 0 <= from < to < ", n, " and bytes >= 0");
      }
    }
    const Demand& d = model.demand;
    if ((d.kind == Demand::Kind::kRate && !NonNegativeFinite(d.rate)) ||
        (d.kind == Demand::Kind::kClosed && (d.concurrency < 0 || !NonNegativeFinite(d.think_ms)))) {
      return Invalid(where, ": demand (rate ", d.rate, ", concurrency ", d.concurrency, ", think_ms ", d.think_ms,
                     ") is out of range; use finite values >= 0");
    }
  }
  return absl::OkStatus();
}

// Lower bounds on each atom's share of any partition's time: lb[i][u] =
// atom_ms[i][u] * scale, where scale is the smallest RangeMs / (sum of atom
// times) over the ranges that contain atom i and can run on u (measured
// ranges, and merged ones that pay the partition overhead once). Then every
// range R costs at least sum_{i in R} lb[i][u] on u. O(n^3) per PU.
std::vector<PuCosts> LowerBoundAtomMs(const Problem& problem, int m) {
  const ProblemModel& model = problem.models[Idx(m)];
  const int n = model.atoms();
  std::vector<PuCosts> lb = model.atom_ms;
  for (int u = 0; u < static_cast<int>(problem.pus.size()); ++u) {
    std::vector<double> scale(Idx(n), 1.0);
    for (int first = 0; first < n; ++first) {
      // ratio[l - first - 1] for ranges [first, l) whose atoms all run on u.
      std::vector<double> ratio;
      double sum = 0;
      for (int last = first + 1; last <= n && model.atom_ms[Idx(last - 1)][Idx(u)]; ++last) {
        sum += *model.atom_ms[Idx(last - 1)][Idx(u)];
        const std::optional<double> range = problem.RangeMs(m, first, last, u);
        ratio.push_back(range && sum > 0 ? std::min(1.0, *range / sum) : 1.0);
      }
      // Atom i is in [first, l) for every l > i: take the min over those.
      double running = 1.0;
      for (int k = static_cast<int>(ratio.size()) - 1; k >= 0; --k) {
        running = std::min(running, ratio[Idx(k)]);
        scale[Idx(first + k)] = std::min(scale[Idx(first + k)], running);
      }
    }
    for (int i = 0; i < n; ++i) {
      if (lb[Idx(i)][Idx(u)]) *lb[Idx(i)][Idx(u)] *= scale[Idx(i)];
    }
  }
  return lb;
}

// Longest path over the atom DAG (edges only; from < to is a topological
// order) with each atom at its cheapest lower-bound time, plus the cheapest
// transfer on edges between atoms that share no PU.
double LatencyBoundMs(const Problem& problem, int m, const std::vector<PuCosts>& lb) {
  const ProblemModel& model = problem.models[Idx(m)];
  const int n = model.atoms();
  const int pus = static_cast<int>(problem.pus.size());
  std::vector<double> cost(Idx(n), std::numeric_limits<double>::infinity());
  for (int i = 0; i < n; ++i) {
    for (const std::optional<double>& t : lb[Idx(i)]) {
      if (t) cost[Idx(i)] = std::min(cost[Idx(i)], *t);
    }
  }
  std::vector<double> start(Idx(n), 0);  // earliest start of atom i
  std::vector<AtomEdge> edges = model.edges;
  std::sort(edges.begin(), edges.end(), [](const AtomEdge& a, const AtomEdge& b) { return a.to < b.to; });
  double longest = 0;
  size_t e = 0;
  for (int j = 0; j < n; ++j) {
    for (; e < edges.size() && edges[e].to == j; ++e) {
      const AtomEdge& edge = edges[e];
      bool shared = false;
      double transfer = std::numeric_limits<double>::infinity();
      for (int u = 0; u < pus; ++u) {
        if (!model.atom_ms[Idx(edge.from)][Idx(u)]) continue;
        for (int v = 0; v < pus; ++v) {
          if (!model.atom_ms[Idx(j)][Idx(v)]) continue;
          shared = shared || u == v;
          transfer = std::min(transfer, problem.TransferMs(u, v, edge.bytes));
        }
      }
      const double finish = start[Idx(edge.from)] + cost[Idx(edge.from)] + (shared ? 0 : transfer);
      start[Idx(j)] = std::max(start[Idx(j)], finish);
    }
    longest = std::max(longest, start[Idx(j)] + cost[Idx(j)]);
  }
  return longest;
}

// The most a model's arrivals ask for: rate (kRate), concurrency / ((think +
// latency) / 1000) (kClosed), none (kSaturating, or a zero-length cycle).
std::optional<double> DemandRps(const Demand& demand, double latency_ms) {
  const double cycle_ms = demand.think_ms + latency_ms;
  switch (demand.kind) {
    case Demand::Kind::kSaturating:
      return std::nullopt;  // but see LittleCap
    case Demand::Kind::kRate:
      return demand.rate;
    case Demand::Kind::kClosed:
      return cycle_ms > 0 ? std::optional(demand.concurrency * 1000.0 / cycle_ms) : std::nullopt;
  }
  return std::nullopt;
}

// Little's law for a saturating closed loop: `concurrency` requests in flight,
// each taking at least `latency_ms`, complete at most concurrency / latency.
std::optional<double> LittleCap(const Demand& demand, double latency_ms) {
  if (demand.kind != Demand::Kind::kSaturating || latency_ms <= 0 || demand.concurrency <= 0) return std::nullopt;
  return demand.concurrency * 1000.0 / latency_ms;
}

// At most how many atoms of one request of `model` run at the same time:
// no more than there are PUs, nor than the width of its atom DAG (the
// largest set of atoms no path connects; by Dilworth's theorem the atoms
// less a maximum matching between each atom and the atoms it reaches; 1 for
// a chain). The width is computed up to kMaxWidthAtoms atoms (cubic time);
// a larger model counts as wide as there are PUs.
constexpr int kMaxWidthAtoms = 256;
int AtomWidth(const ProblemModel& model, int pus) {
  const int n = model.atoms();
  if (n <= 1 || pus <= 1) return std::min(n, std::max(pus, 1));
  if (n > kMaxWidthAtoms) return pus;
  // reach[i][j]: a path leads from atom i to atom j (i < j: edges go forward).
  std::vector<std::vector<bool>> reach(Idx(n), std::vector<bool>(Idx(n), false));
  for (const AtomEdge& e : model.edges) reach[Idx(e.from)][Idx(e.to)] = true;
  for (int i = n - 1; i >= 0; --i) {
    for (int j = i + 1; j < n; ++j) {
      if (!reach[Idx(i)][Idx(j)]) continue;
      for (int k = j + 1; k < n; ++k) {
        if (reach[Idx(j)][Idx(k)]) reach[Idx(i)][Idx(k)] = true;
      }
    }
  }
  // Maximum bipartite matching (augmenting paths): left atom i to right atom j when i reaches j.
  std::vector<int> match_of_right(Idx(n), -1);
  std::function<bool(int, std::vector<bool>&)> augment = [&](int i, std::vector<bool>& seen) {
    for (int j = i + 1; j < n; ++j) {
      if (!reach[Idx(i)][Idx(j)] || seen[Idx(j)]) continue;
      seen[Idx(j)] = true;
      if (match_of_right[Idx(j)] < 0 || augment(match_of_right[Idx(j)], seen)) {
        match_of_right[Idx(j)] = i;
        return true;
      }
    }
    return false;
  };
  int matched = 0;
  for (int i = 0; i < n; ++i) {
    std::vector<bool> seen(Idx(n), false);
    if (augment(i, seen)) ++matched;
  }
  return std::min(n - matched, pus);
}

}  // namespace

absl::StatusOr<Bounds> ComputeBounds(const Problem& problem) {
  if (problem.dispatch_ms != 0) {  // bounds leave the runtime's dispatch cost out
    Problem without = problem;
    without.dispatch_ms = 0;
    return ComputeBounds(without);
  }
  BATON_RETURN_IF_ERROR(ValidateProblem(problem));
  const int n_models = static_cast<int>(problem.models.size());
  Bounds bounds;
  std::vector<LpUnit> units;
  std::vector<LpModel> lp_models(Idx(n_models));
  std::vector<LpInService> in_service;
  for (int m = 0; m < n_models; ++m) {
    const std::vector<PuCosts> lb = LowerBoundAtomMs(problem, m);
    const double latency = LatencyBoundMs(problem, m, lb);
    bounds.latency_ms.push_back(latency);
    for (const PuCosts& costs : lb) units.push_back({.model = m, .ms = costs});
    const Demand& demand = problem.models[Idx(m)].demand;
    lp_models[Idx(m)].max_rps = DemandRps(demand, latency);
    if (!lp_models[Idx(m)].max_rps) lp_models[Idx(m)].max_rps = LittleCap(demand, latency);
    const bool closed_loop = demand.kind == Demand::Kind::kClosed ||
                             (demand.kind == Demand::Kind::kSaturating && demand.concurrency > 0);
    if (closed_loop && demand.concurrency > 0) {
      const double width = AtomWidth(problem.models[Idx(m)], static_cast<int>(problem.pus.size()));
      in_service.push_back({.model = m,
                            .max = width * demand.concurrency,
                            .per_rps = width * std::max(0.0, demand.think_ms) / 1000});
    }
  }
  BATON_ASSIGN_OR_RETURN(LpResult lp,
                         SolveThroughputLp(static_cast<int>(problem.pus.size()), units, lp_models, in_service));
  bounds.throughput_rps = lp.total_rps;
  bounds.model_rps = std::move(lp.model_rps);
  bounds.pu_busy = std::move(lp.pu_busy);
  return bounds;
}

absl::Status ValidatePlacement(const Problem& problem, const Placement& placement) {
  BATON_RETURN_IF_ERROR(ValidateProblem(problem));
  if (placement.models.size() != problem.models.size()) {
    return Invalid("placement has partitions for ", placement.models.size(), " models, but the problem has ",
                   problem.models.size(), "; give one list of partitions per model");
  }
  const int pus = static_cast<int>(problem.pus.size());
  for (int m = 0; m < static_cast<int>(problem.models.size()); ++m) {
    const ProblemModel& model = problem.models[Idx(m)];
    const std::string where = absl::StrCat("model '", model.name, "'");
    const int n = model.atoms();
    if (n > 0 && model.cut_bytes.size() != Idx(n - 1)) {
      return Invalid(where, ": cut_bytes has ", model.cut_bytes.size(), " entries, but the model has ", n,
                     " atoms; give n - 1");
    }
    const std::vector<PlannedPartition>& parts = placement.models[Idx(m)];
    int next = 0;
    for (int j = 0; j < static_cast<int>(parts.size()); ++j) {
      const PlannedPartition& part = parts[Idx(j)];
      const std::string what = absl::StrCat(where, ": partition ", j, " (atoms [", part.first, ", ", part.last, "))");
      if (part.first != next || part.last <= part.first || part.last > n) {
        return Invalid(what, " does not continue the cover: it should start at atom ", next,
                       " and end after it, at most at ", n, "; partitions must cover atoms [0, ", n,
                       ") in order, without gaps or overlaps");
      }
      next = part.last;
      if (part.pus.empty()) {
        return Invalid(what, " lists no PU; list at least one PU that can run it");
      }
      for (size_t k = 0; k < part.pus.size(); ++k) {
        const int u = part.pus[k];
        if (u < 0 || u >= pus) {
          return Invalid(what, " lists PU index ", u, ", but the problem has ", pus, " PUs (", PuList(problem), ")");
        }
        if (std::find(part.pus.begin(), part.pus.begin() + static_cast<std::ptrdiff_t>(k), u) !=
            part.pus.begin() + static_cast<std::ptrdiff_t>(k)) {
          return Invalid(what, " lists PU ", PuName(problem, u), " twice; list each PU once");
        }
        if (problem.RangeMs(m, part.first, part.last, u)) continue;
        std::string why = "the measured range has no time on it";
        for (int i = part.first; i < part.last; ++i) {
          if (!model.atom_ms[Idx(i)][Idx(u)]) {
            why = absl::StrCat("atom ", i, " cannot run there");
            break;
          }
        }
        return Invalid(what, " lists PU ", PuName(problem, u), ", which cannot run it (", why,
                       "); list only PUs that can run the whole partition");
      }
    }
    if (next != n) {
      return Invalid(where, ": partitions end at atom ", next, ", but the model has ", n,
                     " atoms; partitions must cover atoms [0, ", n, ") in order");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Prediction> Predict(const Problem& problem, const Placement& placement) {
  BATON_RETURN_IF_ERROR(ValidatePlacement(problem, placement));
  const int pus = static_cast<int>(problem.pus.size());
  const int n_models = static_cast<int>(problem.models.size());
  Prediction prediction;
  std::vector<LpUnit> units;
  std::vector<LpModel> lp_models(Idx(n_models));
  std::vector<FairShare> shared;
  for (int m = 0; m < n_models; ++m) {
    const ProblemModel& model = problem.models[Idx(m)];
    double latency = 0;
    const PlannedPartition* prev = nullptr;
    for (const PlannedPartition& part : placement.models[Idx(m)]) {
      LpUnit unit{.model = m, .ms = PuCosts(Idx(pus))};
      double fastest = std::numeric_limits<double>::infinity();
      for (int u : part.pus) {
        unit.ms[Idx(u)] = problem.RangeMs(m, part.first, part.last, u);  // present: validated
        fastest = std::min(fastest, *unit.ms[Idx(u)]);
      }
      latency += fastest;
      if (prev) latency += problem.TransferMs(prev->pus[0], part.pus[0], model.cut_bytes[Idx(part.first - 1)]);
      prev = &part;
      units.push_back(std::move(unit));
    }
    prediction.latency_ms.push_back(latency);
    lp_models[Idx(m)].min_rps = lp_models[Idx(m)].max_rps = DemandRps(model.demand, latency);
    if (!lp_models[Idx(m)].max_rps) lp_models[Idx(m)].max_rps = LittleCap(model.demand, latency);
    if (model.demand.kind == Demand::Kind::kSaturating && model.weight > 0 && latency > 0 &&
        !placement.models[Idx(m)].empty()) {
      shared.push_back(FairShare{m, model.weight, latency});
    }
  }
  BATON_ASSIGN_OR_RETURN(LpResult lp, SolveSharedLp(pus, units, std::move(lp_models), shared));
  prediction.throughput_rps = lp.total_rps;
  prediction.model_rps = std::move(lp.model_rps);
  prediction.pu_busy = std::move(lp.pu_busy);
  prediction.demand_met = lp.min_met;
  size_t unit = 0;
  for (int m = 0; m < n_models; ++m) {
    std::vector<std::vector<double>>& model_shares = prediction.shares.emplace_back();
    for (size_t k = 0; k < placement.models[Idx(m)].size(); ++k) model_shares.push_back(lp.unit_share[unit++]);
  }
  return prediction;
}

absl::StatusOr<LpResult> SolveSharedLp(int pus, std::span<const LpUnit> units, std::vector<LpModel> models,
                                       std::span<const FairShare> shared) {
  double theta_hi = std::numeric_limits<double>::infinity();
  for (const FairShare& f : shared) {
    if (f.model < 0 || Idx(f.model) >= models.size()) {
      return absl::InvalidArgumentError(absl::StrCat("fair share: model index ", f.model, " is not one of the ",
                                                     models.size(), " models"));
    }
    if (!(f.weight > 0) || !(f.work_ms > 0) || !std::isfinite(f.weight) || !std::isfinite(f.work_ms)) {
      return absl::InvalidArgumentError(absl::StrCat("fair share of model ", f.model, ": weight ", f.weight,
                                                     " and work ", f.work_ms, " ms must be positive and finite"));
    }
    // theta * weight is the model's PU time per second: more than every PU
    // for a whole second never fits.
    theta_hi = std::min(theta_hi, 2.0 * std::max(pus, 1) * 1000 / f.weight);
  }
  BATON_ASSIGN_OR_RETURN(LpResult best, SolveThroughputLp(pus, units, models));
  // One model alone takes all that is left anyway; and when the other
  // demands alone do not fit, there is nothing to share.
  if (shared.size() < 2 || !best.min_met) return best;
  double theta_lo = 0;
  for (int step = 0; step < 24; ++step) {
    const double theta = (theta_lo + theta_hi) / 2;
    for (const FairShare& f : shared) {
      LpModel& lm = models[Idx(f.model)];
      // A model its own cap (Little's law) holds back leaves the rest to the others.
      lm.min_rps = lm.max_rps ? std::min(theta * f.weight / f.work_ms, *lm.max_rps) : theta * f.weight / f.work_ms;
    }
    BATON_ASSIGN_OR_RETURN(LpResult result, SolveThroughputLp(pus, units, models));
    if (result.min_met) {
      theta_lo = theta;
      best = std::move(result);
    } else {
      theta_hi = theta;
    }
  }
  return best;
}

std::vector<BoundViolation> FindBoundViolations(double bound_rps,
                                                std::span<const std::pair<std::string, double>> modes) {
  std::vector<BoundViolation> out;
  for (const auto& [mode, rps] : modes) {
    if (rps > bound_rps) out.push_back(BoundViolation{mode, rps, bound_rps});
  }
  return out;
}

}  // namespace baton::profile
