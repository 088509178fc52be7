// The read-only view of an ONNX model that the rest of baton uses.
//
// Model::LoadFile / LoadBytes parse, validate (structure, the ONNX checker,
// external-data paths, size limits) and shape-infer a model, then expose:
// nodes, values, producers/consumers, a topological order, dtype/shape where
// known, bytes per value, parameter bytes and a FLOP estimate per node.
// No ONNX or protobuf type appears in this header: the graph layer is the only
// place that includes them.
//
// Thread-safety: a loaded Model is immutable; share it freely across threads
// (it is handed out as std::shared_ptr<const Model>).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "baton/core/dtype.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"

namespace onnx {
class ModelProto;
}

namespace baton::graph {

// One dimension: a known size, or a symbolic name ("batch"), or unknown.
struct Dim {
  std::optional<int64_t> size;
  std::string param;
};

struct TensorType {
  ElemType elem_type = 0;                 // 0 = unknown
  std::optional<std::vector<Dim>> shape;  // nullopt = rank unknown
  bool is_tensor = true;                  // false for sequence/map/optional types

  // Product of the dims when every dim is known.
  std::optional<int64_t> NumElements() const;
  std::optional<int64_t> Bytes() const;
  std::string ToString() const;  // e.g. "float32[1,3,224,224]", "float32[batch,?]"
};

enum class ValueKind { kGraphInput, kInitializer, kNodeOutput };

struct Value {
  std::string name;
  TensorType type;
  ValueKind kind = ValueKind::kNodeOutput;
  bool is_graph_output = false;
  std::optional<NodeId> producer;  // set iff kind == kNodeOutput
  // Nodes that read this value, directly or from inside one of their subgraphs
  // (If/Loop/Scan bodies reading outer-scope names). Sorted, no duplicates.
  std::vector<NodeId> consumers;
};

struct Node {
  NodeId id;
  std::string name;  // unique within the model (synthesised on load when empty or repeated)
  std::string op_type;
  std::string domain;  // "" = ai.onnx
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;  // "" marks an omitted optional output
  // Outer-scope values read by this node's subgraphs (If/Loop/Scan); empty otherwise.
  std::vector<std::string> implicit_inputs;
  bool has_subgraphs = false;
  // Op types used inside this node's subgraphs, recursively; sorted, unique.
  std::vector<std::string> subgraph_ops;
  int64_t flops = 0;        // estimate; see graph/cost.cc for the formulas
  // Bytes of initializers this node reads (shared ones counted per reader), plus
  // weights it carries: a Constant's value, initializers/Constants in its subgraphs.
  int64_t param_bytes = 0;

  // Every value this node reads: explicit inputs (non-empty) then implicit ones.
  std::vector<std::string> AllInputs() const;
};

struct LoadOptions {
  // Maximum accepted size of the .onnx file and of all external data together.
  int64_t max_model_bytes = int64_t{4} << 30;
  // Maximum number of elements of any single tensor (declared or inferred).
  int64_t max_tensor_elements = int64_t{1} << 34;
  // When false, external-data references are rejected outright (untrusted input).
  bool allow_external_data = true;
};

// Always owned by a shared_ptr (LoadFile, LoadBytes): a session that runs on
// the model's own weights holds it through weak_from_this (graph/extract.h).
class Model : public std::enable_shared_from_this<Model> {
 public:
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Loads and validates `path`. External data is resolved relative to the file's
  // directory and must stay inside it. `display_name` defaults to the path.
  static absl::StatusOr<std::shared_ptr<const Model>> LoadFile(const std::filesystem::path& path,
                                                               const LoadOptions& options = {});
  // Loads from bytes. `base_dir` resolves external data (empty: external data is an error).
  static absl::StatusOr<std::shared_ptr<const Model>> LoadBytes(std::string_view bytes,
                                                                std::string display_name,
                                                                const std::filesystem::path& base_dir = {},
                                                                const LoadOptions& options = {});

  const std::string& display_name() const { return display_name_; }
  int64_t ir_version() const;
  // Opset imports, domain ("" = ai.onnx) -> version.
  const std::map<std::string, int64_t>& opsets() const { return opsets_; }

  std::span<const Node> nodes() const { return nodes_; }
  const Node& node(NodeId id) const { return nodes_.at(id.value); }
  std::optional<NodeId> FindNode(std::string_view name) const;

  // All named values: graph inputs, initializers and node outputs.
  std::span<const Value> values() const { return values_; }
  const Value* FindValue(std::string_view name) const;

  // Graph inputs that are not initializers (what a caller must feed), in model order.
  const std::vector<std::string>& inputs() const { return inputs_; }
  const std::vector<std::string>& outputs() const { return outputs_; }
  const std::vector<std::string>& initializers() const { return initializers_; }

  // Node ids in a topological order (stable: original order where it is valid).
  const std::vector<NodeId>& topo_order() const { return topo_order_; }
  // Position of each node in topo_order().
  uint32_t topo_index(NodeId id) const { return topo_index_.at(id.value); }

  // Initializers plus Constant values and subgraph weights, each counted once.
  int64_t total_param_bytes() const { return total_param_bytes_; }
  int64_t total_flops() const { return total_flops_; }

  // Non-fatal findings made while loading (renamed nodes, checker notes).
  const std::vector<std::string>& warnings() const { return warnings_; }

  // The validated, topologically sorted, shape-inferred model, external data inlined.
  // For the graph layer and the ORT backend only (they serialize it).
  const onnx::ModelProto& proto() const { return *proto_; }
  std::string SerializeToString() const;

 private:
  Model();
  friend class ModelLoader;  // model.cc: validates and fills the view

  std::string display_name_;
  std::unique_ptr<onnx::ModelProto> proto_;
  std::map<std::string, int64_t> opsets_;
  std::vector<Node> nodes_;
  std::vector<Value> values_;
  absl::flat_hash_map<std::string, uint32_t> value_index_;
  absl::flat_hash_map<std::string, uint32_t> node_index_;
  std::vector<std::string> inputs_, outputs_, initializers_;
  std::vector<NodeId> topo_order_;
  std::vector<uint32_t> topo_index_;
  int64_t total_param_bytes_ = 0;
  int64_t total_flops_ = 0;
  std::vector<std::string> warnings_;
};

}  // namespace baton::graph
