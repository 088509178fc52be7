// The best static assignment of whole models to PUs, as a user who places
// each model on one PU by hand would pick it: the `whole_on_one_pu` and
// `ort_pinned` baselines of `baton run`.
//
// Score of an assignment: the load of its busiest PU, load(u) = the sum over
// the models on u of one request's latency there; ties go to the smaller total
// load. Exhaustive when there are at most 200,000 assignments (PUs^models),
// greedy beyond (models by decreasing fastest latency, each onto the PU whose
// load grows to the least). A latency of +infinity (or any value >= 1e300)
// means the model cannot run there; a model that can run nowhere still gets
// PU 0 (callers check that first).
//
// Example: latencies {{10, 20}, {10, 20}} (two models, two PUs): {0, 1}
// loads u0 = 10, u1 = 20 (busiest 20, total 30); {0, 0} loads u0 = 20
// (busiest 20, total 20), so {0, 0} wins the tie.
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <vector>

namespace baton::plan {

// latency_ms[m][u]: one request of model m alone on PU u. All rows must have
// the same length; returns the PU index per model (empty for no models).
std::vector<size_t> BestWholeAssignment(const std::vector<std::vector<double>>& latency_ms);

}  // namespace baton::plan
