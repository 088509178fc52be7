// Fuzz target: the agent protocol's messages as both ends decode them — an
// Assignment (what `baton agent` receives, whole or reassembled from
// frames) and a Completion (what the remote device receives): protobuf
// parsing, then net::FromProto on their tensors. A Completion whose tensors
// decode is also sent through net::TensorFrames (frames of 1..97 bytes, as
// the agent builds them) and must come back with the same tensors.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "baton/agent/v1/agent.pb.h"
#include "baton/net/codec.h"
#include "fuzz_target.h"

namespace baton::fuzz {

std::vector<std::string> Seeds() {
  namespace pb = ::baton::agent::v1;
  pb::ExecuteIn in;
  pb::Assignment* a = in.mutable_assignment();
  a->set_id(7);
  a->set_handle("h1");
  a->set_has_deadline(true);
  a->set_deadline_budget_ns(5'000'000);
  a->set_priority(2);
  Tensor x(dtype::kFloat, {1, 3});
  net::ToProto("x", x, a->add_inputs());
  net::ToProto("s", Tensor::Strings({2}, {"a", "bc"}), a->add_inputs());
  pb::Completion c;
  c.set_id(7);
  c.set_ran(true);
  c.set_run_ns(1000);
  net::ToProto("y", Tensor(dtype::kInt64, {2}), c.add_outputs());
  return {in.SerializeAsString(), in.assignment().SerializeAsString(), c.SerializeAsString()};
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace pb = ::baton::agent::v1;
  const int n = static_cast<int>(size);
  pb::ExecuteIn in;
  if (in.ParseFromArray(data, n) && in.has_assignment()) (void)baton::net::FromProto(in.assignment().inputs());
  pb::Assignment a;
  if (a.ParseFromArray(data, n)) (void)baton::net::FromProto(a.inputs());
  pb::Completion c;
  if (!c.ParseFromArray(data, n)) return 0;
  absl::StatusOr<baton::dispatch::NamedTensors> outputs = baton::net::FromProto(c.outputs());
  if (!outputs.ok()) return 0;
  pb::Completion head = c;
  head.clear_outputs();
  baton::net::TensorFrames frames(head.SerializeAsString(), pb::Completion::kOutputsFieldNumber, *outputs,
                                  static_cast<int64_t>(1 + size % 97));
  baton::net::FrameReader reader(int64_t{1} << 30);
  std::optional<std::string> whole;
  while (!frames.done()) {
    absl::StatusOr<std::optional<std::string>> added = reader.Add(frames.Next());
    if (!added.ok() || whole.has_value()) __builtin_trap();
    whole = *std::move(added);
  }
  pb::Completion back;
  if (!whole.has_value() || !back.ParseFromString(*whole) || back.id() != c.id()) __builtin_trap();
  absl::StatusOr<baton::dispatch::NamedTensors> again = baton::net::FromProto(back.outputs());
  if (!again.ok() || again->size() != outputs->size()) __builtin_trap();
  for (size_t i = 0; i < outputs->size(); ++i) {
    const baton::Tensor& x = (*outputs)[i].second;
    const baton::Tensor& y = (*again)[i].second;
    if ((*outputs)[i].first != (*again)[i].first || x.elem_type() != y.elem_type() || x.shape() != y.shape() ||
        x.strings() != y.strings() || x.byte_size() != y.byte_size() ||
        !std::equal(x.bytes().begin(), x.bytes().end(), y.bytes().begin())) {
      __builtin_trap();
    }
  }
  return 0;
}
