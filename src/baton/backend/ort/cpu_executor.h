// CpuExecutor: a CPU PU backed by ONNX Runtime's CPU execution provider, with
// an explicit thread budget and pinned cores (never ORT's "all cores").
// Thread-safety: see backend/executor.h.
#pragma once

#include <string>
#include <vector>

#include "baton/backend/executor.h"

namespace baton::backend {

struct CpuPuSpec {
  std::string name = "cpu0";
  int threads = 1;         // intra-op threads of each session on this PU
  std::vector<int> cores;  // empty, or exactly `threads` logical CPU ids (see ort::SessionOptions)
};

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
