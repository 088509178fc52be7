// SpeedProbe: how long each PU takes right now to run the partitions deployed
// on it, with every probed PU busy at once, so that contention between PUs
// (shared caches, memory bandwidth, a background process) is part of what is
// measured. It runs outside every mode under test: `baton run` probes between
// rounds of slices and scales the profile's costs by the fastest probe, so the
// bound it reports depends on the profile and on these probes only, never on
// the schedule it judges (docs/planning.md, "the bound").
//
// Each probed PU gets one thread (pinned like the runtime's PU thread) that
// cycles through its partitions in a fixed order, three runs back to back
// per visit of which the first is not counted (it warms the caches: the
// profiler measured each partition over and over too, and a schedule that
// runs one partition several times in a row gets that speed), feeding each the inputs it
// gets from one request of sample inputs (computed once, at Create, by running
// each model's partitions in order). A probe stops once every PU has finished
// `rounds` cycles, or at `max_time`; every run is reported. An emulated PU
// whose call returns before the time it charges sleeps until then, as the
// runtime's PU thread does, so it takes no CPU from the other PUs.
//
// Example:
//   BATON_ASSIGN_OR_RETURN(auto probe, SpeedProbe::Create(deployment, pus, samples));
//   BATON_ASSIGN_OR_RETURN(std::vector<ProbeRun> runs, probe->Run(2, 200ms));
//
// Thread-safety: Run must not be called concurrently on one object, nor while
// the PUs serve a mode (it would measure that mode's contention).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/runtime/deployment.h"

namespace baton::runtime {

struct ProbePu {
  PuId id;
  std::string name;
  std::vector<int> pin_cores;  // the cores the PU's thread is pinned to (empty = none)
};

// What one PU measured for one partition.
struct ProbeRun {
  ModelId model;
  PartitionId partition;
  PuId pu;
  int64_t runs = 0;
  Duration total{};  // sum of max(wall time, the executor's busy time)
};

class SpeedProbe {
 public:
  ~SpeedProbe();
  // `pus`: the PUs to probe (local ones; each partition is probed on those of
  // its capable PUs that are listed). `samples`: one input set per deployed
  // model, in deployment order. Errors name the model and partition whose
  // run failed while computing the inputs, or a size mismatch.
  static absl::StatusOr<std::unique_ptr<SpeedProbe>> Create(const Deployment& deployment, std::vector<ProbePu> pus,
                                                            const std::vector<dispatch::NamedTensors>& samples);
  // One probe: `rounds` >= 1 cycles per PU, at most `max_time` (> 0).
  // Errors: bad arguments, or the first failed run (naming it).
  absl::StatusOr<std::vector<ProbeRun>> Run(int rounds, Duration max_time) const;

 private:
  struct Item;
  struct PuWork;
  SpeedProbe() = default;
  std::vector<PuWork> work_;
};

}  // namespace baton::runtime
