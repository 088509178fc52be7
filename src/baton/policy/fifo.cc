#include "baton/policy/fifo.h"

#include "baton/policy/placement.h"

namespace baton::policy {

std::vector<Decision> FifoPolicy::Decide(const Snapshot& snapshot) const {
  DecisionBuilder builder(snapshot);
  PlaceEachOnFastestIdle(builder, ItemsBySeq(snapshot.ready));
  return std::move(builder).TakeDecisions();
}

}  // namespace baton::policy
