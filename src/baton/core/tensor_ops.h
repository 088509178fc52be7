// Dynamic batching: requests' tensors stacked along dimension 0, and a
// batched answer cut back into per-request pieces.
// Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "baton/core/status.h"
#include "baton/core/tensor.h"

namespace baton {

// ConcatDim0: every part has the same element type (not STRING) and rank >= 1,
// and equal dims after the first; the result's dim 0 is the sum. Errors name
// the part and what differs. SplitDim0: `sizes` (each >= 0) must add up to
// dim 0; returns one tensor per size.
// Example: parts float32[1,3] and float32[2,3] -> float32[3,3]; split {1, 2}
// gives them back.
absl::StatusOr<Tensor> ConcatDim0(std::span<const Tensor* const> parts);
absl::StatusOr<std::vector<Tensor>> SplitDim0(const Tensor& whole, std::span<const int64_t> sizes);

}  // namespace baton
