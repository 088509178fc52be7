// Internal to the graph layer: the FLOP estimate of one node.
#pragma once

#include <functional>
#include <string>

#include "baton/graph/model.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {

// Returns the type of a value by name, or nullptr.
using TypeLookup = std::function<const TensorType*(const std::string&)>;

// Multiply-adds count as 2 FLOPs. Conv: 2*out_elems*(C_in/group)*prod(kernel);
// MatMul/Gemm: 2*M*N*K; LSTM/GRU/RNN: 2*steps*gates*hidden*(input+hidden);
// everything else: one FLOP per output element (0 when shapes are unknown).
int64_t EstimateFlops(const Node& node, const onnx::NodeProto& proto, const TypeLookup& lookup);

}  // namespace baton::graph
