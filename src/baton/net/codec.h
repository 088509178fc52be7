// Between the runtime's messages and the agent protocol's (proto/): tensors,
// assignments and completions, and the framing of messages above the chunk
// size. The only place, with the rest of net/, that sees generated protobuf;
// internal to net/ (and its tests).
//
// Thread-safety: pure functions; FrameReader and TensorFrames are value
// types (one per stream, one per message).
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

// Frames of a message whose repeated TensorProto field `field` holds
// `tensors`, built one frame at a time: the frames carry the same bytes as
// SplitFrames(message.SerializeAsString(), chunk_bytes) would, up to the
// order of fields (`head`, the rest of the message serialized, comes first),
// which protobuf's parser accepts. Each tensor's bytes are copied once, into
// the frame being filled, so a message of hundreds of MB costs no whole copy
// before its first frame. `tensors` must outlive the writer and stay
// unchanged. Example: FramesOf(completion header, 4 (Completion.outputs),
// outputs, 1 MiB) gives ceil(total_bytes() / 1 MiB) frames, the last with
// last = true.
class TensorFrames {
 public:
  TensorFrames(std::string head, int field, const dispatch::NamedTensors& tensors, int64_t chunk_bytes);
  // The whole serialized message's size.
  int64_t total_bytes() const { return total_; }
  bool done() const { return done_; }
  // The next frame (at most chunk_bytes of data); call only while !done().
  pb::Frame Next();

 private:
  struct Piece {
    std::string owned;           // tags, lengths and a tensor's other fields
    const char* view = nullptr;  // or a tensor's bytes
    size_t size = 0;
  };
  std::vector<Piece> pieces_;
  size_t piece_ = 0;  // the piece being copied, and how far
  size_t at_ = 0;
  size_t step_;
  int64_t total_ = 0;
  int64_t sent_ = 0;  // bytes in the frames made so far
  bool done_ = false;
};

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
