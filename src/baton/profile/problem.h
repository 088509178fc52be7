// The planning problem: what the high-level policies, the lower bounds and the
// plan predictions all read. Numbers only (no graph, no ORT): built from a
// profile (profile/profile.h) and the run configuration by the composition
// root, or by hand in tests.
//
// A model is cut into *atoms*: convex pieces of its nodes in a topological
// order (partition/units.h), so that every contiguous range [first, last) of
// atoms is a valid (convex) partition. Atoms never straddle a capability unit
// (a maximal run of nodes that the same set of PUs can run). A *placement*
// groups each model's atoms into contiguous ranges (partitions) and gives each
// the PUs it may run on.
//
// Units: milliseconds (double) for times, requests per second for rates,
// bytes for tensor sizes.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace baton::profile {

// Per PU of the problem (index = position in Problem::pus): the time, or
// nullopt when that PU cannot run it.
using PuCosts = std::vector<std::optional<double>>;

struct ProblemPu {
  std::string name;
  std::string kind;     // "cpu", "emu", ...
  uint32_t device = 0;  // index of the device the PU belongs to
};

// Transfer time of `bytes` between two PUs: fixed_ms + bytes / 1e6 * ms_per_mb.
struct LinkCost {
  double fixed_ms = 0;
  double ms_per_mb = 0;
  double Ms(int64_t bytes) const { return fixed_ms + static_cast<double>(bytes) / 1e6 * ms_per_mb; }

  friend bool operator==(const LinkCost&, const LinkCost&) = default;
};

// How a model's requests arrive: what bounds its rate from above.
struct Demand {
  enum class Kind {
    kSaturating,  // closed loop without pause: as many as the PUs allow (and
                  // Little's law: concurrency / latency, when concurrency > 0)
    kRate,        // periodic or Poisson: `rate` requests per second at most
    kClosed,      // closed loop with a pause: concurrency / (think_ms + latency) at most
  };
  Kind kind = Kind::kSaturating;
  double rate = 0;
  int concurrency = 0;  // kClosed, kSaturating: requests in flight (0 = not known)
  double think_ms = 0;
};

struct AtomEdge {
  int from = 0;  // atom index, from < to
  int to = 0;
  int64_t bytes = 0;

  friend bool operator==(const AtomEdge&, const AtomEdge&) = default;
};

struct ProblemModel {
  std::string name;
  // atom_ms[i][u]: time of atom i run alone as a partition on PU u.
  std::vector<PuCosts> atom_ms;
  // unit_of_atom[i]: the capability unit atom i belongs to (non-decreasing, from 0).
  std::vector<int> unit_of_atom;
  // Measured ranges (profiled candidates) {first, last} -> per-PU time. They
  // take precedence over sums of atoms (a bigger partition saves per-run
  // overhead and lets the backend fuse across atom boundaries).
  std::map<std::pair<int, int>, PuCosts> range_ms;
  // cut_bytes[i] (i < atoms - 1): bytes of the tensors that cross the cut
  // between atom i and atom i + 1 (produced at or before i, read after it).
  std::vector<int64_t> cut_bytes;
  // Data dependencies between atoms (for the critical path).
  std::vector<AtomEdge> edges;
  Demand demand;
  double weight = 1;  // share of the PUs among saturating models (planners' objective)
  std::optional<double> deadline_ms;

  int atoms() const { return static_cast<int>(atom_ms.size()); }
};

struct Problem {
  std::vector<ProblemPu> pus;
  std::vector<ProblemModel> models;
  LinkCost same_device;   // between two PUs of one device
  LinkCost cross_device;  // between devices
  // Fixed cost of running one more partition (dispatch, session call),
  // charged to the PU that runs it; added once per range built from atoms.
  double partition_overhead_ms = 0;
  // The runtime's cost of dispatching one partition run (handing it to its
  // PU's thread and its outputs back), added once to every RangeMs. Planning
  // and predictions count it; bounds are computed with it at 0 (a schedule
  // need not pay it per atom).
  double dispatch_ms = 0;

  // Time of atoms [first, last) of model m on PU u: the measured range when
  // there is one, else the sum of the atoms' times (each atom's time already
  // includes one partition overhead, so the sum subtracts the extra ones),
  // plus dispatch_ms. nullopt when an atom cannot run on u. Requires 0 <= first < last <= atoms.
  std::optional<double> RangeMs(int m, int first, int last, int u) const;
  // Transfer time between PUs u and v (0 when u == v).
  double TransferMs(int u, int v, int64_t bytes) const;
  // The same problem with every time on PU u (atoms, ranges, and the
  // partition overhead, which is scaled by the mean factor) multiplied by
  // speed[u]: profiles measured when the machine was faster or slower,
  // corrected by what a run measured. Requires speed.size() == pus.size().
  Problem Scaled(const std::vector<double>& speed) const;
};

// The same problem with every range no dearer than any split of it into two
// pieces (their times added, one partition overhead less): a measured range
// costing more than its parts is measurement noise or a hot-cache effect of
// profiling the parts alone, over and over; at run time the parts run between
// other models' partitions and the whole saves a hand-over and lets the
// backend fuse. Without this, planning cut models for a gain that no run
// showed (docs/planning.md). Lowered ranges are added to range_ms; nothing
// gets dearer, so bounds computed from the result stay bounds.
Problem Subadditive(const Problem& problem);

// One partition of a placement: atoms [first, last), runnable on `pus`
// (indices into Problem::pus, preferred first; a `fixed` low-level policy uses
// pus[0]).
struct PlannedPartition {
  int first = 0;
  int last = 0;
  std::vector<int> pus;

  friend bool operator==(const PlannedPartition&, const PlannedPartition&) = default;
};

// Per model (Problem::models order): its partitions, covering its atoms in order.
struct Placement {
  std::vector<std::vector<PlannedPartition>> models;

  friend bool operator==(const Placement&, const Placement&) = default;
};

}  // namespace baton::profile
