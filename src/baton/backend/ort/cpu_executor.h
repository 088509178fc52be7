// CpuExecutor: a CPU PU backed by ONNX Runtime's CPU execution provider, with
// an explicit thread budget and pinned cores (never ORT's "all cores").
// Thread-safety: see backend/executor.h.
#pragma once

#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/backend/ort/ort_runner.h"

namespace baton::backend {

struct CpuPuSpec {
  std::string name = "cpu0";
  int threads = 1;         // intra-op threads of each session on this PU
  std::vector<int> cores;  // empty, or exactly `threads` logical CPU ids (see ort::SessionOptions)
};

// Lets the session run on the weights inside `model`'s own protobuf
// (graph::RawInitializerViews, ONNX Runtime's AddInitializer) instead of a copy
// of its own, so a model's weights are held once in the process rather than
// once in the graph and again per session; the session keeps the model alive.
// Does nothing for a model not owned by a shared_ptr.
void ShareModelWeights(const graph::Model& model, const graph::Submodel& partition, ort::SessionOptions& options);

class CpuExecutor : public Executor {
 public:
  explicit CpuExecutor(CpuPuSpec spec) : spec_(std::move(spec)) {}
  const std::string& pu_name() const override { return spec_.name; }
  std::string kind() const override { return "cpu"; }
  // ONNX Runtime's CPU provider has a kernel for every standard op: all true.
  std::vector<bool> QueryCapability(const graph::Model& model) const override;
  absl::StatusOr<std::unique_ptr<PreparedPartition>> Prepare(const graph::Model& model,
                                                              const graph::Submodel& partition) const override;

 private:
  CpuPuSpec spec_;
};

}  // namespace baton::backend
