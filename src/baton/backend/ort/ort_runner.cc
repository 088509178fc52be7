#include "baton/backend/ort/ort_runner.h"

#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_session_options_config_keys.h"

namespace baton::ort {

// baton's ElemType codes are ONNX TensorProto codes; so are ORT's. Check the
// ones we rely on so that a cast between them is a no-op by construction.
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT == dtype::kFloat);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 == dtype::kUint8);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 == dtype::kInt8);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16 == dtype::kUint16);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 == dtype::kInt16);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 == dtype::kInt32);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 == dtype::kInt64);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING == dtype::kString);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL == dtype::kBool);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 == dtype::kFloat16);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE == dtype::kDouble);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32 == dtype::kUint32);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64 == dtype::kUint64);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64 == dtype::kComplex64);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128 == dtype::kComplex128);
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 == dtype::kBfloat16);
static_assert(ORT_ENABLE_ALL == kGraphOptAll && ORT_DISABLE_ALL == kGraphOptDisableAll &&
              ORT_ENABLE_BASIC == kGraphOptBasic && ORT_ENABLE_EXTENDED == kGraphOptExtended &&
              ORT_ENABLE_LAYOUT == kGraphOptLayout);

static_assert(ORT_LOGGING_LEVEL_VERBOSE == static_cast<int>(LogSeverity::kVerbose) &&
              ORT_LOGGING_LEVEL_INFO == static_cast<int>(LogSeverity::kInfo) &&
              ORT_LOGGING_LEVEL_WARNING == static_cast<int>(LogSeverity::kWarning) &&
              ORT_LOGGING_LEVEL_ERROR == static_cast<int>(LogSeverity::kError) &&
              ORT_LOGGING_LEVEL_FATAL == static_cast<int>(LogSeverity::kFatal));

namespace {

// What the user can do about each kind of ORT error.
absl::string_view HintFor(OrtErrorCode code) {
  switch (code) {
    case ORT_INVALID_PROTOBUF:
    case ORT_NO_MODEL: return "the bytes are not a loadable ONNX ModelProto; check the file with `baton inspect`";
    case ORT_INVALID_GRAPH:
      return "ONNX Runtime's graph checks rejected the model (types, shapes or opset); "
             "run `baton inspect` and check the opset imports";
    case ORT_NOT_IMPLEMENTED:
      return "ONNX Runtime's CPU kernels do not implement this op/type combination; "
             "use another opset or element type, or place the node on another PU";
    case ORT_INVALID_ARGUMENT: return "check the input names, element types, shapes and values against `baton inspect`";
    case ORT_RUNTIME_EXCEPTION:
      return "a kernel failed while running; this usually means input values or shapes the model "
             "does not accept (e.g. an index out of range)";
    case ORT_NO_SUCHFILE:
    case ORT_NOT_FOUND: return "a file the model refers to is missing";
    default: return "see the ONNX Runtime message above";
  }
}

absl::StatusCode CodeFor(OrtErrorCode code) {
  switch (code) {
    case ORT_INVALID_ARGUMENT:
    case ORT_INVALID_PROTOBUF:
    case ORT_INVALID_GRAPH:
    case ORT_NO_MODEL: return absl::StatusCode::kInvalidArgument;
    case ORT_NOT_IMPLEMENTED: return absl::StatusCode::kUnimplemented;
    case ORT_NO_SUCHFILE:
    case ORT_NOT_FOUND: return absl::StatusCode::kNotFound;
    default: return absl::StatusCode::kInternal;
  }
}

// The one place where exceptions thrown by ONNX Runtime's C++ API (and any
// other exception escaping it, e.g. std::bad_alloc) become an absl::Status.
// `what` says what baton was doing ("create a session", "run").
template <typename F>
absl::Status CallOrt(absl::string_view model, absl::string_view what, F&& f) noexcept {
  try {
    f();
    return absl::OkStatus();
  } catch (const Ort::Exception& e) {
    return absl::Status(CodeFor(e.GetOrtErrorCode()),
                        absl::StrCat("model '", model, "': ONNX Runtime failed to ", what, ": ", e.what(),
                                     " (hint: ", HintFor(e.GetOrtErrorCode()), ")"));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("model '", model, "': out of memory while trying to ", what,
                                                     " (hint: lower the batch or input sizes)"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model '", model, "': ONNX Runtime failed to ", what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(
        absl::StrCat("model '", model, "': ONNX Runtime failed to ", what, ": unknown exception"));
  }
}

struct EnvHolder {
  Ort::Env* env = nullptr;
  absl::Status status;
};

// The process-wide environment, created on first use. Deliberately leaked:
// sessions held by other static objects may outlive any static destructor
// order we could pick. ONNX Runtime keeps one environment per process, so its
// global thread pool (ConfigureGlobalThreadPool) is fixed when it is created.
std::mutex& EnvMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
int g_global_pool_threads = 0;      // guarded by EnvMutex()
const EnvHolder* g_env = nullptr;   // guarded by EnvMutex()

const EnvHolder& GlobalEnv() {
  std::lock_guard lock(EnvMutex());
  if (g_env == nullptr) {
    auto* h = new EnvHolder;
    h->status = CallOrt("<env>", "create the process-wide environment", [&] {
      if (g_global_pool_threads > 0) {
        Ort::ThreadingOptions threading;
        threading.SetGlobalIntraOpNumThreads(g_global_pool_threads);
        threading.SetGlobalInterOpNumThreads(1);
        threading.SetGlobalSpinControl(0);
        threading.SetGlobalDenormalAsZero();
        h->env = new Ort::Env(threading, ORT_LOGGING_LEVEL_WARNING, "baton");
      } else {
        h->env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "baton");
      }
    });
    g_env = h;
  }
  return *g_env;
}

// ElemTypeName as an absl::string_view, whatever string type core returns.
absl::string_view TypeName(ElemType t) {
  std::string_view name = ElemTypeName(t);
  return {name.data(), name.size()};
}

bool IsSupportedElemType(ElemType t) { return t == dtype::kString || ElemTypeSize(t).has_value(); }

std::string ShapeString(const std::vector<int64_t>& shape, bool rank_known) {
  if (!rank_known) return "[?...]";
  std::vector<std::string> dims;
  dims.reserve(shape.size());
  for (int64_t d : shape) dims.push_back(d < 0 ? "?" : absl::StrCat(d));
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

std::string Describe(const ValueInfo& info) {
  if (!info.is_tensor) return "a non-tensor value (sequence/map/optional)";
  return absl::StrCat(TypeName(info.elem_type), ShapeString(info.shape, info.rank_known));
}

// Reads the type of one session input/output. Throws Ort::Exception (callers
// run it inside CallOrt).
ValueInfo ReadValueInfo(std::string name, const Ort::TypeInfo& type_info) {
  ValueInfo info;
  info.name = std::move(name);
  if (type_info.GetONNXType() != ONNX_TYPE_TENSOR) {
    info.is_tensor = false;
    info.rank_known = false;
    return info;
  }
  auto tensor_info = type_info.GetTensorTypeAndShapeInfo();
  info.elem_type = static_cast<ElemType>(tensor_info.GetElementType());
  info.rank_known = Ort::GetApi().TensorTypeAndShape_HasShape(tensor_info);
  if (info.rank_known) {
    info.shape = tensor_info.GetShape();
    for (int64_t& d : info.shape) {
      if (d < 0) d = -1;
    }
  }
  return info;
}

// Number of elements of `shape`, or nullopt on a negative dim or overflow.
std::optional<int64_t> CheckedElementCount(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > INT64_MAX / d) return std::nullopt;
    n *= d;
  }
  return n;
}

}  // namespace

absl::Status ValidateSessionOptions(const SessionOptions& options) {
  if (options.global_thread_pool && (options.ort_default_threading || !options.pinned_cores.empty())) {
    return absl::InvalidArgumentError(
        "global_thread_pool is set together with ort_default_threading or pinned_cores; the global pool has its own "
        "threads (ConfigureGlobalThreadPool), so clear the other two");
  }
  if (options.ort_default_threading) {
    // ORT picks the thread counts (one per core); there is no budget to check
    // and nothing to pin the unknown number of workers to.
    if (!options.pinned_cores.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pinned_cores has ", options.pinned_cores.size(),
          " entries but ort_default_threading is set (ONNX Runtime chooses the thread count); "
          "clear pinned_cores or set explicit intra_op_threads instead"));
    }
  } else if (options.intra_op_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "intra_op_threads is ", options.intra_op_threads,
        "; it must be >= 1 (ONNX Runtime's 0 = 'all cores' is not allowed: give each session an explicit budget)"));
  }
  if (!options.ort_default_threading && options.inter_op_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("inter_op_threads is ", options.inter_op_threads, "; it must be >= 1"));
  }
  if (!options.pinned_cores.empty() && options.pinned_cores.size() != static_cast<size_t>(options.intra_op_threads)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pinned_cores has ", options.pinned_cores.size(), " entries but intra_op_threads is ", options.intra_op_threads,
        "; give one core per intra-op thread (entry 0 is the calling thread) or none"));
  }
  for (int core : options.pinned_cores) {
    if (core < 0) {
      return absl::InvalidArgumentError(absl::StrCat("pinned_cores holds ", core, "; core ids are >= 0"));
    }
  }
  if (options.log_severity < LogSeverity::kVerbose || options.log_severity > LogSeverity::kFatal) {
    return absl::InvalidArgumentError(
        absl::StrCat("log_severity is ", static_cast<int>(options.log_severity), "; use kVerbose..kFatal"));
  }
  switch (options.graph_optimization_level) {
    case kGraphOptDisableAll:
    case kGraphOptBasic:
    case kGraphOptExtended:
    case kGraphOptLayout:
    case kGraphOptAll: break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("graph_optimization_level is ", options.graph_optimization_level,
                       "; use one of 0 (disable all), 1 (basic), 2 (extended), 3 (layout), 99 (all)"));
  }
  return absl::OkStatus();
}

struct OrtRunner::Impl {
  // Declared before the session, so they outlive it (members die in reverse order).
  std::shared_ptr<const void> shared_initializers_owner;
  std::vector<Ort::Value> shared_initializers;
  Ort::Session session{nullptr};
  Ort::MemoryInfo cpu_memory{nullptr};
  absl::flat_hash_map<std::string, size_t> input_index;
  absl::flat_hash_map<std::string, size_t> output_index;
};

OrtRunner::OrtRunner(std::unique_ptr<Impl> impl, std::string display_name)
    : impl_(std::move(impl)), display_name_(std::move(display_name)) {}

OrtRunner::~OrtRunner() = default;

absl::StatusOr<std::unique_ptr<OrtRunner>> OrtRunner::Create(std::string_view onnx_bytes, const SessionOptions& options,
                                                             std::string display_name) {
  if (absl::Status s = ValidateSessionOptions(options); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("model '", display_name, "': ", s.message()));
  }
  if (onnx_bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", display_name, "': the model bytes are empty (hint: check the file path)"));
  }
  const EnvHolder& env = GlobalEnv();
  if (!env.status.ok()) return env.status;
  if (options.global_thread_pool && GlobalThreadPoolThreads() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", display_name,
        "': the session asks for the global thread pool, but the process-wide ONNX Runtime environment has none "
        "(hint: call ort::ConfigureGlobalThreadPool before the first session is created)"));
  }

  for (const SharedInitializer& w : options.shared_initializers) {
    const std::optional<size_t> want = Tensor::ExpectedBytes(w.elem_type, w.shape);
    if (w.data == nullptr || !want || *want == 0 || *want != w.bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", display_name, "': shared initializer '", w.name, "' has ", w.bytes, " bytes",
          w.data == nullptr ? " at a null address" : "", " for ", ElemTypeName(w.elem_type), "[",
          absl::StrJoin(w.shape, ","), "] (", want ? absl::StrCat(*want) : std::string("no fixed size"),
          " expected); give a non-empty, fixed-size tensor whose bytes match its shape"));
    }
  }
  auto impl = std::make_unique<Impl>();
  std::vector<ValueInfo> inputs, outputs;
  BATON_RETURN_IF_ERROR(CallOrt(display_name, "create a session", [&] {
    Ort::SessionOptions so;
    if (!options.ort_default_threading) {
      so.SetIntraOpNumThreads(options.intra_op_threads);
      so.SetInterOpNumThreads(options.inter_op_threads);
    }  // else: leave ORT's 0 = "one per core" (the plain-ORT baseline only)
    if (options.global_thread_pool) {
      so.DisablePerSessionThreads();
      so.AddConfigEntry(kOrtSessionOptionsConfigSetDenormalAsZero, "1");
    }
    so.SetGraphOptimizationLevel(static_cast<GraphOptimizationLevel>(options.graph_optimization_level));
    if (options.enable_cpu_mem_arena) {
      so.EnableCpuMemArena();
    } else {
      so.DisableCpuMemArena();
    }
    so.SetLogId(display_name.c_str());
    so.SetLogSeverityLevel(static_cast<int>(options.log_severity));
    so.AddConfigEntry(kOrtSessionOptionsConfigAllowIntraOpSpinning, options.allow_spinning ? "1" : "0");
    so.AddConfigEntry(kOrtSessionOptionsConfigAllowInterOpSpinning, options.allow_spinning ? "1" : "0");
    if (options.pinned_cores.size() > 1) {
      // ORT pins the N-1 pool workers; entry 0 is the caller's (see the header).
      // ORT's affinity strings number processors from 1 (it subtracts 1), baton from 0.
      std::vector<int> workers;
      for (size_t i = 1; i < options.pinned_cores.size(); ++i) workers.push_back(options.pinned_cores[i] + 1);
      so.AddConfigEntry(kOrtSessionOptionsConfigIntraOpThreadAffinities, absl::StrJoin(workers, ";").c_str());
    }
    if (!options.shared_initializers.empty()) {
      Ort::MemoryInfo caller_memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
      impl->shared_initializers_owner = options.shared_initializers_owner;
      impl->shared_initializers.reserve(options.shared_initializers.size());
      for (const SharedInitializer& w : options.shared_initializers) {
        // ORT reads initializers only; CreateTensor's pointer is non-const by API.
        impl->shared_initializers.push_back(Ort::Value::CreateTensor(
            caller_memory, const_cast<void*>(w.data), w.bytes, w.shape.data(), w.shape.size(),
            static_cast<ONNXTensorElementDataType>(w.elem_type)));
        so.AddInitializer(w.name.c_str(), impl->shared_initializers.back());
      }
    }
    impl->session = Ort::Session(*env.env, onnx_bytes.data(), onnx_bytes.size(), so);
    impl->cpu_memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

    Ort::AllocatorWithDefaultOptions allocator;
    for (size_t i = 0; i < impl->session.GetInputCount(); ++i) {
      inputs.push_back(
          ReadValueInfo(impl->session.GetInputNameAllocated(i, allocator).get(), impl->session.GetInputTypeInfo(i)));
      impl->input_index.emplace(inputs.back().name, i);
    }
    for (size_t i = 0; i < impl->session.GetOutputCount(); ++i) {
      outputs.push_back(
          ReadValueInfo(impl->session.GetOutputNameAllocated(i, allocator).get(), impl->session.GetOutputTypeInfo(i)));
      impl->output_index.emplace(outputs.back().name, i);
    }
  }));
  std::unique_ptr<OrtRunner> runner(new OrtRunner(std::move(impl), std::move(display_name)));
  runner->inputs_ = std::move(inputs);
  runner->outputs_ = std::move(outputs);
  return runner;
}

std::vector<std::string> OrtRunner::input_names() const {
  std::vector<std::string> names;
  for (const ValueInfo& v : inputs_) names.push_back(v.name);
  return names;
}

std::vector<std::string> OrtRunner::output_names() const {
  std::vector<std::string> names;
  for (const ValueInfo& v : outputs_) names.push_back(v.name);
  return names;
}

absl::StatusOr<std::vector<Tensor>> OrtRunner::Run(std::span<const std::pair<std::string, const Tensor*>> inputs,
                                                   std::span<const std::string> output_names,
                                                   RunCancel* cancel) const {
  const std::string& model = display_name_;
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("model '", model, "': ", parts...));
  };

  // Validate the feeds against the declared inputs before ORT sees them: ORT
  // would read a too-small buffer past its end.
  std::vector<const Tensor*> feed(inputs_.size(), nullptr);
  for (const auto& [name, tensor] : inputs) {
    auto it = impl_->input_index.find(name);
    if (it == impl_->input_index.end()) {
      return bad("no input named '", name, "' (inputs: ", absl::StrJoin(input_names(), ", "), ")");
    }
    if (feed[it->second] != nullptr) return bad("input '", name, "' is fed twice");
    if (tensor == nullptr) return bad("input '", name, "' is fed a null tensor");
    const ValueInfo& info = inputs_[it->second];
    if (!info.is_tensor) {
      return bad("input '", name, "' is ", Describe(info), "; baton only feeds tensors");
    }
    const std::vector<int64_t>& shape = tensor->shape();
    auto count = CheckedElementCount(shape);
    if (!count.has_value()) {
      return bad("input '", name, "' has an invalid shape ", tensor->DebugString(),
                 " (negative dim or too many elements)");
    }
    if (tensor->elem_type() != info.elem_type) {
      return bad("input '", name, "' expects ", Describe(info), " but got ", tensor->DebugString());
    }
    if (!IsSupportedElemType(info.elem_type)) {
      return absl::UnimplementedError(absl::StrCat("model '", model, "': input '", name, "' has element type ",
                                                   TypeName(info.elem_type), " which baton cannot feed"));
    }
    bool shape_ok = !info.rank_known || info.shape.size() == shape.size();
    for (size_t d = 0; shape_ok && info.rank_known && d < shape.size(); ++d) {
      shape_ok = info.shape[d] < 0 || info.shape[d] == shape[d];
    }
    if (!shape_ok) {
      return bad("input '", name, "' expects ", Describe(info), " but got ", tensor->DebugString());
    }
    if (info.elem_type == dtype::kString) {
      if (tensor->strings().size() != static_cast<size_t>(*count)) {
        return bad("input '", name, "' ", tensor->DebugString(), " holds ", tensor->strings().size(),
                   " strings; its shape needs ", *count);
      }
    } else {
      int64_t elem_size = *ElemTypeSize(info.elem_type);
      if (*count > INT64_MAX / elem_size || tensor->byte_size() != static_cast<size_t>(*count * elem_size)) {
        return bad("input '", name, "' ", tensor->DebugString(), " holds ", tensor->byte_size(),
                   " bytes; its shape needs ", *count, " x ", elem_size);
      }
    }
    feed[it->second] = tensor;
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < feed.size(); ++i) {
    if (feed[i] == nullptr) missing.push_back(inputs_[i].name);
  }
  if (!missing.empty()) {
    return bad("missing input(s) ", absl::StrJoin(missing, ", "), " (every model input must be fed)");
  }

  std::vector<const char*> fetch_names;
  if (output_names.empty()) {
    for (const ValueInfo& v : outputs_) fetch_names.push_back(v.name.c_str());
  } else {
    absl::flat_hash_set<std::string_view> seen;
    for (const std::string& name : output_names) {
      auto it = impl_->output_index.find(name);
      if (it == impl_->output_index.end()) {
        return bad("no output named '", name, "' (outputs: ", absl::StrJoin(this->output_names(), ", "), ")");
      }
      if (!seen.insert(name).second) return bad("output '", name, "' is requested twice");
      fetch_names.push_back(outputs_[it->second].name.c_str());
    }
  }
  for (const char* name : fetch_names) {
    const ValueInfo& info = outputs_[impl_->output_index.at(name)];
    if (!info.is_tensor) return bad("output '", name, "' is ", Describe(info), "; baton only fetches tensors");
  }

  std::vector<Tensor> results;
  absl::Status conversion_status;
  absl::Status status = CallOrt(model, "run", [&] {
    std::vector<const char*> feed_names;
    std::vector<Ort::Value> feed_values;
    feed_names.reserve(feed.size());
    feed_values.reserve(feed.size());
    // Non-null stand-in for the data pointer of empty tensors.
    static std::byte empty_buffer[1];
    for (size_t i = 0; i < feed.size(); ++i) {
      const Tensor& t = *feed[i];
      feed_names.push_back(inputs_[i].name.c_str());
      const std::vector<int64_t>& shape = t.shape();
      if (t.elem_type() == dtype::kString) {
        Ort::AllocatorWithDefaultOptions allocator;
        Ort::Value v =
            Ort::Value::CreateTensor(allocator, shape.data(), shape.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING);
        for (size_t s = 0; s < t.strings().size(); ++s) {
          const std::string& str = t.strings()[s];
          // Sized writes keep embedded NULs (FillStringTensor would stop at them).
          char* dst = v.GetResizedStringTensorElementBuffer(s, str.size());
          if (!str.empty()) std::memcpy(dst, str.data(), str.size());
        }
        feed_values.push_back(std::move(v));
      } else {
        // ORT only reads inputs; the const_cast lets it borrow the buffer instead of copying.
        void* data = t.byte_size() == 0 ? static_cast<void*>(empty_buffer) : const_cast<std::byte*>(t.bytes().data());
        feed_values.push_back(Ort::Value::CreateTensor(impl_->cpu_memory, data, t.byte_size(), shape.data(),
                                                       shape.size(),
                                                       static_cast<ONNXTensorElementDataType>(t.elem_type())));
      }
    }
    // A RunOptions only when the call may be cancelled (creating one costs an allocation).
    Ort::RunOptions run_options{nullptr};
    struct Disarm {
      RunCancel* cancel;
      ~Disarm() {
        if (cancel != nullptr) cancel->Disarm();
      }
    } disarm{cancel};
    if (cancel != nullptr) {
      run_options = Ort::RunOptions();
      Ort::RunOptions* options = &run_options;
      cancel->Arm([options] { options->SetTerminate(); });
    }
    std::vector<Ort::Value> fetched =
        impl_->session.Run(run_options, feed_names.data(), feed_values.data(), feed_values.size(),
                           fetch_names.data(), fetch_names.size());
    results.reserve(fetched.size());
    for (size_t i = 0; i < fetched.size(); ++i) {
      Ort::Value& v = fetched[i];
      if (!v.IsTensor()) {
        conversion_status = bad("output '", fetch_names[i], "' is not a tensor at run time");
        return;
      }
      auto info = v.GetTensorTypeAndShapeInfo();
      auto type = static_cast<ElemType>(info.GetElementType());
      std::vector<int64_t> shape = info.GetShape();
      if (type == dtype::kString) {
        size_t n = info.GetElementCount();
        std::vector<std::string> strings;
        strings.reserve(n);
        for (size_t s = 0; s < n; ++s) strings.push_back(v.GetStringTensorElement(s));
        results.push_back(Tensor::Strings(std::move(shape), std::move(strings)));
        continue;
      }
      if (!ElemTypeSize(type).has_value()) {
        conversion_status = absl::UnimplementedError(absl::StrCat("model '", model, "': output '", fetch_names[i],
                                                                  "' has element type ", TypeName(type),
                                                                  " which baton tensors cannot hold"));
        return;
      }
      Tensor t(type, std::move(shape));
      size_t bytes = v.GetTensorSizeInBytes();
      if (bytes != t.byte_size()) {
        conversion_status =
            absl::InternalError(absl::StrCat("model '", model, "': output '", fetch_names[i], "' ", t.DebugString(),
                                             " has ", bytes, " bytes, expected ", t.byte_size()));
        return;
      }
      if (bytes > 0) std::memcpy(t.bytes().data(), v.GetTensorRawData(), bytes);
      results.push_back(std::move(t));
    }
  });
  if (!status.ok() && cancel != nullptr && cancel->cancelled()) {
    return absl::AbortedError(absl::StrCat("model '", model, "': the run was stopped (cancelled) before it finished"));
  }
  BATON_RETURN_IF_ERROR(status);
  BATON_RETURN_IF_ERROR(conversion_status);
  return results;
}

absl::Status ConfigureGlobalThreadPool(int intra_op_threads) {
  if (intra_op_threads < 1 || intra_op_threads > kMaxGlobalPoolThreads) {
    return absl::InvalidArgumentError(absl::StrCat("global thread pool of ", intra_op_threads,
                                                   " threads; give 1..", kMaxGlobalPoolThreads));
  }
  std::lock_guard lock(EnvMutex());
  if (g_env != nullptr) {
    if (g_global_pool_threads == intra_op_threads) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "the ONNX Runtime environment already exists with ",
        g_global_pool_threads == 0 ? std::string("no global thread pool")
                                   : absl::StrCat("a global pool of ", g_global_pool_threads, " threads"),
        "; it is made once per process, so configure the pool before the first session is created"));
  }
  g_global_pool_threads = intra_op_threads;
  return absl::OkStatus();
}

int GlobalThreadPoolThreads() {
  std::lock_guard lock(EnvMutex());
  return g_global_pool_threads;
}

std::string OrtVersion() {
  try {
    return Ort::GetVersionString();
  } catch (...) {
    return "unknown";
  }
}

}  // namespace baton::ort
