#include "baton/serve/grpc_server.h"

// GCC 12 at -O3 reports impossible memcpy bounds inside protobuf's inlined
// string accessors (false positives of -Wstringop-overflow / -Wrestrict).
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/file.h"
#include "baton/core/process.h"
#include "baton/core/version.h"
#include "baton/serve/auth.h"
#include "baton/serve/classification.h"
#include "baton/serve/kserve_json.h"
#include "baton/serve/kserve_raw.h"
#include "baton/serve/shared_memory.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"

namespace baton::serve {

namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

constexpr size_t kMaxElements = size_t{1} << 31;  // per tensor; the message size limit binds first

grpc::Status ToGrpc(const Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())), s.message());
}
grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())), std::string(s.message()));
}
grpc::Status Invalid(const std::string& message) { return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message); }

std::string ShapeText(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ","), "]"); }

// Typed `contents` of one input into a new tensor of `type` and `shape`
// (`elements` of them), or why they do not fit.
absl::StatusOr<Tensor> FromContents(const inference::InferTensorContents& c, ElemType type,
                                    const std::vector<int64_t>& shape, uint64_t elements, const std::string& where) {
  auto count_error = [&](int given, const char* field) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": contents.", field, " has ", given, " elements, but shape ",
                                                   ShapeText(shape), " needs ", elements));
  };
  auto ints = [&]<typename T>(const auto& field, const char* name) -> absl::StatusOr<Tensor> {
    if (static_cast<uint64_t>(field.size()) != elements) return count_error(field.size(), name);
    Tensor t(type, shape);
    std::span<T> out = t.data<T>();
    for (int i = 0; i < field.size(); ++i) {
      const auto v = field.Get(i);
      if (static_cast<decltype(v)>(static_cast<T>(v)) != v) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": element ", i, " (", v, ") does not fit the datatype"));
      }
      out[static_cast<size_t>(i)] = static_cast<T>(v);
    }
    return t;
  };
  // Fields whose element type is the tensor's: copied as they are (NaN included).
  auto exact = [&]<typename T>(const auto& field, const char* name) -> absl::StatusOr<Tensor> {
    if (static_cast<uint64_t>(field.size()) != elements) return count_error(field.size(), name);
    Tensor t(type, shape);
    if (elements > 0) std::memcpy(t.data<T>().data(), field.data(), elements * sizeof(T));
    return t;
  };
  switch (type) {
    case dtype::kBool: {
      if (static_cast<uint64_t>(c.bool_contents_size()) != elements) {
        return count_error(c.bool_contents_size(), "bool_contents");
      }
      Tensor t(type, shape);
      std::span<uint8_t> out = t.data<uint8_t>();
      for (int i = 0; i < c.bool_contents_size(); ++i) out[static_cast<size_t>(i)] = c.bool_contents(i) ? 1 : 0;
      return t;
    }
    case dtype::kInt8: return ints.operator()<int8_t>(c.int_contents(), "int_contents");
    case dtype::kInt16: return ints.operator()<int16_t>(c.int_contents(), "int_contents");
    case dtype::kInt32: return ints.operator()<int32_t>(c.int_contents(), "int_contents");
    case dtype::kInt64: return ints.operator()<int64_t>(c.int64_contents(), "int64_contents");
    case dtype::kUint8: return ints.operator()<uint8_t>(c.uint_contents(), "uint_contents");
    case dtype::kUint16: return ints.operator()<uint16_t>(c.uint_contents(), "uint_contents");
    case dtype::kUint32: return ints.operator()<uint32_t>(c.uint_contents(), "uint_contents");
    case dtype::kUint64: return ints.operator()<uint64_t>(c.uint64_contents(), "uint64_contents");
    case dtype::kFloat: return exact.operator()<float>(c.fp32_contents(), "fp32_contents");
    case dtype::kDouble: return exact.operator()<double>(c.fp64_contents(), "fp64_contents");
    case dtype::kString: {
      if (static_cast<uint64_t>(c.bytes_contents_size()) != elements) {
        return count_error(c.bytes_contents_size(), "bytes_contents");
      }
      std::vector<std::string> strings(c.bytes_contents().begin(), c.bytes_contents().end());
      return Tensor::Strings(shape, std::move(strings));
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", ElemTypeName(type), " has no typed contents field; send it as raw_input_contents"));
  }
}

// Where a tensor's bytes are in client shared memory (the extension's
// parameters on an input or a requested output).
struct ShmRef {
  std::string region;
  uint64_t offset = 0;
  uint64_t byte_size = 0;
};

using Parameters = google::protobuf::Map<std::string, inference::InferParameter>;

// The shared memory parameters in `params`: none (nullopt), or all that a
// region needs, well typed.
absl::StatusOr<std::optional<ShmRef>> ShmRefOf(const Parameters& params, const std::string& where) {
  auto region = params.find("shared_memory_region");
  auto size = params.find("shared_memory_byte_size");
  auto offset = params.find("shared_memory_offset");
  if (region == params.end() && size == params.end() && offset == params.end()) return std::nullopt;
  if (region == params.end() || size == params.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": give both 'shared_memory_region' and "
                                                          "'shared_memory_byte_size' (and optionally "
                                                          "'shared_memory_offset'), or none"));
  }
  if (region->second.parameter_choice_case() != inference::InferParameter::kStringParam) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": 'shared_memory_region' must be a string_param"));
  }
  auto non_negative = [&](const Parameters::const_iterator& it, const char* name) -> absl::StatusOr<uint64_t> {
    if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param || it->second.int64_param() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": '", name, "' must be an int64_param >= 0"));
    }
    return static_cast<uint64_t>(it->second.int64_param());
  };
  ShmRef ref;
  ref.region = region->second.string_param();
  BATON_ASSIGN_OR_RETURN(ref.byte_size, non_negative(size, "shared_memory_byte_size"));
  if (offset != params.end()) {
    BATON_ASSIGN_OR_RETURN(ref.offset, non_negative(offset, "shared_memory_offset"));
  }
  return ref;
}

// A requested output: its name, and where in shared memory it goes (if it does).
struct RequestedOutput {
  std::string name;
  std::optional<ShmRef> shm;
  std::optional<SharedMemoryRegistry::Target> target;
  int64_t classification = 0;  // > 0: answer the top k classes (classification.h)
};

struct Parsed {
  Tensors inputs;
  InferOptions options;
  std::vector<RequestedOutput> outputs;  // requested, in order; empty = all
};

// Checks `req` against `model` and builds the engine's inputs. Raw input
// bytes are moved out of `req` (no copy) and kept alive by the tensors; an
// input in shared memory is copied out of its region (`shm`; null = off).
absl::StatusOr<Parsed> ParseRequest(ModelInferRequest& req, const ModelInfo& model, const SharedMemoryRegistry* shm) {
  Parsed out;
  const auto& params = req.parameters();
  if (auto it = params.find("priority"); it != params.end()) {
    if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param) {
      return absl::InvalidArgumentError("parameter 'priority' must be an int64_param");
    }
    out.options.priority = static_cast<int>(std::clamp<int64_t>(it->second.int64_param(), -1'000'000, 1'000'000));
  }
  if (auto it = params.find("timeout"); it != params.end()) {
    if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param || it->second.int64_param() < 0 ||
        it->second.int64_param() > 1'000'000'000'000'000) {
      return absl::InvalidArgumentError("parameter 'timeout' must be an int64_param of microseconds in 0..1e15");
    }
    if (it->second.int64_param() > 0) out.options.deadline = std::chrono::microseconds(it->second.int64_param());
  }
  std::vector<std::optional<ShmRef>> shm_refs;
  int in_shm = 0;
  for (const ModelInferRequest::InferInputTensor& in : req.inputs()) {
    BATON_ASSIGN_OR_RETURN(std::optional<ShmRef> ref,
                           ShmRefOf(in.parameters(), absl::StrCat("model '", model.name, "' input '", in.name(), "'")));
    in_shm += ref.has_value() ? 1 : 0;
    shm_refs.push_back(std::move(ref));
  }
  const bool raw = req.raw_input_contents_size() > 0;
  // One raw entry per input, or one per input not in shared memory.
  const bool raw_per_input = req.raw_input_contents_size() == req.inputs_size();
  if (raw && !raw_per_input && req.raw_input_contents_size() != req.inputs_size() - in_shm) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model.name, "': ", req.raw_input_contents_size(), " raw_input_contents for ", req.inputs_size(),
        " inputs", in_shm > 0 ? absl::StrCat(" (", in_shm, " in shared memory)") : "",
        "; give one per input, in the order of 'inputs'", in_shm > 0 ? ", or one per input not in shared memory" : ""));
  }
  int next_raw = 0;
  for (int i = 0; i < req.inputs_size(); ++i) {
    const ModelInferRequest::InferInputTensor& in = req.inputs(i);
    const std::string where = absl::StrCat("model '", model.name, "' input '", in.name(), "'");
    const std::optional<ShmRef>& shm_ref = shm_refs[static_cast<size_t>(i)];
    const int raw_index = raw_per_input ? i : (shm_ref ? -1 : next_raw++);
    const TensorInfo* want = nullptr;
    for (const TensorInfo& t : model.inputs) want = t.name == in.name() ? &t : want;
    if (want == nullptr) {
      std::vector<std::string> names;
      for (const TensorInfo& t : model.inputs) names.push_back(t.name);
      return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "' has no input '", in.name(),
                                                     "'; its inputs: [", absl::StrJoin(names, ", "), "]"));
    }
    if (out.inputs.count(in.name())) return absl::InvalidArgumentError(absl::StrCat(where, " is given twice"));
    const std::string expected_type = KServeDatatype(want->elem_type).value_or(want->type_name);
    if (in.datatype() != expected_type) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is ", in.datatype().empty() ? "(no datatype)" : in.datatype(),
                                                     ", expected ", expected_type));
    }
    std::vector<int64_t> shape(in.shape().begin(), in.shape().end());
    uint64_t elements = 1;
    for (int64_t d : shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": shape entries must be >= 0, got ", ShapeText(shape)));
      }
      if (d != 0 && elements > kMaxElements / static_cast<uint64_t>(d)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": shape ", ShapeText(shape), " has more than ", kMaxElements, " elements"));
      }
      elements *= static_cast<uint64_t>(d);
    }
    if (want->rank_known) {
      bool fits = shape.size() == want->shape.size();
      for (size_t k = 0; fits && k < shape.size(); ++k) fits = want->shape[k] < 0 || want->shape[k] == shape[k];
      if (!fits) {
        return absl::InvalidArgumentError(absl::StrCat(where, " has shape ", ShapeText(shape), ", expected ",
                                                       ShapeText(want->shape), " (-1: any size)"));
      }
    }
    if (shm_ref) {
      if (in.has_contents() || (raw_index >= 0 && !req.raw_input_contents(raw_index).empty())) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": has bytes and names shared memory region '", shm_ref->region, "'; use one"));
      }
      if (shm == nullptr) return SharedMemoryOff(where, shm_ref->region);
      BATON_ASSIGN_OR_RETURN(Tensor t, shm->ReadTensor(shm_ref->region, shm_ref->offset, shm_ref->byte_size,
                                                       want->elem_type, std::move(shape), where));
      out.inputs.emplace(in.name(), std::move(t));
    } else if (raw) {
      if (in.has_contents()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": has typed 'contents' while the request uses raw_input_contents; use one form"));
      }
      BATON_ASSIGN_OR_RETURN(Tensor t, TensorFromRaw(std::move(*req.mutable_raw_input_contents(raw_index)),
                                                     want->elem_type, std::move(shape), where));
      out.inputs.emplace(in.name(), std::move(t));
    } else {
      if (!in.has_contents()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": has no data; give typed 'contents' or raw_input_contents"));
      }
      BATON_ASSIGN_OR_RETURN(Tensor t, FromContents(in.contents(), want->elem_type, shape, elements, where));
      out.inputs.emplace(in.name(), std::move(t));
    }
  }
  for (const TensorInfo& t : model.inputs) {
    if (!out.inputs.count(t.name)) {
      return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "': input '", t.name, "' (",
                                                     KServeDatatype(t.elem_type).value_or(t.type_name), " ",
                                                     ShapeText(t.shape), ") is missing"));
    }
  }
  for (const ModelInferRequest::InferRequestedOutputTensor& o : req.outputs()) {
    const auto info = std::find_if(model.outputs.begin(), model.outputs.end(),
                                   [&](const TensorInfo& t) { return t.name == o.name(); });
    if (info == model.outputs.end()) {
      std::vector<std::string> names;
      for (const TensorInfo& t : model.outputs) names.push_back(t.name);
      return absl::InvalidArgumentError(absl::StrCat("model '", model.name, "' has no output '", o.name(),
                                                     "'; its outputs: [", absl::StrJoin(names, ", "), "]"));
    }
    RequestedOutput r{o.name(), std::nullopt, std::nullopt, 0};
    const std::string where = absl::StrCat("model '", model.name, "' output '", o.name(), "'");
    // Each answer is built once per entry: a repeated name would multiply it.
    if (std::any_of(out.outputs.begin(), out.outputs.end(), [&](const RequestedOutput& e) { return e.name == o.name(); })) {
      return absl::InvalidArgumentError(absl::StrCat(where, " is requested twice; name each output once"));
    }
    BATON_ASSIGN_OR_RETURN(r.shm, ShmRefOf(o.parameters(), where));
    if (auto c = o.parameters().find("classification"); c != o.parameters().end()) {
      if (c->second.parameter_choice_case() != inference::InferParameter::kInt64Param) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": 'classification' must be an int64_param (how many top classes to answer)"));
      }
      BATON_RETURN_IF_ERROR(CheckClassification(*info, c->second.int64_param(), where));
      r.classification = c->second.int64_param();
    }
    if (r.shm) {
      if (shm == nullptr) return SharedMemoryOff(where, r.shm->region);
      BATON_ASSIGN_OR_RETURN(r.target, shm->OutputTarget(r.shm->region, r.shm->offset, r.shm->byte_size, where));
    }
    out.outputs.push_back(std::move(r));
  }
  return out;
}

// The answer: requested outputs (all, in model order, when none were named)
// as raw_output_contents, or written to their shared memory region (an empty
// raw entry keeps the entries in the order of `outputs`).
grpc::Status FillResponse(const ModelInfo& model, const std::string& id, const Tensors& outputs,
                          const std::vector<RequestedOutput>& requested, ModelInferResponse& resp) {
  resp.set_model_name(model.name);
  resp.set_model_version("1");
  resp.set_id(id);
  std::vector<RequestedOutput> all;
  if (requested.empty()) {
    for (const TensorInfo& t : model.outputs) all.push_back({t.name, std::nullopt, std::nullopt, 0});
  }
  for (const RequestedOutput& r : requested.empty() ? all : requested) {
    const std::string& name = r.name;
    auto it = outputs.find(name);
    if (it == outputs.end()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("model '", model.name, "' gave no output '", name, "'"));
    }
    std::optional<Tensor> classes;
    if (r.classification > 0) {
      absl::StatusOr<Tensor> c =
          Classify(it->second, r.classification, absl::StrCat("model '", model.name, "' output '", name, "'"),
                   model.labels);
      if (!c.ok()) return ToGrpc(c.status());
      classes = *std::move(c);
    }
    const Tensor& t = classes ? *classes : it->second;
    const std::optional<std::string> datatype = KServeDatatype(t.elem_type());
    if (!datatype) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, absl::StrCat("model '", model.name, "' output '", name,
                                                                        "' is ", ElemTypeName(t.elem_type()),
                                                                        ", which has no KServe datatype"));
    }
    ModelInferResponse::InferOutputTensor* o = resp.add_outputs();
    o->set_name(name);
    o->set_datatype(*datatype);
    for (int64_t d : t.shape()) o->add_shape(d);
    std::string* raw = resp.add_raw_output_contents();
    if (r.target) {
      std::string strings;  // BYTES in their raw form; other types as they are
      if (t.elem_type() == dtype::kString) AppendRaw(t, strings);
      const std::span<const std::byte> bytes =
          t.elem_type() == dtype::kString ? std::as_bytes(std::span<const char>(strings)) : t.bytes();
      if (absl::Status w = r.target->Write(bytes, absl::StrCat("model '", model.name, "' output '", name, "'"));
          !w.ok()) {
        return ToGrpc(w);
      }
      auto& params = *o->mutable_parameters();
      params["shared_memory_region"].set_string_param(r.shm->region);
      params["shared_memory_byte_size"].set_int64_param(static_cast<int64_t>(bytes.size()));
      if (r.shm->offset > 0) params["shared_memory_offset"].set_int64_param(static_cast<int64_t>(r.shm->offset));
    } else {
      AppendRaw(t, *raw);
    }
  }
  return grpc::Status::OK;
}

void FillTensorMetadata(const TensorInfo& t, inference::ModelMetadataResponse::TensorMetadata* m) {
  m->set_name(t.name);
  m->set_datatype(KServeDatatype(t.elem_type).value_or(t.type_name));
  for (int64_t d : t.shape) m->add_shape(d);
}

// A Unix socket path gRPC may listen on: short enough for sockaddr_un, and
// either free or a stale socket (removed here); a live socket or any other
// file is an error that names it.
absl::Status CheckUnixSocketPath(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc unix:", path, ": a socket path needs 1 to ",
                                                   sizeof(addr.sun_path) - 1, " characters"));
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return absl::OkStatus();  // free
  if (!S_ISSOCK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc unix:", path,
                                                   ": the path exists and is not a socket; remove it or pick another"));
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket(): ", std::strerror(errno)));
  const bool live = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  if (live) {
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on unix:", path,
                                               ": another server listens there; stop it or pick another path"));
  }
  unlink(path.c_str());  // stale: nothing listens
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckSerializedInferRequest(std::string_view bytes, const ModelInfo& model,
                                         const SharedMemoryRegistry* shm) {
  ModelInferRequest req;
  if (!req.ParseFromArray(bytes.data(), static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX)))) {
    return absl::InvalidArgumentError("not a serialized ModelInferRequest");
  }
  return ParseRequest(req, model, shm).status();
}

size_t GrpcMemoryQuota(const GrpcOptions& options) {
  if (options.memory_quota_bytes != 0) return options.memory_quota_bytes;
  return std::max<size_t>(size_t{256} << 20, std::min<size_t>(options.max_request_bytes, size_t{1} << 40) * 4);
}

std::optional<std::chrono::nanoseconds> RequestDeadline(std::optional<std::chrono::nanoseconds> requested,
                                                        std::chrono::system_clock::time_point call_deadline,
                                                        std::chrono::system_clock::time_point now) {
  if (call_deadline == std::chrono::system_clock::time_point::max()) return requested;
  // As the `timeout` parameter's bound (1e15 µs), so that arrival plus the deadline cannot overflow.
  constexpr std::chrono::microseconds kFar{1'000'000'000'000'000};
  const std::chrono::nanoseconds left =
      call_deadline <= now ? std::chrono::nanoseconds(0)
      : call_deadline - now >= kFar
          ? std::chrono::nanoseconds(kFar)
          : std::chrono::duration_cast<std::chrono::nanoseconds>(call_deadline - now);
  return requested ? std::min(*requested, left) : left;
}

// While the server stops, a stream that has been quiet this long (nothing in
// flight, nothing arriving) is ended rather than waited for; looked at this often.
constexpr std::chrono::seconds kStreamQuiet{1};
constexpr std::chrono::milliseconds kStreamQuietScan{100};
// How long Stop waits, after gRPC's Shutdown, for the engine to answer the
// calls gRPC cancelled (a run inside one long operator stops only when the
// operator returns); past it the server is left to the process's exit.
constexpr std::chrono::seconds kEngineAnswerGrace{60};

namespace {

// The server runs on gRPC's asynchronous API: every operation it starts on
// its completion queue names a Tag (the call, and which of its operations),
// and the queue's threads (GrpcOptions::threads) hand each result to its
// call. One thread polls and completes every call, where the callback API
// hands each event between two threads of its own: fewer thread hand-overs
// and less CPU per small call (docs/benchmarks.md).
class AsyncCall {
 public:
  enum Event { kArrived, kRead, kWritten, kFinished, kDone };
  virtual ~AsyncCall() = default;
  virtual void OnEvent(Event event, bool ok) = 0;
};

struct Tag {
  AsyncCall* call;
  AsyncCall::Event event;
};

// gRPC's completion queue orders what a thread did before it started an
// operation before the handling of the operation's completion, which may
// run on another poller thread. gRPC is not built with ThreadSanitizer, so
// under it these two say so: every operation is started with Posted(its
// tag), and Poll calls Completed(tag) before handing the event on.
void* Posted(Tag& tag) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(&tag);
#endif
  return &tag;
}
void Completed([[maybe_unused]] void* tag) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(tag);
#endif
}

using HealthService = grpc::health::v1::Health::AsyncService;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

}  // namespace

struct GrpcServer::Impl {
  Impl(std::unique_ptr<ServedEngine> own, ServedEngine& s, GrpcOptions o)
      : owned_served(std::move(own)), served(s), options(std::move(o)), loopback(IsLoopbackLiteral(options.host)) {}

  template <typename Req, typename Resp>
  class UnaryCall;
  class Stream;
  class HealthWatch;

  std::unique_ptr<ServedEngine> owned_served;  // when started on a fixed engine
  ServedEngine& served;
  const GrpcOptions options;
  const bool loopback;
  inference::GRPCInferenceService::AsyncService service;
  HealthService health;
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  std::unique_ptr<grpc::Server> server;
  std::vector<std::thread> pollers;
  int port = 0;
  bool abandoned = false;  // Stop gave up waiting for the engine: never destroyed

  // Call objects alive (each listening for its method's next call, or in
  // progress): Stop shuts the completion queue down only once none is left.
  std::mutex live_mu;
  std::condition_variable live_cv;
  size_t live = 0;  // guarded by live_mu
  void Born() {
    std::lock_guard lock(live_mu);
    ++live;
  }
  void Died() {
    std::lock_guard lock(live_mu);
    if (--live == 0) live_cv.notify_all();
  }

  // Recursive: Stop ends streams and health watches while holding it.
  std::recursive_mutex streams_mu;
  std::set<Stream*> streams;       // live ModelStreamInfer calls; guarded by streams_mu
  std::set<HealthWatch*> watches;  // live health Watch calls; guarded by streams_mu
  bool stopping = false;           // guarded by streams_mu
  bool stopped = false;            // guarded by streams_mu

  // The last step of a stream or watch, run once by whoever marked it gone,
  // without its own lock: off its list (if it was put on it), then deleted.
  // Stop may hold streams_mu and find the call on the list meanwhile; it sees
  // the call gone and leaves it.
  template <typename CallT>
  void Delete(CallT* call, std::set<CallT*>& list, bool registered) {
    if (registered) {
      std::lock_guard lock(streams_mu);
      list.erase(call);
    }
    delete static_cast<AsyncCall*>(call);  // virtual; the calls' own destructors are private
  }

  // The health service's answer for `service`: SERVING until Stop, for the
  // server ("") and the KServe service; nullopt for any other service.
  std::optional<HealthCheckResponse::ServingStatus> HealthOf(const std::string& name) {
    if (!name.empty() && name != inference::GRPCInferenceService::service_full_name()) return std::nullopt;
    std::lock_guard lock(streams_mu);
    return stopping ? HealthCheckResponse::NOT_SERVING : HealthCheckResponse::SERVING;
  }

  // Who may make a call without the token (when one is configured).
  enum class Open {
    kNever,
    kOnLoopback,  // ServerLive, ServerReady: on a server listening on loopback
    kAlways,      // the standard health service: it tells nothing but the
                  // status, and probes cannot always send a token (docs/serve.md)
  };

  // OK, or UNAUTHENTICATED when a token is configured and the call lacks it.
  grpc::Status Authorize(const grpc::ServerContext& ctx, Open open = Open::kNever) const {
    if (options.token.empty() || open == Open::kAlways || (open == Open::kOnLoopback && loopback)) {
      return grpc::Status::OK;
    }
    const auto& md = ctx.client_metadata();
    auto it = md.find("authorization");
    if (it != md.end()) {
      const std::string_view v(it->second.data(), it->second.size());
      if (BearerTokenMatches(v, options.token)) return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing or wrong token: send the metadata 'authorization: Bearer <token>'");
  }

  // The model at `version` and the engine serving it, or INVALID_ARGUMENT
  // naming the models there are (ServedEngine::Find).
  absl::StatusOr<ServedEngine::Model> ModelOf(const std::string& name, const std::string& version) const {
    return served.Find(name, version);
  }

  // Parses `req` and sends it to the engine; `done` gets the filled response
  // status exactly once (on the engine's thread, or here when refused).
  // `call_deadline`: the call's gRPC deadline (max() = none; RequestDeadline).
  // `cancel`: cancelled when the call is (its client gave up or went away).
  void Submit(std::shared_ptr<ModelInferRequest> req, ModelInferResponse* resp,
              std::function<void(grpc::Status)> done, std::chrono::system_clock::time_point call_deadline,
              std::shared_ptr<CancelToken> cancel) {
    absl::StatusOr<ServedEngine::Model> model = ModelOf(req->model_name(), req->model_version());
    if (!model.ok()) {
      done(Invalid(std::string(model.status().message())));
      return;
    }
    absl::StatusOr<Parsed> parsed = ParseRequest(*req, *model->info, options.shared_memory.get());
    if (!parsed.ok()) {
      done(Invalid(std::string(parsed.status().message())));
      return;
    }
    const ModelInfo* m = model->info;
    std::vector<RequestedOutput> requested = std::move(parsed->outputs);
    parsed->options.run_here_up_to = options.run_here_up_to;
    parsed->options.deadline =
        RequestDeadline(parsed->options.deadline, call_deadline, std::chrono::system_clock::now());
    parsed->options.cancel = std::move(cancel);
    // The answer holds the engine (and so `m`); a replaced engine is closed
    // only once nothing holds it (ServedEngine).
    Engine& engine = *model->engine;
    engine.InferAsync(m->name, std::move(parsed->inputs), parsed->options,
                      [m, held = std::move(model->engine), req, resp, requested = std::move(requested),
                       done = std::move(done)](Result<Tensors> r) {
                        if (!r.ok()) {
                          done(ToGrpc(r.status()));
                          return;
                        }
                        done(FillResponse(*m, req->id(), *r, requested, *resp));
                      });
  }

  // Serves one unary method: asks gRPC for its calls (`request`, a
  // RequestX method of `svc`) and answers each with `body`, which fills the
  // response and gives the status, once the call is authorized (`open`:
  // see Authorize).
  template <typename Req, typename Resp, typename Svc, typename RequestFn, typename Body>
  void Serve(Svc& svc, RequestFn request, Open open, Body body);
  // The same for a method that answers later: `handle` gets the call and
  // must Finish it once, from any thread.
  template <typename Req, typename Resp, typename Svc, typename RequestFn, typename Handle>
  void ServeAsync(Svc& svc, RequestFn request, Open open, bool cancellable, Handle handle);
  void ServeAll();

  // The shared memory calls: FAILED_PRECONDITION while the extension is off.
  grpc::Status ShmCall(const std::function<absl::Status(SharedMemoryRegistry&)>& body) const {
    if (!options.shared_memory) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, kSharedMemoryOff);
    }
    return ToGrpc(body(*options.shared_memory));
  }

  // Takes the completion queue's events until it is shut down and drained.
  void Poll() {
    NameThisThread("grpc-cq");
    void* tag = nullptr;
    bool ok = false;
    while (cq->Next(&tag, &ok)) {
      Completed(tag);
      const Tag* t = static_cast<const Tag*>(tag);
      t->call->OnEvent(t->event, ok);
    }
  }
};

// One unary call of one method. Listening, it waits for gRPC to match a
// call (kArrived), then asks for the method's next call and handles this
// one. Deletes itself once its Finish has returned and come back
// (kFinished) and the call's end (kDone, from AsyncNotifyWhenDone) has come
// back (Release). A cancellable call
// (ModelInfer) cancels its engine request when the call is cancelled: the
// client cancelled it, its deadline passed or its connection broke; the
// engine then answers CANCELLED (the answer goes nowhere), drops what waits
// and stops what runs.
template <typename Req, typename Resp>
class GrpcServer::Impl::UnaryCall final : public AsyncCall {
 public:
  struct Method {
    std::function<void(grpc::ServerContext*, Req*, grpc::ServerAsyncResponseWriter<Resp>*, void*)> request;
    std::function<void(UnaryCall&)> handle;
    Open open = Open::kNever;
    bool cancellable = false;
  };

  static void Listen(Impl& impl, std::shared_ptr<const Method> method) {
    auto* c = new UnaryCall(impl, std::move(method));
    c->ctx_.AsyncNotifyWhenDone(Posted(c->done_));
    c->method_->request(&c->ctx_, &c->request_, &c->writer_, Posted(c->arrived_));
  }

  Req& request() { return request_; }
  Resp& response() { return response_; }
  const grpc::ServerContext& context() const { return ctx_; }
  const std::shared_ptr<CancelToken>& cancel() const { return cancel_; }

  // Answers the call: the response with OK, the status alone otherwise.
  // Once, from any thread; the call may be gone when it returns.
  void Finish(const grpc::Status& status) {
    if (status.ok()) {
      writer_.Finish(response_, status, Posted(finished_));
    } else {
      writer_.FinishWithError(status, Posted(finished_));
    }
    Release();
  }

  void OnEvent(Event event, bool ok) override {
    switch (event) {
      case kArrived: {
        if (!ok) {  // the server is shutting down: no call came
          delete this;
          return;
        }
        Listen(impl_, method_);
        const grpc::Status auth = impl_.Authorize(ctx_, method_->open);
        if (!auth.ok()) {
          Finish(auth);
        } else {
          method_->handle(*this);  // Finishes now or later; `this` may be gone
        }
        return;
      }
      case kDone:
        if (cancel_ && ctx_.IsCancelled()) cancel_->Cancel();
        break;
      case kFinished:
        break;
      case kRead:
      case kWritten:
        return;  // never started on a unary call
    }
    Release();
  }

 private:
  UnaryCall(Impl& impl, std::shared_ptr<const Method> method)
      : impl_(impl),
        method_(std::move(method)),
        cancel_(method_->cancellable ? std::make_shared<CancelToken>() : nullptr) {
    impl_.Born();
  }
  ~UnaryCall() override { impl_.Died(); }

  Impl& impl_;
  const std::shared_ptr<const Method> method_;
  const std::shared_ptr<CancelToken> cancel_;
  grpc::ServerContext ctx_;
  Req request_;
  Resp response_;
  grpc::ServerAsyncResponseWriter<Resp> writer_{&ctx_};
  // Deletes the call after the last of three: Finish has returned (it
  // serializes the response on its thread, often an engine worker's), and
  // kFinished and kDone have come back. Counting Finish's return, rather than
  // relying on gRPC's queue to order it before kFinished, also shows that
  // order to ThreadSanitizer (gRPC is not built with it).
  void Release() {
    if (back_.fetch_add(1, std::memory_order_acq_rel) == 2) delete this;
  }

  std::atomic<int> back_{0};
  Tag arrived_{this, kArrived};
  Tag finished_{this, kFinished};
  Tag done_{this, kDone};
};

template <typename Req, typename Resp, typename Svc, typename RequestFn, typename Handle>
void GrpcServer::Impl::ServeAsync(Svc& svc, RequestFn request, Open open, bool cancellable, Handle handle) {
  using Call = UnaryCall<Req, Resp>;
  auto m = std::make_shared<typename Call::Method>();
  grpc::ServerCompletionQueue* q = cq.get();
  m->request = [&svc, request, q](grpc::ServerContext* c, Req* r, grpc::ServerAsyncResponseWriter<Resp>* w,
                                   void* tag) { (svc.*request)(c, r, w, q, q, tag); };
  m->handle = std::move(handle);
  m->open = open;
  m->cancellable = cancellable;
  Call::Listen(*this, std::move(m));
}

template <typename Req, typename Resp, typename Svc, typename RequestFn, typename Body>
void GrpcServer::Impl::Serve(Svc& svc, RequestFn request, Open open, Body body) {
  ServeAsync<Req, Resp>(svc, request, open, /*cancellable=*/false,
                        [body = std::move(body)](UnaryCall<Req, Resp>& call) {
                          call.Finish(body(call.request(), call.response()));
                        });
}

// One ModelStreamInfer call. Reads requests while fewer than
// max_stream_in_flight of its own are unanswered, writes answers in
// completion order (one write at a time), and finishes once the client has
// stopped sending and every answer is written. While the server stops, what
// still arrives is answered UNAVAILABLE; a stream whose client keeps it open
// is ended (UNAVAILABLE) once it has been quiet for kStreamQuiet, so an idle
// client does not hold up the server's exit. A message that reaches a
// stream after it has ended gets no answer of its own; the client sees the
// stream end UNAVAILABLE.
// Deletes itself once its Finish and the call's end have come back and no
// read is pending; no engine callback can reach it then (Finish waits for
// in_flight == 0).
class GrpcServer::Impl::Stream final : public AsyncCall {
 public:
  static void Listen(Impl& impl) {
    auto* s = new Stream(impl);
    s->ctx_.AsyncNotifyWhenDone(Posted(s->done_tag_));
    impl.service.RequestModelStreamInfer(&s->ctx_, &s->stream_, impl.cq.get(), impl.cq.get(), Posted(s->arrived_tag_));
  }

  void OnEvent(Event event, bool ok) override {
    switch (event) {
      case kArrived:
        if (!ok) {
          delete this;
          return;
        }
        Listen(impl_);
        Begin();
        return;
      case kRead:
        OnReadDone(ok);
        return;
      case kWritten:
        OnWriteDone(ok);
        return;
      case kFinished: {
        std::unique_lock lock(mu_);
        finish_back_ = true;
        MaybeDeleteLocked(lock);
        return;
      }
      case kDone: {
        if (ctx_.IsCancelled()) OnCancel();
        std::unique_lock lock(mu_);
        done_back_ = true;
        MaybeDeleteLocked(lock);
        return;
      }
    }
  }

  // The server is stopping: requests still arriving are answered UNAVAILABLE;
  // the stream ends once the client has stopped sending and every answer is
  // written, or at EndIfQuiet.
  void Stop() {
    std::unique_lock lock(mu_);
    stopping_ = true;
    stop_at_ = std::chrono::steady_clock::now();
    MaybeFinishLocked(lock);
  }

  // While stopping: ends the stream (UNAVAILABLE) when every answer is
  // written and nothing has arrived for `quiet` since Stop or the last read,
  // i.e. when the client keeps an idle stream open. Requests the client sent
  // before it saw the server stop have had `quiet` to arrive and be answered.
  void EndIfQuiet(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::duration quiet) {
    std::unique_lock lock(mu_);
    if (!stopping_ || finished_ || in_flight_ > 0 || writing_ || now - std::max(stop_at_, last_read_) < quiet) return;
    FinishLocked(lock, grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping; send the request again later"));
  }

 private:
  explicit Stream(Impl& impl) : impl_(impl) { impl_.Born(); }
  ~Stream() override { impl_.Died(); }

  // A call arrived: authorize it, register it, and read its first request.
  // streams_mu is never taken under mu_ (Stop takes them the other way).
  // Until the first read is posted, reading_ (true from the start) keeps a
  // cancellation that comes meanwhile from deleting the call.
  void Begin() {
    call_deadline_ = ctx_.deadline();
    grpc::Status end = impl_.Authorize(ctx_);
    if (end.ok()) {
      std::lock_guard streams_lock(impl_.streams_mu);
      if (impl_.stopping) {
        end = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping");
      } else {
        impl_.streams.insert(this);
        registered_ = true;
      }
    }
    std::unique_lock lock(mu_);
    if (!end.ok() && !finished_) {
      read_closed_ = true;
      FinishLocked(lock, end);
      lock.lock();
    }
    if (finished_) {  // refused, or cancelled meanwhile
      reading_ = false;
      MaybeDeleteLocked(lock);
      return;
    }
    stream_.Read(&incoming_, Posted(read_tag_));
  }

  void OnReadDone(bool ok) {
    std::unique_lock lock(mu_);
    reading_ = false;
    if (!ok || finished_) {  // after Finish nothing more may be written
      read_closed_ = true;
      MaybeFinishLocked(lock);
      if (lock.owns_lock()) MaybeDeleteLocked(lock);
      return;
    }
    last_read_ = std::chrono::steady_clock::now();
    auto req = std::make_shared<ModelInferRequest>();
    req->Swap(&incoming_);
    ++in_flight_;
    const bool stopping = stopping_;
    lock.unlock();
    auto resp = std::make_shared<ModelStreamInferResponse>();
    auto answer = [this, resp, req](grpc::Status s) {
      if (!s.ok()) {
        resp->Clear();
        resp->set_error_message(absl::StrCat(StatusCodeName(static_cast<StatusCode>(s.error_code())), ": ", s.error_message()));
        resp->mutable_infer_response()->set_id(req->id());
        resp->mutable_infer_response()->set_model_name(req->model_name());
      }
      Answer(resp);
    };
    if (stopping) {
      // Sent before the client saw the server stop: answered, not dropped.
      answer(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping; send the request again later"));
    } else {
      impl_.Submit(req, resp->mutable_infer_response(), std::move(answer), call_deadline_, cancel_);
    }
    lock.lock();
    ReadMoreLocked();
  }

  void OnWriteDone(bool ok) {
    std::unique_lock lock(mu_);
    outbox_.pop_front();
    if (!ok && !broken_) {
      // The client is gone: what is in flight is cancelled; its answers still come, and are dropped.
      broken_ = true;
      cancel_->Cancel();
    }
    if (!outbox_.empty() && !broken_) {
      stream_.Write(*outbox_.front(), Posted(write_tag_));
      ReadMoreLocked();  // an answer left the outbox
      return;
    }
    if (broken_) outbox_.clear();
    writing_ = false;
    ReadMoreLocked();
    MaybeFinishLocked(lock);
  }

  void OnCancel() {
    cancel_->Cancel();  // nobody waits for the answers in flight any more
    std::unique_lock lock(mu_);
    broken_ = true;
    read_closed_ = true;
    MaybeFinishLocked(lock);
  }

  void Answer(std::shared_ptr<ModelStreamInferResponse> resp) {
    std::unique_lock lock(mu_);
    --in_flight_;
    if (!broken_) {
      outbox_.push_back(std::move(resp));
      if (!writing_) {
        writing_ = true;
        stream_.Write(*outbox_.front(), Posted(write_tag_));
      }
    }
    ReadMoreLocked();
    MaybeFinishLocked(lock);
  }

  // Reads the next request while fewer than max_stream_in_flight of the
  // stream's requests are unanswered or answered and not yet written: a
  // client that sends and does not read stops being read (HTTP/2 flow control
  // then holds it), instead of its answers piling up here.
  void ReadMoreLocked() {
    if (!reading_ && !read_closed_ && !finished_ &&
        in_flight_ + outbox_.size() < static_cast<size_t>(impl_.options.max_stream_in_flight)) {
      reading_ = true;
      stream_.Read(&incoming_, Posted(read_tag_));
    }
  }

  // Finishes once nothing more can be written.
  void MaybeFinishLocked(std::unique_lock<std::mutex>& lock) {
    if (finished_ || in_flight_ > 0 || writing_ || !read_closed_) return;
    FinishLocked(lock, grpc::Status::OK);
  }

  // Ends the call with `status`; no write may be pending. A read still
  // pending comes back not ok. Leaves `lock` unlocked: the call may be gone
  // as soon as Finish is called.
  void FinishLocked(std::unique_lock<std::mutex>& lock, const grpc::Status& status) {
    finished_ = true;
    stream_.Finish(status, Posted(finish_tag_));
    lock.unlock();
  }

  // Deletes the call once gRPC holds none of its tags (once: `gone_`).
  void MaybeDeleteLocked(std::unique_lock<std::mutex>& lock) {
    if (gone_ || !finish_back_ || !done_back_ || reading_) return;
    gone_ = true;
    lock.unlock();
    impl_.Delete(this, impl_.streams, registered_);
  }

  Impl& impl_;
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<ModelStreamInferResponse, ModelInferRequest> stream_{&ctx_};
  // The stream's gRPC deadline (max() = none): no request on it may outlive it.
  std::chrono::system_clock::time_point call_deadline_;
  // Cancels the stream's requests in flight once its client is gone.
  const std::shared_ptr<CancelToken> cancel_ = std::make_shared<CancelToken>();
  bool registered_ = false;
  std::mutex mu_;
  ModelInferRequest incoming_;  // the read in progress
  std::deque<std::shared_ptr<ModelStreamInferResponse>> outbox_;
  size_t in_flight_ = 0;
  bool reading_ = true;  // a read is pending, or the first is yet to be posted (Begin)
  bool writing_ = false;
  bool read_closed_ = false;
  bool stopping_ = false;
  bool broken_ = false;
  bool finished_ = false;     // Finish called; a read still pending then completes not ok
  bool finish_back_ = false;  // Finish's tag came back
  bool done_back_ = false;    // the call's end came back
  bool gone_ = false;         // being deleted: waits for streams_mu to leave the list
  std::chrono::steady_clock::time_point stop_at_;    // when Stop was called
  std::chrono::steady_clock::time_point last_read_;  // when the last request arrived
  Tag arrived_tag_{this, kArrived};
  Tag read_tag_{this, kRead};
  Tag write_tag_{this, kWritten};
  Tag finish_tag_{this, kFinished};
  Tag done_tag_{this, kDone};
};

// One grpc.health.v1.Health/Watch call: the service's status at once, then
// NOT_SERVING when the server stops, after which the call ends UNAVAILABLE
// (so a watcher does not hold up the server's exit). A service the server
// does not know is SERVICE_UNKNOWN, and the call stays open until then, as
// the protocol says. Deletes itself once gRPC holds none of its tags.
class GrpcServer::Impl::HealthWatch final : public AsyncCall {
 public:
  static void Listen(Impl& impl) {
    auto* w = new HealthWatch(impl);
    w->ctx_.AsyncNotifyWhenDone(Posted(w->done_tag_));
    impl.health.RequestWatch(&w->ctx_, &w->request_, &w->writer_, impl.cq.get(), impl.cq.get(), Posted(w->arrived_tag_));
  }

  void OnEvent(Event event, bool ok) override {
    if (event == kArrived) {
      if (!ok) {
        delete this;
        return;
      }
      Listen(impl_);
      Begin();
      return;
    }
    std::unique_lock lock(mu_);
    switch (event) {
      case kWritten:
        writing_ = false;
        if (!ok && !end_) end_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        break;
      case kFinished:
        finish_back_ = true;
        break;
      case kDone:
        done_back_ = true;
        if (ctx_.IsCancelled() && !end_) end_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        break;
      case kArrived:
      case kRead:
        return;
    }
    AdvanceLocked(lock);
  }

  // The server is stopping: NOT_SERVING, then the end of the call.
  void Stop() {
    std::unique_lock lock(mu_);
    stop_ = true;
    AdvanceLocked(lock);
  }

 private:
  explicit HealthWatch(Impl& impl) : impl_(impl) { impl_.Born(); }
  ~HealthWatch() override { impl_.Died(); }

  // As Stream::Begin: streams_mu first, then mu_.
  void Begin() {
    const grpc::Status auth = impl_.Authorize(ctx_, Open::kAlways);
    std::optional<HealthCheckResponse::ServingStatus> status;
    bool stopping = false;
    if (auth.ok()) {
      std::lock_guard streams_lock(impl_.streams_mu);
      impl_.watches.insert(this);
      registered_ = true;
      status = impl_.HealthOf(request_.service());
      stopping = impl_.stopping;
    }
    std::unique_lock lock(mu_);
    started_ = true;
    known_ = status.has_value();
    if (stopping) stop_ = true;
    if (!auth.ok()) {
      end_ = auth;
    } else if (!end_) {
      Write(status.value_or(HealthCheckResponse::SERVICE_UNKNOWN));
    }
    AdvanceLocked(lock);
  }

  void Write(HealthCheckResponse::ServingStatus status) {
    response_.set_status(status);
    last_ = status;
    writing_ = true;
    writer_.Write(response_, Posted(write_tag_));
  }

  // Writes NOT_SERVING once stopping, finishes once there is an end, and
  // deletes the call once gRPC holds none of its tags.
  void AdvanceLocked(std::unique_lock<std::mutex>& lock) {
    if (!started_ || writing_) return;
    if (!finished_) {
      if (stop_ && !end_ && known_ && last_ != HealthCheckResponse::NOT_SERVING) {
        Write(HealthCheckResponse::NOT_SERVING);
        return;
      }
      if (stop_ && !end_) end_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping");
      if (!end_) return;
      finished_ = true;
      writer_.Finish(*end_, Posted(finish_tag_));
      return;
    }
    // Once: Stop (holding streams_mu) may come here while a poller that got
    // here first waits for streams_mu to take the call off the list.
    if (gone_ || !finish_back_ || !done_back_) return;
    gone_ = true;
    lock.unlock();
    impl_.Delete(this, impl_.watches, registered_);
  }

  Impl& impl_;
  grpc::ServerContext ctx_;
  HealthCheckRequest request_;
  HealthCheckResponse response_;
  grpc::ServerAsyncWriter<HealthCheckResponse> writer_{&ctx_};
  std::mutex mu_;
  bool registered_ = false;
  bool started_ = false;  // Begin has run: writes and the end may start
  bool known_ = false;    // the service is one the server has
  bool writing_ = false;
  bool stop_ = false;
  bool finished_ = false;
  bool finish_back_ = false;
  bool done_back_ = false;
  bool gone_ = false;  // being deleted
  HealthCheckResponse::ServingStatus last_ = HealthCheckResponse::UNKNOWN;  // the last status written
  std::optional<grpc::Status> end_;  // how the call is to end, once it is to
  Tag arrived_tag_{this, kArrived};
  Tag write_tag_{this, kWritten};
  Tag finish_tag_{this, kFinished};
  Tag done_tag_{this, kDone};
};

void GrpcServer::Impl::ServeAll() {
  using S = inference::GRPCInferenceService::AsyncService;
  namespace inf = inference;
  Serve<inf::ServerLiveRequest, inf::ServerLiveResponse>(
      service, &S::RequestServerLive, Open::kOnLoopback,
      [](const inf::ServerLiveRequest&, inf::ServerLiveResponse& resp) {
        resp.set_live(true);
        return grpc::Status::OK;
      });
  Serve<inf::ServerReadyRequest, inf::ServerReadyResponse>(
      service, &S::RequestServerReady, Open::kOnLoopback,
      [](const inf::ServerReadyRequest&, inf::ServerReadyResponse& resp) {
        resp.set_ready(true);
        return grpc::Status::OK;
      });
  Serve<inf::ModelReadyRequest, inf::ModelReadyResponse>(
      service, &S::RequestModelReady, Open::kNever, [this](const inf::ModelReadyRequest& req, inf::ModelReadyResponse& resp) {
        absl::StatusOr<ServedEngine::Model> m = ModelOf(req.name(), req.version());
        if (!m.ok() && served.explicit_control() && served.Configured(req.name()) &&
            (req.version().empty() || req.version() == "1")) {
          resp.set_ready(false);  // a model of the config, not loaded now
          return grpc::Status::OK;
        }
        if (!m.ok()) return Invalid(std::string(m.status().message()));
        resp.set_ready(true);
        return grpc::Status::OK;
      });
  Serve<inf::ServerMetadataRequest, inf::ServerMetadataResponse>(
      service, &S::RequestServerMetadata, Open::kNever,
      [this](const inf::ServerMetadataRequest&, inf::ServerMetadataResponse& resp) {
        resp.set_name("baton");
        resp.set_version(kVersion);
        resp.add_extensions("classification");
        resp.add_extensions("statistics");
        if (options.shared_memory) resp.add_extensions("system_shared_memory");
        return grpc::Status::OK;
      });
  Serve<inf::ModelMetadataRequest, inf::ModelMetadataResponse>(
      service, &S::RequestModelMetadata, Open::kNever,
      [this](const inf::ModelMetadataRequest& req, inf::ModelMetadataResponse& resp) {
        absl::StatusOr<ServedEngine::Model> m = ModelOf(req.name(), req.version());
        if (!m.ok()) return Invalid(std::string(m.status().message()));
        resp.set_name(m->info->name);
        resp.add_versions("1");
        resp.set_platform("onnxruntime_onnx");
        for (const TensorInfo& t : m->info->inputs) FillTensorMetadata(t, resp.add_inputs());
        for (const TensorInfo& t : m->info->outputs) FillTensorMetadata(t, resp.add_outputs());
        return grpc::Status::OK;
      });
  Serve<inf::ModelConfigRequest, inf::ModelConfigResponse>(
      service, &S::RequestModelConfig, Open::kNever,
      [this](const inf::ModelConfigRequest& req, inf::ModelConfigResponse& resp) {
        absl::StatusOr<ServedEngine::Model> m = ModelOf(req.name(), req.version());
        if (!m.ok()) return Invalid(std::string(m.status().message()));
        inference::ModelConfig& c = *resp.mutable_config();
        c.set_name(m->info->name);
        c.set_platform("onnxruntime_onnx");
        c.set_backend("onnxruntime");
        c.set_max_batch_size(0);
        auto datatype = [](const TensorInfo& t) {
          inference::DataType d = inference::TYPE_INVALID;
          inference::DataType_Parse(ConfigDatatype(t.elem_type).value_or("TYPE_INVALID"), &d);
          return d;
        };
        for (const TensorInfo& t : m->info->inputs) {
          inference::ModelInput& in = *c.add_input();
          in.set_name(t.name);
          in.set_data_type(datatype(t));
          for (int64_t d : t.shape) in.add_dims(d);
        }
        for (const TensorInfo& t : m->info->outputs) {
          inference::ModelOutput& out = *c.add_output();
          out.set_name(t.name);
          out.set_data_type(datatype(t));
          for (int64_t d : t.shape) out.add_dims(d);
        }
        return grpc::Status::OK;
      });
  // The request is the call's, alive until Finish; its raw bytes are moved
  // into the input tensors, which may outlive the answer on a PU still running.
  ServeAsync<ModelInferRequest, ModelInferResponse>(
      service, &S::RequestModelInfer, Open::kNever, /*cancellable=*/true,
      [this](UnaryCall<ModelInferRequest, ModelInferResponse>& call) {
        auto owned = std::make_shared<ModelInferRequest>();
        owned->Swap(&call.request());
        Submit(
            std::move(owned), &call.response(), [&call](grpc::Status s) { call.Finish(s); },
            call.context().deadline(), call.cancel());
      });
  Serve<inf::SystemSharedMemoryStatusRequest, inf::SystemSharedMemoryStatusResponse>(
      service, &S::RequestSystemSharedMemoryStatus, Open::kNever,
      [this](const inf::SystemSharedMemoryStatusRequest& req, inf::SystemSharedMemoryStatusResponse& resp) {
        return ShmCall([&](SharedMemoryRegistry& shm) -> absl::Status {
          BATON_ASSIGN_OR_RETURN(std::vector<SharedMemoryRegionInfo> regions, shm.Status(req.name()));
          for (const SharedMemoryRegionInfo& r : regions) {
            auto& out = (*resp.mutable_regions())[r.name];
            out.set_name(r.name);
            out.set_key(r.key);
            out.set_offset(r.offset);
            out.set_byte_size(r.byte_size);
          }
          return absl::OkStatus();
        });
      });
  Serve<inf::SystemSharedMemoryRegisterRequest, inf::SystemSharedMemoryRegisterResponse>(
      service, &S::RequestSystemSharedMemoryRegister, Open::kNever,
      [this](const inf::SystemSharedMemoryRegisterRequest& req, inf::SystemSharedMemoryRegisterResponse&) {
        return ShmCall([&](SharedMemoryRegistry& shm) {
          return shm.Register(req.name(), req.key(), req.offset(), req.byte_size());
        });
      });
  Serve<inf::SystemSharedMemoryUnregisterRequest, inf::SystemSharedMemoryUnregisterResponse>(
      service, &S::RequestSystemSharedMemoryUnregister, Open::kNever,
      [this](const inf::SystemSharedMemoryUnregisterRequest& req, inf::SystemSharedMemoryUnregisterResponse&) {
        return ShmCall([&](SharedMemoryRegistry& shm) { return shm.Unregister(req.name()); });
      });
  Serve<inf::ModelStatisticsRequest, inf::ModelStatisticsResponse>(
      service, &S::RequestModelStatistics, Open::kNever,
      [this](const inf::ModelStatisticsRequest& req, inf::ModelStatisticsResponse& resp) {
        if (!req.name().empty()) {
          absl::StatusOr<ServedEngine::Model> m = ModelOf(req.name(), req.version());
          if (!m.ok()) return Invalid(std::string(m.status().message()));
        }
        auto fill = [](const DurationStat& d, inference::StatisticDuration* out) {
          out->set_count(d.count);
          out->set_ns(d.ns);
        };
        for (const KServeModelStatistics& k : KServeStatistics(served.Stats(), req.name())) {
          inference::ModelStatistics* out = resp.add_model_stats();
          out->set_name(k.name);
          out->set_version("1");
          out->set_last_inference(k.last_inference_ms);
          out->set_inference_count(k.inference_count);
          out->set_execution_count(k.execution_count);
          inference::InferStatistics* s = out->mutable_inference_stats();
          fill(k.success, s->mutable_success());
          fill(k.fail, s->mutable_fail());
          fill(k.queue, s->mutable_queue());
          fill(k.compute_infer, s->mutable_compute_infer());
          for (const KServeModelStatistics::Batch& b : k.batch_stats) {
            inference::InferBatchStatistics* batch = out->add_batch_stats();
            batch->set_batch_size(b.batch_size);
            fill(b.compute_infer, batch->mutable_compute_infer());
          }
        }
        return grpc::Status::OK;
      });
  // The model repository extension, read-only (kserve_json.h).
  Serve<inf::RepositoryIndexRequest, inf::RepositoryIndexResponse>(
      service, &S::RequestRepositoryIndex, Open::kNever,
      [this](const inf::RepositoryIndexRequest& req, inf::RepositoryIndexResponse& resp) {
        absl::StatusOr<std::vector<RepositoryModel>> index = serve::RepositoryIndex(served, req.repository_name(), req.ready());
        if (!index.ok()) return ToGrpc(index.status());
        for (const RepositoryModel& m : *index) {
          inference::RepositoryIndexResponse::ModelIndex* out = resp.add_models();
          out->set_name(m.name);
          out->set_version(m.version);
          out->set_state(m.state);
          out->set_reason(m.reason);
        }
        return grpc::Status::OK;
      });
  // A load or unload is answered once the new engine serves (on the model
  // loader's thread; opening one takes seconds), never on this thread.
  ServeAsync<inf::RepositoryModelLoadRequest, inf::RepositoryModelLoadResponse>(
      service, &S::RequestRepositoryModelLoad, Open::kNever, /*cancellable=*/false,
      [this](UnaryCall<inf::RepositoryModelLoadRequest, inf::RepositoryModelLoadResponse>& call) {
        const inf::RepositoryModelLoadRequest& req = call.request();
        const absl::Status checked = CheckRepositoryLoad(req.repository_name(), req.model_name(), !req.parameters().empty());
        if (!checked.ok()) {
          call.Finish(ToGrpc(checked));
          return;
        }
        served.Load(req.model_name(), [&call](absl::Status s) { call.Finish(ToGrpc(s)); });
      });
  ServeAsync<inf::RepositoryModelUnloadRequest, inf::RepositoryModelUnloadResponse>(
      service, &S::RequestRepositoryModelUnload, Open::kNever, /*cancellable=*/false,
      [this](UnaryCall<inf::RepositoryModelUnloadRequest, inf::RepositoryModelUnloadResponse>& call) {
        const absl::Status checked = CheckRepository(call.request().repository_name());
        if (!checked.ok()) {
          call.Finish(ToGrpc(checked));
          return;
        }
        served.Unload(call.request().model_name(), [&call](absl::Status s) { call.Finish(ToGrpc(s)); });
      });
  Stream::Listen(*this);
  // The standard health service: Check answers NOT_FOUND for a service the
  // server does not know, as the protocol says.
  Serve<HealthCheckRequest, HealthCheckResponse>(
      health, &HealthService::RequestCheck, Open::kAlways,
      [this](const HealthCheckRequest& req, HealthCheckResponse& resp) {
        const std::optional<HealthCheckResponse::ServingStatus> s = HealthOf(req.service());
        if (!s) return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("unknown service '", req.service(), "'"));
        resp.set_status(*s);
        return grpc::Status::OK;
      });
  HealthWatch::Listen(*this);
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() {
  Stop();
  if (impl_ && impl_->abandoned) (void)impl_.release();  // its threads may still reach it
}

int GrpcServer::port() const { return impl_->port; }

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(Engine& engine, GrpcOptions options) {
  auto served = std::make_unique<ServedEngine>(engine);
  ServedEngine& s = *served;
  return Start(s, std::move(options), std::move(served));
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(ServedEngine& served, GrpcOptions options) {
  return Start(served, std::move(options), nullptr);
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(ServedEngine& served, GrpcOptions options,
                                                              std::unique_ptr<ServedEngine> owned) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc: port ", options.port, " is not in 0..65535"));
  }
  if (options.max_request_bytes < 1024 || options.max_request_bytes > (size_t{2} << 30) - 1) {
    return absl::InvalidArgumentError("--max-request-mb must be in 1..2047 for gRPC");
  }
  if (options.max_streams_per_connection < 1 || options.max_streams_per_connection > 10000) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc-max-streams must be in 1..10000, got ",
                                                   options.max_streams_per_connection));
  }
  for (auto [value, name] : {std::pair{options.keepalive_time, "keepalive_time"},
                             std::pair{options.keepalive_timeout, "keepalive_timeout"}}) {
    if (value < std::chrono::seconds(1) || value > std::chrono::hours(1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gRPC ", name, " must be 1 s..1 h, got ", value.count(), " ms"));
    }
  }
  if (options.memory_quota_bytes != 0 &&
      (options.memory_quota_bytes < options.max_request_bytes || options.memory_quota_bytes > (size_t{1} << 40))) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc-memory-mb must be at least --max-request-mb (",
                                                   options.max_request_bytes >> 20, ") and at most 1048576, got ",
                                                   options.memory_quota_bytes >> 20));
  }
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc-threads must be in 1..64, got ", options.threads));
  }
  if (options.max_stream_in_flight < 1 || options.max_stream_in_flight > 10000) {
    return absl::InvalidArgumentError(absl::StrCat("--grpc-stream-in-flight must be in 1..10000, got ",
                                                   options.max_stream_in_flight));
  }
  if (options.unix_path.empty()) {
    BATON_RETURN_IF_ERROR(CheckExposure("gRPC", options.host, options.tls_cert, options.tls_key, options.token));
  } else {
    BATON_RETURN_IF_ERROR(CheckExposure("gRPC", "127.0.0.1", options.tls_cert, options.tls_key, options.token));
    BATON_RETURN_IF_ERROR(CheckUnixSocketPath(options.unix_path));
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    for (auto [path, out, marker] : {std::tuple{&options.tls_cert, &pair.cert_chain, "-----BEGIN CERTIFICATE-----"},
                                     std::tuple{&options.tls_key, &pair.private_key, "PRIVATE KEY-----"}}) {
      absl::StatusOr<std::string> pem = ReadRegularFile(*path, 1 << 20, "TLS file");
      if (!pem.ok()) return pem.status();
      if (pem->find(marker) == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", *path, "' is not a PEM ", marker[5] == 'B' ? "certificate" : "private key",
                         " (no '", marker, "'); give --tls-cert a certificate chain and --tls-key its key"));
      }
      *out = *std::move(pem);
    }
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    credentials = grpc::SslServerCredentials(ssl);
  }
  auto impl = std::make_unique<Impl>(std::move(owned), served, std::move(options));
  const GrpcOptions& o = impl->options;
  grpc::ServerBuilder builder;
  // baton's own health service (Impl::ServeAll), not gRPC's: gRPC's runs on
  // the callback API, whose threads would then poll beside the server's own.
  builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
  builder.SetMaxReceiveMessageSize(static_cast<int>(o.max_request_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(std::min<size_t>(o.max_request_bytes * 4, (size_t{2} << 30) - 1)));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, o.max_streams_per_connection);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(o.keepalive_time.count()));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(o.keepalive_timeout.count()));
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a second server on the port must fail, not share
  // gRPC's memory for reading and holding messages, over every connection.
  // Past it, gRPC answers new calls RESOURCE_EXHAUSTED instead of reading them.
  grpc::ResourceQuota quota("baton-serve");
  quota.Resize(GrpcMemoryQuota(o));
  builder.SetResourceQuota(quota);
  const std::string host = o.host.find(':') != std::string::npos ? absl::StrCat("[", o.host, "]") : o.host;
  builder.AddListeningPort(o.unix_path.empty() ? absl::StrCat(host, ":", o.port) : absl::StrCat("unix:", o.unix_path),
                           credentials, &impl->port);
  builder.RegisterService(&impl->service);
  builder.RegisterService(&impl->health);
  impl->cq = builder.AddCompletionQueue();
  impl->server = builder.BuildAndStart();
  if (!impl->server || (impl->port == 0 && o.unix_path.empty())) {
    if (impl->server) impl->server->Shutdown();
    impl->cq->Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (impl->cq->Next(&tag, &ok)) {
    }
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ",
                                               o.unix_path.empty() ? absl::StrCat(o.host, ":", o.port)
                                                                   : absl::StrCat("unix:", o.unix_path),
                                               " (in use, or not an address of this machine",
                                               o.tls_cert.empty() ? "" : ", or gRPC refused the TLS files",
                                               "); pick another with --grpc"));
  }
  impl->ServeAll();
  for (int i = 0; i < o.threads; ++i) impl->pollers.emplace_back([p = impl.get()] { p->Poll(); });
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
}

void GrpcServer::Stop() {
  if (!impl_ || !impl_->server) return;
  Impl& impl = *impl_;
  {
    std::lock_guard lock(impl.streams_mu);
    if (impl.stopped) return;
    impl.stopped = true;
    impl.stopping = true;
  }
  // Health watches see NOT_SERVING and end. Streams answer what still
  // arrives UNAVAILABLE and end once their clients stop sending, or once
  // quiet for kStreamQuiet (a helper thread looks while Shutdown waits);
  // Shutdown stops new calls and waits for the ones in flight (unary calls
  // end when the engine answers), cancelling what is left after stop_grace.
  {
    std::lock_guard lock(impl.streams_mu);
    const std::vector<Impl::HealthWatch*> watching(impl.watches.begin(), impl.watches.end());
    for (Impl::HealthWatch* w : watching) w->Stop();
    const std::vector<Impl::Stream*> live(impl.streams.begin(), impl.streams.end());
    for (Impl::Stream* s : live) s->Stop();
  }
  std::mutex quiet_mu;
  std::condition_variable quiet_cv;
  bool shut = false;
  std::thread quiet([&] {
    NameThisThread("stream-stop");
    std::unique_lock wait_lock(quiet_mu);
    while (!quiet_cv.wait_for(wait_lock, kStreamQuietScan, [&] { return shut; })) {
      std::lock_guard lock(impl.streams_mu);
      const std::vector<Impl::Stream*> live(impl.streams.begin(), impl.streams.end());
      const auto now = std::chrono::steady_clock::now();
      for (Impl::Stream* s : live) s->EndIfQuiet(now, kStreamQuiet);
    }
  });
  impl.server->Shutdown(std::chrono::system_clock::now() + impl.options.stop_grace);
  {
    std::lock_guard lock(quiet_mu);
    shut = true;
  }
  quiet_cv.notify_all();
  quiet.join();
  impl.server->Wait();
  // The calls gRPC cancelled are finished when the engine answers them; the
  // completion queue may be shut down only once none is left.
  bool drained = false;
  {
    std::unique_lock lock(impl.live_mu);
    drained = impl.live_cv.wait_for(lock, kEngineAnswerGrace, [&] { return impl.live == 0; });
  }
  if (!drained) {
    std::fprintf(stderr,
                 "baton serve: warning: gRPC calls still wait for the engine %lld s after the server stopped; "
                 "leaving them to the process's exit\n",
                 static_cast<long long>(kEngineAnswerGrace.count()));
    for (std::thread& t : impl.pollers) t.detach();
    impl.abandoned = true;
    return;
  }
  impl.cq->Shutdown();
  for (std::thread& t : impl.pollers) t.join();
  impl.pollers.clear();
}

}  // namespace baton::serve
