#include "baton/core/tensor.h"

#include "baton/core/tensor_ops.h"

#include <algorithm>
#include <cassert>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace baton {

namespace {
int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}
}  // namespace

Tensor::Tensor(ElemType elem_type, std::vector<int64_t> shape)
    : elem_type_(elem_type), shape_(std::move(shape)) {
  auto size = ElemTypeSize(elem_type_);
  assert(size.has_value() && "Tensor(ElemType, shape) needs a fixed-size element type");
  data_.assign(static_cast<size_t>(Product(shape_) * size.value_or(0)), std::byte{0});
}

Tensor::Tensor(ElemType elem_type, std::vector<int64_t> shape, std::vector<std::byte> bytes)
    : elem_type_(elem_type), shape_(std::move(shape)) {
  const std::optional<size_t> want = ExpectedBytes(elem_type_, shape_);
  if (want.has_value() && *want == bytes.size()) {
    data_ = std::move(bytes);
  } else {
    shape_.clear();  // not a valid tensor: byte_size() 0 tells the caller
  }
}

Tensor Tensor::Adopt(ElemType elem_type, std::vector<int64_t> shape, void* data, size_t byte_size,
                     std::shared_ptr<const void> keep_alive) {
  Tensor t = Borrow(elem_type, std::move(shape), data, byte_size);
  t.keep_ = std::move(keep_alive);
  return t;
}

Tensor Tensor::Borrow(ElemType elem_type, std::vector<int64_t> shape, void* data, size_t byte_size) {
  Tensor t;
  t.elem_type_ = elem_type;
  t.shape_ = std::move(shape);
  if (byte_size > 0 && data != nullptr) {
    t.external_ = static_cast<std::byte*>(data);
    t.external_size_ = byte_size;
  }
  return t;
}

std::optional<size_t> Tensor::ExpectedBytes(ElemType elem_type, const std::vector<int64_t>& shape) {
  const std::optional<int64_t> size = ElemTypeSize(elem_type);
  if (!size.has_value() || elem_type == dtype::kString) return std::nullopt;
  uint64_t n = static_cast<uint64_t>(*size);
  constexpr uint64_t kMax = uint64_t{1} << 62;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > kMax / static_cast<uint64_t>(d)) return std::nullopt;
    n *= static_cast<uint64_t>(d);
  }
  return static_cast<size_t>(n);
}

Tensor::Tensor(Tensor&& other) noexcept
    : elem_type_(other.elem_type_),
      shape_(std::move(other.shape_)),
      data_(std::move(other.data_)),
      external_(std::exchange(other.external_, nullptr)),
      external_size_(std::exchange(other.external_size_, 0)),
      keep_(std::move(other.keep_)),
      strings_(std::move(other.strings_)) {}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    elem_type_ = other.elem_type_;
    shape_ = std::move(other.shape_);
    data_ = std::move(other.data_);
    external_ = std::exchange(other.external_, nullptr);
    external_size_ = std::exchange(other.external_size_, 0);
    keep_ = std::move(other.keep_);
    strings_ = std::move(other.strings_);
  }
  return *this;
}

Tensor Tensor::Strings(std::vector<int64_t> shape, std::vector<std::string> strings) {
  Tensor t;
  t.elem_type_ = dtype::kString;
  t.shape_ = std::move(shape);
  t.strings_ = std::move(strings);
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t;
  t.elem_type_ = elem_type_;
  t.shape_ = shape_;
  const std::span<const std::byte> b = bytes();
  t.data_.assign(b.begin(), b.end());
  t.strings_ = strings_;
  return t;
}

int64_t Tensor::num_elements() const { return Product(shape_); }

std::string Tensor::DebugString() const {
  return absl::StrCat(ElemTypeName(elem_type_), "[", absl::StrJoin(shape_, ","), "]");
}

absl::StatusOr<Tensor> ConcatDim0(std::span<const Tensor* const> parts) {
  if (parts.empty()) return absl::InvalidArgumentError("ConcatDim0: no tensors to stack; give at least one");
  const Tensor& first = *parts[0];
  const std::optional<size_t> elem = ElemTypeSize(first.elem_type());
  if (!elem.has_value() || first.elem_type() == dtype::kString) {
    return absl::InvalidArgumentError(absl::StrCat("ConcatDim0: ", first.DebugString(),
                                                   " cannot be batched (only fixed-size element types can)"));
  }
  if (first.shape().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ConcatDim0: ", first.DebugString(), " is a scalar; batching needs a leading dimension"));
  }
  int64_t rows = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& t = *parts[i];
    const bool same_tail = t.shape().size() == first.shape().size() &&
                           std::equal(t.shape().begin() + 1, t.shape().end(), first.shape().begin() + 1);
    if (t.elem_type() != first.elem_type() || !same_tail) {
      return absl::InvalidArgumentError(absl::StrCat("ConcatDim0: part ", i, " is ", t.DebugString(), " but part 0 is ",
                                                     first.DebugString(),
                                                     "; batched tensors need the same type and dims after the first"));
    }
    rows += t.shape()[0];
    bytes += t.byte_size();
  }
  std::vector<int64_t> shape = first.shape();
  shape[0] = rows;
  Tensor out(first.elem_type(), shape);
  if (out.byte_size() != bytes) {
    return absl::InternalError(absl::StrCat("ConcatDim0: ", bytes, " bytes for ", out.DebugString()));
  }
  size_t offset = 0;
  for (const Tensor* t : parts) {
    if (t->byte_size() > 0) std::memcpy(out.bytes().data() + offset, t->bytes().data(), t->byte_size());
    offset += t->byte_size();
  }
  return out;
}

absl::StatusOr<std::vector<Tensor>> SplitDim0(const Tensor& whole, std::span<const int64_t> sizes) {
  const std::optional<size_t> elem = ElemTypeSize(whole.elem_type());
  if (!elem.has_value() || whole.elem_type() == dtype::kString || whole.shape().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SplitDim0: ", whole.DebugString(), " cannot be split along a leading dimension"));
  }
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) return absl::InvalidArgumentError(absl::StrCat("SplitDim0: a piece of ", s, " rows; sizes are >= 0"));
    total += s;
  }
  if (total != whole.shape()[0]) {
    return absl::InvalidArgumentError(absl::StrCat("SplitDim0: pieces of ", absl::StrJoin(sizes, "+"), " = ", total,
                                                   " rows, but ", whole.DebugString(), " has ", whole.shape()[0]));
  }
  const size_t row_bytes = whole.shape()[0] > 0 ? whole.byte_size() / static_cast<size_t>(whole.shape()[0]) : 0;
  std::vector<Tensor> out;
  out.reserve(sizes.size());
  size_t offset = 0;
  for (int64_t s : sizes) {
    std::vector<int64_t> shape = whole.shape();
    shape[0] = s;
    Tensor piece(whole.elem_type(), std::move(shape));
    if (piece.byte_size() > 0) std::memcpy(piece.bytes().data(), whole.bytes().data() + offset, piece.byte_size());
    offset += static_cast<size_t>(s) * row_bytes;
    out.push_back(std::move(piece));
  }
  return out;
}

}  // namespace baton
