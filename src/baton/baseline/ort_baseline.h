// The plain-ONNX-Runtime baselines that `baton run` measures baton against, in
// the same invocation, on the same PUs, for the same time. Tuned setups, the
// ones a user who knows ORT's threading guidance would pick for many sessions
// in one process:
//
//   kTuned       one session per model, intra_op_num_threads=1,
//                inter_op_num_threads=1, sequential execution, intra- and
//                inter-op spinning off, one OS thread per request in flight
//                (closed loop: `concurrency` threads per model; open loop: one
//                thread per model, requests queue in arrival order), unpinned,
//                so the OS balances the threads over the cores.
//   kPinned      a static assignment of whole models to the CPU PUs
//                (BaselineOptions::pu_of_model; `baton run` picks the best one):
//                per PU one OS thread pinned to the PU's first core serves its
//                models' requests in arrival order, through sessions with the
//                PU's thread count and cores, spinning off.
//   kGlobalPool  one ORT environment with a global intra-op pool of
//                ConfigureGlobalThreadPool threads (the CPU PUs' cores),
//                spinning off, denormals as zero globally and per session,
//                per-session threads disabled; one OS thread per request in
//                flight as kTuned.
//
// ORT defaults, kept for comparison with earlier reports:
//
//   kSequential  one whole-model session per model with an explicit thread
//                budget (all the PUs' cores), one request at a time over all
//                models: the server always takes the request that arrived first.
//   kConcurrent  one thread per model, each with a whole-model session using
//                ONNX Runtime's default threading (one spinning intra-op thread
//                per core per session, so the models compete for the cores);
//                each thread serves its own model's requests in arrival order.
//
// Arrivals follow the same processes as baton's streams (dispatch::Arrival):
// closed loop (`concurrency` requests always waiting: the next one arrives
// when one is answered, plus `think`), periodic or Poisson (open loop: requests
// queue up while the server is busy). Latency is answer time minus arrival
// time, so queueing counts. Requests still waiting when a slice ends are not
// counted (`unfinished`). Open-loop arrivals beyond ModelSpec::max_in_flight
// in flight are rejected at once (`rejected`), as baton rejects them.
//
// A run still going 1 s after the slice's end is stopped there (it is counted
// `unfinished`, as it would be if it went on), so a model that never ends
// holds RunFor for the slice's length and 1 s, no longer.
//
// Each request's inputs are copied once (BaselineOptions::copy_inputs), as in
// baton. Sessions are created once (Create) and reused by every RunFor call, so a
// caller can interleave slices of baselines and baton runs.
//
// Thread-safety: RunFor must not be called concurrently on one object.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/workload.h"

namespace baton::baseline {

enum class Mode { kSequential, kConcurrent, kTuned, kPinned, kGlobalPool };
// "ort_sequential", "ort_concurrent", "ort_tuned", "ort_pinned", "ort_global_pool".
const char* ModeName(Mode mode);
std::optional<Mode> ModeFromName(std::string_view name);
// Every mode, tuned ones first.
std::vector<Mode> AllModes();
// kSequential and kConcurrent: ORT's default threading, not a tuned setup.
bool IsOrtDefaults(Mode mode);
// Serving threads one RunFor may start, over all models.
inline constexpr int kMaxServingThreads = 256;

struct ModelSpec {
  std::string name;
  std::string onnx_bytes;                        // the whole model, serialized (freed once the session exists)
  std::vector<dispatch::NamedTensors> samples;   // request i feeds samples[i % size] (at least one)
  dispatch::Arrival arrival;
  std::optional<Duration> deadline;              // relative to arrival
  // Open loop: an arrival while this many requests of the model are in flight
  // (waiting or running) is rejected at once, as baton's run.max_in_flight
  // rejects it; 0 = no limit (the queue grows without bound).
  int max_in_flight = 0;
  // A run that takes longer is stopped (ONNX Runtime's terminate flag, checked
  // between operators) and counted failed, as baton stops its own runs at the
  // model's execution_timeout_ms. nullopt: runs are only stopped 1 s after the
  // end of the slice, where an answer would no longer count.
  std::optional<Duration> execution_timeout;
};

struct ModelResult {
  uint64_t completed = 0;        // answered OK within the slice (latencies.size())
  uint64_t deadline_missed = 0;  // of those, answered after their deadline
  uint64_t failed = 0;           // ORT returned an error
  uint64_t unfinished = 0;       // arrived but not answered when the slice ended
  uint64_t rejected = 0;         // open loop: arrived while max_in_flight were in flight
  std::vector<Duration> latencies;
  std::string first_error;       // the first failure's message, "" if none
};

struct SliceResult {
  Duration elapsed{};  // measured time (without the warm-up)
  std::vector<ModelResult> models;  // in ModelSpec order
};

struct PinnedPu {
  int threads = 1;         // intra-op threads of each session on it (>= 1)
  std::vector<int> cores;  // empty (unpinned), or exactly `threads` ids
};

struct BaselineOptions {
  // kSequential: intra-op threads of every session (>= 1); cores to pin them to
  // (empty, or exactly `threads` ids). Only kSequential uses them.
  int threads = 1;
  std::vector<int> cores;
  // kPinned: the PUs, and per model (ModelSpec order) the index of its PU.
  std::vector<PinnedPu> pus;
  std::vector<size_t> pu_of_model;
  // Copy each request's inputs before running it, as an application hands over
  // a fresh buffer per request (baton's requests own their inputs, so they pay
  // the same copy); false feeds the samples in place.
  bool copy_inputs = true;
};

class OrtBaseline {
 public:
  virtual ~OrtBaseline() = default;
  // Creates the sessions. Errors: no models, a model without samples, bad
  // options (kPinned: an assignment that does not name a PU per model), more
  // than kMaxServingThreads threads, kGlobalPool without a configured global
  // pool (FailedPrecondition), or the ORT error for a model it cannot load
  // (naming the model).
  static absl::StatusOr<std::unique_ptr<OrtBaseline>> Create(Mode mode, std::vector<ModelSpec> models,
                                                             BaselineOptions options);
  virtual Mode mode() const = 0;
  // Runs `warmup` unmeasured, then `duration` measured, with arrivals seeded
  // by `seed`; returns what was measured.
  virtual absl::StatusOr<SliceResult> RunFor(Duration duration, Duration warmup, uint64_t seed) = 0;
};

}  // namespace baton::baseline
