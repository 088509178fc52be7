#include "baton/policy/fixed.h"

#include "baton/policy/placement.h"

namespace baton::policy {

std::vector<Decision> FixedPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  for (const WorkItem* item : ItemsBySeq(snapshot.ready)) {
    if (!builder.AnyStartable()) break;
    if (!item->fixed_pu) {
      PlaceOnFastestIdle(builder, *item);
      continue;
    }
    std::optional<size_t> slot = builder.SlotOf(*item->fixed_pu);
    if (!slot || !builder.slots()[*slot].startable) continue;
    std::optional<DecisionBuilder::Choice> choice = builder.ChoiceOn(*item, *slot);
    if (choice) builder.Run(*item, *choice);
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
