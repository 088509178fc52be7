#include "baton/policy/heft.h"

#include "baton/policy/placement.h"

namespace baton::policy {

std::vector<Decision> HeftPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  std::vector<const WorkItem*> pending = ItemsBySeq(snapshot.ready);
  while (builder.AnyStartable() && !pending.empty()) {
    // The item with the earliest finish; `pending` is in seq order and the
    // comparison is strict, so ties go to the lower seq.
    std::optional<size_t> best_index;
    DecisionBuilder::Choice best;
    std::vector<const WorkItem*> still_pending;
    still_pending.reserve(pending.size());
    for (const WorkItem* item : pending) {
      std::optional<DecisionBuilder::Choice> choice = builder.EarliestFinish(*item);
      if (!choice) continue;  // no PU can run it: never decided, dropped from the loop
      if (!best_index || choice->finish < best.finish) {
        best_index = still_pending.size();
        best = *choice;
      }
      still_pending.push_back(item);
    }
    if (!best_index) break;
    builder.Commit(*still_pending[*best_index], best);
    still_pending.erase(still_pending.begin() + static_cast<std::ptrdiff_t>(*best_index));
    pending = std::move(still_pending);
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
