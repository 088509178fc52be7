// The plain-ONNX-Runtime baselines that `baton run` measures baton against, in
// the same invocation, on the same PUs, for the same time:
//
//   kSequential  one whole-model session per model with an explicit thread
//                budget (all the PUs' cores), one request at a time over all
//                models: the server always takes the request that arrived first.
//   kConcurrent  one thread per model, each with a whole-model session using
//                ONNX Runtime's default threading (one intra-op thread per core,
//                so the models compete for the cores); each thread serves its
//                own model's requests in arrival order.
//
// Arrivals follow the same processes as baton's streams (dispatch::Arrival):
// closed loop (`concurrency` requests always waiting: the next one arrives
// when one is answered, plus `think`), periodic or Poisson (open loop: requests
// queue up while the server is busy). Latency is answer time minus arrival
// time, so queueing counts. Requests still waiting when a slice ends are not
// counted (`unfinished`).
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
#include <vector>

#include "baton/core/status.h"
#include "baton/core/time.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/workload.h"

namespace baton::baseline {

enum class Mode { kSequential, kConcurrent };
const char* ModeName(Mode mode);  // "ort_sequential", "ort_concurrent"

struct ModelSpec {
  std::string name;
  std::string onnx_bytes;                        // the whole model, serialized
  std::vector<dispatch::NamedTensors> samples;   // request i feeds samples[i % size] (at least one)
  dispatch::Arrival arrival;
  std::optional<Duration> deadline;              // relative to arrival
};

struct ModelResult {
  uint64_t completed = 0;        // answered OK within the slice (latencies.size())
  uint64_t deadline_missed = 0;  // of those, answered after their deadline
  uint64_t failed = 0;           // ORT returned an error
  uint64_t unfinished = 0;       // arrived but not answered when the slice ended
  std::vector<Duration> latencies;
  std::string first_error;       // the first failure's message, "" if none
};

struct SliceResult {
  Duration elapsed{};  // measured time (without the warm-up)
  std::vector<ModelResult> models;  // in ModelSpec order
};

struct BaselineOptions {
  // kSequential: intra-op threads of every session (>= 1); cores to pin them to
  // (empty, or exactly `threads` ids). kConcurrent ignores both (ORT default).
  int threads = 1;
  std::vector<int> cores;
  // Copy each request's inputs before running it, as an application hands over
  // a fresh buffer per request (baton's requests own their inputs, so they pay
  // the same copy); false feeds the samples in place.
  bool copy_inputs = true;
};

class OrtBaseline {
 public:
  virtual ~OrtBaseline() = default;
  // Creates the sessions. Errors: no models, a model without samples, bad
  // options, or the ORT error for a model it cannot load (naming the model).
  static absl::StatusOr<std::unique_ptr<OrtBaseline>> Create(Mode mode, std::vector<ModelSpec> models,
                                                             BaselineOptions options);
  virtual Mode mode() const = 0;
  // Runs `warmup` unmeasured, then `duration` measured, with arrivals seeded
  // by `seed`; returns what was measured.
  virtual absl::StatusOr<SliceResult> RunFor(Duration duration, Duration warmup, uint64_t seed) = 0;
};

}  // namespace baton::baseline
