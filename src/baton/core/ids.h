// Strong integer ids: a NodeId cannot be passed where a PartitionId is expected.
// Absence is expressed with std::optional<Id>, never with -1. Ids a long-lived
// process hands out per request (RequestId, AssignmentId) are 64-bit, so they
// do not wrap (at a million a second, 2^32 is 72 minutes; 2^64 is 584,000 years).
// Thread-safety: value types.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>

namespace baton {

template <typename Tag, typename T = uint32_t>
struct StrongId {
  using Value = T;
  T value = 0;

  constexpr StrongId() = default;
  constexpr explicit StrongId(T v) : value(v) {}
  constexpr auto operator<=>(const StrongId&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, StrongId id) {
    return H::combine(std::move(h), id.value);
  }
  friend std::ostream& operator<<(std::ostream& os, StrongId id) { return os << id.value; }
};

struct NodeIdTag {};
struct PartitionIdTag {};
struct ModelIdTag {};
struct RequestIdTag {};
struct PuIdTag {};
struct DeviceIdTag {};
struct AssignmentIdTag {};
using NodeId = StrongId<NodeIdTag>;
using PartitionId = StrongId<PartitionIdTag>;
using ModelId = StrongId<ModelIdTag>;
using RequestId = StrongId<RequestIdTag, uint64_t>;
using PuId = StrongId<PuIdTag>;          // index of a PU within its device
using DeviceId = StrongId<DeviceIdTag>;
using AssignmentId = StrongId<AssignmentIdTag, uint64_t>;

}  // namespace baton

template <typename Tag, typename T>
struct std::hash<baton::StrongId<Tag, T>> {
  size_t operator()(baton::StrongId<Tag, T> id) const noexcept { return std::hash<T>{}(id.value); }
};
