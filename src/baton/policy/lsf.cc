#include "baton/policy/lsf.h"

#include <optional>
#include <utility>

#include "baton/policy/placement.h"

namespace baton::policy {
namespace {

// Slack of `item`; nullopt when it has no deadline or no PU can run it.
std::optional<Duration> SlackOf(const Snapshot& snapshot, const WorkItem& item) {
  if (!item.deadline) return std::nullopt;
  std::optional<Duration> best = BestLatency(snapshot, item);
  if (!best) return std::nullopt;
  return *item.deadline - snapshot.now - *best;
}

}  // namespace

std::vector<Decision> LeastSlackFirstPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  // (no slack, slack): finite slacks first, smallest first.
  auto order = OrderedItems(snapshot.ready, [&](const WorkItem& item) {
    std::optional<Duration> slack = SlackOf(snapshot, item);
    return std::make_pair(!slack.has_value(), slack.value_or(Duration::zero()));
  });
  for (const WorkItem* item : order) {
    if (!BestLatency(snapshot, *item)) continue;  // the core reports unrunnable items
    std::optional<Duration> slack = SlackOf(snapshot, *item);
    if (slack && *slack < Duration::zero()) {
      builder.Drop(*item);
      continue;
    }
    PlaceOrWaitForEarliestFinish(builder, *item);
  }
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
