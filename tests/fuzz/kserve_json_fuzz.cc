// Fuzz target: a KServe v2 REST inference request body
// (serve::ParseInferRequest) against a model with inputs of several datatypes,
// some in a client shared memory region (fuzz_shm.h), some as binary tensor
// data. An input with a NUL byte is split there: the part before it is the
// Inference-Header-Content-Length header's value, the rest the body. A
// request that parses is answered (serve::InferResponseBodyOf) with its input
// x as the output y, so the answer's paths run too: binary data, shared
// memory outputs, and the top classes of the classification extension.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/serve/kserve_json.h"
#include "fuzz_shm.h"
#include "fuzz_target.h"

namespace baton::fuzz {

namespace {

ModelInfo FuzzModel() {
  ModelInfo m;
  m.name = "fz";
  m.inputs = {{"x", dtype::kFloat, "float32", {1, -1}, true},   {"ids", dtype::kInt64, "int64", {-1}, true},
              {"s", dtype::kString, "string", {2}, true},       {"flag", dtype::kBool, "bool", {1}, true},
              {"h", dtype::kFloat16, "float16", {2}, true},     {"u", dtype::kUint8, "uint8", {}, false}};
  m.outputs = {{"y", dtype::kFloat, "float32", {1, -1}, true}};
  return m;
}

// "LEN\0" + JSON + raw bytes of x (FP32 [1, 2]) and s (BYTES [2]).
std::string BinarySeed() {
  const std::string json =
      R"({"parameters": {"binary_data_output": true},
          "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                     {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 10}}],
          "outputs": [{"name": "y", "parameters": {"binary_data": false}}]})";
  const std::string raw("\0\0\x80?\0\0\0@\x02\0\0\0ab\0\0\0\0", 18);
  return std::to_string(json.size()) + std::string(1, '\0') + json + raw;
}

}  // namespace

std::vector<std::string> Seeds() {
  return {
      R"({"id": "7", "parameters": {"priority": 2, "timeout": 5000},
          "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.5, -2, 3e3]},
                     {"name": "ids", "shape": [2], "datatype": "INT64", "data": [[1], [9007199254740993]]},
                     {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "\u00e9"]},
                     {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [true]},
                     {"name": "h", "shape": [2], "datatype": "FP16", "data": [0.5, 65504]},
                     {"name": "u", "shape": [2, 2], "datatype": "UINT8", "data": [0, 1, 254, 255]}],
          "outputs": [{"name": "y"}]})",
      R"({"inputs": []})",
      R"({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                      "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8, "shared_memory_offset": 8}},
                     {"name": "s", "shape": [1], "datatype": "BYTES",
                      "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}],
          "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 64}}]})",
      BinarySeed(),
      R"({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [3, -1, 3, 1e30, -0.0]}],
          "outputs": [{"name": "y", "parameters": {"classification": 3}}]})",
  };
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const baton::ModelInfo model = baton::fuzz::FuzzModel();
  std::string_view body(reinterpret_cast<const char*>(data), size);
  std::optional<std::string_view> header_length;
  if (const size_t nul = body.find('\0'); nul != std::string_view::npos) {
    header_length = body.substr(0, nul);
    body.remove_prefix(nul + 1);
  }
  absl::StatusOr<baton::serve::ParsedRequest> request =
      baton::serve::ParseInferRequest(body, model, size_t{1} << 16, baton::fuzz::FuzzShm(), header_length);
  if (!request.ok()) return 0;
  auto x = request->inputs.find("x");
  if (x == request->inputs.end()) return 0;
  baton::Tensors outputs;
  outputs.emplace("y", x->second.Clone());
  (void)baton::serve::InferResponseBodyOf(model, *request, outputs);
  return 0;
}
