// share: sel within the plan's split of each partition's runs.
//
// Objective: throughput of a planned mix. The planner's LP (profile/bounds.h,
// Predict) decides which PUs share each partition's runs — e.g. a detector's
// convolution body on the NPU, its upsampling heads on the GPU, so that the
// NPU, the bottleneck, does only what it is best at — and records the split
// in the plan (`shares`). `sel` ignores it: an item waits for whichever PU
// finishes it first, so the heads queue up on the busy NPU and the GPU idles.
//
// Rule: items by priority (larger first), then the least-served model first
// (WorkItem::service_ms: its recent PU time per request in flight), then in
// arrival order (seq), each placed as by `sel` (policy/sel.h:
// the earliest projected finish; an idle PU starts it, a busy one is waited
// for and reserved), except that a PU the plan gives no share of the item's
// partition is a candidate only while it is idle: the item may use it now,
// but never waits for it; and an item that would wait for a busy PU starts at
// once on an idle PU instead when that PU is at most kNearSpeed (1.5) times
// slower for it (of several, the one finishing first). A partition without a
// split (PolicyOptions::split null or without an entry for it) is placed
// exactly as by `sel` (in the priority order above); so is one whose split
// gives no PU of this snapshot that can run it a share (a plan made for other
// PUs). With equal priorities, equal service and no split, share is sel.
//
// Example (now = 0): npu0 busy until 3 ms, gpu0 busy until 1 ms. Item A, a
// detector head, takes 0.3 ms on npu0 and 1 ms on gpu0; the plan gives A's
// partition gpu0 1.0 and npu0 0. sel: npu0 would finish it at 3.3 ms > gpu0's
// 2 ms, so A waits for gpu0 either way. Had gpu0 been busy until 4 ms, sel
// would wait for npu0 (3.3 < 5); share still waits for gpu0. Had npu0 been
// idle, both run A on npu0 at once. Had gpu0 been busy only until 0.1 ms
// and cpu1, unplanned, been idle with 1.2 ms for A: sel waits for gpu0 (done
// at 1.1 ms < 1.2 ms); share runs A on cpu1 at once (1.2 <= 1.5 * 1 ms).
//
// Why kNearSpeed: between PUs of about the same speed (two CPU cores, or a
// core that the online model saw run a little slower), waiting for the one
// that looks faster leaves the other idle; on this project's 2-core machine
// it kept one core 15-20 % idle in half of the runs of the default workload
// (docs/benchmarks.md). Real accelerator/CPU gaps are 3-12x, far above 1.5,
// so the planned bottleneck PU is still waited for.
//
// Why priority first: the plan gives paced streams (closed loops with a
// pause, periodic and Poisson arrivals) a higher priority than saturating
// ones (plan/policies.h, PlannedPriorities). A paced stream's rate is
// concurrency / (pause + latency), so every millisecond it queues behind a
// saturating job's items on the bottleneck PU costs it throughput, while the
// saturating job, with requests always waiting, loses only the PU time the
// stream takes, which the plan's LP counted already. Measured on the
// heterogeneous workload: the classifier's latency fell from 5.2 to 2.4 ms
// and the whole mix's rate rose (docs/benchmarks.md). With equal priorities
// this is arrival order, as before.
//
// Why the least-served model first: with several saturating closed loops,
// arrival order gives every loop the same number of runs, so a model twice as
// dear takes twice the PU time; the planner's objective (weights) and the OS
// running one thread per request in flight both give every request in flight
// the same PU time. Measured on docs/bench/saturating.yaml: arrival order got
// 0.93x ort_tuned's requests per second, exactly what equal run counts
// predict (docs/benchmarks.md).
//
// Why not follow the split's fractions exactly (run counts per PU)? We tried:
// the LP also gives slow PUs small fractions of a bottleneck partition (a
// 37 ms CPU run of a detector body the NPU does in 3 ms), which keeps one of
// a closed loop's few requests away for a long time; the measured throughput
// fell (docs/benchmarks.md). Not waiting on unplanned PUs keeps the
// bottleneck for its planned work and loses nothing when they are idle.
//
// Thread-safety: immutable; Decide may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "baton/policy/policy.h"
#include "baton/policy/split.h"

namespace baton::policy {

class SharePolicy : public LowLevelPolicy {
 public:
  // `split` may be null (then the policy is `sel`).
  explicit SharePolicy(std::shared_ptr<const PlanSplit> split) : split_(std::move(split)) {}
  // An idle PU at most this many times slower than the busy PU an item would
  // wait for takes the item at once.
  static constexpr double kNearSpeed = 1.5;
  std::string name() const override { return "share"; }
  std::vector<Decision> Decide(const Snapshot& snapshot) const override;
  bool MayDrop() const override { return false; }

 private:
  std::shared_ptr<const PlanSplit> split_;
};

}  // namespace baton::policy
