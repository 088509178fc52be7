// Dynamic batching of same-model requests in front of the runtime, as
// Triton's dynamic batcher does: the requests of a batched model wait in a
// per-model queue until `max_batch` of them are there or the oldest has
// waited `max_queue_delay`; then they go to the runtime as one request, their
// inputs stacked along dimension 0 (ConcatDim0), and the answer is cut back
// (SplitDim0) so that each caller gets its own rows, its own submit time and
// the batch's finish time. The model must accept a free leading dimension
// (graph::WithFreeBatchDim, checked by verify::CheckBatchable).
//
// A batch's deadline is the earliest of its requests', its priority the
// highest. A failed batch fails each of its requests with the batch's status.
// Requests whose inputs cannot be stacked (another shape or type) are sent one
// by one instead, so one bad request never fails the others. Models without
// batching (SetModel never called, or max_batch 1) pass straight through.
//
// Example:
//   Batcher batcher([&](auto m, auto in, auto o, auto done) { rt->Submit(m, std::move(in), o, std::move(done)); },
//                   [&] { return rt->Now(); });
//   BATON_RETURN_IF_ERROR(batcher.SetModel(ModelId(0), {.max_batch = 4, .max_queue_delay = 2ms}));
//   batcher.Submit(ModelId(0), std::move(inputs), {}, [](RequestResult r) { ... });
//   ...
//   batcher.Stop();  // sends whatever still waits; answers come from the runtime
//
// Thread-safety: Submit, Flush and stats from any thread (also from inside a
// done callback); SetModel before the first Submit of that model.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/core/tensor_ops.h"
#include "baton/core/time.h"
#include "baton/runtime/runtime.h"

namespace baton::runtime {

inline constexpr int kMaxBatch = 1024;

struct BatchingOptions {
  int max_batch = 1;             // 1..kMaxBatch; 1 = no batching
  Duration max_queue_delay{};    // >= 0: how long the oldest request may wait for more
};

struct BatcherStats {
  uint64_t batches = 0;   // sent to the runtime (a lone request counts as a batch of 1)
  uint64_t requests = 0;  // in them
};

class Batcher {
 public:
  using SubmitFn = std::function<void(ModelId, NamedTensors, dispatch::RequestOptions, DoneCallback)>;
  using NowFn = std::function<Time()>;
  // `own_timer`: a thread of its own sends batches whose delay is over (on
  // the `now` clock). Without it the caller drives time and calls SendDue
  // (a virtual-time shell, or a test with a fake clock).
  Batcher(SubmitFn submit, NowFn now, bool own_timer = true);
  ~Batcher();  // Stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Errors: max_batch outside 1..kMaxBatch, a negative delay, or Stop already called.
  absl::Status SetModel(ModelId model, BatchingOptions options);
  void Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done);
  // Sends every waiting request now.
  void Flush();
  // Sends the batches whose oldest request has waited max_queue_delay by now().
  void SendDue();
  // Requests waiting in the batcher (not yet sent to the runtime).
  size_t waiting() const;
  BatcherStats stats(ModelId model) const;
  // Flushes and joins the timer thread; later Submits pass straight through.
  void Stop();

 private:
  struct Waiting {
    NamedTensors inputs;
    dispatch::RequestOptions options;
    DoneCallback done;
    Time submitted{};
  };
  struct Queue {
    BatchingOptions options;
    std::vector<Waiting> waiting;
    BatcherStats stats;
  };
  // Takes the queue's waiting requests (under mu_); Send sends them (without it).
  std::vector<Waiting> TakeLocked(Queue& q);
  // The batches due at `now` (under mu_).
  std::vector<std::pair<ModelId, std::vector<Waiting>>> TakeDueLocked(Time now);
  void Send(ModelId model, std::vector<Waiting> batch);
  void TimerLoop();

  SubmitFn submit_;
  NowFn now_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint32_t, Queue> queues_;  // guarded by mu_; by ModelId value
  bool stopping_ = false;             // guarded by mu_
  std::thread timer_;
};

}  // namespace baton::runtime
