// ModelGraph: what the dispatcher needs to know about one model's partitions,
// and nothing more (no ONNX, no nodes): which tensors each partition reads and
// writes, the model's inputs and outputs, and where each partition is placed.
//
// It is built from a partition::PartitionPlan (see from_plan.h, header-only so
// that baton_dispatch does not link the partition layer) or by hand in tests.
//
// Example (a diamond):
//   inputs {x}; outputs {y, b}
//   p0: x    -> a      on device 0
//   p1: a    -> b      on device 0      b is both forwarded (to p3) and a model output
//   p2: a    -> c      on device 1      a is forwarded to two successors
//   p3: b, c -> y      on device 1      p3's entering node waits for both b and c
//
// Thread-safety: value type.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"

namespace baton::dispatch {

struct PartitionNode {
  PartitionId id;                    // unique within the model
  std::string name;                  // for messages, e.g. "resnet.p2"
  std::vector<std::string> inputs;   // tensors read: model inputs or other partitions' outputs
  std::vector<std::string> outputs;  // tensors written (at least one)
  DeviceId device;                   // the LL dispatcher that runs it
  std::optional<PuId> fixed_pu;      // a PU chosen by the plan, passed on to the LL policy
  // Where it goes while `device` is unavailable (a lost remote agent), in
  // order of preference; each must have the partition prepared.
  std::vector<DeviceId> fallback_devices = {};
};

struct ModelGraph {
  std::string name;
  std::vector<std::string> inputs;   // what a request must carry
  std::vector<std::string> outputs;  // what a request answers with (may include model inputs)
  std::vector<PartitionNode> partitions;  // any order; the dependencies must form a DAG
};

// OK when: names are non-empty and unique where they must be (model inputs,
// model outputs, a partition's inputs and outputs, partition ids); every tensor
// has at most one producer (a model input or one partition); every partition
// input and model output has one; every partition has an output; and the
// partitions form no cycle. The error names the model, partition and tensor.
absl::Status ValidateModelGraph(const ModelGraph& graph);

}  // namespace baton::dispatch
