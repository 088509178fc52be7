// Reading serialized ONNX TensorProto messages (the input_*.pb / output_*.pb
// files of the ONNX backend test corpus, initializer dumps) into baton::Tensor.
//
// Both raw_data and the typed repeated fields are understood, following
// onnx.proto's storage rules:
//   float_data   float32 (and complex64)
//   int32_data   int32, int16, int8, uint16, uint8, bool, float16, bfloat16
//                (one element per int32; 16-bit floats hold their bit pattern)
//   int64_data   int64
//   double_data  float64 (and complex128)
//   uint64_data  uint32, uint64
//   string_data  string
//   raw_data     any fixed-size type, little-endian, densely packed
// Errors (InvalidArgument unless noted) name the tensor and the problem:
// bytes that do not parse, negative dims, an element count that does not match
// the data, external data (data_location = EXTERNAL; Unimplemented), segmented
// tensors (Unimplemented) and element types baton does not support
// (float8/int4/...; Unimplemented).
//
// Thread-safety: pure functions.
#pragma once

#include <filesystem>
#include <string_view>

#include "baton/core/status.h"
#include "baton/core/tensor.h"

namespace baton::graph {

// Parses one serialized onnx.TensorProto.
absl::StatusOr<Tensor> TensorFromProtoBytes(std::string_view bytes);

// Reads and parses a file holding one serialized onnx.TensorProto. NotFound
// when the file cannot be opened.
absl::StatusOr<Tensor> ReadTensorProtoFile(const std::filesystem::path& path);

}  // namespace baton::graph
