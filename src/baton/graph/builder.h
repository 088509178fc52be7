// GraphBuilder: writes small ONNX models from C++ without exposing ONNX or
// protobuf types (the graph layer is the only place that includes them).
// The model zoo and tests use it to make models; the rest of baton reads
// models through graph::Model.
//
// Example: y = Relu(x · W)
//   GraphBuilder b;
//   b.AddInput("x", dtype::kFloat, {1, 4});
//   b.AddInitializer("W", dtype::kFloat, {4, 2}, std::vector<float>{...8 values...});
//   b.AddNode("MatMul", {"x", "W"}, {"xw"});
//   b.AddNode("Relu", {"xw"}, {"y"}, {}, "relu");
//   b.AddOutput("y", dtype::kFloat, {1, 2});
//   absl::StatusOr<std::string> bytes = b.Serialize();  // a serialized ModelProto
//
// Control flow: a subgraph (If branch, Loop/Scan body) is another GraphBuilder,
// attached with Attr::Graph. Its nodes may name values of the enclosing graphs
// (outer scope); nothing is resolved here, the ONNX checker judges that.
//
// Contract:
//  * Every Add* call records; misuse (empty names, a data size that does not
//    match the dims, a value that does not fit the element type, an unsupported
//    element type, a duplicate node name anywhere in the model) is reported by
//    Serialize() as InvalidArgument naming the offender. The builder does not
//    otherwise validate ONNX semantics: run the checker for that.
//  * Node names are unique and non-empty in the serialized model: a node added
//    without a name gets "<op_type>_<n>" (the smallest n not taken), and inside
//    a subgraph "<parent node>/<attribute>/<op_type>_<n>".
//  * Serialization is deterministic: the same calls give the same bytes.
//    Tensor data is stored little-endian in raw_data.
//  * The model gets ir_version 8, producer_name "baton-zoo" and, unless
//    SetOpset says otherwise, the default ai.onnx opset 17. Opset and producer
//    settings of a builder used as a subgraph are ignored.
//
// Thread-safety: none; a GraphBuilder is a value (copies are deep).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/status.h"

namespace baton::graph {

class GraphBuilder;

// One dimension of a declared shape: a size (>= 0) or a symbolic name such as
// "batch". The empty string declares an unknown, unnamed dimension.
using DimSpec = std::variant<int64_t, std::string>;

// A node attribute, made by one of the factory functions.
class Attr {
 public:
  enum class Kind { kInt, kFloat, kString, kInts, kFloats, kTensor, kGraph };

  static Attr Int(std::string name, int64_t value);
  static Attr Float(std::string name, float value);
  static Attr String(std::string name, std::string value);
  static Attr Ints(std::string name, std::vector<int64_t> values);
  static Attr Floats(std::string name, std::vector<float> values);
  // A tensor attribute (e.g. Constant's `value`). `elem_type` is one of the
  // types AddInitializer accepts for the data's C++ type.
  static Attr Tensor(std::string name, ElemType elem_type, std::vector<int64_t> dims, std::vector<float> data);
  static Attr Tensor(std::string name, ElemType elem_type, std::vector<int64_t> dims, std::vector<int64_t> data);
  // A subgraph attribute (If's then_branch/else_branch, Loop/Scan's body).
  // `body` is copied; later changes to it are not seen.
  static Attr Graph(std::string name, const GraphBuilder& body);

  const std::string& name() const { return name_; }
  Kind kind() const { return kind_; }

 private:
  friend class GraphBuilder;
  Attr() = default;

  std::string name_;
  Kind kind_ = Kind::kInt;
  int64_t i_ = 0;
  float f_ = 0;
  std::string s_;
  std::vector<int64_t> ints_;                  // kInts values, or kTensor int64 data
  std::vector<float> floats_;                  // kFloats values, or kTensor float data
  std::vector<int64_t> dims_;                  // kTensor
  ElemType elem_type_ = dtype::kUndefined;     // kTensor
  bool tensor_is_float_ = false;               // kTensor: data in floats_ (else ints_)
  std::shared_ptr<const GraphBuilder> graph_;  // kGraph
};

class GraphBuilder {
 public:
  // `graph_name` becomes GraphProto.name ("main" for a model; name subgraphs
  // after their role, e.g. "then_branch", "loop_body").
  explicit GraphBuilder(std::string graph_name = "main");
  ~GraphBuilder();
  GraphBuilder(const GraphBuilder& other);
  GraphBuilder& operator=(const GraphBuilder& other);
  GraphBuilder(GraphBuilder&&) noexcept;
  GraphBuilder& operator=(GraphBuilder&&) noexcept;

  // A graph input with a declared shape; {} declares a scalar.
  void AddInput(std::string name, ElemType elem_type, std::vector<DimSpec> dims);
  // A graph output with a declared shape ...
  void AddOutput(std::string name, ElemType elem_type, std::vector<DimSpec> dims);
  // ... or with no shape at all (rank unknown, left to shape inference). ONNX
  // 1.12's checker accepts that only for subgraph outputs; a model's own outputs
  // need the overload above (DimSpec "" for a dimension that is not known).
  void AddOutput(std::string name, ElemType elem_type);
  // Declares the type and shape of an intermediate value (GraphProto.value_info),
  // for values whose shape ONNX inference cannot derive, such as Loop-carried
  // state (inference drops its shape because it could change per iteration).
  void AddValueInfo(std::string name, ElemType elem_type, std::vector<DimSpec> dims);

  // A constant tensor. Float data may be stored as kFloat or kDouble; int64 data
  // as kInt64, kInt32, kInt16, kInt8, kUint8, kUint16, kUint32, kUint64 (non-
  // negative values) or kBool (0 or 1). data.size() must equal the product of
  // dims ({} = scalar, one value). The data is moved in, not copied.
  void AddInitializer(std::string name, ElemType elem_type, std::vector<int64_t> dims, std::vector<float> data);
  void AddInitializer(std::string name, ElemType elem_type, std::vector<int64_t> dims, std::vector<int64_t> data);

  // A node. "" in `inputs`/`outputs` marks an omitted optional input/output.
  // `name` "" asks for a generated one; `domain` "" is ai.onnx.
  void AddNode(std::string op_type, std::vector<std::string> inputs, std::vector<std::string> outputs,
               std::vector<Attr> attributes = {}, std::string name = "", std::string domain = "");

  // Opset import of `domain` ("" = ai.onnx); replaces an earlier setting.
  void SetOpset(int64_t version, std::string domain = "");
  void SetProducer(std::string producer_name, std::string producer_version = "");
  void SetDocString(std::string doc);

  int64_t num_nodes() const;

  // The serialized ModelProto, or InvalidArgument describing the first misuse.
  absl::StatusOr<std::string> Serialize() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace baton::graph
