#include "baton/backend/emu/emu_executor.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/backend/ort/ort_runner.h"
#include "baton/partition/plan.h"

namespace baton::backend {

namespace {

class EmuPrepared : public PreparedPartition {
 public:
  EmuPrepared(std::unique_ptr<ort::OrtRunner> runner, std::vector<std::string> outputs, NamedTensors zeros,
              Duration charged, bool per_row)
      : runner_(std::move(runner)),
        outputs_(std::move(outputs)),
        zeros_(std::move(zeros)),
        charged_(charged),
        per_row_(per_row) {}

  absl::StatusOr<RunResult> Run(std::span<const std::pair<std::string, const Tensor*>> inputs, RunCancel* cancel = nullptr) const override {
    RunResult result;
    // A free leading dimension (a batching model): calibrated on one row,
    // charged per row, with no gain from batching.
    int64_t rows = 1;
    if (per_row_ && !inputs.empty() && inputs[0].second != nullptr && !inputs[0].second->shape().empty()) {
      rows = std::max<int64_t>(1, inputs[0].second->shape()[0]);
    }
    result.busy = charged_ * rows;
    if (!runner_) {
      for (const auto& [name, t] : zeros_) {
        std::vector<int64_t> shape = t.shape();
        if (per_row_ && !shape.empty()) shape[0] = rows;
        if (t.elem_type() == dtype::kString) {
          int64_t count = 1;
          for (int64_t d : shape) count *= d;
          result.outputs.emplace_back(name, Tensor::Strings(shape, std::vector<std::string>(static_cast<size_t>(count))));
        } else {
          result.outputs.emplace_back(name, Tensor(t.elem_type(), shape));
        }
      }
      return result;
    }
    BATON_ASSIGN_OR_RETURN(std::vector<Tensor> outs, runner_->Run(inputs, outputs_, cancel));
    for (size_t i = 0; i < outs.size(); ++i) result.outputs.emplace_back(outputs_[i], std::move(outs[i]));
    return result;
  }

 private:
  std::unique_ptr<ort::OrtRunner> runner_;  // null when compute is off
  std::vector<std::string> outputs_;
  NamedTensors zeros_;
  Duration charged_;
  bool per_row_;
};

// Zero tensors for the runner's inputs. A free leading dimension (a batching
// model's, graph::WithFreeBatchDim) is taken as one row and sets `per_row`;
// any other dynamic dim is an error (the emulator cannot guess it).
absl::StatusOr<std::vector<Tensor>> ZeroInputs(const ort::OrtRunner& runner, bool& per_row) {
  std::vector<Tensor> inputs;
  per_row = false;
  for (const auto& in : runner.inputs()) {
    std::vector<int64_t> shape = in.shape;
    if (in.rank_known && !shape.empty() && shape[0] < 0) {
      shape[0] = 1;
      per_row = true;
    }
    bool dynamic = !in.rank_known || std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; });
    if (!in.is_tensor || dynamic || !ElemTypeSize(in.elem_type)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "emulated PU needs numeric inputs whose shapes are fixed but for the leading (batch) dimension to "
          "calibrate partition '", runner.display_name(), "', but input '", in.name,
          "' is not; fix the model's input shapes"));
    }
    inputs.emplace_back(in.elem_type, std::move(shape));
  }
  return inputs;
}

bool Unsupported(const std::vector<std::string>& ops, const std::string& op) {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

}  // namespace

Duration EmuChargedTime(const graph::Model& model, std::span<const NodeId> nodes, Duration cpu_time,
                        const EmuPuSpec& spec) {
  double total_cost = 0;
  for (NodeId id : nodes) total_cost += partition::CostOf(model.node(id));
  if (total_cost <= 0) return Duration(0);
  double cpu_ns = static_cast<double>(cpu_time.count());
  double charged_ns = 0;
  for (NodeId id : nodes) {
    const graph::Node& node = model.node(id);
    auto it = spec.op_speed.find(node.op_type);
    double factor = it != spec.op_speed.end() && it->second > 0 ? it->second : spec.speed;
    charged_ns += cpu_ns * (partition::CostOf(node) / total_cost) / factor;
  }
  return Duration(static_cast<int64_t>(charged_ns));
}

std::vector<bool> EmuExecutor::QueryCapability(const graph::Model& model) const {
  std::vector<bool> capable(model.nodes().size(), true);
  for (const graph::Node& node : model.nodes()) {
    if (Unsupported(spec_.unsupported_ops, node.op_type)) capable[node.id.value] = false;
  }
  // A control-flow node runs its bodies on the same PU: it inherits their limits.
  for (const graph::Node& node : model.nodes()) {
    if (!node.has_subgraphs) continue;
    for (const std::string& op : node.subgraph_ops) {
      if (Unsupported(spec_.unsupported_ops, op)) capable[node.id.value] = false;
    }
  }
  return capable;
}

absl::StatusOr<std::unique_ptr<PreparedPartition>> EmuExecutor::Prepare(const graph::Model& model,
                                                                         const graph::Submodel& partition) const {
  BATON_RETURN_IF_ERROR(CheckCapable(model, partition, QueryCapability(model), spec_.name));
  if (spec_.speed <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("PU '", spec_.name, "': speed must be > 0 (got ", spec_.speed, ")"));
  }
  ort::SessionOptions options;  // one host thread: the reference the speed factors refer to
  ShareModelWeights(model, partition, options);
  BATON_ASSIGN_OR_RETURN(auto runner, ort::OrtRunner::Create(partition.onnx_bytes, options,
                                                             model.display_name() + " on " + spec_.name));
  bool per_row = false;
  BATON_ASSIGN_OR_RETURN(std::vector<Tensor> zeros, ZeroInputs(*runner, per_row));
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (size_t i = 0; i < zeros.size(); ++i) feeds.emplace_back(runner->inputs()[i].name, &zeros[i]);
  // The host time is the fastest of kCalibrationRuns after a warm-up: other
  // threads and processes only ever add time, so the minimum is the partition
  // alone, and the same from one start to the next (a median of 3 moved the
  // emulated PU's speed by up to ~20 % between starts on a busy 2-core machine).
  constexpr int kCalibrationRuns = 5;
  Duration fastest = Duration::max();
  std::vector<Tensor> outs;
  for (int i = 0; i <= kCalibrationRuns; ++i) {
    auto start = std::chrono::steady_clock::now();
    BATON_ASSIGN_OR_RETURN(outs, runner->Run(feeds, partition.interface.outputs));
    if (i > 0) {
      fastest = std::min(fastest, std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - start));
    }
  }
  Duration charged = EmuChargedTime(model, partition.nodes, fastest, spec_);

  NamedTensors zero_outputs;
  for (size_t i = 0; i < outs.size(); ++i) {
    Tensor& t = outs[i];
    if (t.elem_type() == dtype::kString) {
      zero_outputs.emplace_back(partition.interface.outputs[i],
                                Tensor::Strings(t.shape(), std::vector<std::string>(t.strings().size())));
    } else {
      zero_outputs.emplace_back(partition.interface.outputs[i], Tensor(t.elem_type(), t.shape()));
    }
  }
  if (!spec_.compute) runner.reset();
  return std::make_unique<EmuPrepared>(std::move(runner), partition.interface.outputs, std::move(zero_outputs),
                                       charged, per_row);
}

}  // namespace baton::backend
