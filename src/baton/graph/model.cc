// Loading, validation and the read-only view of an ONNX model.
//
// Order of work in ModelLoader::Load (each step assumes the previous ones passed):
//   1. parse bytes (size-capped);
//   2. header checks: ir_version, opset imports;
//   3. tensors everywhere (initializers, Constant attributes, subgraphs): sane
//      dims, data size matching the dims, external data resolved inside the
//      model's directory and inlined;
//   4. structure: unique names, every read name defined (also from inside
//      If/Loop/Scan bodies), graph outputs defined, no cycle; nodes are then
//      sorted topologically in the proto (stable) and given unique names;
//   5. the ONNX checker and shape inference;
//   6. the view: values, nodes, consumers, costs.
// Steps 2-4 are ours so that the common mistakes get messages naming the
// tensor or node at fault; the checker then catches the rest.
#include "baton/graph/model.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <mutex>
#include <queue>
#include <system_error>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/saturate.h"
#include "baton/core/utf8.h"
#include "baton/graph/cost.h"
#include "baton/graph/onnx_util.h"
#include "onnx/checker.h"
#include "onnx/defs/schema.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"

namespace baton::graph {

namespace fs = std::filesystem;

std::optional<int64_t> TensorType::NumElements() const {
  if (!is_tensor || !shape) return std::nullopt;
  int64_t n = 1;
  for (const Dim& d : *shape) {
    if (!d.size || *d.size < 0) return std::nullopt;
    if (*d.size != 0 && n > std::numeric_limits<int64_t>::max() / *d.size) return std::nullopt;
    n *= *d.size;
  }
  return n;
}

std::optional<int64_t> TensorType::Bytes() const {
  auto n = NumElements();
  auto size = ElemTypeSize(elem_type);
  if (!n || !size) return std::nullopt;
  if (*n > std::numeric_limits<int64_t>::max() / *size) return std::nullopt;
  return *n * *size;
}

std::string TensorType::ToString() const {
  if (!is_tensor) return "non-tensor";
  std::string s(ElemTypeName(elem_type));
  if (!shape) return s + "[?rank]";
  std::vector<std::string> dims;
  for (const Dim& d : *shape) {
    dims.push_back(d.size ? absl::StrCat(*d.size) : (d.param.empty() ? "?" : d.param));
  }
  return absl::StrCat(s, "[", absl::StrJoin(dims, ","), "]");
}

std::vector<std::string> Node::AllInputs() const {
  std::vector<std::string> all;
  for (const auto& in : inputs) {
    if (!in.empty()) all.push_back(in);
  }
  all.insert(all.end(), implicit_inputs.begin(), implicit_inputs.end());
  return all;
}

Model::Model() = default;
Model::~Model() = default;

int64_t Model::ir_version() const { return proto_->ir_version(); }

std::optional<NodeId> Model::FindNode(std::string_view name) const {
  auto it = node_index_.find(absl::string_view(name.data(), name.size()));
  if (it == node_index_.end()) return std::nullopt;
  return NodeId(it->second);
}

const Value* Model::FindValue(std::string_view name) const {
  auto it = value_index_.find(absl::string_view(name.data(), name.size()));
  return it == value_index_.end() ? nullptr : &values_[it->second];
}

std::string Model::SerializeToString() const { return proto_->SerializeAsString(); }

namespace {

// ONNX's checker and shape inference are called from several threads at once
// (an agent loads partitions in parallel; an engine and its tests load models
// while an agent loads its own). libonnx does not say they are thread-safe,
// and ThreadSanitizer saw a race inside the checker on first use; they run at
// load time only, so one lock costs nothing that matters.
std::mutex& OnnxCheckMutex() {
  static std::mutex mu;
  return mu;
}

std::string Q(absl::string_view s) { return absl::StrCat("'", s, "'"); }

std::string NodeLabel(const onnx::NodeProto& n, int index) {
  return n.name().empty() ? absl::StrCat("#", index, " (", n.op_type(), ")")
                          : absl::StrCat(Q(n.name()), " (", n.op_type(), ")");
}

// Product of dims with overflow and limit checks.
absl::StatusOr<int64_t> CheckedElements(std::span<const int64_t> dims, int64_t limit, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has a negative dimension (", d, "); dimensions must be >= 0"));
    }
    if (d != 0 && n > limit / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " has an absurd shape [", absl::StrJoin(dims, ","), "]: more than ", limit,
          " elements (LoadOptions.max_tensor_elements); fix the exporter or raise the limit"));
    }
    n *= d;
  }
  return n;
}

}  // namespace

// Does the work of LoadFile/LoadBytes; a friend of Model.
class ModelLoader {
 public:
  ModelLoader(std::string display_name, fs::path base_dir, const LoadOptions& options)
      : display_name_(std::move(display_name)), base_dir_(std::move(base_dir)), options_(options) {}

  absl::StatusOr<std::shared_ptr<const Model>> Load(std::string_view bytes) {
    if (bytes.empty()) return Error("is empty (0 bytes); expected a serialized ONNX ModelProto");
    if (static_cast<int64_t>(bytes.size()) > options_.max_model_bytes) {
      return Error(absl::StrCat("is ", bytes.size(), " bytes, above the limit of ", options_.max_model_bytes,
                                " (LoadOptions.max_model_bytes)"));
    }
    if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
      return Error("is larger than 2 GiB; protobuf cannot parse it in one piece: save its weights as external data");
    }
    auto proto = std::make_unique<onnx::ModelProto>();
    if (!proto->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return Error(absl::StrCat("is not a valid ONNX protobuf (", bytes.size(),
                                " bytes could not be parsed: truncated or not an .onnx file)"));
    }
    model_ = std::shared_ptr<Model>(new Model());
    model_->display_name_ = display_name_;
    model_->proto_ = std::move(proto);
    onnx::ModelProto& m = *model_->proto_;

    BATON_RETURN_IF_ERROR(CheckHeader(m));
    BATON_RETURN_IF_ERROR(CheckNamesAreUtf8(m.graph()));
    BATON_RETURN_IF_ERROR(CheckTensorsInGraph(m.mutable_graph(), "graph"));
    BATON_RETURN_IF_ERROR(CheckStructure(m.mutable_graph()));
    BATON_RETURN_IF_ERROR(RunChecker(m));
    BATON_RETURN_IF_ERROR(RunShapeInference(m));
    BuildView();
    return std::shared_ptr<const Model>(std::move(model_));
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(display_name_), " ", what));
  }
  void Warn(std::string msg) { model_->warnings_.push_back(std::move(msg)); }

  absl::Status CheckHeader(const onnx::ModelProto& m) {
    if (m.ir_version() < 3) {
      return Error(absl::StrCat("has ir_version ", m.ir_version(),
                                "; baton needs ONNX IR version 3 or later (re-export with a current exporter)"));
    }
    if (!m.has_graph()) return Error("has no graph");
    if (m.opset_import_size() == 0) {
      return Error("has no opset_import; every model must declare the opset of each domain it uses");
    }
    for (const auto& op : m.opset_import()) {
      std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
      if (op.version() < 1) {
        return Error(absl::StrCat("imports domain ", Q(domain.empty() ? "ai.onnx" : domain), " with version ",
                                  op.version(), "; opset versions start at 1"));
      }
      model_->opsets_[domain] = op.version();
    }
    return absl::OkStatus();
  }

  // The graph's names go into baton's JSON (plans, profiles, reports, traces)
  // and the KServe protocol's strings, which must be UTF-8; protobuf does not
  // check ONNX's (proto2) strings. Subgraphs' names stay inside ONNX Runtime.
  absl::Status CheckNamesAreUtf8(const onnx::GraphProto& g) {
    auto check = [&](const std::string& name, const std::string& what) -> absl::Status {
      const std::optional<size_t> bad = FirstInvalidUtf8(name);
      if (!bad) return absl::OkStatus();
      return Error(absl::StrCat("has ", what, " that is not valid UTF-8 (byte ", *bad, " of ", name.size(),
                                ", after ", Q(name.substr(0, *bad)),
                                "); baton writes names into JSON and the KServe protocol, which need UTF-8: "
                                "rename it in the model (e.g. with the onnx Python package)"));
    };
    for (int i = 0; i < g.node_size(); ++i) {
      const onnx::NodeProto& n = g.node(i);
      const std::string node = absl::StrCat("node #", i);
      BATON_RETURN_IF_ERROR(check(n.name(), node + "'s name"));
      BATON_RETURN_IF_ERROR(check(n.op_type(), node + "'s op_type"));
      BATON_RETURN_IF_ERROR(check(n.domain(), node + "'s domain"));
      for (const std::string& in : n.input()) BATON_RETURN_IF_ERROR(check(in, node + "'s input name"));
      for (const std::string& out : n.output()) BATON_RETURN_IF_ERROR(check(out, node + "'s output name"));
    }
    for (const auto& v : g.input()) BATON_RETURN_IF_ERROR(check(v.name(), "a graph input name"));
    for (const auto& v : g.output()) BATON_RETURN_IF_ERROR(check(v.name(), "a graph output name"));
    for (const auto& v : g.value_info()) BATON_RETURN_IF_ERROR(check(v.name(), "a value_info name"));
    for (const auto& t : g.initializer()) BATON_RETURN_IF_ERROR(check(t.name(), "an initializer name"));
    return absl::OkStatus();
  }

  // Tensors: in initializers and node attributes, recursively through subgraphs.
  absl::Status CheckTensorsInGraph(onnx::GraphProto* g, const std::string& where) {
    for (auto& t : *g->mutable_initializer()) {
      BATON_RETURN_IF_ERROR(CheckTensor(&t, absl::StrCat("initializer ", Q(t.name()))));
    }
    for (int i = 0; i < g->node_size(); ++i) {
      onnx::NodeProto* n = g->mutable_node(i);
      for (auto& a : *n->mutable_attribute()) {
        std::string what = absl::StrCat("attribute ", Q(a.name()), " of node ", NodeLabel(*n, i));
        if (a.has_t()) BATON_RETURN_IF_ERROR(CheckTensor(a.mutable_t(), what));
        for (auto& t : *a.mutable_tensors()) BATON_RETURN_IF_ERROR(CheckTensor(&t, what));
        if (a.has_g()) BATON_RETURN_IF_ERROR(CheckTensorsInGraph(a.mutable_g(), what));
        for (auto& sg : *a.mutable_graphs()) BATON_RETURN_IF_ERROR(CheckTensorsInGraph(&sg, what));
      }
    }
    (void)where;
    return absl::OkStatus();
  }

  absl::Status CheckTensor(onnx::TensorProto* t, const std::string& what) {
    std::vector<int64_t> dims(t->dims().begin(), t->dims().end());
    auto checked = CheckedElements(dims, options_.max_tensor_elements, what);
    if (!checked.ok()) return Error(checked.status().message());
    int64_t n = *checked;
    if (t->has_segment()) return Error(absl::StrCat(what, " is a segmented tensor, which baton does not support"));
    ElemType type = t->data_type();
    auto elem = ElemTypeSize(type);
    if (type != dtype::kString && !elem) {
      return Error(absl::StrCat(what, " has unsupported or undefined data type ", type));
    }
    if (t->data_location() == onnx::TensorProto::EXTERNAL) {
      if (type == dtype::kString) return Error(absl::StrCat(what, " is a string tensor stored as external data"));
      return InlineExternal(t, what, n * *elem);
    }
    if (!t->raw_data().empty()) {
      if (type == dtype::kString) return Error(absl::StrCat(what, " is a string tensor with raw_data"));
      int64_t expected = n * *elem;
      if (static_cast<int64_t>(t->raw_data().size()) != expected) {
        return Error(absl::StrCat(what, " declares dims [", absl::StrJoin(dims, ","), "] (", n, " ",
                                  ElemTypeName(type), " elements, ", expected, " bytes) but holds ",
                                  t->raw_data().size(), " bytes of data"));
      }
      return absl::OkStatus();
    }
    int64_t have = TypedCount(*t);
    int64_t want = (type == dtype::kComplex64 || type == dtype::kComplex128) ? 2 * n : n;
    if (have != want) {
      return Error(absl::StrCat(what, " declares dims [", absl::StrJoin(dims, ","), "] (", n, " ",
                                ElemTypeName(type), " elements) but holds ", have,
                                " values: its data is missing or does not match its shape"));
    }
    return absl::OkStatus();
  }

  static int64_t TypedCount(const onnx::TensorProto& t) {
    switch (t.data_type()) {
      case dtype::kFloat:
      case dtype::kComplex64: return t.float_data_size();
      case dtype::kInt64: return t.int64_data_size();
      case dtype::kDouble:
      case dtype::kComplex128: return t.double_data_size();
      case dtype::kUint32:
      case dtype::kUint64: return t.uint64_data_size();
      case dtype::kString: return t.string_data_size();
      default: return t.int32_data_size();
    }
  }

  absl::Status InlineExternal(onnx::TensorProto* t, const std::string& what, int64_t expected_bytes) {
    if (!options_.allow_external_data) {
      return Error(absl::StrCat(what, " refers to external data, which is not allowed here (untrusted input); "
                                      "embed the weights in the model"));
    }
    std::string location;
    int64_t offset = 0;
    std::optional<int64_t> length;
    for (const auto& kv : t->external_data()) {
      if (kv.key() == "location") {
        location = kv.value();
      } else if (kv.key() == "offset" || kv.key() == "length") {
        int64_t v = 0;
        try {
          size_t used = 0;
          v = std::stoll(kv.value(), &used);
          if (used != kv.value().size() || v < 0) throw std::invalid_argument("bad");
        } catch (...) {
          return Error(absl::StrCat(what, " has external-data ", kv.key(), " ", Q(kv.value()),
                                    "; expected a non-negative integer"));
        }
        if (kv.key() == "offset") offset = v; else length = v;
      }
    }
    if (location.empty()) return Error(absl::StrCat(what, " refers to external data without a 'location'"));
    if (base_dir_.empty()) {
      return Error(absl::StrCat(what, " refers to external data file ", Q(location),
                                " but the model was not loaded from a file; load it with Model::LoadFile"));
    }
    fs::path rel(location);
    if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory()) {
      return Error(absl::StrCat(what, " refers to external data at absolute path ", Q(location),
                                "; external data must be a relative path inside the model's directory"));
    }
    for (const auto& part : rel) {
      if (part == "..") {
        return Error(absl::StrCat(what, " refers to external data ", Q(location),
                                  " which leaves the model's directory ('..'); keep the data next to the model"));
      }
    }
    std::error_code ec;
    fs::path base = fs::canonical(base_dir_, ec);
    if (ec) return Error(absl::StrCat("directory ", Q(base_dir_.string()), " cannot be resolved: ", ec.message()));
    fs::path full = fs::canonical(base / rel, ec);
    if (ec) {
      return Error(absl::StrCat(what, " refers to external data file ", Q(location), " which does not exist in ",
                                Q(base.string())));
    }
    auto inside = full.lexically_relative(base);
    if (inside.empty() || *inside.begin() == "..") {
      return Error(absl::StrCat(what, " refers to external data ", Q(location), " which resolves to ",
                                Q(full.string()), ", outside the model's directory (a symlink?); copy the data "
                                "next to the model"));
    }
    if (!fs::is_regular_file(full, ec)) {
      return Error(absl::StrCat(what, " refers to external data ", Q(location), " which is not a regular file"));
    }
    int64_t file_size = static_cast<int64_t>(fs::file_size(full, ec));
    if (ec) return Error(absl::StrCat("cannot stat external data ", Q(location), ": ", ec.message()));
    if (offset > file_size) {
      return Error(absl::StrCat(what, " reads external data ", Q(location), " from offset ", offset,
                                " but the file has only ", file_size, " bytes"));
    }
    int64_t len = length.value_or(file_size - offset);
    if (len > file_size - offset) {
      return Error(absl::StrCat(what, " reads ", len, " bytes at offset ", offset, " of external data ",
                                Q(location), " which has only ", file_size, " bytes"));
    }
    if (len != expected_bytes) {
      return Error(absl::StrCat(what, " reads ", len, " bytes of external data ", Q(location),
                                " but its dims need ", expected_bytes, " bytes"));
    }
    external_bytes_ += len;
    if (external_bytes_ > options_.max_model_bytes) {
      return Error(absl::StrCat("has more than ", options_.max_model_bytes,
                                " bytes of external data (LoadOptions.max_model_bytes)"));
    }
    std::ifstream in(full, std::ios::binary);
    std::string data(static_cast<size_t>(len), '\0');
    in.seekg(offset);
    in.read(data.data(), len);
    if (!in) return Error(absl::StrCat("could not read external data ", Q(location)));
    t->set_raw_data(std::move(data));
    t->clear_external_data();
    t->set_data_location(onnx::TensorProto::DEFAULT);
    return absl::OkStatus();
  }

  absl::Status CheckTypeProto(const onnx::ValueInfoProto& vi, const char* role) {
    if (!vi.type().has_tensor_type() || !vi.type().tensor_type().has_shape()) return absl::OkStatus();
    std::vector<int64_t> known;
    for (const auto& d : vi.type().tensor_type().shape().dim()) {
      if (d.has_dim_value()) known.push_back(d.dim_value());
    }
    auto checked = CheckedElements(known, options_.max_tensor_elements, absl::StrCat(role, " ", Q(vi.name())));
    return checked.ok() ? absl::OkStatus() : Error(checked.status().message());
  }

  absl::Status CheckStructure(onnx::GraphProto* g) {
    absl::flat_hash_set<std::string> defined;
    absl::flat_hash_set<std::string> initializer_names;
    for (const auto& in : g->input()) {
      if (in.name().empty()) return Error("has a graph input with an empty name");
      if (!defined.insert(in.name()).second) {
        return Error(absl::StrCat("declares graph input ", Q(in.name()), " twice; input names must be unique"));
      }
      BATON_RETURN_IF_ERROR(CheckTypeProto(in, "graph input"));
    }
    for (const auto& init : g->initializer()) {
      if (init.name().empty()) return Error("has an initializer with an empty name");
      if (!initializer_names.insert(init.name()).second) {
        return Error(absl::StrCat("declares initializer ", Q(init.name()), " twice; names must be unique"));
      }
      defined.insert(init.name());
    }
    for (const auto& sp : g->sparse_initializer()) defined.insert(sp.values().name());
    for (const auto& vi : g->value_info()) BATON_RETURN_IF_ERROR(CheckTypeProto(vi, "value"));
    for (const auto& in : g->input()) {
      if (!in.has_type() && !initializer_names.contains(in.name())) {
        return Error(absl::StrCat("declares graph input ", Q(in.name()),
                                  " without a type; every model input needs an element type (and ideally a shape)"));
      }
    }
    for (const auto& vi : g->output()) BATON_RETURN_IF_ERROR(CheckTypeProto(vi, "graph output"));

    const int n = g->node_size();
    absl::flat_hash_map<std::string, int> producer;
    for (int i = 0; i < n; ++i) {
      const auto& node = g->node(i);
      if (node.op_type().empty()) return Error(absl::StrCat("has node ", NodeLabel(node, i), " with an empty op_type"));
      for (const auto& out : node.output()) {
        if (out.empty()) continue;
        if (defined.contains(out) && !producer.contains(out)) {
          return Error(absl::StrCat("node ", NodeLabel(node, i), " writes ", Q(out),
                                    " which is already a graph input or initializer; tensor names must be unique"));
        }
        auto [it, fresh] = producer.emplace(out, i);
        if (!fresh) {
          return Error(absl::StrCat("has two nodes producing tensor ", Q(out), ": ",
                                    NodeLabel(g->node(it->second), it->second), " and ", NodeLabel(node, i),
                                    "; every tensor must have exactly one producer"));
        }
      }
    }
    for (const auto& [name, idx] : producer) defined.insert(name);

    // Every read must be defined: explicit inputs, and names read from subgraphs.
    implicit_.assign(n, {});
    std::vector<std::vector<int>> preds(n);
    for (int i = 0; i < n; ++i) {
      const auto& node = g->node(i);
      for (const auto& in : node.input()) {
        if (in.empty()) continue;
        if (!defined.contains(in)) {
          return Error(absl::StrCat("node ", NodeLabel(node, i), " reads ", Q(in),
                                    " which no graph input, initializer or node defines (dangling input)"));
        }
      }
      std::vector<std::string> free_names;
      absl::flat_hash_set<std::string> seen;
      for (const auto& a : node.attribute()) {
        if (a.has_g()) CollectFreeNames(a.g(), &free_names, &seen);
        for (const auto& sg : a.graphs()) CollectFreeNames(sg, &free_names, &seen);
      }
      for (const auto& name : free_names) {
        if (!defined.contains(name)) {
          return Error(absl::StrCat("node ", NodeLabel(node, i), " reads ", Q(name),
                                    " inside a subgraph, but nothing in the subgraph or the outer graph defines it"));
        }
      }
      implicit_[i] = std::move(free_names);
      absl::flat_hash_set<int> pred_set;
      auto add_pred = [&](const std::string& name) {
        auto it = producer.find(name);
        if (it != producer.end() && pred_set.insert(it->second).second) preds[i].push_back(it->second);
      };
      for (const auto& in : node.input()) {
        if (!in.empty()) add_pred(in);
      }
      for (const auto& in : implicit_[i]) add_pred(in);
    }
    if (g->output_size() == 0) return Error("has no graph outputs; a model must produce at least one output");
    absl::flat_hash_set<std::string> output_names;
    for (const auto& out : g->output()) {
      if (!defined.contains(out.name())) {
        return Error(absl::StrCat("declares graph output ", Q(out.name()), " which nothing produces"));
      }
      if (!output_names.insert(out.name()).second) {
        return Error(absl::StrCat("declares graph output ", Q(out.name()), " twice"));
      }
    }

    BATON_ASSIGN_OR_RETURN(std::vector<int> order, TopoSort(*g, preds));
    bool sorted = true;
    for (int i = 0; i < n; ++i) sorted = sorted && order[i] == i;
    if (!sorted) {
      Warn("nodes were not in topological order in the file; they were sorted");
      google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
      std::vector<std::vector<std::string>> implicit(n);
      for (int i = 0; i < n; ++i) {
        nodes.Add(std::move(*g->mutable_node(order[i])));
        implicit[i] = std::move(implicit_[order[i]]);
      }
      g->mutable_node()->Swap(&nodes);
      implicit_ = std::move(implicit);
    }
    NameNodes(g);
    return absl::OkStatus();
  }

  static void CollectOps(const onnx::GraphProto& g, std::vector<std::string>* ops) {
    for (const auto& node : g.node()) {
      ops->push_back(node.op_type());
      for (const auto& a : node.attribute()) {
        if (a.has_g()) CollectOps(a.g(), ops);
        for (const auto& sg : a.graphs()) CollectOps(sg, ops);
      }
    }
  }

  // Names read inside `g` (and its nested subgraphs) that `g` does not define.
  static void CollectFreeNames(const onnx::GraphProto& g, std::vector<std::string>* out,
                               absl::flat_hash_set<std::string>* seen) {
    absl::flat_hash_set<std::string> local;
    for (const auto& in : g.input()) local.insert(in.name());
    for (const auto& init : g.initializer()) local.insert(init.name());
    for (const auto& sp : g.sparse_initializer()) local.insert(sp.values().name());
    for (const auto& node : g.node()) {
      for (const auto& o : node.output()) local.insert(o);
    }
    auto add = [&](const std::string& name) {
      if (!name.empty() && !local.contains(name) && seen->insert(name).second) out->push_back(name);
    };
    for (const auto& node : g.node()) {
      for (const auto& in : node.input()) add(in);
      for (const auto& a : node.attribute()) {
        std::vector<std::string> inner;
        absl::flat_hash_set<std::string> inner_seen;
        if (a.has_g()) CollectFreeNames(a.g(), &inner, &inner_seen);
        for (const auto& sg : a.graphs()) CollectFreeNames(sg, &inner, &inner_seen);
        for (const auto& name : inner) add(name);
      }
    }
    for (const auto& o : g.output()) add(o.name());
  }

  // Kahn's algorithm, smallest original index first, so a valid order is kept.
  absl::StatusOr<std::vector<int>> TopoSort(const onnx::GraphProto& g, const std::vector<std::vector<int>>& preds) {
    const int n = static_cast<int>(preds.size());
    std::vector<int> indegree(n, 0);
    std::vector<std::vector<int>> succs(n);
    for (int i = 0; i < n; ++i) {
      for (int p : preds[i]) {
        ++indegree[i];
        succs[p].push_back(i);
      }
    }
    std::priority_queue<int, std::vector<int>, std::greater<>> ready;
    for (int i = 0; i < n; ++i) {
      if (indegree[i] == 0) ready.push(i);
    }
    std::vector<int> order;
    order.reserve(n);
    while (!ready.empty()) {
      int i = ready.top();
      ready.pop();
      order.push_back(i);
      for (int s : succs[i]) {
        if (--indegree[s] == 0) ready.push(s);
      }
    }
    if (static_cast<int>(order.size()) == n) return order;
    // Walk predecessors among the unsorted nodes until one repeats: that is a cycle.
    int start = 0;
    while (indegree[start] == 0) ++start;
    std::vector<int> path;
    std::vector<int> pos(n, -1);
    int cur = start;
    while (pos[cur] < 0) {
      pos[cur] = static_cast<int>(path.size());
      path.push_back(cur);
      for (int p : preds[cur]) {
        if (indegree[p] > 0) {
          cur = p;
          break;
        }
      }
    }
    std::vector<std::string> cycle;
    for (size_t k = path.size(); k-- > static_cast<size_t>(pos[cur]);) cycle.push_back(NodeLabel(g.node(path[k]), path[k]));
    cycle.push_back(NodeLabel(g.node(path.back()), path.back()));
    return Error(absl::StrCat("has a cycle: ", absl::StrJoin(cycle, " -> "),
                              "; an ONNX graph must be acyclic (use Loop for iteration)"));
  }

  void NameNodes(onnx::GraphProto* g) {
    absl::flat_hash_set<std::string> used;
    for (const auto& node : g->node()) used.insert(node.name());
    absl::flat_hash_set<std::string> taken;
    std::vector<std::string> renamed;  // the first 20, for the warning
    int renamed_count = 0;
    for (int i = 0; i < g->node_size(); ++i) {
      onnx::NodeProto* node = g->mutable_node(i);
      if (!node->name().empty() && taken.insert(node->name()).second) continue;
      std::string base = node->name().empty() ? absl::StrCat(node->op_type(), "_", i) : node->name();
      std::string name = base;
      for (int k = 1; used.contains(name) || taken.contains(name); ++k) name = absl::StrCat(base, "__", k);
      ++renamed_count;
      if (renamed.size() < 20) {
        renamed.push_back(node->name().empty() ? absl::StrCat("#", i, " (", node->op_type(), ") -> ", Q(name))
                                               : absl::StrCat(Q(node->name()), " -> ", Q(name)));
      }
      node->set_name(name);
      taken.insert(name);
      used.insert(name);
    }
    if (!renamed.empty()) {
      Warn(absl::StrCat(renamed_count, " node(s) with empty or repeated names were renamed (plans refer to nodes "
                        "by name): ", absl::StrJoin(renamed, ", "), renamed_count > 20 ? ", ..." : ""));
    }
  }

  absl::Status RunChecker(const onnx::ModelProto& m) {
    try {
      std::lock_guard lock(OnnxCheckMutex());
      onnx::checker::check_model(m);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      std::string msg = e.what();
      if (NewerThanChecker(m)) {
        // The bundled ONNX checker predates this model's IR/opset; ONNX Runtime is the authority.
        Warn(absl::StrCat("ONNX checker (library version older than the model) reported: ", msg));
        return absl::OkStatus();
      }
      return Error(absl::StrCat("fails the ONNX checker: ", msg));
    }
  }

  static bool NewerThanChecker(const onnx::ModelProto& m) {
    if (m.ir_version() > onnx::Version::IR_VERSION) return true;
    const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
    for (const auto& op : m.opset_import()) {
      std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
      auto it = ranges.find(domain);
      if (it != ranges.end() && op.version() > it->second.second) return true;
    }
    return false;
  }

  // Type checks stay off: old-opset models (e.g. an int64 Constant at opset 6)
  // break the letter of their schema yet run in ONNX Runtime.
  // Strict where the bundled ONNX library knows every op (default and ai.onnx.ml
  // domains, opsets it knows): a node whose shapes cannot work, e.g. Add of [1,4]
  // and [3], is rejected here with the node's name instead of failing later in
  // ONNX Runtime. Elsewhere inference is best effort and failures are warnings.
  absl::Status RunShapeInference(onnx::ModelProto& m) {
    bool strict = !NewerThanChecker(m);
    for (const auto& op : m.opset_import()) {
      if (!op.domain().empty() && op.domain() != "ai.onnx" && op.domain() != "ai.onnx.ml") strict = false;
    }
    try {
      onnx::ShapeInferenceOptions opts(/*check_type_val=*/false, /*strict_mode_val=*/strict ? 1 : 0,
                                       /*data_prop_val=*/true);
      std::lock_guard lock(OnnxCheckMutex());
      onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(), opts);
    } catch (const std::exception& e) {
      if (strict) return Error(absl::StrCat("fails ONNX shape inference: ", e.what()));
      Warn(absl::StrCat("shape inference stopped early: ", e.what()));
    }
    return absl::OkStatus();
  }

  void BuildView() {
    Model& model = *model_;
    const onnx::GraphProto& g = model.proto_->graph();
    absl::flat_hash_map<std::string, const onnx::TypeProto*> types;
    for (const auto& vi : g.value_info()) types[vi.name()] = &vi.type();
    for (const auto& vi : g.output()) types[vi.name()] = &vi.type();
    for (const auto& vi : g.input()) types[vi.name()] = &vi.type();

    auto add_value = [&](const std::string& name, ValueKind kind) -> Value& {
      model.value_index_[name] = static_cast<uint32_t>(model.values_.size());
      Value& v = model.values_.emplace_back();
      v.name = name;
      v.kind = kind;
      auto it = types.find(name);
      if (it != types.end()) v.type = TensorTypeFromProto(*it->second);
      return v;
    };
    absl::flat_hash_set<std::string> init_names;
    for (const auto& init : g.initializer()) init_names.insert(init.name());
    for (const auto& in : g.input()) {
      if (init_names.contains(in.name())) continue;  // an input with a default is a constant for baton
      add_value(in.name(), ValueKind::kGraphInput);
      model.inputs_.push_back(in.name());
    }
    for (const auto& init : g.initializer()) {
      Value& v = add_value(init.name(), ValueKind::kInitializer);
      v.type = TensorTypeFromInitializer(init);
      model.initializers_.push_back(init.name());
    }
    for (const auto& sp : g.sparse_initializer()) {
      if (!model.value_index_.contains(sp.values().name())) {
        add_value(sp.values().name(), ValueKind::kInitializer);
        model.initializers_.push_back(sp.values().name());
      }
    }
    const int n = g.node_size();
    model.nodes_.reserve(n);
    for (int i = 0; i < n; ++i) {
      const auto& np = g.node(i);
      Node& node = model.nodes_.emplace_back();
      node.id = NodeId(static_cast<uint32_t>(i));
      node.name = np.name();
      node.op_type = np.op_type();
      node.domain = np.domain() == "ai.onnx" ? "" : np.domain();
      node.inputs.assign(np.input().begin(), np.input().end());
      node.outputs.assign(np.output().begin(), np.output().end());
      node.implicit_inputs = std::move(implicit_[i]);
      for (const auto& a : np.attribute()) {
        node.has_subgraphs = node.has_subgraphs || a.has_g() || a.graphs_size() > 0;
        if (a.has_g()) CollectOps(a.g(), &node.subgraph_ops);
        for (const auto& sg : a.graphs()) CollectOps(sg, &node.subgraph_ops);
      }
      std::sort(node.subgraph_ops.begin(), node.subgraph_ops.end());
      node.subgraph_ops.erase(std::unique(node.subgraph_ops.begin(), node.subgraph_ops.end()),
                              node.subgraph_ops.end());
      model.node_index_[node.name] = static_cast<uint32_t>(i);
      for (const auto& out : node.outputs) {
        if (out.empty()) continue;
        Value& v = add_value(out, ValueKind::kNodeOutput);
        v.producer = node.id;
      }
    }
    for (const auto& out : g.output()) {
      model.outputs_.push_back(out.name());
      model.values_[model.value_index_.at(out.name())].is_graph_output = true;
    }
    for (const Node& node : model.nodes_) {
      for (const auto& in : node.AllInputs()) {
        auto& consumers = model.values_[model.value_index_.at(in)].consumers;
        if (consumers.empty() || consumers.back() != node.id) consumers.push_back(node.id);
      }
    }
    model.topo_order_.resize(n);
    model.topo_index_.resize(n);
    for (int i = 0; i < n; ++i) {
      model.topo_order_[i] = NodeId(static_cast<uint32_t>(i));
      model.topo_index_[i] = static_cast<uint32_t>(i);
    }
    auto lookup = [&model](const std::string& name) -> const TensorType* {
      const Value* v = model.FindValue(name);
      return v ? &v->type : nullptr;
    };
    for (size_t i = 0; i < model.nodes_.size(); ++i) {
      Node& node = model.nodes_[i];
      NodeCost cost = EstimateNodeCost(node, g.node(static_cast<int>(i)), lookup);
      node.flops = cost.flops;
      node.param_bytes = cost.embedded_param_bytes;
      model.total_param_bytes_ += cost.embedded_param_bytes;
      for (const auto& in : node.AllInputs()) {
        const Value& v = model.values_[model.value_index_.at(in)];
        if (v.kind == ValueKind::kInitializer) node.param_bytes += v.type.Bytes().value_or(0);
      }
      model.total_flops_ = SatAdd(model.total_flops_, node.flops);
    }
    for (const auto& name : model.initializers_) {
      model.total_param_bytes_ += model.FindValue(name)->type.Bytes().value_or(0);
    }
  }

  std::string display_name_;
  fs::path base_dir_;
  LoadOptions options_;
  std::shared_ptr<Model> model_;
  std::vector<std::vector<std::string>> implicit_;
  int64_t external_bytes_ = 0;
};

absl::StatusOr<std::shared_ptr<const Model>> Model::LoadBytes(std::string_view bytes, std::string display_name,
                                                              const fs::path& base_dir, const LoadOptions& options) {
  try {
    return ModelLoader(std::move(display_name), base_dir, options).Load(bytes);
  } catch (const std::exception& e) {
    // Protobuf or ONNX threw from somewhere we did not expect; never let it cross the module boundary.
    return absl::InternalError(absl::StrCat("model could not be loaded: ", e.what()));
  }
}

absl::StatusOr<std::shared_ptr<const Model>> Model::LoadFile(const fs::path& path, const LoadOptions& options) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::InvalidArgumentError(absl::StrCat("model file ", Q(path.string()), " cannot be read: ", ec.message(),
                                                   "; check the path and its permissions"));
  }
  if (ec || !fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat("model file ", Q(path.string()), " does not exist"));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat("model path ", Q(path.string()),
                                                   " is not a regular file; pass the path of an .onnx file"));
  }
  auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) return absl::InternalError(absl::StrCat("cannot stat ", Q(path.string()), ": ", ec.message()));
  if (size > options.max_model_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Q(path.string()), " is ", size,
                                                   " bytes, above the limit of ", options.max_model_bytes,
                                                   " (LoadOptions.max_model_bytes)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat("cannot open model file ", Q(path.string())));
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), size);
  if (!in) return absl::DataLossError(absl::StrCat("could not read all of ", Q(path.string())));
  fs::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  return LoadBytes(bytes, path.string(), dir, options);
}

}  // namespace baton::graph
