#include "baton/graph/builder.h"

#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {
namespace {

// raw_data is little-endian by the ONNX spec; memcpy below relies on the host
// being little-endian too (every platform baton targets is).
static_assert(std::endian::native == std::endian::little, "GraphBuilder assumes a little-endian host");

constexpr int64_t kIrVersion = 8;
constexpr int64_t kDefaultOpset = 17;

template <typename T>
void AppendRaw(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out->append(bytes, sizeof(T));
}

std::string DimsString(const std::vector<int64_t>& dims) { return absl::StrCat("[", absl::StrJoin(dims, ","), "]"); }

// Fills `tensor` (name set by the caller) or returns what is wrong.
absl::Status FillTensor(ElemType elem_type, const std::vector<int64_t>& dims, const std::vector<float>& data,
                        onnx::TensorProto* tensor) {
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension in ", DimsString(dims)));
    count *= d;
  }
  if (static_cast<int64_t>(data.size()) != count) {
    return absl::InvalidArgumentError(
        absl::StrCat(data.size(), " values given for dims ", DimsString(dims), " (", count, " expected)"));
  }
  std::string raw;
  if (elem_type == dtype::kFloat) {
    raw.resize(data.size() * sizeof(float));
    if (!data.empty()) std::memcpy(raw.data(), data.data(), raw.size());
  } else if (elem_type == dtype::kDouble) {
    raw.reserve(data.size() * sizeof(double));
    for (float v : data) AppendRaw(&raw, static_cast<double>(v));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("float data cannot be stored as ", ElemTypeName(elem_type), " (use float32 or float64)"));
  }
  tensor->set_data_type(elem_type);
  for (int64_t d : dims) tensor->add_dims(d);
  tensor->set_raw_data(std::move(raw));
  return absl::OkStatus();
}

template <typename T>
absl::Status AppendIntegers(const std::vector<int64_t>& data, ElemType elem_type, std::string* raw) {
  raw->reserve(data.size() * sizeof(T));
  for (int64_t v : data) {
    bool fits;
    if constexpr (std::is_same_v<T, uint64_t>) {
      fits = v >= 0;
    } else {
      fits = v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
             v <= static_cast<int64_t>(std::numeric_limits<T>::max());
    }
    if (!fits) {
      return absl::InvalidArgumentError(
          absl::StrCat("value ", v, " does not fit element type ", ElemTypeName(elem_type)));
    }
    AppendRaw(raw, static_cast<T>(v));
  }
  return absl::OkStatus();
}

absl::Status FillTensor(ElemType elem_type, const std::vector<int64_t>& dims, const std::vector<int64_t>& data,
                        onnx::TensorProto* tensor) {
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension in ", DimsString(dims)));
    count *= d;
  }
  if (static_cast<int64_t>(data.size()) != count) {
    return absl::InvalidArgumentError(
        absl::StrCat(data.size(), " values given for dims ", DimsString(dims), " (", count, " expected)"));
  }
  std::string raw;
  absl::Status status;
  switch (elem_type) {
    case dtype::kInt64:
      status = AppendIntegers<int64_t>(data, elem_type, &raw);
      break;
    case dtype::kInt32:
      status = AppendIntegers<int32_t>(data, elem_type, &raw);
      break;
    case dtype::kInt16:
      status = AppendIntegers<int16_t>(data, elem_type, &raw);
      break;
    case dtype::kInt8:
      status = AppendIntegers<int8_t>(data, elem_type, &raw);
      break;
    case dtype::kUint8:
      status = AppendIntegers<uint8_t>(data, elem_type, &raw);
      break;
    case dtype::kUint16:
      status = AppendIntegers<uint16_t>(data, elem_type, &raw);
      break;
    case dtype::kUint32:
      status = AppendIntegers<uint32_t>(data, elem_type, &raw);
      break;
    case dtype::kUint64:
      status = AppendIntegers<uint64_t>(data, elem_type, &raw);
      break;
    case dtype::kBool:
      for (int64_t v : data) {
        if (v != 0 && v != 1) {
          return absl::InvalidArgumentError(absl::StrCat("value ", v, " is not a bool (0 or 1)"));
        }
        raw.push_back(static_cast<char>(v));
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("integer data cannot be stored as ", ElemTypeName(elem_type)));
  }
  if (!status.ok()) return status;
  tensor->set_data_type(elem_type);
  for (int64_t d : dims) tensor->add_dims(d);
  tensor->set_raw_data(std::move(raw));
  return absl::OkStatus();
}

// Adds every explicit node name of `graph` and its subgraphs to `names`;
// returns the first duplicate, if any.
std::optional<std::string> CollectNames(const onnx::GraphProto& graph, std::set<std::string>* names) {
  for (const onnx::NodeProto& node : graph.node()) {
    if (!node.name().empty() && !names->insert(node.name()).second) return node.name();
    for (const onnx::AttributeProto& attr : node.attribute()) {
      if (attr.has_g()) {
        if (auto dup = CollectNames(attr.g(), names)) return dup;
      }
      for (const onnx::GraphProto& g : attr.graphs()) {
        if (auto dup = CollectNames(g, names)) return dup;
      }
    }
  }
  return std::nullopt;
}

bool HasUnnamedNode(const onnx::GraphProto& graph) {
  for (const onnx::NodeProto& node : graph.node()) {
    if (node.name().empty()) return true;
    for (const onnx::AttributeProto& attr : node.attribute()) {
      if (attr.has_g() && HasUnnamedNode(attr.g())) return true;
      for (const onnx::GraphProto& g : attr.graphs()) {
        if (HasUnnamedNode(g)) return true;
      }
    }
  }
  return false;
}

// Gives every unnamed node "<prefix><op_type>_<n>" with the smallest n not in
// `taken`. Parents are named before their subgraphs so that the subgraph prefix
// is known.
void AssignNames(onnx::GraphProto* graph, const std::string& prefix, std::set<std::string>* taken,
                 std::map<std::string, int64_t>* next_index) {
  for (onnx::NodeProto& node : *graph->mutable_node()) {
    if (node.name().empty()) {
      const std::string stem = absl::StrCat(prefix, node.op_type(), "_");
      int64_t& n = (*next_index)[stem];
      while (taken->count(absl::StrCat(stem, n)) > 0) ++n;
      node.set_name(absl::StrCat(stem, n));
      taken->insert(node.name());
      ++n;
    }
    for (onnx::AttributeProto& attr : *node.mutable_attribute()) {
      const std::string sub_prefix = absl::StrCat(node.name(), "/", attr.name(), "/");
      if (attr.has_g()) AssignNames(attr.mutable_g(), sub_prefix, taken, next_index);
      for (int i = 0; i < attr.graphs_size(); ++i) {
        AssignNames(attr.mutable_graphs(i), absl::StrCat(sub_prefix, i, "/"), taken, next_index);
      }
    }
  }
}

}  // namespace

struct GraphBuilder::Impl {
  onnx::ModelProto model;  // the graph lives in model.graph()
  std::map<std::string, int64_t> opsets{{"", kDefaultOpset}};
  std::string first_error;  // empty while every call was valid

  // Rewrites model.opset_import from `opsets` (in domain order, for stable bytes).
  void SyncOpsets() {
    model.clear_opset_import();
    for (const auto& [domain, version] : opsets) {
      onnx::OperatorSetIdProto* op = model.add_opset_import();
      op->set_domain(domain);
      op->set_version(version);
    }
  }

  void Fail(std::string message) {
    if (first_error.empty()) first_error = absl::StrCat("graph '", model.graph().name(), "': ", message);
  }

  void SetType(onnx::ValueInfoProto* info, ElemType elem_type, const std::vector<DimSpec>* dims) {
    onnx::TypeProto_Tensor* tensor_type = info->mutable_type()->mutable_tensor_type();
    tensor_type->set_elem_type(elem_type);
    if (dims == nullptr) return;
    onnx::TensorShapeProto* shape = tensor_type->mutable_shape();  // present even for scalars
    for (const DimSpec& d : *dims) {
      onnx::TensorShapeProto_Dimension* dim = shape->add_dim();
      if (const int64_t* size = std::get_if<int64_t>(&d)) {
        if (*size < 0) Fail(absl::StrCat("value '", info->name(), "' has negative dimension ", *size));
        dim->set_dim_value(*size);
      } else if (const std::string& param = std::get<std::string>(d); !param.empty()) {
        dim->set_dim_param(param);
      }
    }
  }

  enum class Section { kInput, kOutput, kValueInfo };

  void AddValue(Section section, std::string name, ElemType elem_type, const std::vector<DimSpec>* dims) {
    const char* what = section == Section::kInput    ? "graph input"
                       : section == Section::kOutput ? "graph output"
                                                     : "value_info";
    if (name.empty()) Fail(absl::StrCat("a ", what, " has an empty name"));
    if (elem_type == dtype::kUndefined) Fail(absl::StrCat(what, " '", name, "' has undefined element type"));
    onnx::GraphProto* graph = model.mutable_graph();
    onnx::ValueInfoProto* info = section == Section::kInput    ? graph->add_input()
                                 : section == Section::kOutput ? graph->add_output()
                                                               : graph->add_value_info();
    info->set_name(std::move(name));
    SetType(info, elem_type, dims);
  }

  template <typename Data>
  void AddInitializer(std::string name, ElemType elem_type, std::vector<int64_t> dims, Data data) {
    if (name.empty()) Fail("an initializer has an empty name");
    onnx::TensorProto* tensor = model.mutable_graph()->add_initializer();
    tensor->set_name(name);
    absl::Status status = FillTensor(elem_type, dims, data, tensor);
    if (!status.ok()) Fail(absl::StrCat("initializer '", name, "': ", status.message()));
  }
};

// ---- Attr ----

Attr Attr::Int(std::string name, int64_t value) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kInt;
  a.i_ = value;
  return a;
}

Attr Attr::Float(std::string name, float value) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kFloat;
  a.f_ = value;
  return a;
}

Attr Attr::String(std::string name, std::string value) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kString;
  a.s_ = std::move(value);
  return a;
}

Attr Attr::Ints(std::string name, std::vector<int64_t> values) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kInts;
  a.ints_ = std::move(values);
  return a;
}

Attr Attr::Floats(std::string name, std::vector<float> values) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kFloats;
  a.floats_ = std::move(values);
  return a;
}

Attr Attr::Tensor(std::string name, ElemType elem_type, std::vector<int64_t> dims, std::vector<float> data) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kTensor;
  a.elem_type_ = elem_type;
  a.dims_ = std::move(dims);
  a.floats_ = std::move(data);
  a.tensor_is_float_ = true;
  return a;
}

Attr Attr::Tensor(std::string name, ElemType elem_type, std::vector<int64_t> dims, std::vector<int64_t> data) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kTensor;
  a.elem_type_ = elem_type;
  a.dims_ = std::move(dims);
  a.ints_ = std::move(data);
  a.tensor_is_float_ = false;
  return a;
}

Attr Attr::Graph(std::string name, const GraphBuilder& body) {
  Attr a;
  a.name_ = std::move(name);
  a.kind_ = Kind::kGraph;
  a.graph_ = std::make_shared<const GraphBuilder>(body);
  return a;
}

// ---- GraphBuilder ----

GraphBuilder::GraphBuilder(std::string graph_name) : impl_(std::make_unique<Impl>()) {
  impl_->model.set_ir_version(kIrVersion);
  impl_->model.set_producer_name("baton-zoo");
  impl_->model.mutable_graph()->set_name(std::move(graph_name));
  impl_->SyncOpsets();
}

GraphBuilder::~GraphBuilder() = default;
GraphBuilder::GraphBuilder(const GraphBuilder& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
GraphBuilder& GraphBuilder::operator=(const GraphBuilder& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
GraphBuilder::GraphBuilder(GraphBuilder&&) noexcept = default;
GraphBuilder& GraphBuilder::operator=(GraphBuilder&&) noexcept = default;

void GraphBuilder::AddInput(std::string name, ElemType elem_type, std::vector<DimSpec> dims) {
  impl_->AddValue(Impl::Section::kInput, std::move(name), elem_type, &dims);
}

void GraphBuilder::AddOutput(std::string name, ElemType elem_type) {
  impl_->AddValue(Impl::Section::kOutput, std::move(name), elem_type, nullptr);
}

void GraphBuilder::AddOutput(std::string name, ElemType elem_type, std::vector<DimSpec> dims) {
  impl_->AddValue(Impl::Section::kOutput, std::move(name), elem_type, &dims);
}

void GraphBuilder::AddValueInfo(std::string name, ElemType elem_type, std::vector<DimSpec> dims) {
  impl_->AddValue(Impl::Section::kValueInfo, std::move(name), elem_type, &dims);
}

void GraphBuilder::AddInitializer(std::string name, ElemType elem_type, std::vector<int64_t> dims,
                                  std::vector<float> data) {
  impl_->AddInitializer(std::move(name), elem_type, std::move(dims), std::move(data));
}

void GraphBuilder::AddInitializer(std::string name, ElemType elem_type, std::vector<int64_t> dims,
                                  std::vector<int64_t> data) {
  impl_->AddInitializer(std::move(name), elem_type, std::move(dims), std::move(data));
}

void GraphBuilder::AddNode(std::string op_type, std::vector<std::string> inputs, std::vector<std::string> outputs,
                           std::vector<Attr> attributes, std::string name, std::string domain) {
  const std::string label = !name.empty()     ? absl::StrCat("node '", name, "'")
                            : op_type.empty() ? std::string("a node")
                                              : absl::StrCat("a ", op_type, " node");
  if (op_type.empty()) impl_->Fail(absl::StrCat(label, " has an empty op_type"));
  if (outputs.empty()) impl_->Fail(absl::StrCat(label, " has no outputs"));
  onnx::NodeProto* node = impl_->model.mutable_graph()->add_node();
  node->set_op_type(std::move(op_type));
  node->set_name(std::move(name));
  node->set_domain(std::move(domain));
  for (std::string& in : inputs) node->add_input(std::move(in));
  for (std::string& out : outputs) node->add_output(std::move(out));
  std::set<std::string> attr_names;
  for (Attr& a : attributes) {
    if (a.name_.empty()) impl_->Fail(absl::StrCat(label, " has an attribute with an empty name"));
    if (!attr_names.insert(a.name_).second) {
      impl_->Fail(absl::StrCat(label, " has attribute '", a.name_, "' twice"));
    }
    onnx::AttributeProto* attr = node->add_attribute();
    attr->set_name(a.name_);
    switch (a.kind_) {
      case Attr::Kind::kInt:
        attr->set_type(onnx::AttributeProto::INT);
        attr->set_i(a.i_);
        break;
      case Attr::Kind::kFloat:
        attr->set_type(onnx::AttributeProto::FLOAT);
        attr->set_f(a.f_);
        break;
      case Attr::Kind::kString:
        attr->set_type(onnx::AttributeProto::STRING);
        attr->set_s(std::move(a.s_));
        break;
      case Attr::Kind::kInts:
        attr->set_type(onnx::AttributeProto::INTS);
        for (int64_t v : a.ints_) attr->add_ints(v);
        break;
      case Attr::Kind::kFloats:
        attr->set_type(onnx::AttributeProto::FLOATS);
        for (float v : a.floats_) attr->add_floats(v);
        break;
      case Attr::Kind::kTensor: {
        attr->set_type(onnx::AttributeProto::TENSOR);
        absl::Status status = a.tensor_is_float_ ? FillTensor(a.elem_type_, a.dims_, a.floats_, attr->mutable_t())
                                                 : FillTensor(a.elem_type_, a.dims_, a.ints_, attr->mutable_t());
        if (!status.ok()) impl_->Fail(absl::StrCat(label, " attribute '", a.name_, "': ", status.message()));
        break;
      }
      case Attr::Kind::kGraph: {
        attr->set_type(onnx::AttributeProto::GRAPH);
        const Impl& sub = *a.graph_->impl_;
        if (!sub.first_error.empty()) {
          impl_->Fail(absl::StrCat(label, " attribute '", a.name_, "': ", sub.first_error));
        }
        *attr->mutable_g() = sub.model.graph();
        break;
      }
    }
  }
}

void GraphBuilder::SetOpset(int64_t version, std::string domain) {
  if (version <= 0) impl_->Fail(absl::StrCat("opset version ", version, " for domain '", domain, "' is not positive"));
  impl_->opsets[std::move(domain)] = version;
  impl_->SyncOpsets();
}

void GraphBuilder::SetProducer(std::string producer_name, std::string producer_version) {
  impl_->model.set_producer_name(std::move(producer_name));
  impl_->model.set_producer_version(std::move(producer_version));
}

void GraphBuilder::SetDocString(std::string doc) { impl_->model.set_doc_string(std::move(doc)); }

int64_t GraphBuilder::num_nodes() const { return impl_->model.graph().node_size(); }

absl::StatusOr<std::string> GraphBuilder::Serialize() const {
  if (!impl_->first_error.empty()) return absl::InvalidArgumentError(impl_->first_error);
  std::set<std::string> names;
  if (auto dup = CollectNames(impl_->model.graph(), &names)) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph '", impl_->model.graph().name(), "': node name '", *dup, "' is used twice"));
  }
  // Copy the model only when names must be generated; a fully named model (the
  // zoo's, with up to ~150 MB of weights) serializes without a copy.
  const bool needs_names = HasUnnamedNode(impl_->model.graph());
  std::unique_ptr<onnx::ModelProto> named;
  if (needs_names) {
    named = std::make_unique<onnx::ModelProto>(impl_->model);
    std::map<std::string, int64_t> next_index;
    AssignNames(named->mutable_graph(), "", &names, &next_index);
  }
  std::string out;
  const onnx::ModelProto& source = needs_names ? *named : impl_->model;
  if (!source.SerializeToString(&out)) {
    return absl::InternalError("serializing the model failed (is it larger than 2 GiB?)");
  }
  return out;
}

}  // namespace baton::graph
