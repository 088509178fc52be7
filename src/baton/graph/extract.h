// Partition extraction: the paper's submodel with an entering and an exiting node.
//
// A partition is a set of nodes of one Model. It is valid when it is non-empty
// and convex: no path leaves the set and comes back into it (otherwise the
// partition would wait on itself). Its standalone ONNX model has
//   inputs  = every value read inside the set (explicitly, or by an If/Loop/Scan
//             body from the outer scope) that is produced outside it: a model
//             input or another partition's output (initializers and outputs of
//             input-less Constant nodes are copied in instead);
//   outputs = every value produced inside the set that is consumed outside it
//             or is a model output (a value can be both consumed inside and
//             needed outside);
// plus the initializers and Constant nodes it uses, the opset imports and the
// value_info known for its values.
//
// Example: model  x -> A -> t1 -> B -> t2 -> C -> y,  with B also reading x.
//   Extract({B}) gives a model with inputs (t1, x) and output (t2).
//
// Thread-safety: pure functions over an immutable Model.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/graph/model.h"

namespace baton::graph {

// The interface of a node set, in deterministic order (inputs in order of
// first use along the topological order, outputs in topological order of
// their producers; model outputs keep the model's order among themselves).
struct SubgraphInterface {
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  // Input-less Constant nodes outside the set whose outputs the set reads; they
  // are copied into the submodel rather than becoming inputs.
  std::vector<NodeId> copied_constants;
};

// OK when `nodes` is non-empty, has no duplicates or unknown ids, and is convex.
// The error names a node on a path that leaves and re-enters the set.
absl::Status CheckConvex(const Model& model, std::span<const NodeId> nodes);

// Computes the interface of a (convex) node set.
absl::StatusOr<SubgraphInterface> ComputeInterface(const Model& model, std::span<const NodeId> nodes);

struct Submodel {
  SubgraphInterface interface;
  std::vector<NodeId> nodes;  // in topological order
  std::string onnx_bytes;     // serialized standalone ModelProto
  // The top-level initializers onnx_bytes carries (names in the model).
  std::vector<std::string> initializers;
};

// A top-level initializer's bytes inside the model's own protobuf (raw_data),
// valid while the Model lives. For a runtime that can run on caller-owned
// weights instead of its own copy (ONNX Runtime's AddInitializer), so a
// partition's weights are held once per process.
struct InitializerView {
  std::string name;
  ElemType elem_type = 0;
  std::vector<int64_t> dims;
  std::string_view bytes;
};

// Views of `sub`'s initializers stored densely as raw_data, 16-byte aligned
// and at least kMinSharedInitializerBytes long (the usual case for weights).
// The rest (typed fields, tiny or misaligned buffers) are left out: a runtime
// loads those from the partition's bytes as before.
inline constexpr size_t kMinSharedInitializerBytes = 1024;
std::vector<InitializerView> RawInitializerViews(const Model& model, const Submodel& sub);

// The whole model as a submodel: every node, the model's own inputs and
// outputs, and its own serialized bytes (nothing is re-extracted).
Submodel WholeSubmodel(const Model& model);

// Validates the set (CheckConvex) and emits the standalone model.
// `graph_name` names the emitted graph (e.g. "resnet.part2").
absl::StatusOr<Submodel> ExtractSubmodel(const Model& model, std::span<const NodeId> nodes,
                                         const std::string& graph_name);

// True when `node` is an input-less Constant node (copied into every partition
// that reads it, so it never forces an edge between partitions).
bool IsFreeConstant(const Node& node);

}  // namespace baton::graph
