#include "baton/serve/classification.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/verify/verify.h"

namespace baton::serve {

namespace {

template <typename T>
T Load(const std::byte* at) {
  T v;
  std::memcpy(&v, at, sizeof(T));
  return v;
}

// Element `i` of a tensor's bytes as a number to rank by, and as text
// (std::to_string's form). For the types Orderable accepts.
struct Reader {
  ElemType type;
  const std::byte* data;

  double Value(size_t i) const {
    switch (type) {
      case dtype::kFloat: return Load<float>(data + i * 4);
      case dtype::kDouble: return Load<double>(data + i * 8);
      case dtype::kFloat16: return verify::HalfToFloat(Load<uint16_t>(data + i * 2));
      case dtype::kInt8: return Load<int8_t>(data + i);
      case dtype::kUint8: return Load<uint8_t>(data + i);
      case dtype::kBool: return Load<uint8_t>(data + i) != 0 ? 1 : 0;
      case dtype::kInt16: return Load<int16_t>(data + i * 2);
      case dtype::kUint16: return Load<uint16_t>(data + i * 2);
      case dtype::kInt32: return Load<int32_t>(data + i * 4);
      case dtype::kUint32: return Load<uint32_t>(data + i * 4);
      case dtype::kInt64: return static_cast<double>(Load<int64_t>(data + i * 8));
      case dtype::kUint64: return static_cast<double>(Load<uint64_t>(data + i * 8));
      default: return 0;
    }
  }
  std::string Text(size_t i) const {
    switch (type) {
      case dtype::kFloat:
      case dtype::kDouble:
      case dtype::kFloat16: return std::to_string(Value(i));
      case dtype::kInt64: return std::to_string(Load<int64_t>(data + i * 8));
      case dtype::kUint64: return std::to_string(Load<uint64_t>(data + i * 8));
      default: return std::to_string(static_cast<int64_t>(Value(i)));
    }
  }
};

bool Orderable(ElemType type) {
  switch (type) {
    case dtype::kFloat:
    case dtype::kDouble:
    case dtype::kFloat16:
    case dtype::kInt8:
    case dtype::kUint8:
    case dtype::kBool:
    case dtype::kInt16:
    case dtype::kUint16:
    case dtype::kInt32:
    case dtype::kUint32:
    case dtype::kInt64:
    case dtype::kUint64: return true;
    default: return false;
  }
}

}  // namespace

absl::Status CheckClassification(const TensorInfo& output, int64_t k, const std::string& where) {
  if (k < 0 || k > kMaxClasses) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": 'classification' must be an integer in 0..", kMaxClasses,
                                                   " (how many top classes to answer; 0 = the output itself), got ",
                                                   k));
  }
  if (k == 0) return absl::OkStatus();
  if (!Orderable(output.elem_type)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": classification needs numbers, but the output is ",
                                                   output.type_name, "; ask for it without 'classification'"));
  }
  if (output.rank_known && (output.shape.empty() || output.shape.back() == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": classification ranks the last dimension, and this output ",
                                                   output.shape.empty() ? "is a scalar" : "has no classes in it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Classify(const Tensor& t, int64_t k, const std::string& where,
                                std::span<const std::string> labels) {
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": 'classification' must be at least 1, got ", k));
  }
  if (!Orderable(t.elem_type())) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": classification needs numbers, but the output is ",
                                                   ElemTypeName(t.elem_type()), "; ask for it without 'classification'"));
  }
  if (t.shape().empty() || t.shape().back() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": classification ranks the last dimension, and this output ",
                                                   t.shape().empty() ? "is a scalar" : "has no classes in it"));
  }
  const size_t classes = static_cast<size_t>(t.shape().back());
  const size_t rows = static_cast<size_t>(t.num_elements()) / classes;
  const size_t top = std::min(classes, static_cast<size_t>(k));
  const Reader read{t.elem_type(), t.bytes().data()};
  std::vector<std::string> out;
  out.reserve(rows * top);
  std::vector<size_t> order(classes);
  std::vector<double> values(classes);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < classes; ++c) values[c] = read.Value(r * classes + c);
    std::iota(order.begin(), order.end(), size_t{0});
    // NaN ranks last, so a broken output cannot reorder the rest.
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
                      [&](size_t a, size_t b) {
                        const double va = values[a], vb = values[b];
                        if (std::isnan(va) != std::isnan(vb)) return std::isnan(vb);
                        return va > vb || (!(vb > va) && a < b);
                      });
    for (size_t i = 0; i < top; ++i) {
      const size_t c = order[i];
      std::string text = absl::StrCat(read.Text(r * classes + c), ":", c);
      if (c < labels.size()) absl::StrAppend(&text, ":", labels[c]);
      out.push_back(std::move(text));
    }
  }
  std::vector<int64_t> shape = t.shape();
  shape.back() = static_cast<int64_t>(top);
  return Tensor::Strings(std::move(shape), std::move(out));
}

}  // namespace baton::serve
