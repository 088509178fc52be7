// A host tensor: element type, shape and bytes. Moves, never copies
// implicitly (tensors move by ownership between partitions).
//
// The bytes are the tensor's own (a vector), or external ones an application
// hands over without a copy:
//   * Adopt: the tensor takes a buffer and a keep-alive handle (any
//     shared_ptr, e.g. to the caller's vector or array) and releases the handle
//     when the last tensor over the buffer is destroyed;
//   * Borrow: the caller keeps the buffer alive and unchanged until every
//     tensor made from it is gone (for baton::Engine: until the answer).
// Clone always copies into owned bytes. ONNX Runtime reads inputs in place, so
// an external input reaches the session without being copied.
// Public (baton/baton.h): standard library only.
// Thread-safety: value type; not synchronised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/dtype.h"

namespace baton {

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor of a fixed-size type (not STRING).
  Tensor(ElemType elem_type, std::vector<int64_t> shape);
  // STRING tensor.
  static Tensor Strings(std::vector<int64_t> shape, std::vector<std::string> strings);

  // Owned bytes moved in: `bytes` must hold exactly num_elements x element
  // size (else the tensor is left empty-shaped: check byte_size()).
  Tensor(ElemType elem_type, std::vector<int64_t> shape, std::vector<std::byte> bytes);
  // External bytes (see above). `byte_size` must equal num_elements x element size;
  // callers check with ExpectedBytes first.
  static Tensor Adopt(ElemType elem_type, std::vector<int64_t> shape, void* data, size_t byte_size,
                      std::shared_ptr<const void> keep_alive);
  static Tensor Borrow(ElemType elem_type, std::vector<int64_t> shape, void* data, size_t byte_size);
  // num_elements(shape) x element size; nullopt for STRING/unknown types, a
  // negative dim, or a size that overflows.
  static std::optional<size_t> ExpectedBytes(ElemType elem_type, const std::vector<int64_t>& shape);

  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor Clone() const;

  ElemType elem_type() const { return elem_type_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t num_elements() const;
  size_t byte_size() const { return external_ != nullptr ? external_size_ : data_.size(); }
  // True when the bytes are adopted or borrowed rather than the tensor's own.
  bool external() const { return external_ != nullptr; }

  std::span<std::byte> bytes() { return external_ != nullptr ? std::span<std::byte>(external_, external_size_) : data_; }
  std::span<const std::byte> bytes() const {
    return external_ != nullptr ? std::span<const std::byte>(external_, external_size_) : data_;
  }
  template <typename T>
  std::span<T> data() { return {reinterpret_cast<T*>(bytes().data()), byte_size() / sizeof(T)}; }
  template <typename T>
  std::span<const T> data() const {
    return {reinterpret_cast<const T*>(bytes().data()), byte_size() / sizeof(T)};
  }
  std::vector<std::string>& strings() { return strings_; }
  const std::vector<std::string>& strings() const { return strings_; }

  std::string DebugString() const;  // "float32[1,3,8,8]"

 private:
  ElemType elem_type_ = dtype::kUndefined;
  std::vector<int64_t> shape_;
  std::vector<std::byte> data_;       // owned bytes (empty when external)
  std::byte* external_ = nullptr;     // adopted or borrowed bytes
  size_t external_size_ = 0;
  std::shared_ptr<const void> keep_;  // keeps adopted bytes alive (null when borrowed or owned)
  std::vector<std::string> strings_;  // only for STRING tensors
};

}  // namespace baton
