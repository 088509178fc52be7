// The assignment ids one Execute stream has seen, so that the agent runs each
// id once per stream (Assignment.id is "unique per stream"). It holds the ids
// in flight (arrived, not yet answered) and the last `keep_answered` ids
// answered, oldest forgotten first. Memory is bounded: the ids in flight are
// at most what the agent's queue and PUs hold (a full queue answers at once),
// plus `keep_answered`.
//
// Example (keep_answered = 2): Admit(1), Admit(2) -> kNew; Admit(1) ->
// kInFlight; Answered(1), Answered(2); Admit(1) -> kAnswered; Admit(3) -> kNew,
// Answered(3) forgets 1; Admit(1) -> kNew again.
//
// Thread-safety: none; the stream's mutex guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

#include "absl/container/flat_hash_set.h"

namespace baton::net {

class StreamIds {
 public:
  enum class Seen { kNew, kInFlight, kAnswered };

  explicit StreamIds(size_t keep_answered) : keep_answered_(keep_answered) {}

  // A new id is recorded as in flight; an id seen before says where it is.
  Seen Admit(uint64_t id);
  // `id`, in flight, was answered: it joins the window of answered ids. No-op
  // for an id not in flight.
  void Answered(uint64_t id);

  size_t in_flight() const { return in_flight_.size(); }
  size_t answered() const { return answered_order_.size(); }

 private:
  size_t keep_answered_;
  absl::flat_hash_set<uint64_t> in_flight_;
  absl::flat_hash_set<uint64_t> answered_;
  std::deque<uint64_t> answered_order_;  // oldest first; the same ids as answered_
};

}  // namespace baton::net
