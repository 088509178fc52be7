#include "baton/serve/kserve_json.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/serve/classification.h"
#include "baton/serve/infer_body.h"
#include "baton/serve/kserve_raw.h"
#include "baton/verify/verify.h"

namespace baton::serve {

namespace {

using nlohmann::json;

constexpr std::pair<ElemType, const char*> kDatatypes[] = {
    {dtype::kBool, "BOOL"},     {dtype::kUint8, "UINT8"},   {dtype::kUint16, "UINT16"}, {dtype::kUint32, "UINT32"},
    {dtype::kUint64, "UINT64"}, {dtype::kInt8, "INT8"},     {dtype::kInt16, "INT16"},   {dtype::kInt32, "INT32"},
    {dtype::kInt64, "INT64"},   {dtype::kFloat16, "FP16"},  {dtype::kFloat, "FP32"},    {dtype::kDouble, "FP64"},
    {dtype::kString, "BYTES"},  {dtype::kBfloat16, "BF16"},
};

std::string ShapeText(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

using Kind = DataLeaves::Kind;

template <typename T>
absl::Status FillInts(const DataLeaves& in, Tensor& t, const std::string& where) {
  std::span<T> out = t.data<T>();
  for (size_t i = 0; i < in.stored(); ++i) {
    switch (in.kind(i)) {
      case Kind::kBool:
        out[i] = static_cast<T>(in.boolean(i));
        break;
      case Kind::kUint: {
        const uint64_t u = in.unsigned_integer(i);
        if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
          return Bad(absl::StrCat(where, ": element ", i, " (", u, ") does not fit the datatype"));
        }
        out[i] = static_cast<T>(u);
        break;
      }
      case Kind::kInt: {
        const int64_t v = in.integer(i);
        if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
            (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
          return Bad(absl::StrCat(where, ": element ", i, " (", v, ") does not fit the datatype"));
        }
        out[i] = static_cast<T>(v);
        break;
      }
      default:
        return Bad(absl::StrCat(where, ": element ", i, " is ", in.Show(i), ", expected an integer"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Number(const DataLeaves& in, size_t i, const std::string& where) {
  switch (in.kind(i)) {
    case Kind::kFloat: return in.floating(i);
    case Kind::kInt: return static_cast<double>(in.integer(i));
    case Kind::kUint: return static_cast<double>(in.unsigned_integer(i));
    case Kind::kBool: return in.boolean(i) ? 1.0 : 0.0;
    default: return Bad(absl::StrCat(where, ": element ", i, " is ", in.Show(i), ", expected a number"));
  }
}

absl::Status Fill(const DataLeaves& in, Tensor& t, const std::string& where) {
  const size_t n = in.stored();
  switch (t.elem_type()) {
    case dtype::kBool: {
      std::span<uint8_t> out = t.data<uint8_t>();
      for (size_t i = 0; i < n; ++i) {
        const Kind k = in.kind(i);
        if (k == Kind::kBool) {
          out[i] = in.boolean(i) ? 1 : 0;
        } else if ((k == Kind::kInt || k == Kind::kUint) && in.unsigned_integer(i) <= 1) {
          out[i] = static_cast<uint8_t>(in.unsigned_integer(i));
        } else {
          return Bad(absl::StrCat(where, ": element ", i, " is ", in.Show(i), ", expected true or false"));
        }
      }
      return absl::OkStatus();
    }
    case dtype::kUint8: return FillInts<uint8_t>(in, t, where);
    case dtype::kUint16: return FillInts<uint16_t>(in, t, where);
    case dtype::kUint32: return FillInts<uint32_t>(in, t, where);
    case dtype::kUint64: return FillInts<uint64_t>(in, t, where);
    case dtype::kInt8: return FillInts<int8_t>(in, t, where);
    case dtype::kInt16: return FillInts<int16_t>(in, t, where);
    case dtype::kInt32: return FillInts<int32_t>(in, t, where);
    case dtype::kInt64: return FillInts<int64_t>(in, t, where);
    case dtype::kFloat: {
      std::span<float> out = t.data<float>();
      for (size_t i = 0; i < n; ++i) {
        if (in.kind(i) == Kind::kFloat) {  // the common case, without the StatusOr
          out[i] = static_cast<float>(in.floating(i));
          continue;
        }
        BATON_ASSIGN_OR_RETURN(const double d, Number(in, i, where));
        out[i] = static_cast<float>(d);
      }
      return absl::OkStatus();
    }
    case dtype::kDouble: {
      std::span<double> out = t.data<double>();
      for (size_t i = 0; i < n; ++i) {
        BATON_ASSIGN_OR_RETURN(out[i], Number(in, i, where));
      }
      return absl::OkStatus();
    }
    case dtype::kFloat16:
    case dtype::kBfloat16: {
      std::span<uint16_t> out = t.data<uint16_t>();
      for (size_t i = 0; i < n; ++i) {
        BATON_ASSIGN_OR_RETURN(const double d, Number(in, i, where));
        out[i] = t.elem_type() == dtype::kFloat16 ? verify::FloatToHalf(static_cast<float>(d))
                                                  : verify::FloatToBfloat16(static_cast<float>(d));
      }
      return absl::OkStatus();
    }
    default:
      return Bad(absl::StrCat(where, ": datatype not supported over JSON"));
  }
}

template <typename T>
json Array(const Tensor& t) {
  json a = json::array();
  for (T v : t.data<T>()) a.push_back(v);
  return a;
}

absl::StatusOr<json> DataOf(const Tensor& t) {
  switch (t.elem_type()) {
    case dtype::kBool: {
      json a = json::array();
      for (uint8_t v : t.data<uint8_t>()) a.push_back(v != 0);
      return a;
    }
    case dtype::kUint8: return Array<uint8_t>(t);
    case dtype::kUint16: return Array<uint16_t>(t);
    case dtype::kUint32: return Array<uint32_t>(t);
    case dtype::kUint64: return Array<uint64_t>(t);
    case dtype::kInt8: return Array<int8_t>(t);
    case dtype::kInt16: return Array<int16_t>(t);
    case dtype::kInt32: return Array<int32_t>(t);
    case dtype::kInt64: return Array<int64_t>(t);
    case dtype::kFloat: return Array<float>(t);
    case dtype::kDouble: return Array<double>(t);
    case dtype::kFloat16:
    case dtype::kBfloat16: {
      json a = json::array();
      for (uint16_t v : t.data<uint16_t>()) {
        a.push_back(t.elem_type() == dtype::kFloat16 ? verify::HalfToFloat(v) : verify::Bfloat16ToFloat(v));
      }
      return a;
    }
    case dtype::kString: {
      json a = json::array();
      for (const std::string& s : t.strings()) a.push_back(s);
      return a;
    }
    default:
      return absl::UnimplementedError(absl::StrCat("output type ", ElemTypeName(t.elem_type()),
                                                   " has no KServe datatype"));
  }
}

json TensorMetadata(const TensorInfo& t) {
  json shape = json::array();
  for (int64_t d : t.shape) shape.push_back(d);
  return {{"name", t.name}, {"datatype", KServeDatatype(t.elem_type).value_or(t.type_name)}, {"shape", shape}};
}

}  // namespace

absl::Status CheckJsonNesting(std::string_view text, const std::string& what, size_t max_containers) {
  size_t depth = 0;
  size_t containers = 0;
  bool in_string = false, escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxJsonDepth) {
        return Bad(absl::StrCat(what, ": arrays and objects nest more than ", kMaxJsonDepth,
                                " deep; send tensor data as one flat array in row-major order"));
      }
      // Each costs a parsed value and a container (~40-70 bytes) for 2 bytes of text.
      if (++containers > max_containers) {
        return Bad(absl::StrCat(what, ": has more than ", max_containers,
                                " arrays and objects; send tensor data as one flat array in row-major order"));
      }
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseJsonBody(std::string_view text, const std::string& what) {
  BATON_RETURN_IF_ERROR(CheckJsonNesting(text, what, kMaxJsonContainers));
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad(absl::StrCat(what, " is not valid JSON"));
  return doc;
}

std::optional<std::string> KServeDatatype(ElemType type) {
  for (const auto& [t, name] : kDatatypes) {
    if (t == type) return std::string(name);
  }
  return std::nullopt;
}

std::optional<ElemType> ElemTypeOfKServe(std::string_view datatype) {
  for (const auto& [t, name] : kDatatypes) {
    if (datatype == name) return t;
  }
  return std::nullopt;
}

namespace {

// "[a, b]": the engine's model names, for messages.
std::string ModelNames(const Engine& engine) {
  std::vector<std::string> names;
  for (const ModelInfo& i : engine.Models()) names.push_back(i.name);
  return absl::StrCat("[", absl::StrJoin(names, ", "), "]");
}

}  // namespace

absl::StatusOr<const ModelInfo*> ServedModel(const Engine& engine, const std::string& name, std::string_view version) {
  const ModelInfo* m = engine.FindModel(name);
  if (m == nullptr) return Bad(absl::StrCat("unknown model '", name, "'; this server has: ", ModelNames(engine)));
  if (!version.empty() && version != "1") {
    return Bad(absl::StrCat("model '", name, "' has no version '", std::string(version.substr(0, 64)),
                            "'; its only version is 1 (or leave the version out)"));
  }
  return m;
}

nlohmann::json ModelMetadataJson(const ModelInfo& model) {
  json inputs = json::array(), outputs = json::array();
  for (const TensorInfo& t : model.inputs) inputs.push_back(TensorMetadata(t));
  for (const TensorInfo& t : model.outputs) outputs.push_back(TensorMetadata(t));
  return {{"name", model.name},  {"versions", json::array({"1"})}, {"platform", "onnxruntime_onnx"},
          {"inputs", inputs},     {"outputs", outputs}};
}

std::optional<std::string> ConfigDatatype(ElemType type) {
  if (type == dtype::kString) return "TYPE_STRING";
  std::optional<std::string> kserve = KServeDatatype(type);
  if (!kserve) return std::nullopt;
  return "TYPE_" + *kserve;
}

nlohmann::json ModelConfigJson(const ModelInfo& model) {
  auto tensors = [](const std::vector<TensorInfo>& list, bool input) {
    json out = json::array();
    for (const TensorInfo& t : list) {
      json e = {{"name", t.name},
                {"data_type", ConfigDatatype(t.elem_type).value_or("TYPE_INVALID")},
                {"dims", t.shape}};
      if (input) e["format"] = "FORMAT_NONE";
      out.push_back(std::move(e));
    }
    return out;
  };
  return {{"name", model.name},
          {"platform", "onnxruntime_onnx"},
          {"backend", "onnxruntime"},
          {"max_batch_size", 0},
          {"input", tensors(model.inputs, true)},
          {"output", tensors(model.outputs, false)}};
}

namespace {

// The shared memory parameters of an input or output: none (nullopt), or a
// well-formed region, offset and size.
struct ShmParams {
  std::string region;
  uint64_t offset = 0;
  uint64_t byte_size = 0;
};
absl::StatusOr<std::optional<ShmParams>> ShmParamsOf(const json& tensor, const std::string& where) {
  auto params = tensor.find("parameters");
  if (params == tensor.end()) return std::nullopt;
  if (!params->is_object()) return Bad(absl::StrCat(where, ": 'parameters' must be an object"));
  auto region = params->find("shared_memory_region");
  auto size = params->find("shared_memory_byte_size");
  auto offset = params->find("shared_memory_offset");
  if (region == params->end() && size == params->end() && offset == params->end()) return std::nullopt;
  if (region == params->end() || size == params->end()) {
    return Bad(absl::StrCat(where, ": give both 'shared_memory_region' and 'shared_memory_byte_size' (and "
                                   "optionally 'shared_memory_offset'), or none"));
  }
  if (!region->is_string()) return Bad(absl::StrCat(where, ": 'shared_memory_region' must be a string"));
  ShmParams p;
  p.region = region->get<std::string>();
  for (auto [it, out, name] : {std::tuple{size, &p.byte_size, "shared_memory_byte_size"},
                               std::tuple{offset, &p.offset, "shared_memory_offset"}}) {
    if (it == params->end()) continue;
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0)) {
      return Bad(absl::StrCat(where, ": '", name, "' must be an integer >= 0"));
    }
    *out = it->get<uint64_t>();
  }
  return p;
}

// An input's "binary_data_size" parameter (the binary tensor data
// extension): none (nullopt) or a byte count.
absl::StatusOr<std::optional<uint64_t>> BinarySizeOf(const json& tensor, const std::string& where) {
  auto params = tensor.find("parameters");
  if (params == tensor.end() || !params->is_object()) return std::nullopt;  // ShmParamsOf checked the form
  auto size = params->find("binary_data_size");
  if (size == params->end()) return std::nullopt;
  if (!size->is_number_unsigned() && !(size->is_number_integer() && size->get<int64_t>() >= 0)) {
    return Bad(absl::StrCat(where, ": 'binary_data_size' must be an integer >= 0"));
  }
  return size->get<uint64_t>();
}

// A boolean parameter `key` of the object `params`, or `otherwise` when absent.
absl::StatusOr<bool> BoolParam(const json& params, const char* key, bool otherwise, const std::string& where) {
  auto it = params.find(key);
  if (it == params.end()) return otherwise;
  if (!it->is_boolean()) return Bad(absl::StrCat(where, ": parameter '", key, "' must be true or false"));
  return it->get<bool>();
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseInferRequest(std::string_view body, const ModelInfo& model, size_t max_elements,
                                                const SharedMemoryRegistry* shm,
                                                std::optional<std::string_view> header_length) {
  std::string_view binary;  // the tensor bytes after the JSON part
  if (header_length) {
    uint64_t n = 0;
    const std::string given(header_length->substr(0, 64));  // a header value, shown in the error
    const std::string text(absl::StripAsciiWhitespace(given));
    if (text.empty() || !std::all_of(text.begin(), text.end(), absl::ascii_isdigit) || !absl::SimpleAtoi(text, &n)) {
      return Bad(absl::StrCat("model '", model.name, "': the Inference-Header-Content-Length header must be the "
                              "length in bytes of the body's JSON part, got '", given, "'"));
    }
    if (n > body.size()) {
      return Bad(absl::StrCat("model '", model.name, "': the Inference-Header-Content-Length header says the JSON ",
                              "part has ", n, " bytes, but the whole body has ", body.size()));
    }
    binary = body.substr(n);
    body = body.substr(0, n);
  }
  size_t binary_used = 0;
  // Leaves kept per 'data': no more than the largest input can take when
  // every input's shape is fixed (the rest are only counted, for the message).
  uint64_t leaf_bound = 0;
  for (const TensorInfo& t : model.inputs) {
    uint64_t n = t.rank_known ? 1 : max_elements;
    for (size_t k = 0; k < t.shape.size() && n > 0 && n < max_elements; ++k) {
      const int64_t d = t.shape[k];
      n = d < 0 || n > max_elements / static_cast<uint64_t>(std::max<int64_t>(d, 1)) ? max_elements
                                                                                      : n * static_cast<uint64_t>(d);
    }
    leaf_bound = std::max(leaf_bound, std::min<uint64_t>(n, max_elements));
  }
  BATON_ASSIGN_OR_RETURN(InferBody parsed,
                         ParseInferBody(body, static_cast<size_t>(std::min<uint64_t>(leaf_bound, max_elements)),
                                        absl::StrCat("model '", model.name, "': the request body")));
  const json& doc = parsed.doc;
  if (!doc.is_object()) return Bad(absl::StrCat("model '", model.name, "': the request body must be a JSON object"));
  ParsedRequest req;
  if (auto it = doc.find("id"); it != doc.end()) {
    if (!it->is_string()) return Bad("request 'id' must be a string");
    req.id = it->get<std::string>();
  }
  if (auto it = doc.find("parameters"); it != doc.end()) {
    if (!it->is_object()) return Bad("request 'parameters' must be an object");
    if (auto p = it->find("priority"); p != it->end()) {
      if (!p->is_number_integer()) return Bad("parameter 'priority' must be an integer");
      req.options.priority = static_cast<int>(std::clamp<int64_t>(p->get<int64_t>(), -1'000'000, 1'000'000));
    }
    if (auto p = it->find("timeout"); p != it->end()) {
      if (!p->is_number() || p->get<double>() < 0 || !std::isfinite(p->get<double>()) || p->get<double>() > 1e15) {
        return Bad("parameter 'timeout' must be microseconds in 0..1e15");
      }
      if (p->get<double>() > 0) {
        req.options.deadline = std::chrono::nanoseconds(static_cast<int64_t>(p->get<double>() * 1e3));
      }
    }
    BATON_ASSIGN_OR_RETURN(req.binary_data_output, BoolParam(*it, "binary_data_output", false, "request"));
  }
  auto inputs = doc.find("inputs");
  if (inputs == doc.end() || !inputs->is_array()) {
    return Bad(absl::StrCat("model '", model.name, "': the request has no 'inputs' array"));
  }
  for (size_t input = 0; input < inputs->size(); ++input) {
    const json& in = (*inputs)[input];
    DataLeaves* data = input < parsed.data.size() && parsed.data[input] ? &*parsed.data[input] : nullptr;
    if (!in.is_object() || !in.contains("name") || !in["name"].is_string()) {
      return Bad(absl::StrCat("model '", model.name, "': every input needs a string 'name'"));
    }
    const std::string name = in["name"].get<std::string>();
    const std::string where = absl::StrCat("model '", model.name, "' input '", name, "'");
    const TensorInfo* want = nullptr;
    for (const TensorInfo& t : model.inputs) want = t.name == name ? &t : want;
    if (want == nullptr) {
      std::vector<std::string> names;
      for (const TensorInfo& t : model.inputs) names.push_back(t.name);
      return Bad(absl::StrCat("model '", model.name, "' has no input '", name, "'; its inputs: [",
                              absl::StrJoin(names, ", "), "]"));
    }
    if (req.inputs.count(name)) return Bad(absl::StrCat(where, " is given twice"));
    const std::string expected_type = KServeDatatype(want->elem_type).value_or(want->type_name);
    if (!in.contains("datatype") || !in["datatype"].is_string()) {
      return Bad(absl::StrCat(where, ": needs a 'datatype' (", expected_type, ")"));
    }
    const std::string datatype = in["datatype"].get<std::string>();
    if (datatype != expected_type) return Bad(absl::StrCat(where, " is ", datatype, ", expected ", expected_type));
    if (!in.contains("shape") || !in["shape"].is_array()) return Bad(absl::StrCat(where, ": needs a 'shape' array"));
    std::vector<int64_t> shape;
    for (const json& d : in["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return Bad(absl::StrCat(where, ": shape entries must be integers >= 0, got ", in["shape"].dump()));
      }
      shape.push_back(d.get<int64_t>());
    }
    if (want->rank_known) {
      bool fits = shape.size() == want->shape.size();
      for (size_t k = 0; fits && k < shape.size(); ++k) fits = want->shape[k] < 0 || want->shape[k] == shape[k];
      if (!fits) {
        return Bad(absl::StrCat(where, " has shape ", ShapeText(shape), ", expected ", ShapeText(want->shape),
                                " (-1: any size)"));
      }
    }
    uint64_t elements = 1;
    for (int64_t d : shape) {
      if (d != 0 && elements > max_elements / static_cast<uint64_t>(d)) {
        return Bad(absl::StrCat(where, ": shape ", ShapeText(shape), " has more than ", max_elements, " elements"));
      }
      elements *= static_cast<uint64_t>(d);
    }
    BATON_ASSIGN_OR_RETURN(std::optional<ShmParams> in_shm, ShmParamsOf(in, where));
    BATON_ASSIGN_OR_RETURN(std::optional<uint64_t> binary_size, BinarySizeOf(in, where));
    if (binary_size) {
      if (in_shm) {
        return Bad(absl::StrCat(where, ": has 'binary_data_size' and names shared memory region '", in_shm->region,
                                "'; use one"));
      }
      if (data != nullptr) return Bad(absl::StrCat(where, ": has 'data' and 'binary_data_size'; use one"));
      if (!header_length) {
        return Bad(absl::StrCat(where, ": has 'binary_data_size' but the request has no "
                                       "Inference-Header-Content-Length header; send it with the length of the "
                                       "body's JSON part"));
      }
      if (*binary_size > binary.size() - binary_used) {
        return Bad(absl::StrCat(where, ": 'binary_data_size' is ", *binary_size, " bytes, but only ",
                                binary.size() - binary_used, " bytes of binary data are left after the JSON part"));
      }
      BATON_ASSIGN_OR_RETURN(
          Tensor t, TensorFromRaw(std::string(binary.substr(binary_used, *binary_size)), want->elem_type,
                                  std::move(shape), where));
      binary_used += *binary_size;
      req.inputs.emplace(name, std::move(t));
      continue;
    }
    if (in_shm) {
      if (data != nullptr) {
        return Bad(absl::StrCat(where, ": has 'data' and names shared memory region '", in_shm->region, "'; use one"));
      }
      if (shm == nullptr) return SharedMemoryOff(where, in_shm->region);
      BATON_ASSIGN_OR_RETURN(Tensor t, shm->ReadTensor(in_shm->region, in_shm->offset, in_shm->byte_size,
                                                       want->elem_type, std::move(shape), where));
      req.inputs.emplace(name, std::move(t));
      continue;
    }
    if (data == nullptr) return Bad(absl::StrCat(where, ": needs 'data'"));
    if (data->too_deep()) {
      return Bad(absl::StrCat(where, ": 'data' is nested more than ", kMaxDataDepth,
                              " arrays deep; send it as one flat array in row-major order"));
    }
    if (data->count() != elements || data->stored() != elements) {  // stored < count only past the bound
      return Bad(absl::StrCat(where, ": 'data' has ", data->count(), " elements, but shape ", ShapeText(shape),
                              " needs ", elements));
    }
    if (want->elem_type == dtype::kString) {
      std::vector<std::string> strings;
      for (size_t i = 0; i < data->stored(); ++i) {
        if (data->kind(i) != Kind::kString) {
          return Bad(absl::StrCat(where, ": element ", i, " is ", data->Show(i), ", expected a string"));
        }
        strings.push_back(data->TakeText(i));
      }
      req.inputs.emplace(name, Tensor::Strings(shape, std::move(strings)));
      continue;
    }
    Tensor t(want->elem_type, shape);
    BATON_RETURN_IF_ERROR(Fill(*data, t, where));
    req.inputs.emplace(name, std::move(t));
  }
  if (binary_used != binary.size()) {
    return Bad(absl::StrCat("model '", model.name, "': the body has ", binary.size(),
                            " bytes after its JSON part (Inference-Header-Content-Length), but the inputs' "
                            "'binary_data_size' add up to ", binary_used));
  }
  for (const TensorInfo& t : model.inputs) {
    if (!req.inputs.count(t.name)) {
      return Bad(absl::StrCat("model '", model.name, "': input '", t.name, "' (",
                              KServeDatatype(t.elem_type).value_or(t.type_name), " ", ShapeText(t.shape),
                              ") is missing"));
    }
  }
  if (auto outs = doc.find("outputs"); outs != doc.end()) {
    if (!outs->is_array()) return Bad("request 'outputs' must be an array");
    for (const json& o : *outs) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
        return Bad("every requested output needs a string 'name'");
      }
      const std::string name = o["name"].get<std::string>();
      const auto info = std::find_if(model.outputs.begin(), model.outputs.end(),
                                     [&](const TensorInfo& t) { return t.name == name; });
      if (info == model.outputs.end()) return Bad(absl::StrCat("model '", model.name, "' has no output '", name, "'"));
      const std::string where = absl::StrCat("model '", model.name, "' output '", name, "'");
      // Each answer is built once per entry: a repeated name would multiply it.
      if (std::find(req.outputs.begin(), req.outputs.end(), name) != req.outputs.end()) {
        return Bad(absl::StrCat(where, " is requested twice; name each output once"));
      }
      BATON_ASSIGN_OR_RETURN(std::optional<ShmParams> out_shm, ShmParamsOf(o, where));
      if (auto params = o.find("parameters"); params != o.end()) {
        if (params->contains("binary_data")) {
          BATON_ASSIGN_OR_RETURN(req.binary_data[name], BoolParam(*params, "binary_data", false, where));
        }
        if (auto c = params->find("classification"); c != params->end()) {
          if (!c->is_number_integer()) {
            return Bad(absl::StrCat(where, ": 'classification' must be an integer (how many top classes to answer)"));
          }
          const int64_t k = c->get<int64_t>();
          BATON_RETURN_IF_ERROR(CheckClassification(*info, k, where));
          if (k > 0) req.classification[name] = k;
        }
      }
      if (out_shm) {
        if (shm == nullptr) return SharedMemoryOff(where, out_shm->region);
        BATON_ASSIGN_OR_RETURN(SharedMemoryRegistry::Target target,
                               shm->OutputTarget(out_shm->region, out_shm->offset, out_shm->byte_size, where));
        req.shm_outputs[name] = ShmOutput{out_shm->region, out_shm->offset, std::move(target)};
      }
      req.outputs.push_back(name);
    }
  }
  return req;
}

namespace {

// The JSON response; outputs for which `binary(name)` holds have their raw
// bytes appended to `*blob` instead of "data" (`blob` may be null when none does).
absl::StatusOr<json> ResponseJson(const ModelInfo& model, const std::string& id, const Tensors& outputs,
                                  const std::vector<std::string>& requested,
                                  const std::map<std::string, ShmOutput>& shm_outputs,
                                  const std::map<std::string, int64_t>& classification,
                                  const std::function<bool(const std::string&)>& binary, std::string* blob) {
  std::vector<std::string> names = requested;
  if (names.empty()) {
    for (const TensorInfo& t : model.outputs) names.push_back(t.name);
  }
  json outs = json::array();
  for (const std::string& name : names) {
    auto it = outputs.find(name);
    if (it == outputs.end()) return absl::InternalError(absl::StrCat("model '", model.name, "' gave no output '", name, "'"));
    std::optional<Tensor> classes;
    if (auto k = classification.find(name); k != classification.end()) {
      BATON_ASSIGN_OR_RETURN(classes,
                             Classify(it->second, k->second, absl::StrCat("model '", model.name, "' output '", name, "'"),
                                      model.labels));
    }
    const Tensor& t = classes ? *classes : it->second;
    json shape = json::array();
    for (int64_t d : t.shape()) shape.push_back(d);
    json out = {{"name", name},
                {"datatype", KServeDatatype(t.elem_type()).value_or(ElemTypeName(t.elem_type()))},
                {"shape", shape}};
    if (auto shm = shm_outputs.find(name); shm != shm_outputs.end()) {
      std::string raw;  // the tensor's raw form (BYTES length-prefixed)
      AppendRaw(t, raw);
      BATON_RETURN_IF_ERROR(shm->second.target.Write(std::as_bytes(std::span<const char>(raw)),
                                                     absl::StrCat("model '", model.name, "' output '", name, "'")));
      out["parameters"] = {{"shared_memory_region", shm->second.region},
                           {"shared_memory_offset", shm->second.offset},
                           {"shared_memory_byte_size", raw.size()}};
    } else if (blob != nullptr && binary(name)) {
      const size_t before = blob->size();
      AppendRaw(t, *blob);
      out["parameters"] = {{"binary_data_size", blob->size() - before}};
    } else {
      BATON_ASSIGN_OR_RETURN(out["data"], DataOf(t));
    }
    outs.push_back(std::move(out));
  }
  json doc = {{"model_name", model.name}, {"model_version", "1"}, {"outputs", std::move(outs)}};
  if (!id.empty()) doc["id"] = id;
  return doc;
}

}  // namespace

absl::StatusOr<nlohmann::json> InferResponseJson(const ModelInfo& model, const std::string& id, const Tensors& outputs,
                                                 const std::vector<std::string>& requested,
                                                 const std::map<std::string, ShmOutput>& shm_outputs,
                                                 const std::map<std::string, int64_t>& classification) {
  return ResponseJson(model, id, outputs, requested, shm_outputs, classification, nullptr, nullptr);
}

absl::StatusOr<InferResponseBody> InferResponseBodyOf(const ModelInfo& model, const ParsedRequest& request,
                                                      const Tensors& outputs) {
  bool any_binary = false;
  auto binary = [&](const std::string& name) {
    auto it = request.binary_data.find(name);
    const bool b = it != request.binary_data.end() ? it->second : request.binary_data_output;
    any_binary = any_binary || b;
    return b;
  };
  std::string blob;
  BATON_ASSIGN_OR_RETURN(json doc,
                         ResponseJson(model, request.id, outputs, request.outputs, request.shm_outputs,
                                                      request.classification, binary, &blob));
  InferResponseBody r;
  // Strings from a model (BYTES outputs) may not be valid UTF-8: replace, never throw.
  r.body = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  r.json_length = r.body.size();
  r.binary = any_binary;
  r.body += blob;
  return r;
}

std::vector<KServeModelStatistics> KServeStatistics(const EngineStats& stats, const std::string& model) {
  auto ns = [](double s) { return static_cast<uint64_t>(std::max(0.0, s) * 1e9); };
  std::vector<KServeModelStatistics> out;
  for (const ModelStats& m : stats.models) {
    if (!model.empty() && m.name != model) continue;
    KServeModelStatistics& k = out.emplace_back();
    k.name = m.name;
    k.last_inference_ms = m.last_answer_unix_ms;
    k.inference_count = m.completed;
    k.success = {m.completed, ns(m.latency_sum_s)};
    k.fail = {m.failed + m.deadline_exceeded + m.cancelled + m.rejected + m.invalid, ns(m.failed_sum_s)};
    k.queue = {m.completed, ns(m.queue_sum_s)};
    k.compute_infer = {m.completed, ns(m.compute_sum_s)};
    k.execution_count = m.executions;
    for (const ModelStats::BatchSize& b : m.batch_sizes) {
      k.batch_stats.push_back({static_cast<uint64_t>(b.size), {b.executions, ns(b.compute_s)}});
    }
  }
  return out;
}

nlohmann::json StatisticsJson(const std::vector<KServeModelStatistics>& stats) {
  auto duration = [](const DurationStat& d) { return json{{"count", d.count}, {"ns", d.ns}}; };
  json models = json::array();
  for (const KServeModelStatistics& k : stats) {
    json batches = json::array();
    for (const KServeModelStatistics::Batch& b : k.batch_stats) {
      batches.push_back({{"batch_size", b.batch_size},
                         {"compute_input", duration({})},
                         {"compute_infer", duration(b.compute_infer)},
                         {"compute_output", duration({})}});
    }
    models.push_back({{"name", k.name},
                      {"version", "1"},
                      {"last_inference", k.last_inference_ms},
                      {"inference_count", k.inference_count},
                      {"execution_count", k.execution_count},
                      {"inference_stats",
                       {{"success", duration(k.success)},
                        {"fail", duration(k.fail)},
                        {"queue", duration(k.queue)},
                        {"compute_input", duration({})},
                        {"compute_infer", duration(k.compute_infer)},
                        {"compute_output", duration({})}}},
                      {"batch_stats", batches}});
  }
  return {{"model_stats", std::move(models)}};
}

int HttpStatusOf(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kResourceExhausted: return 429;
    case StatusCode::kUnavailable:
    case StatusCode::kFailedPrecondition: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    case StatusCode::kUnauthenticated: return 401;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kUnimplemented: return 501;
    default: return 500;
  }
}

absl::Status CheckRepository(std::string_view repository) {
  if (repository.empty()) return absl::OkStatus();
  return Bad(absl::StrCat("no repository '", std::string(repository.substr(0, 64)),
                          "': baton serve has one, its config; leave repository_name empty"));
}

absl::Status CheckRepositoryLoad(std::string_view repository, const std::string& model, bool with_parameters) {
  BATON_RETURN_IF_ERROR(CheckRepository(repository));
  if (with_parameters) {
    return absl::UnimplementedError(absl::StrCat(
        "cannot load model '", model.substr(0, 128), "' with a new configuration or files: baton serve loads the "
        "models of its config as they are; change the config and restart"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RepositoryModel>> RepositoryIndex(const ServedEngine& served, std::string_view repository,
                                                             bool ready_only) {
  BATON_RETURN_IF_ERROR(CheckRepository(repository));
  const std::vector<std::string> loaded = served.Loaded();
  std::vector<RepositoryModel> out;
  for (const std::string& name : served.configured()) {
    RepositoryModel entry;
    entry.name = name;
    if (std::find(loaded.begin(), loaded.end(), name) == loaded.end()) {
      if (ready_only) continue;
      entry.state = "UNAVAILABLE";
      entry.reason = "unloaded";
    }
    out.push_back(std::move(entry));
  }
  return out;
}

nlohmann::json RepositoryIndexJson(const std::vector<RepositoryModel>& models) {
  json out = json::array();
  for (const RepositoryModel& m : models) {
    out.push_back({{"name", m.name}, {"version", m.version}, {"state", m.state}, {"reason", m.reason}});
  }
  return out;
}

}  // namespace baton::serve
