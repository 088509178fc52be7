#include "baton/policy/split.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace baton::policy {

absl::Status PlanSplit::Set(ModelId model, PartitionId partition, std::vector<PuShare> shares) {
  auto where = [&] { return absl::StrCat("model ", model.value, " partition ", partition.value); };
  double sum = 0;
  for (size_t i = 0; i < shares.size(); ++i) {
    if (!std::isfinite(shares[i].share) || shares[i].share < 0) {
      return absl::InvalidArgumentError(absl::StrCat("split of ", where(), ": PU ", shares[i].pu.value, " has share ",
                                                     shares[i].share, "; shares must be finite and >= 0"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (shares[j].pu == shares[i].pu) {
        return absl::InvalidArgumentError(
            absl::StrCat("split of ", where(), ": PU ", shares[i].pu.value, " is listed twice; list each PU once"));
      }
    }
    sum += shares[i].share;
  }
  if (!(sum > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("split of ", where(), ": the shares sum to 0; give at least one PU a positive share"));
  }
  for (PuShare& s : shares) s.share /= sum;
  splits_[{model, partition}] = std::move(shares);
  return absl::OkStatus();
}

std::span<const PuShare> PlanSplit::Of(ModelId model, PartitionId partition) const {
  auto it = splits_.find(std::make_pair(model, partition));
  if (it == splits_.end()) return {};
  return it->second;
}

double ShareIn(std::span<const PuShare> shares, PuId pu) {
  for (const PuShare& s : shares) {
    if (s.pu == pu) return s.share;
  }
  return 0;
}

double PlanSplit::ShareOf(ModelId model, PartitionId partition, PuId pu) const {
  return ShareIn(Of(model, partition), pu);
}

}  // namespace baton::policy
