// A KServe v2 inference request body parsed in one pass, with each input's
// 'data' kept as a flat list of leaves instead of JSON values.
//
// A JSON value takes 16 bytes, its array grows by doubling, and the values
// were then copied into the tensor: a body of small numbers ("0,", 2 bytes
// each) took about 18 times its size. Here a number takes 8 bytes, and the
// rest of the body (names, shapes, parameters) is parsed as usual.
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/core/status.h"
#include "nlohmann/json.hpp"

namespace baton::serve {

// Deeper nesting inside one input's 'data' than any tensor's rank is refused.
inline constexpr size_t kMaxDataDepth = 64;

// The leaves of one input's 'data': nested arrays flattened in row-major
// order. A 'data' that is not an array is one leaf.
class DataLeaves {
 public:
  enum class Kind : uint8_t { kInt, kUint, kFloat, kBool, kString, kNull, kObject };

  // Leaves seen; only the first `stored()` are kept (the parser's bound).
  size_t count() const { return count_; }
  size_t stored() const { return bits_.size(); }
  bool too_deep() const { return too_deep_; }  // nested more than kMaxDataDepth arrays

  Kind kind(size_t i) const { return kinds_.empty() ? uniform_ : kinds_[i]; }
  int64_t integer(size_t i) const;    // kInt
  uint64_t unsigned_integer(size_t i) const { return bits_[i]; }  // kUint
  double floating(size_t i) const;    // kFloat
  bool boolean(size_t i) const { return bits_[i] != 0; }  // kBool
  const std::string& text(size_t i) const { return strings_[bits_[i]]; }  // kString
  std::string TakeText(size_t i) { return std::move(strings_[bits_[i]]); }  // kString, once
  // The leaf as JSON text, for messages ("null", "\"a\"", "1.5", "an object").
  std::string Show(size_t i) const;

  // Building (the parser).
  void Add(Kind kind, uint64_t bits, size_t limit);
  void AddString(std::string s, size_t limit);
  void SetTooDeep() { too_deep_ = true; }

 private:
  size_t count_ = 0;
  std::vector<uint64_t> bits_;   // the value, or the index into strings_
  Kind uniform_ = Kind::kInt;    // every leaf's kind while kinds_ is empty
  std::vector<Kind> kinds_;      // one per leaf once two kinds are mixed
  std::vector<std::string> strings_;
  bool too_deep_ = false;
};

struct InferBody {
  // The body without any input's 'data'.
  nlohmann::json doc;
  // Per entry of doc["inputs"] (same index), its 'data' when it had one.
  std::vector<std::optional<DataLeaves>> data;
};

// Parses `text` after checking that it nests at most kMaxJsonDepth deep.
// Outside the inputs' 'data' it may hold at most kMaxJsonContainers arrays and
// objects (nested 'data' arrays cost nothing: they are not kept). Each 'data'
// keeps at most `max_leaves` leaves and counts the rest. InvalidArgument
// naming `what` when the text is too deep, has too many containers, or is not
// JSON (with the byte where it stopped).
absl::StatusOr<InferBody> ParseInferBody(std::string_view text, size_t max_leaves, const std::string& what);

}  // namespace baton::serve
