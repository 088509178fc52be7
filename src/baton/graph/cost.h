// Internal to the graph layer: the FLOP estimate of one node.
#pragma once

#include <functional>
#include <string>

#include "baton/graph/model.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {

// Returns the type of a value by name, or nullptr.
using TypeLookup = std::function<const TensorType*(const std::string&)>;

struct NodeCost {
  int64_t flops = 0;
  // Weights carried inside the node: a Constant's value, and initializers and
  // Constants inside If/Loop/Scan bodies (exporters such as Paddle's and
  // Silero's keep all weights there).
  int64_t embedded_param_bytes = 0;
};

// Multiply-adds count as 2 FLOPs. Conv: 2*out_elems*(C_in/group)*prod(kernel);
// MatMul/Gemm: 2*M*N*K; LSTM/GRU/RNN: 2*steps*gates*hidden*(input+hidden);
// If: the costlier branch; Loop/Scan: the body once (trip counts are dynamic);
// everything else: one FLOP per output element (0 when shapes are unknown).
NodeCost EstimateNodeCost(const Node& node, const onnx::NodeProto& proto, const TypeLookup& lookup);

}  // namespace baton::graph
