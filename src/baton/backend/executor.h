// Executors: what a processing unit (PU) kind can run, and running it.
//
// One Executor per PU. It answers capability questions (which nodes of a model
// it can run — it never decides placement), prepares a partition once
// (Prepare -> PreparedPartition), and runs it many times. Each lifecycle phase
// returns a new object; there are no "already prepared" flags.
//
// Time: Run() reports `busy`, how long the PU is occupied by this run. For a
// CPU PU that is the measured wall time of the call; for an emulated
// accelerator it is the time its cost model charges, which may be longer than
// the call (the accelerator costs no host CPU while busy). The shell that owns
// the PU keeps it reserved until max(call end, call start + busy); executors
// never sleep.
//
// Thread-safety: Executor methods may be called from any thread;
// PreparedPartition::Run may be called concurrently (each PU's shell normally
// calls it from that PU's one worker thread).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/run_cancel.h"
#include "baton/core/status.h"
#include "baton/core/tensor.h"
#include "baton/core/time.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"

namespace baton::backend {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct RunResult {
  NamedTensors outputs;  // the partition's interface outputs, in interface order
  Duration busy{};       // how long the PU is occupied by this run (see above)
};

class PreparedPartition {
 public:
  virtual ~PreparedPartition() = default;
  // `inputs` must name every interface input of the partition; they are
  // borrowed for the call. `cancel`, when given, may stop the call from
  // another thread (Aborted); an executor that cannot stop a call ignores it.
  virtual absl::StatusOr<RunResult> Run(std::span<const std::pair<std::string, const Tensor*>> inputs,
                                        RunCancel* cancel = nullptr) const = 0;
};

class Executor {
 public:
  virtual ~Executor() = default;
  virtual const std::string& pu_name() const = 0;
  virtual std::string kind() const = 0;  // "cpu", "emu"
  // One flag per node of `model` (indexed by NodeId): can this PU run it?
  virtual std::vector<bool> QueryCapability(const graph::Model& model) const = 0;
  // Prepares one extracted partition of `model` for this PU. Fails with
  // FailedPrecondition naming the node when the partition holds a node this
  // PU cannot run.
  virtual absl::StatusOr<std::unique_ptr<PreparedPartition>> Prepare(const graph::Model& model,
                                                                      const graph::Submodel& partition) const = 0;
};

// True when `capable` (from QueryCapability) covers every node of `partition`;
// otherwise a FailedPrecondition naming the first node that is not covered.
absl::Status CheckCapable(const graph::Model& model, const graph::Submodel& partition,
                          const std::vector<bool>& capable, const std::string& pu_name);

}  // namespace baton::backend
