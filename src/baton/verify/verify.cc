#include "baton/verify/verify.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "baton/core/tensor_ops.h"
#include "baton/graph/extract.h"

namespace baton::verify {

// ---------------------------------------------------------------------------
// 16-bit floats

float HalfToFloat(uint16_t bits) {
  const float sign = (bits & 0x8000) ? -1.0f : 1.0f;
  const int exp = (bits >> 10) & 0x1f;
  const int mant = bits & 0x3ff;
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  if (exp == 31) {
    return mant == 0 ? sign * std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  }
  return sign * std::ldexp(static_cast<float>(mant | 0x400), exp - 25);
}

uint16_t FloatToHalf(float value) {
  const uint32_t f = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000);
  const uint32_t abs = f & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);  // inf / NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;                                   // >= 65520 rounds to inf
  if (abs < 0x38800000) {
    // Below the smallest normal half (2^-14): a subnormal step is 2^-24, so the
    // mantissa is value * 2^24 rounded to nearest even (exact scaling in float).
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  uint32_t h = ((((abs >> 23) - 127 + 15) << 10) | ((abs & 0x7fffff) >> 13));
  const uint32_t rest = abs & 0x1fff;  // the 13 mantissa bits that are dropped
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float Bfloat16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t FloatToBfloat16(float value) {
  const uint32_t f = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((f >> 16) | 0x40);
  return static_cast<uint16_t>((f + 0x7fff + ((f >> 16) & 1)) >> 16);
}

namespace {

absl::string_view TypeName(ElemType t) {
  std::string_view name = ElemTypeName(t);
  return {name.data(), name.size()};
}

bool IsFloating(ElemType t) {
  return t == dtype::kFloat || t == dtype::kDouble || t == dtype::kFloat16 || t == dtype::kBfloat16 ||
         t == dtype::kComplex64 || t == dtype::kComplex128;
}

// ---------------------------------------------------------------------------
// RandomInputs

struct IntRange {
  int64_t min;
  int64_t max;  // inclusive; for uint64 the int64 max (baton never draws beyond)
};

std::optional<IntRange> IntegerRange(ElemType t) {
  switch (t) {
    case dtype::kInt8: return IntRange{INT8_MIN, INT8_MAX};
    case dtype::kUint8: return IntRange{0, UINT8_MAX};
    case dtype::kInt16: return IntRange{INT16_MIN, INT16_MAX};
    case dtype::kUint16: return IntRange{0, UINT16_MAX};
    case dtype::kInt32: return IntRange{INT32_MIN, INT32_MAX};
    case dtype::kUint32: return IntRange{0, UINT32_MAX};
    case dtype::kInt64: return IntRange{INT64_MIN, INT64_MAX};
    case dtype::kUint64: return IntRange{0, INT64_MAX};
    case dtype::kBool: return IntRange{0, 1};
    default: return std::nullopt;
  }
}

// Writes `v` as element `i` of the floating-point tensor `t`.
void StoreFloat(Tensor& t, int64_t i, double v) {
  switch (t.elem_type()) {
    case dtype::kFloat: t.data<float>()[i] = static_cast<float>(v); break;
    case dtype::kDouble: t.data<double>()[i] = v; break;
    case dtype::kFloat16: t.data<uint16_t>()[i] = FloatToHalf(static_cast<float>(v)); break;
    case dtype::kBfloat16: t.data<uint16_t>()[i] = FloatToBfloat16(static_cast<float>(v)); break;
    default: break;
  }
}

// Writes `v` as element `i` of the integer or bool tensor `t`.
void StoreInt(Tensor& t, int64_t i, int64_t v) {
  switch (t.elem_type()) {
    case dtype::kInt8: t.data<int8_t>()[i] = static_cast<int8_t>(v); break;
    case dtype::kUint8:
    case dtype::kBool: t.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
    case dtype::kInt16: t.data<int16_t>()[i] = static_cast<int16_t>(v); break;
    case dtype::kUint16: t.data<uint16_t>()[i] = static_cast<uint16_t>(v); break;
    case dtype::kInt32: t.data<int32_t>()[i] = static_cast<int32_t>(v); break;
    case dtype::kUint32: t.data<uint32_t>()[i] = static_cast<uint32_t>(v); break;
    case dtype::kInt64: t.data<int64_t>()[i] = v; break;
    case dtype::kUint64: t.data<uint64_t>()[i] = static_cast<uint64_t>(v); break;
    default: break;
  }
}

// An explicit shape from InputOptions::shapes, checked against the declared type.
absl::StatusOr<std::vector<int64_t>> CheckGivenShape(const graph::Value& value, const std::vector<int64_t>& given) {
  auto mismatch = [&] {
    return absl::InvalidArgumentError(absl::StrCat("input '", value.name, "' is declared ", value.type.ToString(),
                                                   "; the given shape [", absl::StrJoin(given, ","),
                                                   "] does not fit it"));
  };
  for (int64_t d : given) {
    if (d < 0) return mismatch();
  }
  if (!value.type.shape.has_value()) return given;
  const auto& dims = *value.type.shape;
  if (dims.size() != given.size()) return mismatch();
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d].size.has_value() && *dims[d].size != given[d]) return mismatch();
  }
  return given;
}

absl::StatusOr<std::vector<int64_t>> ResolveShape(const graph::Value& value, const InputOptions& options,
                                                  absl::flat_hash_map<std::string, int64_t>& decided) {
  if (auto it = options.shapes.find(value.name); it != options.shapes.end()) {
    return CheckGivenShape(value, it->second);
  }
  if (!value.type.shape.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", value.name, "' has an unknown rank; give its shape (--shape NAME=D1,D2,...)"));
  }
  const auto& dims = *value.type.shape;
  std::vector<int64_t> shape;
  shape.reserve(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    const graph::Dim& dim = dims[d];
    int64_t size;
    if (dim.size.has_value()) {
      size = *dim.size;
    } else if (auto it = options.dims.find(dim.param); !dim.param.empty() && it != options.dims.end()) {
      size = it->second;
    } else if (auto seen = decided.find(dim.param); !dim.param.empty() && seen != decided.end()) {
      size = seen->second;
    } else {
      size = d == 0 ? options.batch_dim : options.default_dim;
      if (!dim.param.empty()) decided.emplace(dim.param, size);
    }
    if (size < 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", value.name, "': dim ", d,
                                                     (dim.param.empty() ? "" : absl::StrCat(" ('", dim.param, "')")),
                                                     " resolves to ", size, "; sizes must be >= 0"));
    }
    shape.push_back(size);
  }
  return shape;
}

absl::StatusOr<Tensor> RandomTensor(const graph::Value& value, std::vector<int64_t> shape, const InputOptions& options,
                                    std::mt19937_64& rng) {
  const ElemType type = value.type.elem_type;
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > options.max_elements / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", value.name, "' ", value.type.ToString(), " would get shape [", absl::StrJoin(shape, ","),
          "], more than max_elements (", options.max_elements, "); give its symbolic dims with --dim PARAM=N"));
    }
    count *= d;
  }
  const auto fixed = options.fixed_values.find(value.name);
  const bool has_fixed = fixed != options.fixed_values.end();

  if (type == dtype::kString) {
    if (has_fixed) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", value.name, "' is a string tensor; fixed numeric values do not apply"));
    }
    std::uniform_int_distribution<int> length(1, 8), letter('a', 'z');
    std::vector<std::string> strings(static_cast<size_t>(count));
    for (std::string& s : strings) {
      s.resize(static_cast<size_t>(length(rng)));
      for (char& c : s) c = static_cast<char>(letter(rng));
    }
    return Tensor::Strings(std::move(shape), std::move(strings));
  }
  if (type == dtype::kFloat || type == dtype::kDouble || type == dtype::kFloat16 || type == dtype::kBfloat16) {
    Tensor t(type, std::move(shape));
    if (has_fixed) {
      for (int64_t i = 0; i < count; ++i) StoreFloat(t, i, fixed->second);
      return t;
    }
    std::uniform_real_distribution<double> dist(options.float_low, options.float_high);
    for (int64_t i = 0; i < count; ++i) StoreFloat(t, i, dist(rng));
    return t;
  }
  if (auto range = IntegerRange(type)) {
    Tensor t(type, std::move(shape));
    if (has_fixed) {
      const double v = fixed->second;
      if (v != std::floor(v) || v < static_cast<double>(range->min) || v > static_cast<double>(range->max)) {
        return absl::InvalidArgumentError(absl::StrCat("input '", value.name, "' is ", TypeName(type),
                                                       "; the fixed value ", v, " is not representable"));
      }
      for (int64_t i = 0; i < count; ++i) StoreInt(t, i, static_cast<int64_t>(v));
      return t;
    }
    if (type == dtype::kBool) {
      std::bernoulli_distribution coin(0.5);
      for (int64_t i = 0; i < count; ++i) StoreInt(t, i, coin(rng) ? 1 : 0);
      return t;
    }
    const int64_t lo = std::max(options.int_low, range->min);
    const int64_t hi = std::min(options.int_high - 1, range->max);
    if (lo > hi) {
      return absl::InvalidArgumentError(absl::StrCat("input '", value.name, "' is ", TypeName(type),
                                                     ": the integer range [", options.int_low, ", ", options.int_high,
                                                     ") leaves no value of that type"));
    }
    std::uniform_int_distribution<int64_t> dist(lo, hi);
    for (int64_t i = 0; i < count; ++i) StoreInt(t, i, dist(rng));
    return t;
  }
  return absl::UnimplementedError(
      absl::StrCat("input '", value.name, "' has element type ", TypeName(type), " which RandomInputs cannot fill"));
}

// ---------------------------------------------------------------------------
// Compare

// Element `i` of a floating-point tensor as double; complex tensors are viewed
// as 2n real numbers.
double LoadFloat(const Tensor& t, int64_t i) {
  switch (t.elem_type()) {
    case dtype::kFloat:
    case dtype::kComplex64: return t.data<float>()[i];
    case dtype::kDouble:
    case dtype::kComplex128: return t.data<double>()[i];
    case dtype::kFloat16: return HalfToFloat(t.data<uint16_t>()[i]);
    case dtype::kBfloat16: return Bfloat16ToFloat(t.data<uint16_t>()[i]);
    default: return 0;
  }
}

// Element `i` of an integer tensor; uint64 values above INT64_MAX wrap, which
// keeps equality exact.
int64_t LoadInt(const Tensor& t, int64_t i) {
  switch (t.elem_type()) {
    case dtype::kInt8: return t.data<int8_t>()[i];
    case dtype::kUint8:
    case dtype::kBool: return t.data<uint8_t>()[i];
    case dtype::kInt16: return t.data<int16_t>()[i];
    case dtype::kUint16: return t.data<uint16_t>()[i];
    case dtype::kInt32: return t.data<int32_t>()[i];
    case dtype::kUint32: return t.data<uint32_t>()[i];
    case dtype::kInt64: return t.data<int64_t>()[i];
    case dtype::kUint64: return static_cast<int64_t>(t.data<uint64_t>()[i]);
    default: return 0;
  }
}

std::string Fmt(double v) { return absl::StrFormat("%.9g", v); }

}  // namespace

absl::StatusOr<NamedTensors> RandomInputs(const graph::Model& model, uint64_t seed, const InputOptions& options) {
  if (!(options.float_low <= options.float_high)) {
    return absl::InvalidArgumentError(
        absl::StrCat("float range [", options.float_low, ", ", options.float_high, "] is empty"));
  }
  if (options.int_low >= options.int_high) {
    return absl::InvalidArgumentError(
        absl::StrCat("integer range [", options.int_low, ", ", options.int_high, ") is empty"));
  }
  if (options.batch_dim < 0 || options.default_dim < 0) {
    return absl::InvalidArgumentError("batch_dim and default_dim must be >= 0");
  }
  auto check_is_input = [&](const std::string& name, absl::string_view what) -> absl::Status {
    if (std::find(model.inputs().begin(), model.inputs().end(), name) != model.inputs().end()) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("a ", what, " is given for '", name,
                                                   "' which is not an input of model '", model.display_name(),
                                                   "' (inputs: ", absl::StrJoin(model.inputs(), ", "), ")"));
  };
  for (const auto& [name, v] : options.fixed_values) BATON_RETURN_IF_ERROR(check_is_input(name, "fixed value"));
  for (const auto& [name, v] : options.shapes) BATON_RETURN_IF_ERROR(check_is_input(name, "shape"));
  absl::flat_hash_map<std::string, int64_t> decided;
  NamedTensors result;
  for (size_t i = 0; i < model.inputs().size(); ++i) {
    const std::string& name = model.inputs()[i];
    const graph::Value* value = model.FindValue(name);
    if (value == nullptr) {
      return absl::InternalError(absl::StrCat("model input '", name, "' has no value in the model view"));
    }
    if (!value->type.is_tensor) {
      return absl::UnimplementedError(absl::StrCat("input '", name, "' of model '", model.display_name(),
                                                   "' is not a tensor (sequence/map/optional); "
                                                   "baton generates tensor inputs only"));
    }
    if (value->type.elem_type == dtype::kUndefined) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "' of model '", model.display_name(), "' has no element type"));
    }
    BATON_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ResolveShape(*value, options, decided));
    // One stream per input, so fixing one input's value leaves the others unchanged.
    std::mt19937_64 rng(seed ^ (0x9E3779B97F4A7C15ull * (i + 1)));
    BATON_ASSIGN_OR_RETURN(Tensor t, RandomTensor(*value, std::move(shape), options, rng));
    result.emplace_back(name, std::move(t));
  }
  return result;
}

Comparison Compare(const Tensor& expected, const Tensor& actual, const Tolerance& tolerance) {
  Comparison c;
  if (expected.elem_type() != actual.elem_type() || expected.shape() != actual.shape()) {
    c.max_abs = c.max_rel = std::numeric_limits<double>::infinity();
    c.message = absl::StrCat("expected ", expected.DebugString(), ", got ", actual.DebugString());
    return c;
  }
  const ElemType type = expected.elem_type();
  const int64_t n = expected.num_elements();
  std::optional<int64_t> first_bad;
  std::string first_detail;
  auto note_bad = [&](int64_t i, std::string detail) {
    ++c.mismatches;
    if (!first_bad) {
      first_bad = i;
      first_detail = std::move(detail);
    }
  };

  if (type == dtype::kString) {
    if (expected.strings().size() != actual.strings().size()) {
      c.message = "string tensors hold different numbers of strings";
      return c;
    }
    for (size_t i = 0; i < expected.strings().size(); ++i) {
      if (expected.strings()[i] != actual.strings()[i]) {
        note_bad(static_cast<int64_t>(i),
                 absl::StrCat("expected \"", expected.strings()[i], "\", got \"", actual.strings()[i], "\""));
      }
    }
    if (c.mismatches > 0) c.max_abs = c.max_rel = std::numeric_limits<double>::infinity();
  } else if (!ElemTypeSize(type).has_value() || expected.byte_size() != actual.byte_size() ||
             static_cast<int64_t>(expected.byte_size()) != n * *ElemTypeSize(type)) {
    c.max_abs = c.max_rel = std::numeric_limits<double>::infinity();
    c.message = absl::StrCat("cannot compare ", expected.DebugString(), " tensors (", expected.byte_size(), " vs ",
                             actual.byte_size(), " bytes)");
    return c;
  } else if (IsFloating(type)) {
    const int64_t reals = (type == dtype::kComplex64 || type == dtype::kComplex128) ? 2 * n : n;
    for (int64_t i = 0; i < reals; ++i) {
      const double a = LoadFloat(expected, i);
      const double b = LoadFloat(actual, i);
      if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) {
        const bool same = (std::isnan(a) && std::isnan(b)) || a == b;  // a == b: same-signed infinities
        if (!same) {
          c.max_abs = c.max_rel = std::numeric_limits<double>::infinity();
          note_bad(i, absl::StrCat("expected ", Fmt(a), ", got ", Fmt(b)));
        }
        continue;
      }
      const double diff = std::fabs(a - b);
      c.max_abs = std::max(c.max_abs, diff);
      if (a != 0) c.max_rel = std::max(c.max_rel, diff / std::fabs(a));
      if (!(diff <= tolerance.abs || diff <= tolerance.rel * std::fabs(a))) {
        note_bad(i, absl::StrCat("expected ", Fmt(a), ", got ", Fmt(b), " (abs diff ", Fmt(diff), ")"));
      }
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = LoadInt(expected, i);
      const int64_t b = LoadInt(actual, i);
      if (a == b) continue;
      const double diff = std::fabs(static_cast<double>(a) - static_cast<double>(b));
      c.max_abs = std::max(c.max_abs, diff);
      if (a != 0) c.max_rel = std::max(c.max_rel, diff / std::fabs(static_cast<double>(a)));
      note_bad(i, absl::StrCat("expected ", a, ", got ", b));
    }
  }
  c.ok = c.mismatches == 0;
  if (!c.ok) {
    c.message = absl::StrCat(
        c.mismatches, " of ", n, " elements of ", expected.DebugString(),
        IsFloating(type) ? absl::StrCat(" outside tolerance (abs ", tolerance.abs, " or rel ", tolerance.rel, ")")
                         : std::string(" differ"),
        "; first at flat index ", *first_bad, ": ", first_detail);
  }
  return c;
}

namespace {

// Checks `inputs` against model.inputs() and returns them as ORT feeds.
absl::StatusOr<std::vector<std::pair<std::string, const Tensor*>>> Feeds(
    const graph::Model& model, std::span<const std::pair<std::string, Tensor>> inputs) {
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  absl::flat_hash_set<std::string> given;
  for (const auto& [name, tensor] : inputs) {
    if (std::find(model.inputs().begin(), model.inputs().end(), name) == model.inputs().end()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", model.display_name(), "' has no input '", name,
                                                     "' (inputs: ", absl::StrJoin(model.inputs(), ", "), ")"));
    }
    if (!given.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' is given twice"));
    }
    feeds.emplace_back(name, &tensor);
  }
  for (const std::string& name : model.inputs()) {
    if (!given.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", model.display_name(), "': no tensor given for input '", name, "'"));
    }
  }
  return feeds;
}

}  // namespace

absl::StatusOr<NamedTensors> RunWholeModel(const graph::Model& model,
                                           std::span<const std::pair<std::string, Tensor>> inputs,
                                           const ort::SessionOptions& options) {
  BATON_ASSIGN_OR_RETURN(auto feeds, Feeds(model, inputs));
  BATON_ASSIGN_OR_RETURN(auto runner, ort::OrtRunner::Create(model.SerializeToString(), options, model.display_name()));
  BATON_ASSIGN_OR_RETURN(std::vector<Tensor> outs, runner->Run(feeds, model.outputs()));
  NamedTensors result;
  result.reserve(outs.size());
  for (size_t i = 0; i < outs.size(); ++i) result.emplace_back(model.outputs()[i], std::move(outs[i]));
  return result;
}

absl::StatusOr<VerifyReport> VerifyPlan(const graph::Model& model, const partition::PartitionPlan& plan,
                                        std::span<const std::pair<std::string, Tensor>> inputs,
                                        const ort::SessionOptions& options, const Tolerance& tolerance) {
  BATON_ASSIGN_OR_RETURN(NamedTensors expected, RunWholeModel(model, inputs, options));

  VerifyReport report;
  std::vector<std::string> problems;
  // Every tensor available so far: model inputs (borrowed) and partition
  // outputs (owned by `produced`; node_hash_map keeps their addresses stable).
  absl::flat_hash_map<std::string, const Tensor*> available;
  absl::node_hash_map<std::string, Tensor> produced;
  absl::flat_hash_map<std::string, std::string> producer;
  for (const auto& [name, tensor] : inputs) {
    available[name] = &tensor;
    producer[name] = "model input";
  }

  for (const partition::Partition& part : plan.partitions) {
    PartitionReport& pr = report.partitions.emplace_back();
    pr.name = part.name;
    pr.num_nodes = part.nodes.size();
    auto fail = [&](const absl::Status& status) {
      pr.error = std::string(status.message());
      problems.push_back(absl::StrCat("partition '", part.name, "' (", part.nodes.size(), " nodes): ", pr.error));
    };
    absl::StatusOr<graph::Submodel> sub = graph::ExtractSubmodel(model, part.nodes, part.name);
    if (!sub.ok()) {
      fail(sub.status());
      break;
    }
    pr.inputs = sub->interface.inputs;
    pr.outputs = sub->interface.outputs;
    absl::StatusOr<std::unique_ptr<ort::OrtRunner>> runner =
        ort::OrtRunner::Create(sub->onnx_bytes, options, part.name);
    if (!runner.ok()) {
      fail(runner.status());
      break;
    }
    std::vector<std::pair<std::string, const Tensor*>> feeds;
    std::vector<std::string> missing;
    for (const ort::ValueInfo& in : (*runner)->inputs()) {
      auto it = available.find(in.name);
      if (it == available.end()) {
        missing.push_back(in.name);
      } else {
        feeds.emplace_back(in.name, it->second);
      }
    }
    if (!missing.empty()) {
      fail(absl::FailedPreconditionError(absl::StrCat(
          "reads ", absl::StrJoin(missing, ", "),
          " which neither a model input nor an earlier partition provides (the plan is not in dependency order)")));
      break;
    }
    absl::StatusOr<std::vector<Tensor>> outs = (*runner)->Run(feeds, sub->interface.outputs);
    if (!outs.ok()) {
      fail(outs.status());
      break;
    }
    for (size_t i = 0; i < outs->size(); ++i) {
      const std::string& name = sub->interface.outputs[i];
      auto [it, inserted] = produced.insert_or_assign(name, std::move((*outs)[i]));
      available[name] = &it->second;
      if (!inserted || producer.contains(name)) {
        problems.push_back(absl::StrCat("partition '", part.name, "' produces '", name, "' which ", producer[name],
                                        " already provided"));
      }
      producer[name] = part.name;
    }
    pr.ran = true;
  }

  for (auto& [name, want] : expected) {
    OutputReport& out = report.outputs.emplace_back();
    out.name = name;
    auto it = available.find(name);
    if (it == available.end()) {
      out.comparison.max_abs = out.comparison.max_rel = std::numeric_limits<double>::infinity();
      out.comparison.message = "not produced by any partition that ran";
      problems.push_back(absl::StrCat("output '", name, "': ", out.comparison.message));
      continue;
    }
    out.produced_by = producer[name];
    out.comparison = Compare(want, *it->second, tolerance);
    if (!out.comparison.ok) {
      problems.push_back(absl::StrCat("output '", name, "' (produced by ",
                                      out.produced_by == "model input"
                                          ? std::string("a model input")
                                          : absl::StrCat("partition '", out.produced_by, "'"),
                                      "): ", out.comparison.message));
    }
  }
  report.ok = problems.empty();
  report.message = report.ok ? absl::StrCat("all ", report.outputs.size(), " outputs of ", plan.partitions.size(),
                                            " partitions match the whole model")
                             : absl::StrJoin(problems, "\n");
  return report;
}

absl::Status CheckBatchable(const graph::Model& batched, std::span<const NamedTensors> samples,
                            const Tolerance& tolerance) {
  // The caller names the model; ONNX Runtime's own messages name it too.
  if (samples.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("checking batching needs at least 2 samples, got ",
                                                   samples.size()));
  }
  // Each sample alone, then all of them stacked.
  std::vector<NamedTensors> alone;
  for (const NamedTensors& sample : samples) {
    absl::StatusOr<NamedTensors> out = RunWholeModel(batched, sample);
    if (!out.ok()) return out.status();
    alone.push_back(*std::move(out));
  }
  NamedTensors stacked;
  for (size_t k = 0; k < samples[0].size(); ++k) {
    std::vector<const Tensor*> parts;
    for (const NamedTensors& sample : samples) {
      if (sample.size() != samples[0].size() || sample[k].first != samples[0][k].first) {
        return absl::InvalidArgumentError(absl::StrCat("the samples feed different inputs"));
      }
      parts.push_back(&sample[k].second);
    }
    absl::StatusOr<Tensor> t = ConcatDim0(parts);
    if (!t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", samples[0][k].first, "': ", t.status().message()));
    }
    stacked.emplace_back(samples[0][k].first, *std::move(t));
  }
  absl::StatusOr<NamedTensors> together = RunWholeModel(batched, stacked);
  if (!together.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("fails on ", samples.size(),
                                                      " stacked requests, so it cannot be batched (",
                                                      together.status().message(), "); leave max_batch at 1"));
  }
  std::vector<int64_t> rows;
  for (const NamedTensors& sample : samples) rows.push_back(sample[0].second.shape().empty() ? 0 : sample[0].second.shape()[0]);
  for (size_t o = 0; o < together->size(); ++o) {
    const auto& [name, tensor] = (*together)[o];
    absl::StatusOr<std::vector<Tensor>> pieces = SplitDim0(tensor, rows);
    if (!pieces.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("output '", name, "' does not grow with the batch (",
                                                        pieces.status().message(), "); leave max_batch at 1"));
    }
    for (size_t s = 0; s < samples.size(); ++s) {
      const Comparison c = Compare(alone[s][o].second, (*pieces)[s], tolerance);
      if (!c.ok) {
        return absl::FailedPreconditionError(absl::StrCat("output '", name, "' of sample ", s,
                                                          " differs when batched: ", c.message,
                                                          "; the model mixes rows of a batch, leave max_batch at 1"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace baton::verify
