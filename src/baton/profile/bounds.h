// Lower bounds (what no schedule can beat) and plan predictions, from a
// planning Problem (profile/problem.h).
//
// Bounds ignore Problem::dispatch_ms (the runtime's per-partition cost);
// predictions count it.
//
// Latency bound of a model: the longest path through its atom DAG (its
// edges only: atoms with no path between them may run in parallel) where each
// atom takes its lower-bound time t (below) on its fastest capable PU, plus
// the transfers no placement can avoid (an edge between two atoms that share
// no capable PU costs at least the cheapest transfer between a PU of one and
// a PU of the other).
//
// Throughput bound (an LP, solved with GLPK): rates lambda_m >= 0 per model
// and y[m,i,u] >= 0, the rate at which atom i of model m runs on PU u:
//   sum_u y[m,i,u] = lambda_m                  every atom of every request runs once
//   sum_{m,i} y[m,i,u] * t[m,i,u] / 1000 <= 1  no PU is busy more than 100 % of the time
//   lambda_m <= cap_m                           the arrival process asks for no more
//   maximize sum_m lambda_m
// where t[m,i,u] is a lower bound on atom i's cost on u: the atom's time
// times the smallest ratio RangeMs / (sum of its atoms' times) over the
// ranges on u that contain it (measured ranges, and merged ones that pay the
// partition overhead once), so that no partition is cheaper than the LP
// assumes. Example: three 10 ms atoms, overhead 2 ms: the whole model takes
// 26 ms as one partition, so t = 26/3 ms each. cap_m = rate (kRate),
// concurrency / (think_ms + latency bound) (kClosed), or concurrency /
// latency bound (kSaturating: a closed loop without pause; Little's law).
// A closed loop (kClosed, or kSaturating with a concurrency) also gets
// Little's law with the split in it:
//   sum_{i,u} y[m,i,u] * t[m,i,u] / 1000 + W_m * lambda_m * think_ms / 1000 <= W_m * concurrency
// Its N requests in flight each spend think_ms pausing and at least S / W_m
// being served, where S is the sum of the request's atom times on the PUs
// that ran them and W_m the most atoms of one request that can run at once
// (the width of the atom DAG, 1 for a chain, and at most the number of PUs;
// a model of more than 256 atoms counts as wide as there are PUs, to keep
// the cost bounded). So a split that sends a closed loop's work to slow PUs
// lengthens its requests, and the loop completes fewer of them; the cap
// above alone assumes every request at the latency bound, whatever the split.
// Transfers are not in the LP: inside one device PUs share memory, and across
// devices the Problem has no link topology to charge them to (which device
// pairs share a wire); current deployments put a whole model on one device,
// so no request crosses. Cross-device transfers count only in the latency
// bound and the predicted latency. Times under 1e-6 ms count as 1e-6 ms
// (keeps the LP bounded).
//
// Worked example: one model, two atoms, two PUs; atom 0 takes 10 ms on u0 and
// 5 ms on u1, atom 1 takes 10 ms on u0 and cannot run on u1; saturating.
// Best: u0 runs atom 1 (10 ms per request) and a share of atom 0; u1 the rest
// of atom 0. lambda = 100/s uses u0 fully for atom 1, and u1 runs atom 0 at
// 100/s * 5 ms = 50 %: bound 100 req/s.
//
// Prediction of a placement: the same LP where each planned partition is one
// unit that may only run on its listed PUs, with its RangeMs costs (the
// online policy is assumed to split work between a partition's PUs as well
// as the LP does), kRate models fixed at their rate and kClosed models at
// concurrency / (think_ms + predicted latency) when the PUs can serve that
// (they are served first; otherwise they are all scaled by one factor and
// demand_met is false), saturating models sharing the rest by their weight
// (SolveSharedLp; work = the chain of the model's partitions on their
// fastest listed PUs). Predicted latency = the chain of the model's
// partitions, each on its fastest listed PU, plus the transfer of the cut
// bytes between consecutive partitions' preferred PUs (pus[0]; 0 when they
// are the same PU). No queueing.
//
// Thread-safety: pure functions. GLPK's environment is thread-local; each
// call builds and frees its own problem object with the terminal output off
// (restored afterwards), and frees the thread's GLPK environment at the end
// when the call created it (GLPK never frees it by itself, which
// LeakSanitizer reports when a thread ends).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/status.h"
#include "baton/profile/problem.h"

namespace baton::profile {

// A general throughput LP over units (atoms or partitions).
struct LpUnit {
  int model = 0;
  PuCosts ms;  // per PU; nullopt = may not run there
};
struct LpModel {
  std::optional<double> min_rps;  // served at least this much (if feasible; see below)
  std::optional<double> max_rps;  // at most this much
};
// Little's law for a closed loop (see ComputeBounds): the row
//   sum over the model's units and PUs of y * ms / 1000 + lambda * per_rps <= max
struct LpInService {
  int model = 0;
  double max = 0;      // >= 0
  double per_rps = 0;  // >= 0
};
struct LpResult {
  double total_rps = 0;
  std::vector<double> model_rps;                // per model
  std::vector<std::vector<double>> unit_share;  // per unit, per PU: fraction of its runs there (sums to 1 if rate > 0)
  std::vector<double> pu_busy;                  // per PU: busy fraction in [0, 1]
  bool min_met = true;                          // false when the min_rps could not all be met: then every
                                                // min_rps model was scaled by the same largest feasible factor
};
// Maximizes the total rate. min_rps first: if every min_rps fits, the total
// is maximized under them; otherwise the largest theta in [0, 1] such that
// every min_rps model gets theta * min_rps is found (a second LP), min_met is
// false, and the total is maximized under those scaled minima. A model with
// no unit at all gets rate 0 (its min_rps counts as met). Errors:
// InvalidArgument when a unit has no PU it may run on, sizes disagree, a
// time or rate is negative or not finite, or min_rps > max_rps; Internal
// (naming GLPK's return code) when the solver fails.
// `in_service`: Little's law rows (InvalidArgument for a model out of range or
// a negative or non-finite number).
absl::StatusOr<LpResult> SolveThroughputLp(int pus, std::span<const LpUnit> units, std::span<const LpModel> models,
                                           std::span<const LpInService> in_service = {});

// A saturating model's claim on what the other demands leave: `weight` (its
// requests in flight) and `work_ms`, the PU time one request takes.
struct FairShare {
  int model = 0;
  double weight = 0;   // > 0
  double work_ms = 0;  // > 0
};
// SolveThroughputLp with `models`' own min_rps and max_rps, where the models
// in `shared` split what is left by equal PU time per unit of weight, as the
// runtime's `share` policy gives every request in flight the same PU time:
// each gets at least theta * weight / work_ms (or its max_rps, if lower),
// for the largest theta that fits (bisection, within 2^-24 of the bracket),
// then capacity still left goes wherever it adds the most rate. Maximizing
// the total alone would give all spare capacity to the cheapest model and
// nothing to the others. When the other minima alone do not fit, or
// `shared` has fewer than two models, this is SolveThroughputLp. GLPK's
// presolver accepts minima a little above capacity: shares can come out up
// to about 0.1 % high. Errors: those of SolveThroughputLp; InvalidArgument
// for a model index out of range or a weight or work that is not positive
// and finite.
absl::StatusOr<LpResult> SolveSharedLp(int pus, std::span<const LpUnit> units, std::vector<LpModel> models,
                                       std::span<const FairShare> shared);

struct Bounds {
  std::vector<double> latency_ms;  // per model
  double throughput_rps = 0;
  std::vector<double> model_rps;  // per model, at the optimum
  std::vector<double> pu_busy;    // per PU, at the optimum
};
// InvalidArgument naming the model and atom when an atom can run on no PU,
// or naming the model when its sizes, ranges, edges or demand are malformed.
absl::StatusOr<Bounds> ComputeBounds(const Problem& problem);

// A measured throughput above the bound: the bound is wrong for this run (a
// profile measured while the machine was slower, or a mode using capacity the
// problem does not model, e.g. cores no PU claims).
struct BoundViolation {
  std::string mode;
  double throughput_rps = 0;
  double bound_rps = 0;
};
// Every mode whose measured throughput is above `bound_rps` (strictly; no
// tolerance), in the order given. Modes are (name, req/s).
std::vector<BoundViolation> FindBoundViolations(double bound_rps,
                                                std::span<const std::pair<std::string, double>> modes);

struct Prediction {
  double throughput_rps = 0;
  std::vector<double> model_rps;   // per model
  std::vector<double> latency_ms;  // per model (no queueing)
  std::vector<double> pu_busy;     // per PU
  bool demand_met = true;          // every kClosed/kRate model gets its demand
  // Per model, per planned partition, per PU (Problem::pus order): the
  // fraction of the partition's runs the LP puts on that PU (0 on PUs it is
  // not listed on; sums to 1 when the model's rate is above 0, else all 0).
  // The `share` low-level policy follows it (policy/split.h).
  std::vector<std::vector<std::vector<double>>> shares;
};
// InvalidArgument (naming the model, the partition index and the PU) when
// the placement does not cover each model's atoms in order, lists no PU, an
// unknown PU, a PU twice or a PU that cannot run a partition, or sizes
// disagree (also cut_bytes: n - 1 per model), or the problem is malformed as
// for ComputeBounds.
absl::StatusOr<Prediction> Predict(const Problem& problem, const Placement& placement);
// The same checks as Predict, alone.
absl::Status ValidatePlacement(const Problem& problem, const Placement& placement);

}  // namespace baton::profile
