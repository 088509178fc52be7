#include "baton/policy/latency_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace baton::policy {
namespace {

Duration Scaled(Duration latency, double speed) {
  return Duration(static_cast<Duration::rep>(std::llround(static_cast<double>(latency.count()) / speed)));
}

}  // namespace

absl::Status OnlineLatencyModelOptions::Validate() const {
  if (!(alpha > 0.0 && alpha <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency model option alpha is ", alpha, "; it must be in (0, 1]"));
  }
  if (warmup_runs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency model option warmup_runs is ", warmup_runs, "; it must not be negative"));
  }
  if (!(max_step >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency model option max_step is ", max_step, "; it must be at least 1 (infinity: no limit)"));
  }
  if (default_latency < Duration::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("latency model option default_latency is ",
                                                   ToMillis(default_latency),
                                                   " ms; it must not be negative"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<OnlineLatencyModel>> OnlineLatencyModel::Create(
    const OnlineLatencyModelOptions& options) {
  BATON_RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<OnlineLatencyModel>(new OnlineLatencyModel(options));
}

std::optional<Duration> OnlineLatencyModel::Expected(ModelId model, PartitionId partition, PuId pu) const {
  const LatencyKey key{model, partition, pu};
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = capable_.find(key); it != capable_.end() && !it->second) return std::nullopt;
  if (auto it = observed_.find(key); it != observed_.end() && it->second.count > 0) {
    return Duration(static_cast<Duration::rep>(std::llround(it->second.nanos)));
  }
  if (auto it = pu_priors_.find(key); it != pu_priors_.end()) return it->second;

  double speed = 1.0;
  if (auto it = speed_.find(pu); it != speed_.end()) speed = it->second;
  if (auto kind = pu_kinds_.find(pu); kind != pu_kinds_.end()) {
    if (auto it = kind_priors_.find(KindKey{model, partition, kind->second}); it != kind_priors_.end()) {
      return Scaled(it->second, speed);
    }
  }
  return Scaled(options_.default_latency, speed);
}

void OnlineLatencyModel::SetPuKind(PuId pu, const std::string& kind) {
  std::lock_guard<std::mutex> lock(mu_);
  pu_kinds_[pu] = kind;
}

absl::Status OnlineLatencyModel::SetSpeedFactor(PuId pu, double speed) {
  if (!(speed > 0.0) || !std::isfinite(speed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("speed factor ", speed, " for pu ", pu.value, " must be a positive number"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  speed_[pu] = speed;
  return absl::OkStatus();
}

absl::Status OnlineLatencyModel::SetPrior(ModelId model, PartitionId partition, PuId pu, Duration prior) {
  if (prior < Duration::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("prior for model ", model.value, " partition ",
                                                   partition.value, " on pu ", pu.value, " is negative (",
                                                   ToMillis(prior), " ms)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  pu_priors_[LatencyKey{model, partition, pu}] = prior;
  return absl::OkStatus();
}

absl::Status OnlineLatencyModel::SetPrior(ModelId model, PartitionId partition, const std::string& pu_kind,
                                          Duration prior) {
  if (prior < Duration::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("prior for model ", model.value, " partition ",
                                                   partition.value, " on pu kind '", pu_kind,
                                                   "' is negative (", ToMillis(prior), " ms)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  kind_priors_[KindKey{model, partition, pu_kind}] = prior;
  return absl::OkStatus();
}

void OnlineLatencyModel::SetCapable(ModelId model, PartitionId partition, PuId pu, bool capable) {
  std::lock_guard<std::mutex> lock(mu_);
  capable_[LatencyKey{model, partition, pu}] = capable;
}

void OnlineLatencyModel::Observe(ModelId model, PartitionId partition, PuId pu, Duration measured) {
  const double nanos = static_cast<double>(std::max(measured, Duration::zero()).count());
  std::lock_guard<std::mutex> lock(mu_);
  const LatencyKey key{model, partition, pu};
  Ema& ema = observed_[key];
  if (ema.warmups < options_.warmup_runs) {
    ++ema.warmups;
    return;
  }
  const auto prior = ema.count == 0 ? pu_priors_.find(key) : pu_priors_.end();
  if (ema.count == 0 && prior == pu_priors_.end()) {
    ema.nanos = nanos;  // nothing better yet: the first used run sets it
  } else {
    if (ema.count == 0) ema.nanos = static_cast<double>(prior->second.count());
    // An estimate of zero (a zero prior) cannot bound anything: take the run as is.
    const double clipped =
        ema.nanos > 0 ? std::clamp(nanos, ema.nanos / options_.max_step, ema.nanos * options_.max_step) : nanos;
    ema.nanos = options_.alpha * clipped + (1.0 - options_.alpha) * ema.nanos;
  }
  ema.total_nanos += nanos;
  ++ema.count;
}

Duration OnlineLatencyModel::ObservedTotal(ModelId model, PartitionId partition, PuId pu) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = observed_.find(LatencyKey{model, partition, pu});
  return it == observed_.end() ? Duration::zero() : Duration(static_cast<Duration::rep>(it->second.total_nanos));
}

int64_t OnlineLatencyModel::Observations(ModelId model, PartitionId partition, PuId pu) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = observed_.find(LatencyKey{model, partition, pu});
  return it == observed_.end() ? 0 : it->second.count;
}

std::optional<Duration> FixedLatencyModel::Expected(ModelId model, PartitionId partition, PuId pu) const {
  auto it = table_.find(LatencyKey{model, partition, pu});
  return it == table_.end() ? fallback_ : it->second;
}

FixedLatencyModel& FixedLatencyModel::Set(ModelId model, PartitionId partition, PuId pu, Duration latency) {
  table_[LatencyKey{model, partition, pu}] = latency;
  return *this;
}

FixedLatencyModel& FixedLatencyModel::SetIncapable(ModelId model, PartitionId partition, PuId pu) {
  table_[LatencyKey{model, partition, pu}] = std::nullopt;
  return *this;
}

}  // namespace baton::policy
