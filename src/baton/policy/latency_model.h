// Latency models: what the policies ask "how long will partition p of model m
// take on PU u, if it can run there at all".
//
//   OnlineLatencyModel  priors from profiles or cost estimates, corrected online
//                       by measured run times (the runtime's model).
//   FixedLatencyModel   a plain table (tests and the simulator's ground truth).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/policy/policy.h"

namespace baton::policy {

// Key of one (model, partition, PU) entry.
struct LatencyKey {
  ModelId model;
  PartitionId partition;
  PuId pu;

  friend bool operator==(const LatencyKey&, const LatencyKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const LatencyKey& key) {
    return H::combine(std::move(h), key.model, key.partition, key.pu);
  }
};

struct OnlineLatencyModelOptions {
  // Weight of the newest measurement in the moving average, in (0, 1].
  double alpha = 0.2;
  // The first measurements of each entry that are not used (warm-ups: the
  // first run of an ONNX Runtime session pays its one-time setup, and at the
  // start of a run every session's first run competes for the cores at once;
  // the profiler discards warm-ups too). >= 0.
  int warmup_runs = 1;
  // A measurement enters the average clipped to [estimate / max_step,
  // estimate * max_step], so one run moves the estimate by at most a factor
  // 1 + alpha * (max_step - 1). >= 1; infinity: no clipping.
  double max_step = 2.0;
  // Expected latency when nothing is known (no observation, no prior).
  Duration default_latency = std::chrono::milliseconds(1);

  // InvalidArgument naming the field when a value is out of range.
  absl::Status Validate() const;
};

// Expected latency of (model, partition, PU), first match wins:
//   1. not capable (SetCapable(..., false))          -> nullopt
//   2. a used measurement                             -> EMA (below)
//   3. a per-PU prior (SetPrior with a PuId)          -> that prior
//   4. a per-kind prior for the PU's kind (SetPuKind) -> prior / speed factor of the PU
//   5. otherwise                                      -> default_latency / speed factor
// Measurements: the first `warmup_runs` of an entry are not used (they count
// nowhere, not in Observations or ObservedTotal either). The EMA starts at the
// per-PU prior when there is one (a profile's median of warm runs on that
// PU), else at the first used measurement; each used measurement m then
// updates ema = alpha * clip(m) + (1 - alpha) * ema, clip(m) = m limited to
// [ema / max_step, ema * max_step].
// Why so cautious: a policy does not choose a PU that looks slow, so an entry
// that one cold or preempted run made look several times slower would never
// be measured again and never corrected (measured: a 34 ms cold run of a
// 1.8 ms partition kept one of two CPU cores from it for a whole run). With
// the defaults one run moves an estimate by at most 20 %; a real change of
// speed shows almost as fast as with the plain average (a 3x slowdown reads
// 2.35x after 6 runs, against 2.48x).
// Speed factor (SetSpeedFactor, default 1): how much faster this PU is than
// the reference that per-kind priors and the default describe; it is not
// applied to per-PU priors or measurements, which already describe that PU.
//
// Example (alpha 0.2, warmup_runs 1, max_step 2): kind prior for ("cpu") is
// 10 ms, PU 1 is a "cpu" with speed 2 -> Expected = 5 ms. Observe 30 ms (the
// warm-up) -> still 5 ms. Observe 8 ms -> 8 ms (no per-PU prior: the first
// used run sets it). Observe 3 ms -> 0.2*4 + 0.8*8 = 7.2 ms (3 is clipped to
// 8/2 = 4). With a per-PU prior of 2 ms instead, Observe 30 ms (warm-up) ->
// 2 ms; Observe 9 ms -> 0.2*4 + 0.8*2 = 2.4 ms.
//
// Thread-safety: thread-safe. Every method locks one internal mutex, so worker
// threads may Observe while a dispatcher thread calls Expected. Note that a
// policy's Decide calls Expected many times; an Observe landing in between can
// change later answers of the same Decide (harmless, but it is why
// "same snapshot, same decisions" holds only while nobody Observes).
// std::mutex rather than absl::Mutex: the system absl is not built with TSan
// annotations, and TSan understands pthread mutexes.
class OnlineLatencyModel : public LatencyModel {
 public:
  OnlineLatencyModel() = default;
  // InvalidArgument when `options` fail Validate().
  static absl::StatusOr<std::unique_ptr<OnlineLatencyModel>> Create(const OnlineLatencyModelOptions& options);

  std::optional<Duration> Expected(ModelId model, PartitionId partition, PuId pu) const override;

  // The kind ("cpu", "cuda", ...) of PU `pu`, used to find per-kind priors.
  void SetPuKind(PuId pu, const std::string& kind);
  // InvalidArgument unless speed > 0.
  absl::Status SetSpeedFactor(PuId pu, double speed);
  // Priors from a profile or a cost estimate; InvalidArgument if negative.
  absl::Status SetPrior(ModelId model, PartitionId partition, PuId pu, Duration prior);
  absl::Status SetPrior(ModelId model, PartitionId partition, const std::string& pu_kind, Duration prior);
  // Whether `pu` can run the partition at all (default: capable).
  void SetCapable(ModelId model, PartitionId partition, PuId pu, bool capable);

  // One measured run time. Negative measurements (impossible from a steady
  // clock) count as zero.
  void Observe(ModelId model, PartitionId partition, PuId pu, Duration measured);
  // How many measurements the EMA of this entry has used (warm-ups excluded).
  int64_t Observations(ModelId model, PartitionId partition, PuId pu) const;
  // The sum of those measurements, as measured (not clipped; zero when none).
  Duration ObservedTotal(ModelId model, PartitionId partition, PuId pu) const;

  const OnlineLatencyModelOptions& options() const { return options_; }

 private:
  explicit OnlineLatencyModel(const OnlineLatencyModelOptions& options) : options_(options) {}

  struct Ema {
    double nanos = 0;  // double: repeated rounding to whole ns would drift
    int64_t count = 0;
    double total_nanos = 0;
    int warmups = 0;  // measurements not used so far (up to warmup_runs)
  };
  using KindKey = std::tuple<ModelId, PartitionId, std::string>;

  const OnlineLatencyModelOptions options_;
  mutable std::mutex mu_;
  absl::flat_hash_map<LatencyKey, Ema> observed_;        // guarded by mu_
  absl::flat_hash_map<LatencyKey, Duration> pu_priors_;  // guarded by mu_
  absl::flat_hash_map<KindKey, Duration> kind_priors_;   // guarded by mu_
  absl::flat_hash_map<LatencyKey, bool> capable_;        // guarded by mu_; absent = capable
  absl::flat_hash_map<PuId, std::string> pu_kinds_;      // guarded by mu_
  absl::flat_hash_map<PuId, double> speed_;              // guarded by mu_; absent = 1
};

// A table of latencies. Entries not in the table answer `fallback` (nullopt by
// default: the PU cannot run that partition).
//
// Thread-safety: Expected is const and may be called from many threads at
// once; Set/SetIncapable must not run concurrently with anything else (fill the
// table, then share it read-only).
class FixedLatencyModel : public LatencyModel {
 public:
  explicit FixedLatencyModel(std::optional<Duration> fallback = std::nullopt) : fallback_(fallback) {}

  std::optional<Duration> Expected(ModelId model, PartitionId partition, PuId pu) const override;

  FixedLatencyModel& Set(ModelId model, PartitionId partition, PuId pu, Duration latency);
  FixedLatencyModel& SetIncapable(ModelId model, PartitionId partition, PuId pu);

 private:
  std::optional<Duration> fallback_;
  absl::flat_hash_map<LatencyKey, std::optional<Duration>> table_;
};

}  // namespace baton::policy
