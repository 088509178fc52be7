#include "baton/core/tensor.h"

#include <cassert>

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
  t.data_ = data_;
  t.strings_ = strings_;
  return t;
}

int64_t Tensor::num_elements() const { return Product(shape_); }

std::string Tensor::DebugString() const {
  return absl::StrCat(ElemTypeName(elem_type_), "[", absl::StrJoin(shape_, ","), "]");
}

}  // namespace baton
