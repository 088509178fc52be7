#include "baton/serve/infer_body.h"

#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "baton/serve/kserve_json.h"

namespace baton::serve {

namespace {

using nlohmann::json;

uint64_t BitsOf(double d) {
  uint64_t b = 0;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

// SAX events: everything but the inputs' 'data' goes to nlohmann's own DOM
// builder; each 'data' goes to its DataLeaves.
class InferBodySax {
 public:
  using Kind = DataLeaves::Kind;

  InferBodySax(InferBody& out, size_t max_leaves) : out_(out), dom_(out.doc, /*allow_exceptions=*/false),
                                                    max_leaves_(max_leaves) {}

  const std::optional<std::string>& error() const { return error_; }

  bool null() { return Scalar(Kind::kNull, 0, [&] { return dom_.null(); }); }
  bool boolean(bool v) { return Scalar(Kind::kBool, v ? 1 : 0, [&] { return dom_.boolean(v); }); }
  bool number_integer(json::number_integer_t v) {
    return Scalar(Kind::kInt, static_cast<uint64_t>(v), [&] { return dom_.number_integer(v); });
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return Scalar(Kind::kUint, v, [&] { return dom_.number_unsigned(v); });
  }
  bool number_float(json::number_float_t v, const json::string_t& s) {
    return Scalar(Kind::kFloat, BitsOf(v), [&] { return dom_.number_float(v, s); });
  }
  bool string(json::string_t& v) {
    if (data_ == nullptr) {
      BeginValue(false, false);
      if (data_ == nullptr) return dom_.string(v);
    }
    if (skip_ == 0) {
      data_->AddString(std::move(v), max_leaves_);
      EndDataIfScalar();
    }
    return true;
  }
  bool binary(json::binary_t& v) { return data_ != nullptr || dom_.binary(v); }  // not produced by JSON text

  bool start_object(std::size_t n) {
    if (data_ == nullptr) {
      const Role role = BeginValue(true, false);
      if (data_ == nullptr) {
        if (!CountContainer()) return false;
        frames_.push_back({role, 0, {}, input_});
        return dom_.start_object(n);
      }
    }
    if (skip_++ == 0) data_->Add(Kind::kObject, 0, max_leaves_);  // its contents are skipped
    return true;
  }
  bool key(json::string_t& k) {
    if (data_ != nullptr) return true;  // a key inside an object in 'data' (skipped)
    Frame& f = frames_.back();
    if (f.role == Role::kRoot || f.role == Role::kInput) f.key = k;
    if (f.role == Role::kInput && k == "data") return true;  // its value goes to a DataLeaves, not the DOM
    return dom_.key(k);
  }
  bool end_object() {
    if (data_ == nullptr) {
      frames_.pop_back();
      return dom_.end_object();
    }
    if (--skip_ == 0) EndDataIfScalar();
    return true;
  }
  bool start_array(std::size_t n) {
    if (data_ == nullptr) {
      const Role role = BeginValue(false, true);
      if (data_ == nullptr) {
        if (!CountContainer()) return false;
        frames_.push_back({role, 0, {}, 0});
        return dom_.start_array(n);
      }
    }
    if (skip_ > 0) {
      ++skip_;
    } else if (++depth_ > kMaxDataDepth) {
      data_->SetTooDeep();
    }
    return true;
  }
  bool end_array() {
    if (data_ == nullptr) {
      frames_.pop_back();
      return dom_.end_array();
    }
    if (skip_ > 0) {
      --skip_;
    } else if (--depth_ == 0) {
      data_ = nullptr;
    }
    return true;
  }

  template <class Exception>
  bool parse_error(std::size_t position, const std::string& /*last_token*/, const Exception& /*e*/) {
    if (!error_) error_ = absl::StrCat("is not valid JSON (at byte ", position > 0 ? position - 1 : 0, ")");
    return false;
  }

 private:
  enum class Role : uint8_t { kOther, kRoot, kInputs, kInput };
  struct Frame {
    Role role;
    size_t next;      // arrays: the index of the next element
    std::string key;  // kRoot and kInput objects: the key of the value that follows
    size_t input;     // kInput: its index in "inputs"
  };

  // The role of a value that starts now, from its parent. An input's 'data'
  // is not a DOM value: it sets data_, and its leaves go there.
  Role BeginValue(bool object, bool array) {
    if (frames_.empty()) return object ? Role::kRoot : Role::kOther;
    Frame& parent = frames_.back();
    switch (parent.role) {
      case Role::kRoot:
        if (parent.key == "inputs" && array) {
          out_.data.clear();  // a repeated "inputs" replaces the earlier one, as in the DOM
          return Role::kInputs;
        }
        return Role::kOther;
      case Role::kInputs:
        input_ = parent.next++;
        return object ? Role::kInput : Role::kOther;
      case Role::kInput:
        if (parent.key == "data") {
          if (out_.data.size() <= parent.input) out_.data.resize(parent.input + 1);
          out_.data[parent.input].emplace();  // a repeated "data" replaces the earlier one, as in the DOM
          data_ = &*out_.data[parent.input];
          depth_ = 0;
          skip_ = 0;
        }
        return Role::kOther;
      case Role::kOther:
        return Role::kOther;
    }
    return Role::kOther;
  }

  template <typename Dom>
  bool Scalar(Kind kind, uint64_t bits, Dom dom) {
    if (data_ == nullptr) {
      BeginValue(false, false);
      if (data_ == nullptr) return dom();
    }
    if (skip_ == 0) {
      data_->Add(kind, bits, max_leaves_);
      EndDataIfScalar();
    }
    return true;
  }

  // A 'data' that was a single value (not an array) ends with it.
  void EndDataIfScalar() {
    if (depth_ == 0 && skip_ == 0) data_ = nullptr;
  }

  bool CountContainer() {
    if (++containers_ <= kMaxJsonContainers) return true;
    error_ = absl::StrCat("has more than ", kMaxJsonContainers,
                          " arrays and objects outside the inputs' 'data'; send fewer inputs or parameters");
    return false;
  }

  InferBody& out_;
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  const size_t max_leaves_;
  std::vector<Frame> frames_;
  size_t containers_ = 0;
  size_t input_ = 0;
  DataLeaves* data_ = nullptr;  // the 'data' being read, if any
  size_t depth_ = 0;            // arrays open inside data_
  size_t skip_ = 0;             // objects and arrays open inside an object in data_
  std::optional<std::string> error_;
};

}  // namespace

int64_t DataLeaves::integer(size_t i) const { return static_cast<int64_t>(bits_[i]); }

double DataLeaves::floating(size_t i) const {
  double d = 0;
  std::memcpy(&d, &bits_[i], sizeof d);
  return d;
}

std::string DataLeaves::Show(size_t i) const {
  switch (kind(i)) {
    case Kind::kInt: return json(integer(i)).dump();
    case Kind::kUint: return json(unsigned_integer(i)).dump();
    case Kind::kFloat: return json(floating(i)).dump();
    case Kind::kBool: return boolean(i) ? "true" : "false";
    case Kind::kString: return json(text(i)).dump();
    case Kind::kNull: return "null";
    case Kind::kObject: return "an object";
  }
  return "?";
}

void DataLeaves::Add(Kind kind, uint64_t bits, size_t limit) {
  ++count_;
  if (bits_.size() >= limit) return;
  if (bits_.empty()) {
    uniform_ = kind;
  } else if (kinds_.empty() && kind != uniform_) {
    kinds_.assign(bits_.size(), uniform_);
  }
  if (!kinds_.empty()) kinds_.push_back(kind);
  bits_.push_back(bits);
}

void DataLeaves::AddString(std::string s, size_t limit) {
  if (bits_.size() >= limit) {
    ++count_;
    return;
  }
  strings_.push_back(std::move(s));
  Add(Kind::kString, strings_.size() - 1, limit);
}

absl::StatusOr<InferBody> ParseInferBody(std::string_view text, size_t max_leaves, const std::string& what) {
  BATON_RETURN_IF_ERROR(CheckJsonNesting(text, what, std::numeric_limits<size_t>::max()));
  InferBody body;
  InferBodySax sax(body, max_leaves);
  const bool ok = json::sax_parse(text, &sax, json::input_format_t::json, /*strict=*/true);
  if (!ok || sax.error()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", sax.error().value_or("is not valid JSON")));
  }
  return body;
}

}  // namespace baton::serve
