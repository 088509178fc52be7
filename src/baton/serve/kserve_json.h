// The KServe v2 inference protocol's JSON (REST) form, over baton::Engine's
// types: datatype names, model metadata, and inference requests and
// responses. Pure functions: the HTTP front-end (http_server.h) calls them,
// and they are tested without a server.
//
// An inference request:
//   {"id": "42", "parameters": {"priority": 1, "timeout": 50000},
//    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
//    "outputs": [{"name": "y"}]}
// `data` is the tensor flattened row-major (nested arrays are flattened too);
// `timeout` is in microseconds (Triton's request parameter); `outputs` picks
// and orders the outputs (all, in model order, when absent). With the system
// shared memory extension (serve/shared_memory.h), an input or requested
// output may carry "parameters": {"shared_memory_region": "r",
// "shared_memory_byte_size": n, "shared_memory_offset": o} instead of `data`;
// such an output is answered with those parameters and no `data`.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/baton.h"
#include "baton/core/status.h"
#include "baton/serve/shared_memory.h"
#include "nlohmann/json.hpp"

namespace baton::serve {

// "FP32", "INT64", "UINT8", "BOOL", "BYTES", ...; nullopt for a type KServe has no name for.
std::optional<std::string> KServeDatatype(ElemType type);
std::optional<ElemType> ElemTypeOfKServe(std::string_view datatype);

// GET /v2/models/{m}: name, versions, platform, inputs and outputs (-1 for free dims).
nlohmann::json ModelMetadataJson(const ModelInfo& model);

// A requested output that goes to client shared memory.
struct ShmOutput {
  std::string region;
  uint64_t offset = 0;
  SharedMemoryRegistry::Target target;
};

struct ParsedRequest {
  std::string id;  // echoed back ("" when absent)
  Tensors inputs;
  InferOptions options;
  std::vector<std::string> outputs;  // requested, in order; empty = all
  std::map<std::string, ShmOutput> shm_outputs;  // those of `outputs` that go to shared memory
};

// Parses and checks a request body against `model`: malformed JSON, an
// unknown or missing input, a wrong datatype, a shape that does not fit the
// model, a data length that does not match the shape, a requested output the
// model does not have, or bad parameters give InvalidArgument naming the
// tensor and what was expected. `max_elements` bounds every tensor. `shm`:
// the registry that shared memory parameters name (null = the extension is
// off, and a request that uses it is refused).
absl::StatusOr<ParsedRequest> ParseInferRequest(std::string_view body, const ModelInfo& model, size_t max_elements,
                                                const SharedMemoryRegistry* shm = nullptr);

// The response for `outputs` (all, in the model's order, unless `requested`
// names some): {"model_name", "id", "outputs": [{"name", "datatype", "shape", "data"}]}.
// An output in `shm_outputs` is written to its region and answered with
// "parameters" (region, offset, the bytes written) instead of "data".
absl::StatusOr<nlohmann::json> InferResponseJson(const ModelInfo& model, const std::string& id, const Tensors& outputs,
                                                 const std::vector<std::string>& requested,
                                                 const std::map<std::string, ShmOutput>& shm_outputs = {});

// HTTP status for a baton status code (400, 404, 429, 503, 504, 500).
int HttpStatusOf(StatusCode code);

}  // namespace baton::serve
