// A host tensor: element type, shape and owned bytes. Moves, never copies
// implicitly (tensors move by ownership between partitions).
// Thread-safety: value type; not synchronised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/status.h"

namespace baton {

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor of a fixed-size type (not STRING).
  Tensor(ElemType elem_type, std::vector<int64_t> shape);
  // STRING tensor.
  static Tensor Strings(std::vector<int64_t> shape, std::vector<std::string> strings);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor Clone() const;

  ElemType elem_type() const { return elem_type_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t num_elements() const;
  size_t byte_size() const { return data_.size(); }

  std::span<std::byte> bytes() { return data_; }
  std::span<const std::byte> bytes() const { return data_; }
  template <typename T>
  std::span<T> data() { return {reinterpret_cast<T*>(data_.data()), data_.size() / sizeof(T)}; }
  template <typename T>
  std::span<const T> data() const {
    return {reinterpret_cast<const T*>(data_.data()), data_.size() / sizeof(T)};
  }
  std::vector<std::string>& strings() { return strings_; }
  const std::vector<std::string>& strings() const { return strings_; }

  std::string DebugString() const;  // "float32[1,3,8,8]"

 private:
  ElemType elem_type_ = dtype::kUndefined;
  std::vector<int64_t> shape_;
  std::vector<std::byte> data_;
  std::vector<std::string> strings_;  // only for STRING tensors
};

// Dynamic batching: requests' tensors stacked along dimension 0, and a batched
// answer cut back into per-request pieces.
//
// ConcatDim0: every part has the same element type (not STRING) and rank >= 1,
// and equal dims after the first; the result's dim 0 is the sum. Errors name
// the part and what differs. SplitDim0: `sizes` (each >= 0) must add up to
// dim 0; returns one tensor per size.
// Example: parts float32[1,3] and float32[2,3] -> float32[3,3]; split {1, 2}
// gives them back.
absl::StatusOr<Tensor> ConcatDim0(std::span<const Tensor* const> parts);
absl::StatusOr<std::vector<Tensor>> SplitDim0(const Tensor& whole, std::span<const int64_t> sizes);

}  // namespace baton
