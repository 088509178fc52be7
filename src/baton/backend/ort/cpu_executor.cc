#include "baton/backend/ort/cpu_executor.h"

#include <chrono>
#include <memory>

#include "baton/backend/ort/ort_runner.h"

namespace baton::backend {

namespace {

class CpuPrepared : public PreparedPartition {
 public:
  CpuPrepared(std::unique_ptr<ort::OrtRunner> runner, std::vector<std::string> outputs)
      : runner_(std::move(runner)), outputs_(std::move(outputs)) {}

  absl::StatusOr<RunResult> Run(std::span<const std::pair<std::string, const Tensor*>> inputs, RunCancel* cancel = nullptr) const override {
    auto start = std::chrono::steady_clock::now();
    BATON_ASSIGN_OR_RETURN(std::vector<Tensor> outs, runner_->Run(inputs, outputs_, cancel));
    RunResult result;
    result.busy = std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - start);
    result.outputs.reserve(outs.size());
    for (size_t i = 0; i < outs.size(); ++i) result.outputs.emplace_back(outputs_[i], std::move(outs[i]));
    return result;
  }

 private:
  std::unique_ptr<ort::OrtRunner> runner_;
  std::vector<std::string> outputs_;
};

}  // namespace

void ShareModelWeights(const graph::Model& model, const graph::Submodel& partition, ort::SessionOptions& options) {
  std::shared_ptr<const graph::Model> owner = model.weak_from_this().lock();
  if (!owner) return;  // not held by a shared_ptr: nothing could keep the bytes alive
  for (graph::InitializerView& w : graph::RawInitializerViews(model, partition)) {
    options.shared_initializers.push_back(
        ort::SharedInitializer{std::move(w.name), w.elem_type, std::move(w.dims), w.bytes.data(), w.bytes.size()});
  }
  if (!options.shared_initializers.empty()) options.shared_initializers_owner = std::move(owner);
}

std::vector<bool> CpuExecutor::QueryCapability(const graph::Model& model) const {
  return std::vector<bool>(model.nodes().size(), true);
}

absl::StatusOr<std::unique_ptr<PreparedPartition>> CpuExecutor::Prepare(const graph::Model& model,
                                                                         const graph::Submodel& partition) const {
  BATON_RETURN_IF_ERROR(CheckCapable(model, partition, QueryCapability(model), spec_.name));
  ort::SessionOptions options;
  options.intra_op_threads = spec_.threads;
  options.pinned_cores = spec_.cores;
  ShareModelWeights(model, partition, options);
  BATON_ASSIGN_OR_RETURN(auto runner, ort::OrtRunner::Create(partition.onnx_bytes, options,
                                                             model.display_name() + " on " + spec_.name));
  return std::make_unique<CpuPrepared>(std::move(runner), partition.interface.outputs);
}

}  // namespace baton::backend
