// OrtRunner: one ONNX Runtime inference session over a serialized ONNX model,
// with baton::Tensor in and out. This is the only baton interface to ONNX
// Runtime; the ORT headers stay inside src/baton/backend/ort/ (pimpl).
//
// Example:
//   BATON_ASSIGN_OR_RETURN(auto runner, ort::OrtRunner::Create(bytes, {.intra_op_threads = 2}));
//   const Tensor x = ...;
//   std::pair<std::string, const Tensor*> feeds[] = {{"x", &x}};
//   std::string fetch[] = {"y"};
//   BATON_ASSIGN_OR_RETURN(std::vector<Tensor> outs, runner->Run(feeds, fetch));
//
// Errors: every ONNX Runtime failure (bad model bytes, unsupported op, kernel
// error at run time) and every mismatch between the feeds and the model's
// declared inputs comes back as an absl::Status naming the model, the value and
// a fix; no exception ever leaves this module.
//
// Thread-safety: OrtRunner is thread-safe after Create: Run() may be called
// from any number of threads at once (ONNX Runtime sessions allow concurrent
// Run calls; each call gets its own outputs). Concurrent calls share the
// session's intra-op thread pool, so they also share its thread budget.
// The process-wide Ort::Env is created lazily, once, on first use
// (thread-safe) and lives until process exit.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/run_cancel.h"
#include "baton/core/status.h"
#include "baton/core/tensor.h"

namespace baton::ort {

// Graph optimisation levels; the values are ONNX Runtime's GraphOptimizationLevel.
inline constexpr int kGraphOptDisableAll = 0;
inline constexpr int kGraphOptBasic = 1;
inline constexpr int kGraphOptExtended = 2;
inline constexpr int kGraphOptLayout = 3;
inline constexpr int kGraphOptAll = 99;

// Lowest severity of the messages ONNX Runtime logs for a session (to stderr).
enum class LogSeverity { kVerbose = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

// A weight the caller already holds in memory, densely packed. The session runs
// on these bytes instead of its own copy of the model's initializer of that
// name (ONNX Runtime's AddInitializer: ORT does not copy them), so a model's
// weights are held once. The bytes must stay valid and unchanged while the
// session lives; SessionOptions::shared_initializers_owner keeps them alive.
struct SharedInitializer {
  std::string name;
  ElemType elem_type = dtype::kUndefined;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t bytes = 0;
};

struct SessionOptions {
  // Threads that run one operator (the calling thread counts as one of them, so
  // N threads means N-1 pool workers). Must be >= 1: ONNX Runtime's "0 = one
  // per core" default is refused, thread budgets are always explicit (the one
  // exception is ort_default_threading below).
  int intra_op_threads = 1;
  // Threads that run independent operators in parallel. ONNX Runtime only uses
  // them in its parallel execution mode, which baton does not enable, so this
  // is a budget, not a promise. Must be >= 1.
  int inter_op_threads = 1;
  // Logical CPU ids (0-based, as in /proc/cpuinfo and sched_setaffinity) for
  // the intra-op threads, empty = no pinning. When given it
  // must hold exactly `intra_op_threads` ids: entry 0 belongs to the thread
  // that calls Run() and is NOT pinned here (ONNX Runtime never pins the
  // caller; the owner of that thread pins it), entries 1..N-1 pin the N-1 pool
  // workers through "session.intra_op_thread_affinities". With
  // intra_op_threads == 1 there is no worker, so nothing is pinned by ONNX
  // Runtime and the single entry only documents the caller's core. Each worker
  // pins itself as it starts, which may be just after Create() returns.
  std::vector<int> pinned_cores;
  // Whether ORT keeps freed CPU buffers in an arena for reuse (faster, more memory).
  bool enable_cpu_mem_arena = true;
  // Whether idle intra-op workers spin before sleeping (lower latency, burns
  // the core while idle). Only matters when intra_op_threads > 1.
  bool allow_spinning = true;
  // One of kGraphOpt*.
  int graph_optimization_level = kGraphOptAll;
  // What ORT itself logs for this session (model-load warnings, failing kernels).
  // Errors reach the caller as Status regardless; kFatal silences ORT's copies.
  LogSeverity log_severity = LogSeverity::kWarning;
  // ONLY for the "plain ONNX Runtime as users run it" baseline (baseline/):
  // leaves the intra- and inter-op thread counts at ONNX Runtime's defaults
  // (0 = one intra-op thread per core, so concurrent sessions compete for the
  // cores). intra_op_threads and inter_op_threads are then ignored, and
  // pinned_cores must be empty. Every other session keeps an explicit budget.
  bool ort_default_threading = false;
  // Run on the process-wide global intra-op pool (ConfigureGlobalThreadPool)
  // instead of threads of its own: ORT's DisablePerSessionThreads, with
  // denormals flushed to zero as the pool does. Thread counts are then ignored
  // and pinned_cores must be empty. Create fails when the process has no pool.
  bool global_thread_pool = false;
  // Initializers the session takes from the caller's memory (see
  // SharedInitializer). Create checks each buffer against its own type and
  // shape (InvalidArgument otherwise); ONNX Runtime does not compare them with
  // the model's initializer of that name, so give the model's own type and
  // shape (graph::RawInitializerViews does). The runner holds
  // shared_initializers_owner (the buffers' owner) for its whole life.
  std::vector<SharedInitializer> shared_initializers;
  std::shared_ptr<const void> shared_initializers_owner;
};

inline constexpr int kMaxGlobalPoolThreads = 1024;
// Gives the process-wide ONNX Runtime environment a global intra-op pool of
// `intra_op_threads` threads (1..kMaxGlobalPoolThreads; inter-op 1, spinning
// off, denormals as zero) for sessions with global_thread_pool. ORT keeps one
// environment per process, so this must come before the first session is
// created: FailedPrecondition once it exists with another setting (the same
// setting again is OK). Sessions without global_thread_pool keep their own
// threads either way.
absl::Status ConfigureGlobalThreadPool(int intra_op_threads);
// The configured global pool size, 0 = none.
int GlobalThreadPoolThreads();

// Checks the options without touching ONNX Runtime (thread counts >= 1 unless
// ort_default_threading, pinned_cores size and ids, known optimisation level).
absl::Status ValidateSessionOptions(const SessionOptions& options);

// One input or output of the session, as ONNX Runtime sees it.
struct ValueInfo {
  std::string name;
  // False for sequence/map/optional values; Run() only feeds and fetches tensors.
  bool is_tensor = true;
  ElemType elem_type = dtype::kUndefined;  // undefined when !is_tensor
  std::vector<int64_t> shape;              // -1 for a dynamic (symbolic or unknown) dim
  bool rank_known = true;                  // false: `shape` is empty and the rank is unknown
};

class OrtRunner {
 public:
  ~OrtRunner();
  OrtRunner(const OrtRunner&) = delete;
  OrtRunner& operator=(const OrtRunner&) = delete;

  // Creates a session over the serialized ModelProto `onnx_bytes` (the bytes
  // are not retained). `display_name` only labels error messages. Errors:
  // InvalidArgument for bad options or bytes ONNX Runtime cannot load (the
  // message carries ORT's own), Internal for other ORT failures.
  static absl::StatusOr<std::unique_ptr<OrtRunner>> Create(std::string_view onnx_bytes, const SessionOptions& options,
                                                           std::string display_name = "model");

  const std::string& display_name() const { return display_name_; }
  // Inputs a caller must feed (graph inputs that are not initializers) and all
  // outputs, in the model's order.
  const std::vector<ValueInfo>& inputs() const { return inputs_; }
  const std::vector<ValueInfo>& outputs() const { return outputs_; }
  std::vector<std::string> input_names() const;
  std::vector<std::string> output_names() const;

  // Runs the model once. `inputs` must name every input in inputs() exactly
  // once, with the declared element type, rank and fixed dims; the tensors are
  // borrowed for the duration of the call and never copied (ONNX Runtime reads
  // them in place; strings are the exception and are copied into ORT's string
  // tensor). `output_names` selects outputs in the order wanted; empty means
  // all outputs in outputs() order. Every output must be a tensor. Returns one
  // owned Tensor per requested output.
  // `cancel`, when given, stops the call from another thread (core/run_cancel.h).
  // Errors: InvalidArgument for feeds that do not match the model (naming the
  // input and what was expected), the ORT error (with a hint) when a kernel
  // fails, and Aborted when `cancel` stopped it.
  absl::StatusOr<std::vector<Tensor>> Run(std::span<const std::pair<std::string, const Tensor*>> inputs,
                                          std::span<const std::string> output_names = {},
                                          RunCancel* cancel = nullptr) const;

 private:
  struct Impl;
  OrtRunner(std::unique_ptr<Impl> impl, std::string display_name);

  std::unique_ptr<Impl> impl_;
  std::string display_name_;
  std::vector<ValueInfo> inputs_;
  std::vector<ValueInfo> outputs_;
};

// The ONNX Runtime version string of the library baton runs against, e.g. "1.29.0".
std::string OrtVersion();

}  // namespace baton::ort
