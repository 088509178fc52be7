#include "baton/core/dtype.h"

namespace baton {

const char* ElemTypeName(ElemType t) {
  switch (t) {
    case dtype::kFloat: return "float32";
    case dtype::kUint8: return "uint8";
    case dtype::kInt8: return "int8";
    case dtype::kUint16: return "uint16";
    case dtype::kInt16: return "int16";
    case dtype::kInt32: return "int32";
    case dtype::kInt64: return "int64";
    case dtype::kString: return "string";
    case dtype::kBool: return "bool";
    case dtype::kFloat16: return "float16";
    case dtype::kDouble: return "float64";
    case dtype::kUint32: return "uint32";
    case dtype::kUint64: return "uint64";
    case dtype::kComplex64: return "complex64";
    case dtype::kComplex128: return "complex128";
    case dtype::kBfloat16: return "bfloat16";
    case dtype::kUndefined: return "undefined";
    default: return "unknown";
  }
}

std::optional<int64_t> ElemTypeSize(ElemType t) {
  switch (t) {
    case dtype::kBool:
    case dtype::kUint8:
    case dtype::kInt8: return 1;
    case dtype::kUint16:
    case dtype::kInt16:
    case dtype::kFloat16:
    case dtype::kBfloat16: return 2;
    case dtype::kFloat:
    case dtype::kInt32:
    case dtype::kUint32: return 4;
    case dtype::kInt64:
    case dtype::kUint64:
    case dtype::kDouble:
    case dtype::kComplex64: return 8;
    case dtype::kComplex128: return 16;
    default: return std::nullopt;
  }
}

}  // namespace baton
