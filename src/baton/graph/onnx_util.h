// Internal to the graph layer: conversions from ONNX protos to the view's types.
#pragma once

#include "baton/graph/model.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {

TensorType TensorTypeFromProto(const onnx::TypeProto& type);
TensorType TensorTypeFromInitializer(const onnx::TensorProto& tensor);

}  // namespace baton::graph
