// Tensor element types, using ONNX TensorProto.DataType codes so that values
// cross the graph layer, ONNX Runtime and the network unchanged.
// Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <optional>


namespace baton {

using ElemType = int32_t;

namespace dtype {
inline constexpr ElemType kUndefined = 0;
inline constexpr ElemType kFloat = 1;
inline constexpr ElemType kUint8 = 2;
inline constexpr ElemType kInt8 = 3;
inline constexpr ElemType kUint16 = 4;
inline constexpr ElemType kInt16 = 5;
inline constexpr ElemType kInt32 = 6;
inline constexpr ElemType kInt64 = 7;
inline constexpr ElemType kString = 8;
inline constexpr ElemType kBool = 9;
inline constexpr ElemType kFloat16 = 10;
inline constexpr ElemType kDouble = 11;
inline constexpr ElemType kUint32 = 12;
inline constexpr ElemType kUint64 = 13;
inline constexpr ElemType kComplex64 = 14;
inline constexpr ElemType kComplex128 = 15;
inline constexpr ElemType kBfloat16 = 16;
}  // namespace dtype

// "float32", "int64", ... ; "type<N>" for codes baton does not know.
const char* ElemTypeName(ElemType t);
// Bytes per element; nullopt for strings, undefined and unknown codes.
std::optional<int64_t> ElemTypeSize(ElemType t);

}  // namespace baton
