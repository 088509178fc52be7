#include "baton/policy/sel.h"

#include "baton/policy/placement.h"

namespace baton::policy {

std::vector<Decision> ShortestExpectedLatencyPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  for (const WorkItem* item : ItemsBySeq(snapshot.ready)) {
    if (!builder.AnyStartable()) break;
    PlaceOrWaitForEarliestFinish(builder, *item);
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
