#include "baton/policy/placement.h"

#include <cassert>

namespace baton::policy {

std::vector<const WorkItem*> ItemsBySeq(std::span<const WorkItem> ready) {
  // Every item has the same key, so the order is by seq alone.
  return OrderedItems(ready, [](const WorkItem&) { return 0; });
}

std::optional<Duration> BestLatency(const Snapshot& snapshot, const WorkItem& item) {
  assert(snapshot.latency != nullptr);
  std::optional<Duration> best;
  for (const PuState& pu : snapshot.pus) {
    std::optional<Duration> latency = snapshot.latency->Expected(item.model, item.partition, pu.id);
    if (latency && (!best || *latency < *best)) best = latency;
  }
  return best;
}

DecisionBuilder::DecisionBuilder(const Snapshot& snapshot) : snapshot_(snapshot) {
  assert(snapshot.latency != nullptr);
  slots_.reserve(snapshot.pus.size());
  for (const PuState& pu : snapshot.pus) {
    Slot slot;
    slot.pu = &pu;
    slot.startable = !pu.busy;
    slot.available = pu.busy ? std::max(snapshot.now, pu.expected_free) : snapshot.now;
    if (slot.startable) ++startable_count_;
    slots_.push_back(slot);
  }
  std::stable_sort(slots_.begin(), slots_.end(),
                   [](const Slot& a, const Slot& b) { return a.pu->id < b.pu->id; });
}

std::optional<Duration> DecisionBuilder::Latency(const WorkItem& item, size_t slot) const {
  return snapshot_.latency->Expected(item.model, item.partition, slots_[slot].pu->id);
}

std::optional<DecisionBuilder::Choice> DecisionBuilder::ChoiceOn(const WorkItem& item, size_t slot) const {
  std::optional<Duration> latency = Latency(item, slot);
  if (!latency) return std::nullopt;
  return Choice{slot, *latency, slots_[slot].available + *latency};
}

std::optional<size_t> DecisionBuilder::SlotOf(PuId pu) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].pu->id == pu) return i;
  }
  return std::nullopt;
}

std::optional<DecisionBuilder::Choice> DecisionBuilder::FastestStartable(const WorkItem& item) const {
  std::optional<Choice> best;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].startable) continue;
    std::optional<Choice> candidate = ChoiceOn(item, i);
    // Strict < keeps the lowest PuId among equal latencies (slots are sorted).
    if (candidate && (!best || candidate->latency < best->latency)) best = candidate;
  }
  return best;
}

std::optional<DecisionBuilder::Choice> DecisionBuilder::EarliestFinish(const WorkItem& item) const {
  std::optional<Choice> best;
  for (size_t i = 0; i < slots_.size(); ++i) {
    std::optional<Choice> candidate = ChoiceOn(item, i);
    if (!candidate) continue;
    if (!best || candidate->finish < best->finish ||
        (candidate->finish == best->finish && slots_[i].startable && !slots_[best->slot].startable)) {
      best = candidate;
    }
  }
  return best;
}

void DecisionBuilder::Run(const WorkItem& item, const Choice& choice) {
  Slot& slot = slots_[choice.slot];
  assert(slot.startable);
  slot.startable = false;
  slot.available = choice.finish;
  --startable_count_;
  decisions_.push_back(Decision{Decision::Kind::kRun, item.id, slot.pu->id});
}

void DecisionBuilder::Reserve(const Choice& choice) {
  Slot& slot = slots_[choice.slot];
  assert(!slot.startable);
  slot.available = std::max(slot.available, choice.finish);
}

bool DecisionBuilder::Commit(const WorkItem& item, const Choice& choice) {
  if (slots_[choice.slot].startable) {
    Run(item, choice);
    return true;
  }
  Reserve(choice);
  return false;
}

void DecisionBuilder::Drop(const WorkItem& item) {
  decisions_.push_back(Decision{Decision::Kind::kDrop, item.id, PuId{}});
}

bool PlaceOnFastestIdle(DecisionBuilder& builder, const WorkItem& item) {
  if (!builder.AnyStartable()) return false;
  std::optional<DecisionBuilder::Choice> choice = builder.FastestStartable(item);
  if (!choice) return false;
  builder.Run(item, *choice);
  return true;
}

void PlaceEachOnFastestIdle(DecisionBuilder& builder, const std::vector<const WorkItem*>& order) {
  for (const WorkItem* item : order) {
    if (!builder.AnyStartable()) return;
    PlaceOnFastestIdle(builder, *item);
  }
}

bool PlaceOrWaitForEarliestFinish(DecisionBuilder& builder, const WorkItem& item) {
  if (!builder.AnyStartable()) return false;
  std::optional<DecisionBuilder::Choice> choice = builder.EarliestFinish(item);
  if (!choice) return false;
  return builder.Commit(item, *choice);
}

}  // namespace baton::policy
