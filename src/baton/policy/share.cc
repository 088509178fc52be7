#include "baton/policy/share.h"

#include <cstdint>
#include <utility>

#include "baton/policy/placement.h"

namespace baton::policy {

namespace {

// Whether `shares` gives a positive share to a PU of the snapshot that can run `item`.
bool HasRunnableSplit(const DecisionBuilder& builder, const WorkItem& item, std::span<const PuShare> shares) {
  for (const PuShare& share : shares) {
    if (!(share.share > 0)) continue;
    std::optional<size_t> slot = builder.SlotOf(share.pu);
    if (slot && builder.Latency(item, *slot)) return true;
  }
  return false;
}

}  // namespace

std::vector<Decision> SharePolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  const std::span<const DecisionBuilder::Slot> slots = builder.slots();
  std::vector<std::optional<DecisionBuilder::Choice>> idle_choices;  // per slot, for the near-speed pass
  // Larger priority first (negated; widened so that INT_MIN negates), then the
  // least-served model, then seq.
  const auto by_priority = [](const WorkItem& item) {
    return std::pair<int64_t, double>(-static_cast<int64_t>(item.priority), item.service_ms);
  };
  for (const WorkItem* item : OrderedItems(snapshot.ready, by_priority)) {
    if (!builder.AnyStartable()) break;
    const std::span<const PuShare> shares =
        split_ != nullptr ? split_->Of(item->model, item->partition) : std::span<const PuShare>();
    std::optional<DecisionBuilder::Choice> best;
    if (HasRunnableSplit(builder, *item, shares)) {
      idle_choices.assign(slots.size(), std::nullopt);
      for (size_t slot = 0; slot < slots.size(); ++slot) {
        // A PU the plan gives no share of this partition is never waited for.
        if (!slots[slot].startable && !(ShareIn(shares, slots[slot].pu->id) > 0)) continue;
        std::optional<DecisionBuilder::Choice> choice = builder.ChoiceOn(*item, slot);
        if (!choice) continue;
        if (slots[slot].startable) idle_choices[slot] = choice;
        // As EarliestFinish: ties go to an idle PU, then to the lowest PuId (slots are in PuId order).
        if (!best || choice->finish < best->finish ||
            (choice->finish == best->finish && slots[slot].startable && !slots[best->slot].startable)) {
          best = choice;
        }
      }
      // Rather than wait for a busy PU, an idle one at most kNearSpeed times
      // slower takes the item (the one finishing first).
      if (best && !slots[best->slot].startable) {
        const double limit = kNearSpeed * static_cast<double>(best->latency.count());
        std::optional<DecisionBuilder::Choice> now;
        for (const std::optional<DecisionBuilder::Choice>& choice : idle_choices) {
          if (!choice || static_cast<double>(choice->latency.count()) > limit) continue;
          if (!now || choice->finish < now->finish) now = choice;
        }
        if (now) best = now;
      }
    }
    // No split, or none of its PUs can run the item (a stale plan): as sel.
    if (!best) best = builder.EarliestFinish(*item);
    if (!best) continue;  // no PU can run it: the core reports it
    builder.Commit(*item, *best);
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
