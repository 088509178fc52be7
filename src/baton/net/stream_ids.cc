#include "baton/net/stream_ids.h"

namespace baton::net {

StreamIds::Seen StreamIds::Admit(uint64_t id) {
  if (in_flight_.contains(id)) return Seen::kInFlight;
  if (answered_.contains(id)) return Seen::kAnswered;
  in_flight_.insert(id);
  return Seen::kNew;
}

void StreamIds::Answered(uint64_t id) {
  if (in_flight_.erase(id) == 0) return;
  if (keep_answered_ == 0) return;
  if (answered_order_.size() == keep_answered_) {
    answered_.erase(answered_order_.front());
    answered_order_.pop_front();
  }
  answered_.insert(id);
  answered_order_.push_back(id);
}

}  // namespace baton::net
