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
// The binary tensor data extension (Triton's `binary_tensor_data`): the body
// is the JSON object followed by tensor bytes, and the HTTP header
// `Inference-Header-Content-Length` gives the JSON object's length. An input
// with "parameters": {"binary_data_size": n} takes the next n bytes after the
// JSON (inputs in their JSON order), in the raw form of kserve_raw.h. An
// output is answered in binary when its request says "parameters":
// {"binary_data": true}, or when the request's parameter "binary_data_output"
// is true and the output does not say otherwise; such an output carries
// "parameters": {"binary_data_size": n} and its bytes follow the JSON answer.
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
#include "baton/serve/served_engine.h"
#include "baton/serve/shared_memory.h"
#include "nlohmann/json.hpp"

namespace baton::serve {

// Parses a request body as JSON after checking, in one pass over the text,
// that arrays and objects nest at most kMaxJsonDepth deep and number at most
// kMaxJsonContainers: a parsed container takes tens of bytes per 2 bytes of
// text, so many of them would turn a body into gigabytes. InvalidArgument
// naming `what` when the text is too deep, has too many, or is not JSON.
inline constexpr size_t kMaxJsonDepth = 80;
// Arrays and objects in one body (a 64x3x224x224 image as nested arrays has 43,000).
inline constexpr size_t kMaxJsonContainers = size_t{1} << 18;
absl::StatusOr<nlohmann::json> ParseJsonBody(std::string_view text, const std::string& what);
// The check ParseJsonBody makes before parsing, with a bound of its own on
// the number of arrays and objects.
absl::Status CheckJsonNesting(std::string_view text, const std::string& what, size_t max_containers);

// "FP32", "INT64", "UINT8", "BOOL", "BYTES", ...; nullopt for a type KServe has no name for.
std::optional<std::string> KServeDatatype(ElemType type);
std::optional<ElemType> ElemTypeOfKServe(std::string_view datatype);

// The model called `name` at `version`, or InvalidArgument naming the models
// there are, or the versions the model has: a baton model has one version,
// "1", which "" also means (the protocol's "the server's choice").
absl::StatusOr<const ModelInfo*> ServedModel(const Engine& engine, const std::string& name,
                                             std::string_view version = "");

// GET /v2/models/{m}: name, versions, platform, inputs and outputs (-1 for free dims).
nlohmann::json ModelMetadataJson(const ModelInfo& model);

// The model configuration's datatype name ("TYPE_FP32", "TYPE_STRING" for
// BYTES, ...; Triton's model_config.proto); nullopt where KServe has none.
std::optional<std::string> ConfigDatatype(ElemType type);

// GET /v2/models/{m}/config, Triton's model configuration in its JSON form:
// name, platform, backend, max_batch_size 0 (a baton model's shapes include
// any batch dimension), and input/output with data_type and dims (-1 free).
nlohmann::json ModelConfigJson(const ModelInfo& model);

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
  bool binary_data_output = false;               // the request parameter: outputs in binary by default
  std::map<std::string, bool> binary_data;       // requested outputs' own "binary_data" choice
  // Requested outputs answered with their top k classes ("classification": k > 0; classification.h).
  std::map<std::string, int64_t> classification;
};

// Parses and checks a request body against `model`: malformed JSON, an
// unknown or missing input, a wrong datatype, a shape that does not fit the
// model, a data length that does not match the shape, a requested output the
// model does not have, or bad parameters give InvalidArgument naming the
// tensor and what was expected. `max_elements` bounds every tensor. `shm`:
// the registry that shared memory parameters name (null = the extension is
// off, and a request that uses it is refused). `header_length`: the value of
// the Inference-Header-Content-Length header, nullopt when it is absent (the
// whole body is JSON); binary data that does not fit it is refused the same way.
absl::StatusOr<ParsedRequest> ParseInferRequest(std::string_view body, const ModelInfo& model, size_t max_elements,
                                                const SharedMemoryRegistry* shm = nullptr,
                                                std::optional<std::string_view> header_length = std::nullopt);

// The response for `outputs` (all, in the model's order, unless `requested`
// names some): {"model_name", "id", "outputs": [{"name", "datatype", "shape", "data"}]}.
// An output in `shm_outputs` is written to its region and answered with
// "parameters" (region, offset, the bytes written) instead of "data".
// An output in `classification` is answered as its top k classes (BYTES).
absl::StatusOr<nlohmann::json> InferResponseJson(const ModelInfo& model, const std::string& id, const Tensors& outputs,
                                                 const std::vector<std::string>& requested,
                                                 const std::map<std::string, ShmOutput>& shm_outputs = {},
                                                 const std::map<std::string, int64_t>& classification = {});

// The whole HTTP answer to a parsed request: the JSON response, then the
// bytes of the outputs answered in binary. `json_length` is the JSON part's
// length (the Inference-Header-Content-Length header to send when `binary`).
struct InferResponseBody {
  std::string body;
  size_t json_length = 0;
  bool binary = false;  // some output's bytes follow the JSON
};
absl::StatusOr<InferResponseBody> InferResponseBodyOf(const ModelInfo& model, const ParsedRequest& request,
                                                      const Tensors& outputs);

// The statistics extension (gRPC ModelStatistics, GET /v2/models[/{m}]/stats),
// from the engine's counters: success = completed requests and their summed
// latency; fail = every request answered with an error; queue and
// compute_infer = the completed requests' time outside and on the PUs.
struct DurationStat {
  uint64_t count = 0;
  uint64_t ns = 0;
};
struct KServeModelStatistics {
  std::string name;
  uint64_t last_inference_ms = 0;  // Unix time of the last answer
  uint64_t inference_count = 0;    // completed requests
  uint64_t execution_count = 0;    // executions answered OK (a batch counts once)
  DurationStat success, fail, queue, compute_infer;
  struct Batch {
    uint64_t batch_size = 0;
    DurationStat compute_infer;  // its executions and their PU time
  };
  std::vector<Batch> batch_stats;  // by batch size, smallest first
};
// Every model's, or only `model`'s when it is not empty.
std::vector<KServeModelStatistics> KServeStatistics(const EngineStats& stats, const std::string& model = "");
// {"model_stats": [{"name", "version", "last_inference", "inference_count",
//  "execution_count", "inference_stats": {"success": {"count", "ns"}, ...},
//  "batch_stats": [{"batch_size", "compute_input", "compute_infer", "compute_output"}]}]}
nlohmann::json StatisticsJson(const std::vector<KServeModelStatistics>& stats);

// HTTP status for a baton status code (400, 401, 403, 404, 429, 501, 503, 504, else 500).
int HttpStatusOf(StatusCode code);

// The model repository extension (gRPC RepositoryIndex / RepositoryModelLoad
// / RepositoryModelUnload, POST /v2/repository/...) over ServedEngine: the
// models of the config, loaded at start and for good (model control mode
// none), or loaded and unloaded on request (explicit). There is one
// repository, named "" (the protocol's "any"); another name is InvalidArgument.
struct RepositoryModel {
  std::string name;
  std::string version = "1";
  std::string state = "READY";  // or "UNAVAILABLE" (reason "unloaded") for a model not loaded now
  std::string reason;
};
// Every model of the config, or (`ready_only`, the request's `ready`) those loaded now.
absl::StatusOr<std::vector<RepositoryModel>> RepositoryIndex(const ServedEngine& served, std::string_view repository,
                                                             bool ready_only = false);
// [{"name", "version", "state", "reason"}], as Triton answers POST /v2/repository/index.
nlohmann::json RepositoryIndexJson(const std::vector<RepositoryModel>& models);
// What a load or unload request must pass before ServedEngine::Load/Unload:
// the repository's name, and (a load) no parameters: a new configuration or
// files are Unimplemented, saying to change the config instead.
absl::Status CheckRepository(std::string_view repository);
absl::Status CheckRepositoryLoad(std::string_view repository, const std::string& model, bool with_parameters);

}  // namespace baton::serve
