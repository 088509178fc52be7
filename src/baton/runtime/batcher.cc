#include "baton/runtime/batcher.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace baton::runtime {

Batcher::Batcher(SubmitFn submit, NowFn now, bool own_timer) : submit_(std::move(submit)), now_(std::move(now)) {
  if (own_timer) timer_ = std::thread([this] { TimerLoop(); });
}

Batcher::~Batcher() { Stop(); }

absl::Status Batcher::SetModel(ModelId model, BatchingOptions options) {
  if (options.max_batch < 1 || options.max_batch > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.value, ": max_batch is ", options.max_batch,
                                                   "; it must be in 1..", kMaxBatch));
  }
  if (options.max_queue_delay < Duration::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.value, ": max_queue_delay is ",
                                                   options.max_queue_delay.count(), " ns; it must be >= 0"));
  }
  std::lock_guard lock(mu_);
  if (stopping_) return absl::FailedPreconditionError("the batcher is stopped");
  queues_[model.value].options = options;
  return absl::OkStatus();
}

std::vector<Batcher::Waiting> Batcher::TakeLocked(Queue& q) {
  std::vector<Waiting> batch;
  batch.swap(q.waiting);
  if (!batch.empty()) {
    ++q.stats.batches;
    q.stats.requests += batch.size();
  }
  return batch;
}

void Batcher::Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done) {
  std::vector<Waiting> ready;
  {
    std::unique_lock lock(mu_);
    auto it = queues_.find(model.value);
    if (it == queues_.end() || it->second.options.max_batch <= 1 || stopping_) {
      if (it != queues_.end()) {
        ++it->second.stats.batches;
        ++it->second.stats.requests;
      }
      lock.unlock();
      submit_(model, std::move(inputs), options, std::move(done));
      return;
    }
    Queue& q = it->second;
    q.waiting.push_back(Waiting{std::move(inputs), options, std::move(done), now_()});
    if (static_cast<int>(q.waiting.size()) >= q.options.max_batch) {
      ready = TakeLocked(q);
    } else if (q.waiting.size() == 1) {
      cv_.notify_all();  // a new oldest request: the timer must watch its delay
    }
  }
  if (!ready.empty()) Send(model, std::move(ready));
}

void Batcher::Send(ModelId model, std::vector<Waiting> batch) {
  if (batch.size() == 1) {
    Waiting& w = batch[0];
    submit_(model, std::move(w.inputs), w.options, std::move(w.done));
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
    for (Waiting& w : batch) submit_(model, std::move(w.inputs), w.options, std::move(w.done));
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
  for (Waiting& w : batch) {
    members->done.push_back(std::move(w.done));
    members->submitted.push_back(w.submitted);
  }
  members->rows = std::move(rows);
  batch.clear();
  submit_(model, std::move(stacked), options, [members](RequestResult r) {
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
  });
}

void Batcher::Flush() {
  std::vector<std::pair<ModelId, std::vector<Waiting>>> ready;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, q] : queues_) {
      std::vector<Waiting> batch = TakeLocked(q);
      if (!batch.empty()) ready.emplace_back(ModelId(id), std::move(batch));
    }
  }
  for (auto& [model, batch] : ready) Send(model, std::move(batch));
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

std::vector<std::pair<ModelId, std::vector<Batcher::Waiting>>> Batcher::TakeDueLocked(Time now) {
  std::vector<std::pair<ModelId, std::vector<Waiting>>> ready;
  for (auto& [id, q] : queues_) {
    if (!q.waiting.empty() && q.waiting.front().submitted + q.options.max_queue_delay <= now) {
      ready.emplace_back(ModelId(id), TakeLocked(q));
    }
  }
  return ready;
}

void Batcher::SendDue() {
  std::vector<std::pair<ModelId, std::vector<Waiting>>> ready;
  {
    std::lock_guard lock(mu_);
    ready = TakeDueLocked(now_());
  }
  for (auto& [model, batch] : ready) Send(model, std::move(batch));
}

void Batcher::TimerLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    // The earliest moment a waiting batch is due.
    std::optional<Time> due;
    for (const auto& [id, q] : queues_) {
      if (q.waiting.empty()) continue;
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
    std::vector<std::pair<ModelId, std::vector<Waiting>>> ready = TakeDueLocked(now);
    lock.unlock();
    for (auto& [model, batch] : ready) Send(model, std::move(batch));
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
