#include "baton/graph/batch.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {

namespace {

absl::Status FreeLeadingDim(onnx::ValueInfoProto& value, const char* what) {
  if (!value.type().has_tensor_type() || !value.type().tensor_type().has_shape() ||
      value.type().tensor_type().shape().dim_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " '", value.name(),
        "' has no leading dimension (a scalar or an unknown rank), so requests cannot be stacked along it; "
        "leave max_batch at 1 for this model"));
  }
  onnx::TensorShapeProto_Dimension* dim = value.mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0);
  dim->clear_dim_value();
  dim->set_dim_param(kBatchDimParam);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> WithFreeBatchDim(const Model& model) {
  if (model.inputs().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", model.display_name(), "' has no inputs; there is nothing to batch"));
  }
  onnx::ModelProto proto = model.proto();
  onnx::GraphProto& g = *proto.mutable_graph();
  std::set<std::string> initializers;
  for (const onnx::TensorProto& t : g.initializer()) initializers.insert(t.name());
  const std::string where = absl::StrCat("model '", model.display_name(), "': ");
  for (onnx::ValueInfoProto& in : *g.mutable_input()) {
    if (initializers.count(in.name()) > 0) continue;
    if (absl::Status s = FreeLeadingDim(in, "input"); !s.ok()) return absl::InvalidArgumentError(where + std::string(s.message()));
  }
  for (onnx::ValueInfoProto& out : *g.mutable_output()) {
    if (absl::Status s = FreeLeadingDim(out, "output"); !s.ok()) return absl::InvalidArgumentError(where + std::string(s.message()));
  }
  g.clear_value_info();
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat(where, "cannot serialize the batched copy"));
  }
  return Model::LoadBytes(bytes, model.display_name() + "+batch");
}

}  // namespace baton::graph
