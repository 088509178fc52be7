#include "baton/graph/tensor_proto.h"

#include <bit>
#include <climits>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {

static_assert(std::endian::native == std::endian::little,
              "TensorProto raw_data is little-endian; baton copies it as is");

namespace {

// ElemTypeName as an absl::string_view, whatever string type core returns.
absl::string_view TypeName(ElemType t) {
  std::string_view name = ElemTypeName(t);
  return {name.data(), name.size()};
}

std::string Label(const onnx::TensorProto& proto) {
  return proto.name().empty() ? std::string("tensor") : absl::StrCat("tensor '", proto.name(), "'");
}

// Copies `values` (one per element, or `per_element` per element for complex
// types) into `out`, converting each to `T`.
template <typename T, typename Field>
absl::Status CopyTyped(const onnx::TensorProto& proto, const Field& values, int64_t count, int per_element,
                       absl::string_view field_name, Tensor& out) {
  if (static_cast<int64_t>(values.size()) != count * per_element) {
    return absl::InvalidArgumentError(absl::StrCat(Label(proto), " ", out.DebugString(), " has ", values.size(),
                                                   " values in ", field_name, "; its shape needs ",
                                                   count * per_element));
  }
  std::span<T> dst = out.data<T>();
  for (int i = 0; i < values.size(); ++i) dst[i] = static_cast<T>(values[i]);
  return absl::OkStatus();
}

// 16-bit floats stored in int32_data hold their bit pattern in the low 16 bits.
absl::Status CopyBits16(const onnx::TensorProto& proto, int64_t count, Tensor& out) {
  return CopyTyped<uint16_t>(proto, proto.int32_data(), count, 1, "int32_data", out);
}

absl::Status CopyBool(const onnx::TensorProto& proto, int64_t count, Tensor& out) {
  if (static_cast<int64_t>(proto.int32_data_size()) != count) {
    return absl::InvalidArgumentError(absl::StrCat(Label(proto), " ", out.DebugString(), " has ",
                                                   proto.int32_data_size(), " values in int32_data; its shape needs ",
                                                   count));
  }
  std::span<uint8_t> dst = out.data<uint8_t>();
  for (int i = 0; i < proto.int32_data_size(); ++i) dst[i] = proto.int32_data(i) != 0 ? 1 : 0;
  return absl::OkStatus();
}

absl::Status CopyTypedFields(const onnx::TensorProto& proto, int64_t count, Tensor& out) {
  switch (out.elem_type()) {
    case dtype::kFloat: return CopyTyped<float>(proto, proto.float_data(), count, 1, "float_data", out);
    case dtype::kComplex64: return CopyTyped<float>(proto, proto.float_data(), count, 2, "float_data", out);
    case dtype::kDouble: return CopyTyped<double>(proto, proto.double_data(), count, 1, "double_data", out);
    case dtype::kComplex128: return CopyTyped<double>(proto, proto.double_data(), count, 2, "double_data", out);
    case dtype::kInt32: return CopyTyped<int32_t>(proto, proto.int32_data(), count, 1, "int32_data", out);
    case dtype::kInt16: return CopyTyped<int16_t>(proto, proto.int32_data(), count, 1, "int32_data", out);
    case dtype::kInt8: return CopyTyped<int8_t>(proto, proto.int32_data(), count, 1, "int32_data", out);
    case dtype::kUint16: return CopyTyped<uint16_t>(proto, proto.int32_data(), count, 1, "int32_data", out);
    case dtype::kUint8: return CopyTyped<uint8_t>(proto, proto.int32_data(), count, 1, "int32_data", out);
    case dtype::kBool: return CopyBool(proto, count, out);
    case dtype::kFloat16:
    case dtype::kBfloat16: return CopyBits16(proto, count, out);
    case dtype::kInt64: return CopyTyped<int64_t>(proto, proto.int64_data(), count, 1, "int64_data", out);
    case dtype::kUint32: return CopyTyped<uint32_t>(proto, proto.uint64_data(), count, 1, "uint64_data", out);
    case dtype::kUint64: return CopyTyped<uint64_t>(proto, proto.uint64_data(), count, 1, "uint64_data", out);
    default:
      return absl::UnimplementedError(
          absl::StrCat(Label(proto), " has element type ", TypeName(out.elem_type()), " which baton does not support"));
  }
}

}  // namespace

absl::StatusOr<Tensor> TensorFromProtoBytes(std::string_view bytes) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("TensorProto of ", bytes.size(), " bytes exceeds protobuf's 2 GiB message limit"));
  }
  onnx::TensorProto proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", bytes.size(), " bytes are not a serialized onnx.TensorProto"));
  }
  if (proto.data_location() == onnx::TensorProto::EXTERNAL || proto.external_data_size() > 0) {
    return absl::UnimplementedError(
        absl::StrCat(Label(proto),
                     " keeps its data in an external file; baton reads only self-contained TensorProtos "
                     "(load the model with graph::Model::LoadFile, which inlines external data)"));
  }
  if (proto.has_segment()) {
    return absl::UnimplementedError(absl::StrCat(Label(proto), " is segmented; baton reads whole tensors only"));
  }
  const ElemType type = proto.data_type();
  if (type != dtype::kString && !ElemTypeSize(type).has_value()) {
    return absl::UnimplementedError(absl::StrCat(Label(proto), " has element type ", TypeName(type), " (code ", type,
                                                 ") which baton does not support"));
  }
  std::vector<int64_t> shape(proto.dims().begin(), proto.dims().end());
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(proto), " has a negative dim in [", absl::StrJoin(shape, ","), "]"));
    }
    if (d != 0 && count > INT64_MAX / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(proto), " has too many elements: [", absl::StrJoin(shape, ","), "]"));
    }
    count *= d;
  }

  if (type == dtype::kString) {
    if (proto.has_raw_data()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(proto), " is a string tensor with raw_data; strings must be in string_data"));
    }
    if (proto.string_data_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat(Label(proto), " has ", proto.string_data_size(),
                                                     " strings; its shape [", absl::StrJoin(shape, ","), "] needs ",
                                                     count));
    }
    return Tensor::Strings(std::move(shape),
                           std::vector<std::string>(proto.string_data().begin(), proto.string_data().end()));
  }

  const int64_t elem_size = *ElemTypeSize(type);
  if (count > INT64_MAX / elem_size) {
    return absl::InvalidArgumentError(absl::StrCat(Label(proto), " is too large"));
  }
  if (proto.has_raw_data()) {
    // Check the size before allocating: the dims must not make us allocate
    // more than the message actually holds.
    if (static_cast<int64_t>(proto.raw_data().size()) != count * elem_size) {
      return absl::InvalidArgumentError(absl::StrCat(Label(proto), " has ", proto.raw_data().size(),
                                                     " bytes of raw_data; ", TypeName(type), "[",
                                                     absl::StrJoin(shape, ","), "] needs ", count * elem_size));
    }
    Tensor out(type, std::move(shape));
    if (!proto.raw_data().empty()) std::memcpy(out.bytes().data(), proto.raw_data().data(), proto.raw_data().size());
    return out;
  }
  // Typed fields: every value occupies at least one byte of the message, so a
  // count larger than the message cannot be genuine.
  if (count > static_cast<int64_t>(bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat(Label(proto), " declares ", count,
                                                   " elements but the message holds only ", bytes.size(), " bytes"));
  }
  Tensor out(type, std::move(shape));
  absl::Status status = CopyTypedFields(proto, count, out);
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<Tensor> ReadTensorProtoFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open tensor file '", path.string(), "'"));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat("error while reading tensor file '", path.string(), "'"));
  }
  absl::StatusOr<Tensor> tensor = TensorFromProtoBytes(buffer.str());
  if (!tensor.ok()) {
    return absl::Status(tensor.status().code(),
                        absl::StrCat("tensor file '", path.string(), "': ", tensor.status().message()));
  }
  return tensor;
}

}  // namespace baton::graph
