// Low-level scheduling policies: which ready partition runs next on which PU.
//
// A policy is a pure function from a read-only Snapshot (which carries the
// current time) to a list of Decisions. It never enqueues, sleeps, logs or
// reads a clock; the low-level dispatcher core carries the decisions out.
// Anything a policy would want to remember (e.g. round robin's next PU) is
// derived from the snapshot (`decisions_so_far`), so the same snapshot always
// gives the same decisions.
//
// Thread-safety: policies are immutable after construction; Decide is const and
// may be called from any thread.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/policy/split.h"

namespace baton::policy {

// Answers "how long will partition p of model m take on PU u" for one device.
// nullopt means the PU cannot run that partition at all (capability), which a
// policy must respect. Implementations: policy/latency_model.h.
class LatencyModel {
 public:
  virtual ~LatencyModel() = default;
  virtual std::optional<Duration> Expected(ModelId model, PartitionId partition, PuId pu) const = 0;
};

// One assignment waiting in the device's ready queue.
struct WorkItem {
  AssignmentId id;
  RequestId request;
  ModelId model;
  PartitionId partition;
  Time enqueued{};               // when it entered this device's queue
  std::optional<Time> deadline;  // absolute; the request's deadline
  int priority = 0;              // larger = more important; classes 0..k-1
  std::optional<PuId> fixed_pu;  // placement chosen by the plan (used by `fixed`)
  uint64_t seq = 0;              // arrival order on this device (ties break by it)
  // The PU time this device gave the item's model lately (decayed with a
  // half-life of LowLevelCore::kServiceHalfLife), divided by the model's
  // requests queued or running here: a model with two requests in flight
  // counts as served half as much. `share` runs the least-served model first
  // within a priority class, so saturating models share the PUs in proportion
  // to their requests in flight, as the planner's weights assume.
  double service_ms = 0;
};

struct PuState {
  PuId id;
  std::string kind;  // "cpu", "emu", ...
  bool busy = false;
  // When the PU is expected to be free: now when idle, else start + expected run time.
  Time expected_free{};
};

struct Snapshot {
  Time now{};
  std::span<const WorkItem> ready;  // in arrival order
  std::span<const PuState> pus;
  const LatencyModel* latency = nullptr;  // never null when a core builds the snapshot
  uint64_t decisions_so_far = 0;          // kRun decisions this core has carried out
};

struct Decision {
  enum class Kind {
    kRun,   // start `item` on `pu` now (the PU must be idle)
    kDrop,  // drop `item`: it can no longer meet its deadline (answered DeadlineExceeded)
  };
  Kind kind = Kind::kRun;
  AssignmentId item;
  PuId pu;  // for kRun; PuId{} for kDrop

  friend bool operator==(const Decision&, const Decision&) = default;
};

// "run 3 on pu 1" / "drop 3" (for messages and test output).
std::string ToString(const Decision& decision);
std::ostream& operator<<(std::ostream& os, const Decision& decision);

class LowLevelPolicy {
 public:
  virtual ~LowLevelPolicy() = default;
  virtual std::string name() const = 0;
  // Decisions for this instant. Rules the core enforces (and tests check):
  // every item and PU at most once, kRun only onto idle PUs that can run the item.
  // Items without a decision keep waiting; an item no PU can run never gets a
  // decision (reporting it is the core's job). The same snapshot gives the same
  // decisions, whatever the order of `ready` and `pus`; decisions come out in
  // the order the policy made them (run them in that order).
  virtual std::vector<Decision> Decide(const Snapshot& snapshot) const = 0;
  // False when Decide never gives kDrop: the core then does not call it while
  // every PU is busy (no other decision could be legal), however many of the
  // queued items have deadlines. True by default (always called).
  virtual bool MayDrop() const { return true; }
};

struct PolicyOptions {
  int priority_classes = 3;  // for `priority`; must be >= 1
  // For `share`: the plan's split of each partition's runs between PUs
  // (policy/split.h); null or empty = no split (then `share` is `sel`).
  std::shared_ptr<const PlanSplit> split = nullptr;

  // InvalidArgument naming the field when a value is out of range.
  absl::Status Validate() const;
};

// Checks `decisions` against `snapshot` with the rules every policy obeys:
// each item and each PU at most once; every decided item is in `ready` and
// every kRun PU in `pus`; kRun only onto an idle PU whose latency for the item
// is not nullopt; kDrop only for an item that has a deadline and that some PU
// could run (items no PU can run are left to the core to report). Returns
// Internal naming the first broken rule and the policy's decision. Cores may
// call it on every Decide; the policy tests call it on random snapshots.
absl::Status ValidateDecisions(const Snapshot& snapshot, std::span<const Decision> decisions);

// Names: fifo, round_robin, fixed, sel, share, heft, lsf, edf, priority (one header
// each in this folder; docs/policies.md compares them). An unknown name, or
// options that fail Validate(), is an InvalidArgument error; the unknown-name
// message lists the valid names.
absl::StatusOr<std::unique_ptr<LowLevelPolicy>> MakeLowLevelPolicy(const std::string& name,
                                                                   const PolicyOptions& options = {});
std::vector<std::string> LowLevelPolicyNames();

}  // namespace baton::policy
