// Dynamic batching of same-model requests in front of the runtime, as
// Triton's dynamic batcher does: the requests of a batched model wait in a
// per-model queue until `max_batch` of them are there or the oldest has
// waited `max_queue_delay`; then they go to the runtime as one request, their
// inputs stacked along dimension 0 (ConcatDim0), and the answer is cut back
// (SplitDim0) so that each caller gets its own rows, its own submit time and
// the batch's finish time. The model must accept a free leading dimension
// (graph::WithFreeBatchDim, checked by verify::CheckBatchable).
//
// With `max_in_flight` (Triton's model instances), at most that many batches
// of a model are in the runtime at once; the others wait, past the delay too,
// and leave as soon as a batch is answered. A batch's size is then the even
// share of the model's requests (waiting and in flight) over the slots, at
// most max_batch, and it leaves as soon as it has that many: a closed loop
// of four on two slots runs as two batches of two, never as one batch of
// four on one PU while the other PU has none of this model's work, nor as
// batches of three and one; a lone request on an idle model goes at once.
// The delay applies only to a batch below its share (more requests arrived
// than the slots' batches hold).
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
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
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
  int max_in_flight = 0;         // batches sent and not answered, at most; 0 = no limit
  // Requests waiting to be batched, at most; 0 = no limit. One more is
  // answered RESOURCE_EXHAUSTED at once (with max_in_flight, requests wait
  // here while the batches are out; without this they would pile up).
  int max_waiting = 0;
  std::string name{};  // the model's, for messages
};

// The executions of one batch size that were answered OK.
struct BatchSizeStats {
  uint64_t executions = 0;
  Duration compute{};  // the PU time they took (RequestResult::compute of each)
};

struct BatcherStats {
  uint64_t batches = 0;   // sent to the runtime (a lone request counts as a batch of 1)
  uint64_t requests = 0;  // in them
  uint64_t rejected = 0;  // answered RESOURCE_EXHAUSTED at once: max_waiting were waiting
  // Executions answered OK, by their number of requests (Triton's
  // batch_stats). Requests that could not be stacked ran alone: size 1 each.
  std::map<size_t, BatchSizeStats> by_size;
};

class Batcher {
 public:
  // Sends one request to the runtime; returns its id there.
  using SubmitFn = std::function<RequestId(ModelId, NamedTensors, dispatch::RequestOptions, DoneCallback)>;
  using NowFn = std::function<Time()>;
  // Cancels a request in the runtime (Runtime::Cancel); must not call back into the batcher.
  using CancelFn = std::function<void(RequestId)>;
  // `own_timer`: a thread of its own sends batches whose delay is over (on
  // the `now` clock). Without it the caller drives time and calls SendDue
  // (a virtual-time shell, or a test with a fake clock).
  // `cancel` (optional) lets Withdraw stop a batch whose requests were all withdrawn.
  Batcher(SubmitFn submit, NowFn now, bool own_timer = true, CancelFn cancel = nullptr);
  ~Batcher();  // Stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Errors: max_batch outside 1..kMaxBatch, a negative delay, max_in_flight or
  // max_waiting, or Stop already called.
  absl::Status SetModel(ModelId model, BatchingOptions options);
  // Returns the request's ticket for Withdraw (unique per batcher, never 0).
  // A request over max_waiting is answered (RESOURCE_EXHAUSTED) before
  // Submit returns, on the calling thread.
  uint64_t Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done);
  // Withdraws the request `ticket` of `model`. If it still waits in its
  // queue: true, its inputs are freed and its `done` is dropped uncalled (the
  // caller answers it). Else false, and its `done` is called as usual; if it
  // is in a batch whose requests are now all withdrawn, the batch is
  // cancelled in the runtime (`cancel`), so that what has not run never does.
  bool Withdraw(ModelId model, uint64_t ticket);
  // Sends every waiting request now.
  void Flush();
  // Sends the batches whose oldest request has waited max_queue_delay by now().
  void SendDue();
  // Requests waiting in the batcher (not yet sent to the runtime).
  size_t waiting() const;
  BatcherStats stats(ModelId model) const;
  // Flushes and joins the timer thread; later Submits pass straight through.
  // Batches still in the runtime may be answered after Stop, and after the
  // destructor: their callbacks then only reach their callers.
  void Stop();

 private:
  struct Waiting {
    NamedTensors inputs;
    dispatch::RequestOptions options;
    DoneCallback done;
    Time submitted{};
    uint64_t ticket = 0;
  };
  struct Queue {
    BatchingOptions options;
    std::deque<Waiting> waiting;
    int in_flight = 0;              // batches in the runtime (counted only with max_in_flight)
    size_t in_flight_requests = 0;  // requests in them
    BatcherStats stats;
  };
  // A batch taken from its queue: `counted` when it holds one of the
  // model's max_in_flight slots (its answer frees the slot).
  struct Ready {
    ModelId model;
    std::vector<Waiting> batch;
    bool counted = false;
  };
  using Batches = std::vector<Ready>;
  // One runtime request made of `live` requests not withdrawn (Withdraw).
  struct Flight {
    std::optional<RequestId> id;  // once submit_ has returned it
    size_t live = 0;
  };
  // Lets answers that arrive after the destructor find no batcher: the
  // destructor clears `self` and waits until no answer is inside it.
  struct Life {
    std::mutex mu;
    std::condition_variable cv;
    Batcher* self = nullptr;  // guarded by mu
    int inside = 0;           // guarded by mu
  };
  // The batches to send from `q` now (under mu_): with `all`, everything
  // that waits (Flush); else those with a free slot that are full (see
  // above) or whose oldest request has waited the delay. Send sends them
  // (without mu_).
  void TakeLocked(ModelId model, Queue& q, Time now, bool all, Batches& out);
  void Send(Ready ready);
  // Sends `inputs` as one runtime request for the requests `tickets`; `done` gets its answer.
  void SendOne(ModelId model, std::vector<uint64_t> tickets, NamedTensors inputs, dispatch::RequestOptions options,
               DoneCallback done);
  // A batch of `requests` of `model` was answered: frees its slot, sends what is due.
  void Answered(ModelId model, size_t requests);
  // An execution of `size` requests of `model` was answered: counted in by_size when OK.
  void Executed(ModelId model, size_t size, const RequestResult& result);
  // Runs fn(*batcher) unless the batcher is gone (answers may come after its destructor).
  template <typename Fn>
  static void IfAlive(const std::shared_ptr<Life>& life, Fn&& fn);
  void TimerLoop();

  SubmitFn submit_;
  NowFn now_;
  CancelFn cancel_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint32_t, Queue> queues_;  // guarded by mu_; by ModelId value
  bool stopping_ = false;             // guarded by mu_
  uint64_t last_ticket_ = 0;          // guarded by mu_; Submit's tickets
  // The requests sent and not answered yet, by ticket (guarded by mu_).
  std::unordered_map<uint64_t, std::shared_ptr<Flight>> flying_;
  std::shared_ptr<Life> life_ = std::make_shared<Life>();
  std::thread timer_;
};

}  // namespace baton::runtime
