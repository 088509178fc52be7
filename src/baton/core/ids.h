// Strong integer ids: a NodeId cannot be passed where a PartitionId is expected.
// Absence is expressed with std::optional<Id>, never with -1.
// Thread-safety: value types.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>

namespace baton {

template <typename Tag>
struct StrongId {
  uint32_t value = 0;

  constexpr StrongId() = default;
  constexpr explicit StrongId(uint32_t v) : value(v) {}
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
using RequestId = StrongId<RequestIdTag>;
using PuId = StrongId<PuIdTag>;          // index of a PU within its device
using DeviceId = StrongId<DeviceIdTag>;
using AssignmentId = StrongId<AssignmentIdTag>;

}  // namespace baton

template <typename Tag>
struct std::hash<baton::StrongId<Tag>> {
  size_t operator()(baton::StrongId<Tag> id) const noexcept { return std::hash<uint32_t>{}(id.value); }
};
