#include "baton/runtime/batcher.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "baton/core/process.h"

namespace baton::runtime {

Batcher::Batcher(SubmitFn submit, NowFn now, bool own_timer, CancelFn cancel)
    : submit_(std::move(submit)), now_(std::move(now)), cancel_(std::move(cancel)) {
  life_->self = this;
  if (own_timer) timer_ = std::thread([this] { TimerLoop(); });
}

Batcher::~Batcher() {
  Stop();
  std::unique_lock lock(life_->mu);
  life_->self = nullptr;
  life_->cv.wait(lock, [&] { return life_->inside == 0; });
}

absl::Status Batcher::SetModel(ModelId model, BatchingOptions options) {
  if (options.max_batch < 1 || options.max_batch > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.value, ": max_batch is ", options.max_batch,
                                                   "; it must be in 1..", kMaxBatch));
  }
  if (options.max_queue_delay < Duration::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.value, ": max_queue_delay is ",
                                                   options.max_queue_delay.count(), " ns; it must be >= 0"));
  }
  if (options.max_in_flight < 0) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.value, ": max_in_flight is ",
                                                   options.max_in_flight, "; it must be >= 0 (0 = no limit)"));
  }
  if (options.max_waiting < 0) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.value, ": max_waiting is ", options.max_waiting,
                                                   "; it must be >= 0 (0 = no limit)"));
  }
  std::lock_guard lock(mu_);
  if (stopping_) return absl::FailedPreconditionError("the batcher is stopped");
  queues_[model.value].options = options;
  return absl::OkStatus();
}

void Batcher::TakeLocked(ModelId model, Queue& q, Time now, bool all, Batches& out) {
  const int cap = q.options.max_in_flight;
  const auto max_batch = static_cast<size_t>(q.options.max_batch);
  while (!q.waiting.empty()) {
    // A batch's size: max_batch, or with slots the even share of the
    // model's requests (waiting and in flight) over them, if smaller.
    size_t want = max_batch;
    if (cap > 0) {
      if (!all && q.in_flight >= cap) return;
      const size_t total = q.waiting.size() + q.in_flight_requests;
      want = std::clamp<size_t>((total + static_cast<size_t>(cap) - 1) / static_cast<size_t>(cap), 1, max_batch);
    }
    // Below that size it waits for more, until the oldest has waited the delay.
    if (!all && q.waiting.size() < want && q.waiting.front().submitted + q.options.max_queue_delay > now) return;
    const size_t n = std::min(want, q.waiting.size());
    std::vector<Waiting> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(q.waiting.front()));
      q.waiting.pop_front();
    }
    ++q.stats.batches;
    q.stats.requests += n;
    if (cap > 0) {
      ++q.in_flight;
      q.in_flight_requests += n;
    }
    out.push_back(Ready{model, std::move(batch), cap > 0});
  }
}

uint64_t Batcher::Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done) {
  Batches ready;
  uint64_t ticket = 0;
  {
    std::unique_lock lock(mu_);
    ticket = ++last_ticket_;
    auto it = queues_.find(model.value);
    if (it == queues_.end() || it->second.options.max_batch <= 1 || stopping_) {
      if (it != queues_.end()) {
        ++it->second.stats.batches;
        ++it->second.stats.requests;
      }
      lock.unlock();
      submit_(model, std::move(inputs), options, std::move(done));
      return ticket;
    }
    Queue& q = it->second;
    const Time now = now_();
    if (q.options.max_waiting > 0 && q.waiting.size() >= static_cast<size_t>(q.options.max_waiting)) {
      ++q.stats.rejected;
      lock.unlock();
      RequestResult full;
      full.model = model;
      full.status = absl::ResourceExhaustedError(
          absl::StrCat("model '", q.options.name, "' already has ", q.options.max_waiting,
                       " requests waiting to be batched (max_in_flight); retry later or raise max_in_flight"));
      full.submitted = full.finished = now;
      done(std::move(full));
      return ticket;
    }
    q.waiting.push_back(Waiting{std::move(inputs), options, std::move(done), now, ticket});
    TakeLocked(model, q, now, /*all=*/false, ready);
    if (!q.waiting.empty()) cv_.notify_all();  // the timer must watch the oldest's delay
  }
  for (Ready& r : ready) Send(std::move(r));
  return ticket;
}

bool Batcher::Withdraw(ModelId model, uint64_t ticket) {
  Waiting gone;  // freed after the lock: its inputs may be lent buffers whose release answers a caller
  std::optional<RequestId> stop;
  {
    std::lock_guard lock(mu_);
    auto it = queues_.find(model.value);
    if (it == queues_.end()) return false;
    std::deque<Waiting>& waiting = it->second.waiting;
    auto w = std::find_if(waiting.begin(), waiting.end(), [&](const Waiting& x) { return x.ticket == ticket; });
    if (w != waiting.end()) {
      gone = std::move(*w);
      waiting.erase(w);
      return true;
    }
    auto f = flying_.find(ticket);
    if (f == flying_.end()) return false;
    const std::shared_ptr<Flight> flight = f->second;
    flying_.erase(f);
    if (--flight->live == 0 && flight->id) stop = flight->id;
  }
  if (stop && cancel_) cancel_(*stop);
  return false;
}

void Batcher::SendOne(ModelId model, std::vector<uint64_t> tickets, NamedTensors inputs,
                      dispatch::RequestOptions options, DoneCallback done) {
  auto flight = std::make_shared<Flight>();
  flight->live = tickets.size();
  {
    std::lock_guard lock(mu_);
    for (uint64_t t : tickets) flying_[t] = flight;
  }
  const RequestId id = submit_(model, std::move(inputs), options,
                               [life = life_, tickets = std::move(tickets), done = std::move(done)](RequestResult r) {
                                 IfAlive(life, [&](Batcher& b) {
                                   std::lock_guard lock(b.mu_);
                                   for (uint64_t t : tickets) b.flying_.erase(t);
                                 });
                                 done(std::move(r));
                               });
  bool stop = false;
  {
    std::lock_guard lock(mu_);
    flight->id = id;
    stop = flight->live == 0;  // every request withdrawn while it was being sent
  }
  if (stop && cancel_) cancel_(id);
}

void Batcher::Answered(ModelId model, size_t requests) {
  Batches ready;
  {
    std::lock_guard lock(mu_);
    auto it = queues_.find(model.value);
    if (it == queues_.end()) return;
    Queue& q = it->second;
    if (q.in_flight > 0) --q.in_flight;
    q.in_flight_requests -= std::min(q.in_flight_requests, requests);
    TakeLocked(model, q, now_(), /*all=*/stopping_, ready);
    if (!q.waiting.empty()) cv_.notify_all();  // a free slot: the timer may send it when due
  }
  for (Ready& r : ready) Send(std::move(r));
}

template <typename Fn>
void Batcher::IfAlive(const std::shared_ptr<Life>& life, Fn&& fn) {
  {
    std::lock_guard lock(life->mu);
    if (life->self == nullptr) return;
    ++life->inside;
  }
  fn(*life->self);
  std::lock_guard lock(life->mu);
  --life->inside;
  life->cv.notify_all();
}

void Batcher::Executed(ModelId model, size_t size, const RequestResult& result) {
  if (!result.status.ok()) return;
  std::lock_guard lock(mu_);
  auto it = queues_.find(model.value);
  if (it == queues_.end()) return;
  BatchSizeStats& s = it->second.stats.by_size[size];
  ++s.executions;
  s.compute += result.compute;
}

void Batcher::Send(Ready ready) {
  const ModelId model = ready.model;
  std::vector<Waiting>& batch = ready.batch;
  // With max_in_flight, each batch's answer frees its slot, after its
  // callers have their answers (a closed loop's next request then joins the
  // queue before the next batch is formed).
  auto release = [counted = ready.counted, model, requests = batch.size(), life = life_] {
    if (counted) IfAlive(life, [&](Batcher& b) { b.Answered(model, requests); });
  };
  auto executed = [model, life = life_](size_t size, const RequestResult& r) {
    IfAlive(life, [&](Batcher& b) { b.Executed(model, size, r); });
  };
  if (batch.size() == 1) {
    Waiting& w = batch[0];
    SendOne(model, {w.ticket}, std::move(w.inputs), w.options,
            [done = std::move(w.done), release, executed](RequestResult r) {
              executed(1, r);
              done(std::move(r));
              release();
            });
    return;
  }
  // Stack the inputs; requests that do not stack go one by one.
  NamedTensors stacked;
  bool stackable = true;
  for (size_t k = 0; k < batch[0].inputs.size() && stackable; ++k) {
    std::vector<const Tensor*> parts;
    for (const Waiting& w : batch) {
      if (w.inputs.size() != batch[0].inputs.size() || w.inputs[k].first != batch[0].inputs[k].first) {
        stackable = false;
        break;
      }
      parts.push_back(&w.inputs[k].second);
    }
    if (!stackable) break;
    absl::StatusOr<Tensor> t = ConcatDim0(parts);
    if (!t.ok()) {
      stackable = false;
      break;
    }
    stacked.emplace_back(batch[0].inputs[k].first, *std::move(t));
  }
  if (!stackable) {
    // One slot for all of them: the last answer frees it.
    auto left = std::make_shared<std::atomic<size_t>>(batch.size());
    for (Waiting& w : batch) {
      SendOne(model, {w.ticket}, std::move(w.inputs), w.options,
              [done = std::move(w.done), left, release, executed](RequestResult r) {
                executed(1, r);
                done(std::move(r));
                if (left->fetch_sub(1) == 1) release();
              });
    }
    return;
  }
  dispatch::RequestOptions options = batch[0].options;
  std::vector<int64_t> rows;
  for (const Waiting& w : batch) {
    if (w.options.deadline && (!options.deadline || *w.options.deadline < *options.deadline)) {
      options.deadline = w.options.deadline;
    }
    options.priority = std::max(options.priority, w.options.priority);
    rows.push_back(w.inputs.empty() || w.inputs[0].second.shape().empty() ? 0 : w.inputs[0].second.shape()[0]);
  }
  struct Members {
    std::vector<DoneCallback> done;
    std::vector<Time> submitted;
    std::vector<int64_t> rows;
  };
  auto members = std::make_shared<Members>();
  std::vector<uint64_t> tickets;
  for (Waiting& w : batch) {
    members->done.push_back(std::move(w.done));
    members->submitted.push_back(w.submitted);
    tickets.push_back(w.ticket);
  }
  members->rows = std::move(rows);
  batch.clear();
  SendOne(model, std::move(tickets), std::move(stacked), options, [members, release, executed](RequestResult r) {
    const size_t n = members->done.size();
    // Each output cut into the members' rows.
    std::vector<NamedTensors> outputs(n);
    absl::Status status = r.status;
    for (auto& [name, tensor] : r.outputs) {
      if (!status.ok()) break;
      absl::StatusOr<std::vector<Tensor>> pieces = SplitDim0(tensor, members->rows);
      if (!pieces.ok()) {
        status = absl::InternalError(absl::StrCat("batched output '", name, "' cannot be split back: ",
                                                  pieces.status().message()));
        break;
      }
      for (size_t i = 0; i < n; ++i) outputs[i].emplace_back(name, std::move((*pieces)[i]));
    }
    if (status.ok()) executed(n, r);  // only its status and compute time are read
    for (size_t i = 0; i < n; ++i) {
      RequestResult mine;
      mine.id = r.id;
      mine.model = r.model;
      mine.status = status;
      if (status.ok()) mine.outputs = std::move(outputs[i]);
      mine.submitted = members->submitted[i];
      mine.finished = r.finished;
      mine.compute = r.compute;  // the batch's: each member waited for all of it
      members->done[i](std::move(mine));
    }
    release();
  });
}

void Batcher::Flush() {
  Batches ready;
  {
    std::lock_guard lock(mu_);
    const Time now = now_();
    for (auto& [id, q] : queues_) TakeLocked(ModelId(id), q, now, /*all=*/true, ready);
  }
  for (Ready& r : ready) Send(std::move(r));
}

size_t Batcher::waiting() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [id, q] : queues_) n += q.waiting.size();
  return n;
}

BatcherStats Batcher::stats(ModelId model) const {
  std::lock_guard lock(mu_);
  auto it = queues_.find(model.value);
  return it == queues_.end() ? BatcherStats{} : it->second.stats;
}

void Batcher::SendDue() {
  Batches ready;
  {
    std::lock_guard lock(mu_);
    const Time now = now_();
    for (auto& [id, q] : queues_) TakeLocked(ModelId(id), q, now, /*all=*/false, ready);
  }
  for (Ready& r : ready) Send(std::move(r));
}

void Batcher::TimerLoop() {
  NameThisThread("batcher");
  std::unique_lock lock(mu_);
  while (!stopping_) {
    // The earliest moment a waiting batch with a free slot is due (a queue
    // whose slots are all taken is woken by Answered).
    std::optional<Time> due;
    for (const auto& [id, q] : queues_) {
      if (q.waiting.empty()) continue;
      if (q.options.max_in_flight > 0 && q.in_flight >= q.options.max_in_flight) continue;
      const Time t = q.waiting.front().submitted + q.options.max_queue_delay;
      if (!due || t < *due) due = t;
    }
    const Time now = now_();
    if (!due) {
      cv_.wait(lock);
      continue;
    }
    if (*due > now) {
      cv_.wait_for(lock, *due - now);
      continue;
    }
    Batches ready;
    for (auto& [id, q] : queues_) TakeLocked(ModelId(id), q, now, /*all=*/false, ready);
    lock.unlock();
    for (Ready& r : ready) Send(std::move(r));
    lock.lock();
  }
}

void Batcher::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  Flush();
}

}  // namespace baton::runtime
