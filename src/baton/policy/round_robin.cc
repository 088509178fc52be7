#include "baton/policy/round_robin.h"

#include "baton/policy/placement.h"

namespace baton::policy {

std::vector<Decision> RoundRobinPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  const size_t num_pus = builder.slots().size();
  if (num_pus == 0) return {};
  size_t cursor = static_cast<size_t>(snapshot.decisions_so_far % num_pus);
  for (const WorkItem* item : ItemsBySeq(snapshot.ready)) {
    if (!builder.AnyStartable()) break;
    for (size_t step = 0; step < num_pus; ++step) {
      const size_t slot = (cursor + step) % num_pus;
      if (!builder.slots()[slot].startable) continue;
      std::optional<DecisionBuilder::Choice> choice = builder.ChoiceOn(*item, slot);
      if (!choice) continue;
      builder.Run(*item, *choice);
      cursor = (slot + 1) % num_pus;
      break;
    }
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
