#include "baton/backend/executor.h"

#include "absl/strings/str_cat.h"

namespace baton::backend {

absl::Status CheckCapable(const graph::Model& model, const graph::Submodel& partition,
                          const std::vector<bool>& capable, const std::string& pu_name) {
  auto check = [&](NodeId id) -> absl::Status {
    if (id.value < capable.size() && capable[id.value]) return absl::OkStatus();
    const graph::Node& node = model.node(id);
    return absl::FailedPreconditionError(absl::StrCat("PU '", pu_name, "' cannot run node '", node.name, "' (op ",
                                                      node.op_type, ") of model '", model.display_name(),
                                                      "'; place this partition on a PU that supports ", node.op_type));
  };
  for (NodeId id : partition.nodes) BATON_RETURN_IF_ERROR(check(id));
  for (NodeId id : partition.interface.copied_constants) BATON_RETURN_IF_ERROR(check(id));
  return absl::OkStatus();
}

}  // namespace baton::backend
