#include "baton/policy/share.h"

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
  for (const WorkItem* item : ItemsBySeq(snapshot.ready)) {
    if (!builder.AnyStartable()) break;
    const std::span<const PuShare> shares =
        split_ != nullptr ? split_->Of(item->model, item->partition) : std::span<const PuShare>();
    std::optional<DecisionBuilder::Choice> best;
    if (HasRunnableSplit(builder, *item, shares)) {
      for (size_t slot = 0; slot < builder.slots().size(); ++slot) {
        const DecisionBuilder::Slot& s = builder.slots()[slot];
        // A PU the plan gives no share of this partition is never waited for.
        if (!s.startable && !(ShareIn(shares, s.pu->id) > 0)) continue;
        std::optional<DecisionBuilder::Choice> choice = builder.ChoiceOn(*item, slot);
        if (!choice) continue;
        // As EarliestFinish: ties go to an idle PU, then to the lowest PuId (slots are in PuId order).
        if (!best || choice->finish < best->finish ||
            (choice->finish == best->finish && s.startable && !builder.slots()[best->slot].startable)) {
          best = choice;
        }
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
