// Between the runtime's messages and the agent protocol's (proto/): tensors,
// assignments and completions, and the framing of messages above the chunk
// size. The only place, with the rest of net/, that sees generated protobuf;
// internal to net/ (and its tests).
//
// Thread-safety: pure functions; FrameReader is a value type (one per stream).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "baton/agent/v1/agent.pb.h"
#include "baton/core/status.h"
#include "baton/core/tensor.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/net/agent_types.h"

namespace baton::net {

namespace pb = ::baton::agent::v1;

void ToProto(const std::string& name, const Tensor& tensor, pb::TensorProto* out);
// InvalidArgument naming the tensor when the type is unknown or the data size
// does not match the shape.
absl::StatusOr<std::pair<std::string, Tensor>> FromProto(const pb::TensorProto& proto);
absl::StatusOr<dispatch::NamedTensors> FromProto(const google::protobuf::RepeatedPtrField<pb::TensorProto>& protos);

// Hello's description of a PU, both ways.
void ToProto(const AgentPuInfo& info, pb::PuInfo* out);
AgentPuInfo FromProto(const pb::PuInfo& proto);
AgentHello FromProto(const pb::HelloReply& proto);

// The longest deadline budget the agent keeps: a budget above it means "no
// practical deadline" and counts as this much (100 years). It leaves room for
// the arithmetic on deadlines (ExpiryTime, slack, the ticker's wait) without
// overflow.
inline constexpr Duration kMaxDeadlineBudget = std::chrono::hours(24 * 365 * 100);

// The deadline, on the agent's clock, of an assignment that arrived at
// `arrival` with `budget_ns` left (Assignment.deadline_budget_ns). Saturating:
// a budget is clamped to +-kMaxDeadlineBudget, so INT64_MAX (no practical
// deadline) and INT64_MIN do not overflow. A budget <= 0 is already late: the
// deadline is then strictly before `arrival`.
// Example: arrival 5 s, budget 2 s -> 7 s; budget INT64_MAX -> 5 s + 100 years;
// budget 0 -> 5 s - 1 ns.
Time DeadlineFromBudget(Time arrival, int64_t budget_ns);

// Splits a serialized message into frames of at most `chunk_bytes` each.
std::vector<pb::Frame> SplitFrames(const std::string& serialized, int64_t chunk_bytes);

// Reassembles frames. Add returns the whole serialized message when `frame`
// was the last slice, nullopt before; ResourceExhausted past `max_bytes`.
class FrameReader {
 public:
  explicit FrameReader(int64_t max_bytes) : max_bytes_(max_bytes) {}
  absl::StatusOr<std::optional<std::string>> Add(const pb::Frame& frame);

 private:
  int64_t max_bytes_;
  std::string buffer_;
};

}  // namespace baton::net
