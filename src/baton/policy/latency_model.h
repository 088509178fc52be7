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
  // Expected latency when nothing is known (no observation, no prior).
  Duration default_latency = std::chrono::milliseconds(1);

  // InvalidArgument naming the field when a value is out of range.
  absl::Status Validate() const;
};

// Expected latency of (model, partition, PU), first match wins:
//   1. not capable (SetCapable(..., false))          -> nullopt
//   2. observed at least once                         -> EMA of the measurements
//   3. a per-PU prior (SetPrior with a PuId)          -> that prior
//   4. a per-kind prior for the PU's kind (SetPuKind) -> prior / speed factor of the PU
//   5. otherwise                                      -> default_latency / speed factor
// EMA: the first measurement m1 sets it (ema = m1); each later one updates
// ema = alpha * m + (1 - alpha) * ema. Priors are not blended into the EMA: a
// measurement on the real PU is better evidence than any estimate.
// Speed factor (SetSpeedFactor, default 1): how much faster this PU is than
// the reference that per-kind priors and the default describe; it is not
// applied to per-PU priors or measurements, which already describe that PU.
//
// Example (alpha 0.2): kind prior for ("cpu") is 10 ms, PU 1 is a "cpu" with
// speed 2 -> Expected = 5 ms. Observe 8 ms -> 8 ms. Observe 3 ms ->
// 0.2*3 + 0.8*8 = 7 ms.
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
  // How many measurements the EMA of this entry has seen.
  int64_t Observations(ModelId model, PartitionId partition, PuId pu) const;
  // The sum of those measurements (zero when there is none).
  Duration ObservedTotal(ModelId model, PartitionId partition, PuId pu) const;

  const OnlineLatencyModelOptions& options() const { return options_; }

 private:
  explicit OnlineLatencyModel(const OnlineLatencyModelOptions& options) : options_(options) {}

  struct Ema {
    double nanos = 0;  // double: repeated rounding to whole ns would drift
    int64_t count = 0;
    double total_nanos = 0;
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
