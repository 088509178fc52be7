// EmuExecutor: an emulated accelerator (GPU/NPU) for heterogeneous setups on
// machines without one.
//
// - Capability: every node except those whose op (or an op inside their
//   If/Loop/Scan bodies) is in `unsupported_ops`; such nodes must run elsewhere.
// - Time: Prepare measures the partition once on one host CPU thread (1 warm-up,
//   median of 3 runs, on zero inputs) and splits that time over the partition's
//   nodes by their estimated cost (FLOPs + a per-node constant). Each node's share
//   is divided by its op's factor from `op_speed` (e.g. {"Conv", 30}), else by
//   `speed`. The sum is the charged time: RunResult::busy. The accelerator costs
//   no host CPU while busy (the shell holds the PU, it does not spin).
//   Example: 10 ms measured, 80 % of the cost in Conv (op_speed 30) and the rest
//   in Softmax (speed 2): busy = 8/30 + 2/2 = 1.27 ms.
// - Outputs: with `compute` the real outputs, computed on the host outside the
//   charged time (for correctness tests); without, zero tensors shaped like the
//   calibration run's outputs (for performance studies).
// - Batches: a free leading dimension (a batching model) is calibrated at one
//   row; a run of N rows is charged N times that, and without `compute` its
//   zero outputs have N rows. The emulator models no gain from batching.
// Thread-safety: see backend/executor.h.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "baton/backend/executor.h"

namespace baton::backend {

struct EmuPuSpec {
  std::string name = "npu0";
  double speed = 4.0;                      // default speed-up over one host CPU thread
  std::map<std::string, double> op_speed;  // per-op speed-up, overrides `speed`
  std::vector<std::string> unsupported_ops;
  bool compute = true;
};

// The charged time of `nodes` of `model` on an accelerator described by `spec`,
// given their measured one-thread CPU time (the rule above). Pure.
Duration EmuChargedTime(const graph::Model& model, std::span<const NodeId> nodes, Duration cpu_time,
                        const EmuPuSpec& spec);

class EmuExecutor : public Executor {
 public:
  explicit EmuExecutor(EmuPuSpec spec) : spec_(std::move(spec)) {}
  const std::string& pu_name() const override { return spec_.name; }
  std::string kind() const override { return "emu"; }
  std::vector<bool> QueryCapability(const graph::Model& model) const override;
  absl::StatusOr<std::unique_ptr<PreparedPartition>> Prepare(const graph::Model& model,
                                                              const graph::Submodel& partition) const override;

 private:
  EmuPuSpec spec_;
};

}  // namespace baton::backend
