#include "baton/serve/kserve_raw.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace baton::serve {

namespace {

std::string ShapeText(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

}  // namespace

absl::StatusOr<Tensor> TensorFromRaw(std::string bytes, ElemType type, std::vector<int64_t> shape,
                                     const std::string& where) {
  uint64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat(where, ": negative dimension in ", ShapeText(shape)));
    if (d != 0 && elements > (uint64_t{1} << 40) / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": shape ", ShapeText(shape), " is too large"));
    }
    elements *= static_cast<uint64_t>(d);
  }
  if (type == dtype::kString) {
    std::vector<std::string> strings;
    size_t at = 0;
    while (at < bytes.size() && strings.size() < elements) {
      if (bytes.size() - at < 4) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": raw BYTES content ends inside a 4-byte length"));
      }
      const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + at);
      const uint32_t n = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
      at += 4;
      if (n > bytes.size() - at) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": raw BYTES element ", strings.size(), " claims ", n,
                                                       " bytes; only ", bytes.size() - at, " are left"));
      }
      strings.emplace_back(bytes.data() + at, n);
      at += n;
    }
    if (strings.size() != elements || at != bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": raw BYTES content holds ",
                                                     at != bytes.size() ? "more than " : "", strings.size(),
                                                     " elements, but shape ", ShapeText(shape), " needs ", elements));
    }
    return Tensor::Strings(std::move(shape), std::move(strings));
  }
  const std::optional<size_t> need = Tensor::ExpectedBytes(type, shape);
  if (!need.has_value() || *need != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": raw content holds ", bytes.size(), " bytes, but ",
                                                   ElemTypeName(type), " ", ShapeText(shape), " needs ",
                                                   need.has_value() ? absl::StrCat(*need) : "a valid size"));
  }
  auto owned = std::make_shared<std::string>(std::move(bytes));
  void* data = owned->data();
  const size_t size = owned->size();
  return Tensor::Adopt(type, std::move(shape), data, size, std::move(owned));
}

void AppendRaw(const Tensor& t, std::string& out) {
  if (t.elem_type() == dtype::kString) {
    for (const std::string& s : t.strings()) {
      const auto n = static_cast<uint32_t>(s.size());
      const char len[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                           static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
      out.append(len, 4);
      out.append(s);
    }
  } else {
    out.append(reinterpret_cast<const char*>(t.bytes().data()), t.byte_size());
  }
}

}  // namespace baton::serve
