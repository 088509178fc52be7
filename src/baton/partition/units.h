// Capability units, atoms and candidate partitions (what the profiler measures
// and the high-level policies combine).
//
// Capability unit: a maximal run of nodes, in a topological order chosen to
// keep them together, that the same set of PUs can run (ONNX Runtime's
// GetCapability groups, made convex). The order is greedy: among the ready
// nodes, prefer one with the current unit's support mask, so that parallel
// branches with the same support end up in one unit.
//
// When there are more units than the atom budget allows (op support that
// alternates, e.g. an NPU without Softmax in every attention block), the
// cheapest unit is merged into a neighbour it shares a PU with (the merged
// unit runs only where both can), preferring the neighbour that keeps more
// PUs, until they fit; only units that share no PU with any neighbour make it
// an error.
//
// Atom: a piece of a unit. Big units are split into pieces of about equal
// cost (partition::CostOf) so that PUs which share support can still pipeline
// a model: the model gets at least `min_atoms` atoms when it has that many
// nodes. Any contiguous range of atoms is convex (a contiguous segment of a
// topological order).
//
// Candidates: the ranges of atoms the profiler measures, at most `budget` per
// model (unbounded merging explodes: n atoms have n(n+1)/2 ranges). Always in:
// every atom alone, then every capability unit whole, then the whole model
// (when one PU can run all of it), then ranges of 2, 3, ... atoms that some PU
// can run whole, shortest first, until the budget is spent.
//
// Worked example: nodes a->b->c->d with support masks 11, 11, 01, 11 (two
// PUs, bit 0 = cpu, bit 1 = npu): units {a,b} (11), {c} (01), {d} (11).
// With min_atoms 4 the unit {a,b} splits into {a} and {b}: atoms a|b|c|d.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/graph/model.h"

namespace baton::partition {

struct Atom {
  std::vector<NodeId> nodes;  // topological order; free Constant nodes are left out (see plan.h)
  uint64_t support = 0;       // bit u: PU u can run every node
  int unit = 0;               // capability unit index (non-decreasing over atoms)
  double cost = 0;            // sum of CostOf over its nodes
};

struct AtomEdge {
  int from = 0;  // from < to
  int to = 0;
  int64_t bytes = 0;  // tensors from -> to; unknown sizes count as 0
};

struct Atoms {
  std::vector<Atom> atoms;
  int units = 0;
  // cut_bytes[i]: bytes of the tensors produced in atoms [0, i] and read in
  // atoms [i + 1, n) (unknown sizes count as 0); size n - 1.
  std::vector<int64_t> cut_bytes;
  std::vector<AtomEdge> edges;  // one per (from, to) pair with a data dependency
};

// `support[n]` (indexed by NodeId) as in CutForPus. `min_atoms` >= 1,
// `max_atoms` >= min_atoms: when the units exceed max_atoms even after merging
// (see above) it is an error (InvalidArgument naming the model, the number of
// units and the fix: raise the budget). A node no PU can run is an error naming it and its op.
absl::StatusOr<Atoms> MakeAtoms(const graph::Model& model, std::span<const uint64_t> support, int min_atoms,
                                int max_atoms);

struct Candidate {
  int first = 0;  // atoms [first, last)
  int last = 0;
  uint64_t support = 0;  // AND of the atoms' masks (0: no PU can run it whole)

  friend bool operator==(const Candidate&, const Candidate&) = default;
};

// At most `budget` candidates (InvalidArgument when budget < number of atoms).
// Order: as listed above. Ranges that no PU can run whole are never included.
absl::StatusOr<std::vector<Candidate>> Candidates(const Atoms& atoms, int budget);

// The nodes of atoms [first, last), in topological order.
std::vector<NodeId> NodesOf(const Atoms& atoms, int first, int last);

}  // namespace baton::partition
