// Building blocks shared by the low-level policies: an ordering of the ready
// items, and a DecisionBuilder that tracks which PUs are still free in this
// Decide call and when each PU is expected to become available.
//
// Every policy in this folder is "order the items, then place each one with a
// placement rule"; the rules live here so that no policy copies another:
//
//   PlaceOnFastestIdle        fifo, edf, priority (and fixed for unpinned items)
//   PlaceOrWaitForEarliestFinish  sel, lsf; heft picks the item, then Commit()
//
// Projected availability. A PU's `available` time is `now` when it is idle and
// not yet claimed in this call; max(now, expected_free) when it is busy (a PU
// that overran its estimate is taken to be just about to finish); and, once an
// item is started on it or is waiting for it in this call, the expected finish
// time of that item. So two items never both count on the same busy PU being
// free at the same instant, and nothing here reads a clock.
//
// Example (now = 0): PUs cpu0 idle and gpu0 busy until 2 ms; item A takes
// 10 ms on cpu0 and 1 ms on gpu0. EarliestFinish(A) is gpu0 at 3 ms (2 + 1),
// which beats cpu0 at 10 ms, so Commit(A) reserves gpu0 until 3 ms and emits
// nothing: A waits. FastestStartable(A) is cpu0 (the only idle PU).
//
// Thread-safety: a DecisionBuilder lives inside one Decide call; the free
// functions are pure.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/time.h"
#include "baton/policy/policy.h"

namespace baton::policy {

// The items of `ready` sorted by `key(item)` (computed once per item; any type
// with operator<), ties broken by seq. Stable and independent of the order of
// `ready`.
template <typename KeyFn>
std::vector<const WorkItem*> OrderedItems(std::span<const WorkItem> ready, KeyFn key) {
  using Key = decltype(key(ready.front()));
  std::vector<std::pair<Key, const WorkItem*>> keyed;
  keyed.reserve(ready.size());
  for (const WorkItem& item : ready) keyed.emplace_back(key(item), &item);
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    if (a.first < b.first) return true;
    if (b.first < a.first) return false;
    return a.second->seq < b.second->seq;
  });
  std::vector<const WorkItem*> out;
  out.reserve(keyed.size());
  for (const auto& entry : keyed) out.push_back(entry.second);
  return out;
}

// The items of `ready` in arrival order (by seq).
std::vector<const WorkItem*> ItemsBySeq(std::span<const WorkItem> ready);

// Smallest expected latency of `item` over every PU of the snapshot, busy or
// idle; nullopt when no PU can run it.
std::optional<Duration> BestLatency(const Snapshot& snapshot, const WorkItem& item);

class DecisionBuilder {
 public:
  // One PU of the snapshot. Slots are sorted by PuId, so "first slot wins"
  // means "lowest PuId wins" everywhere.
  struct Slot {
    const PuState* pu = nullptr;
    Time available{};        // projected (see the file comment)
    bool startable = false;  // idle in the snapshot and not yet given an item
  };
  // A PU for one item.
  struct Choice {
    size_t slot = 0;
    Duration latency{};
    Time finish{};  // slot's available time + latency
  };

  // `snapshot` (and what its spans point to) must outlive the builder.
  // Requires snapshot.latency != nullptr.
  explicit DecisionBuilder(const Snapshot& snapshot);

  const Snapshot& snapshot() const { return snapshot_; }
  std::span<const Slot> slots() const { return slots_; }
  bool AnyStartable() const { return startable_count_ > 0; }

  // Expected latency of `item` on the PU of `slot`; nullopt = cannot run it.
  std::optional<Duration> Latency(const WorkItem& item, size_t slot) const;
  // `item` on the PU of `slot` (finish = slot's available time + latency);
  // nullopt when that PU cannot run it.
  std::optional<Choice> ChoiceOn(const WorkItem& item, size_t slot) const;
  // Index of the slot holding PU `pu`, if the snapshot has it.
  std::optional<size_t> SlotOf(PuId pu) const;

  // The startable slot with the smallest latency for `item` (ties: lowest PuId).
  std::optional<Choice> FastestStartable(const WorkItem& item) const;
  // The PU, startable or not, on which `item` is projected to finish first
  // (ties: a startable PU, then lowest PuId).
  std::optional<Choice> EarliestFinish(const WorkItem& item) const;

  // Emits kRun(item, choice's PU); the slot must be startable. The slot is then
  // busy until choice.finish.
  void Run(const WorkItem& item, const Choice& choice);
  // `item` will wait for a PU that is not startable now: the slot's projected
  // availability moves to choice.finish. Emits nothing.
  void Reserve(const Choice& choice);
  // Run when the choice's slot is startable, else Reserve. Returns true on Run.
  bool Commit(const WorkItem& item, const Choice& choice);
  // Emits kDrop(item).
  void Drop(const WorkItem& item);

  std::vector<Decision> TakeDecisions() && { return std::move(decisions_); }

 private:
  const Snapshot& snapshot_;
  std::vector<Slot> slots_;
  size_t startable_count_ = 0;
  std::vector<Decision> decisions_;
};

// Placement rules (each returns true when it emitted a kRun for `item`).

// fifo-style: the idle capable PU with the smallest latency, if any; otherwise
// the item waits. Work-conserving: never leaves an idle capable PU unused.
bool PlaceOnFastestIdle(DecisionBuilder& builder, const WorkItem& item);

// PlaceOnFastestIdle for each item of `order`, in that order, until no PU is
// left idle (fifo and priority are this with different orders).
void PlaceEachOnFastestIdle(DecisionBuilder& builder, const std::vector<const WorkItem*>& order);

// sel-style: the PU with the earliest projected finish. Starts the item when
// that PU is idle now; otherwise the item waits for it (and reserves it).
bool PlaceOrWaitForEarliestFinish(DecisionBuilder& builder, const WorkItem& item);

}  // namespace baton::policy
