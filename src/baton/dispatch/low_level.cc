#include "baton/dispatch/low_level.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace baton::dispatch {

namespace {

std::string Describe(const policy::WorkItem& w) {
  return absl::StrCat("assignment ", w.id.value, " (request ", w.request.value, ", model ", w.model.value,
                      ", partition ", w.partition.value, ")");
}

std::string Describe(const Assignment& a) {
  return absl::StrCat("assignment ", a.id.value, " (request ", a.request.value, ", model ", a.model.value,
                      ", partition ", a.partition.value, ")");
}

}  // namespace

absl::StatusOr<LowLevelCore> LowLevelCore::Create(LowLevelOptions options,
                                                  std::unique_ptr<policy::LowLevelPolicy> policy,
                                                  const policy::LatencyModel* latency) {
  const std::string where = absl::StrCat("low-level dispatcher of device ", options.device.value);
  if (options.pus.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": no PUs"));
  absl::flat_hash_set<PuId> ids;
  for (const auto& pu : options.pus) {
    if (!ids.insert(pu.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": PU id ", pu.id.value, " is used twice; PU ids must be unique per device"));
    }
  }
  if (options.max_queue == 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": max_queue is 0; it must be at least 1"));
  }
  if (policy == nullptr) return absl::InvalidArgumentError(absl::StrCat(where, ": no low-level policy"));
  if (latency == nullptr) return absl::InvalidArgumentError(absl::StrCat(where, ": no latency model"));
  return LowLevelCore(std::move(options), std::move(policy), latency);
}

LowLevelCore::LowLevelCore(LowLevelOptions options, std::unique_ptr<policy::LowLevelPolicy> policy,
                           const policy::LatencyModel* latency)
    : options_(std::move(options)), policy_(std::move(policy)), latency_(latency) {
  policy_name_ = policy_->name();
  for (size_t i = 0; i < options_.pus.size(); ++i) {
    pu_index_.emplace(options_.pus[i].id, i);
    policy::PuState state;
    state.id = options_.pus[i].id;
    state.kind = options_.pus[i].kind;
    pu_states_.push_back(std::move(state));
  }
  running_.resize(options_.pus.size());
  ready_.reserve(options_.max_queue);
  ready_assignments_.reserve(options_.max_queue);
}

size_t LowLevelCore::running() const {
  return static_cast<size_t>(std::count_if(running_.begin(), running_.end(),
                                           [](const auto& r) { return r.has_value(); }));
}

LowLevelActions LowLevelCore::OnAssignment(Assignment a, Time now) {
  LowLevelActions out;
  ++stats_.assignments;
  auto where = [&] { return absl::StrCat("device ", options_.device.value, ": "); };
  bool duplicate = std::any_of(ready_.begin(), ready_.end(), [&](const auto& w) { return w.id == a.id; }) ||
                   std::any_of(running_.begin(), running_.end(),
                               [&](const auto& r) { return r.has_value() && r->id == a.id; });
  bool runnable = false;
  if (a.fixed_pu) {
    runnable = PuIndex(*a.fixed_pu).has_value() && latency_->Expected(a.model, a.partition, *a.fixed_pu);
  } else {
    for (const auto& pu : pu_states_) {
      if (latency_->Expected(a.model, a.partition, pu.id)) {
        runnable = true;
        break;
      }
    }
  }
  if (duplicate) {
    Reject(a, absl::AlreadyExistsError(absl::StrCat(where(), Describe(a), " is already queued or running")), now,
           out);
  } else if (!runnable) {
    std::string which = a.fixed_pu ? absl::StrCat("its fixed PU ", a.fixed_pu->value, " cannot run it")
                                   : std::string("no PU of this device can run it");
    Reject(a,
           absl::FailedPreconditionError(absl::StrCat(where(), Describe(a), ": ", which,
                                                      " (the latency model has no entry); place it elsewhere")),
           now, out);
  } else if (DeadlinePassed(a.deadline, now)) {
    ++stats_.dropped_expired;
    Reject(a, absl::DeadlineExceededError(absl::StrCat(where(), Describe(a), " arrived after its deadline")), now,
           out);
  } else if (ready_.size() >= options_.max_queue) {
    ++stats_.rejected_full;
    Reject(a,
           absl::ResourceExhaustedError(absl::StrCat(where(), "ready queue is full (", options_.max_queue,
                                                     " assignments); ", Describe(a), " rejected")),
           now, out);
  } else {
    policy::WorkItem w;
    w.id = a.id;
    w.request = a.request;
    w.model = a.model;
    w.partition = a.partition;
    w.enqueued = now;
    w.deadline = a.deadline;
    w.priority = a.priority;
    w.fixed_pu = a.fixed_pu;
    w.seq = next_seq_++;
    Trace(TraceKind::kEnqueued, now, a, std::nullopt);
    ready_.push_back(w);
    ready_assignments_.push_back(std::move(a));
  }
  if (duplicate || !runnable) ++stats_.rejected_unrunnable;
  Schedule(now, out);
  return out;
}

LowLevelActions LowLevelCore::OnPuFinished(PuResult result, Time now) {
  LowLevelActions out;
  std::optional<size_t> i = PuIndex(result.pu);
  if (!i || !running_[*i] || running_[*i]->id != result.assignment) {
    Violation(absl::StrCat("device ", options_.device.value, ": PU ", result.pu.value,
                           " reported assignment ", result.assignment.value,
                           " finished, but it is not running it; report each StartOnPu exactly once"));
  } else if (running_[*i]->timed_out) {
    // Answered when its timeout passed or it was cancelled; the PU is free again now.
    ++stats_.finished;
    running_[*i].reset();
    pu_states_[*i].busy = false;
    pu_states_[*i].expected_free = now;
  } else {
    Running r = *running_[*i];
    running_[*i].reset();
    pu_states_[*i].busy = false;
    pu_states_[*i].expected_free = now;
    ++stats_.finished;
    Charge(r.model, result.end > result.start ? result.end - result.start : now - r.start, now);
    Completion c = AnswerFor(r.id, r.request, r.model, r.partition, std::move(result.status));
    if (c.status.ok()) c.outputs = std::move(result.outputs);
    c.pu = result.pu;
    c.start = result.start;
    c.end = result.end;
    if (observer_ != nullptr) {
      observer_->OnEvent(TraceEvent{TraceKind::kFinished, now, r.request, r.model, r.partition, r.id,
                                    options_.device, result.pu, c.status.code(), c.start});
    }
    out.completions.push_back(std::move(c));
  }
  Schedule(now, out);
  return out;
}

LowLevelActions LowLevelCore::OnTick(Time now) {
  LowLevelActions out;
  Schedule(now, out);
  return out;
}

LowLevelActions LowLevelCore::OnCancel(std::span<const AssignmentId> ids, const absl::Status& status, Time now) {
  LowLevelActions out;
  if (ids.empty()) return out;
  const absl::flat_hash_set<AssignmentId> wanted(ids.begin(), ids.end());
  std::vector<bool> remove(ready_.size(), false);
  bool any_queued = false;
  for (size_t i = 0; i < ready_assignments_.size(); ++i) {
    if (!wanted.contains(ready_assignments_[i].id)) continue;
    remove[i] = true;
    any_queued = true;
    ++stats_.cancelled;
    ++stats_.cancelled_queued;
    Reject(ready_assignments_[i], status, now, out);
  }
  if (any_queued) RemoveFromReady(remove);
  for (size_t i = 0; i < running_.size(); ++i) {
    std::optional<Running>& r = running_[i];
    if (!r || r->timed_out || !wanted.contains(r->id)) continue;
    ++stats_.cancelled;
    AnswerRunning(i, status, now, out);
  }
  // Freed queue room changes nothing for the PUs: a cancelled run keeps its
  // PU until it reports.
  return out;
}

std::optional<Time> LowLevelCore::NextExpiry() const {
  std::optional<Time> next;
  for (const auto& w : ready_) {
    if (w.deadline && (!next || ExpiryTime(*w.deadline) < *next)) next = ExpiryTime(*w.deadline);
  }
  return next;
}

std::optional<Time> LowLevelCore::NextRunTimeout() const {
  std::optional<Time> next;
  for (const auto& r : running_) {
    if (!r || r->timed_out || !r->timeout_at) continue;
    const Time t = ExpiryTime(*r->timeout_at);
    if (!next || t < *next) next = t;
  }
  return next;
}

std::optional<Duration> LowLevelCore::RunLimit(const Assignment& a, Duration expected) const {
  if (!options_.exec_timeout) return std::nullopt;
  const ExecTimeoutRule& rule = *options_.exec_timeout;
  Duration limit;
  if (a.exec_timeout) {
    limit = *a.exec_timeout;
  } else {
    limit = std::max(rule.floor, std::chrono::duration_cast<Duration>(expected * rule.factor));
  }
  if (rule.cap) limit = std::min(limit, *rule.cap);
  return limit;
}

void LowLevelCore::TimeOutRuns(Time now, LowLevelActions& out) {
  for (size_t i = 0; i < running_.size(); ++i) {
    std::optional<Running>& r = running_[i];
    if (!r || r->timed_out || !r->timeout_at || !DeadlinePassed(r->timeout_at, now)) continue;
    ++stats_.timed_out;
    const double limit_ms = std::chrono::duration<double, std::milli>(r->limit).count();
    AnswerRunning(i,
                  absl::AbortedError(absl::StrCat(
                      "device ", options_.device.value, ": assignment ", r->id.value, " (request ", r->request.value,
                      ", model ", r->model.value, ", partition ", r->partition.value,
                      ") ran past its execution timeout of ", limit_ms, " ms on PU ", pu_states_[i].id.value,
                      " and was stopped; if it is legitimately this slow, raise the model's execution_timeout_ms")),
                  now, out);
  }
}

void LowLevelCore::AnswerRunning(size_t i, absl::Status status, Time now, LowLevelActions& out) {
  Running& r = *running_[i];
  r.timed_out = true;
  Completion c = AnswerFor(r.id, r.request, r.model, r.partition, std::move(status));
  c.pu = pu_states_[i].id;
  c.start = r.start;
  c.end = now;
  if (observer_ != nullptr) {
    observer_->OnEvent(TraceEvent{TraceKind::kFinished, now, r.request, r.model, r.partition, r.id, options_.device,
                                  pu_states_[i].id, c.status.code(), c.start});
  }
  out.completions.push_back(std::move(c));
  out.cancels.push_back(pu_states_[i].id);
}

void LowLevelCore::DropExpired(Time now, LowLevelActions& out) {
  std::vector<bool> expired(ready_.size(), false);
  for (size_t i = 0; i < ready_.size(); ++i) {
    if (!DeadlinePassed(ready_[i].deadline, now)) continue;
    expired[i] = true;
    ++stats_.dropped_expired;
    Reject(ready_assignments_[i],
           absl::DeadlineExceededError(absl::StrCat("device ", options_.device.value, ": ", Describe(ready_[i]),
                                                    " passed its deadline while queued")),
           now, out);
  }
  RemoveFromReady(expired);
}

void LowLevelCore::RemoveFromReady(const std::vector<bool>& remove) {
  size_t kept = 0;
  for (size_t i = 0; i < ready_.size(); ++i) {
    if (remove[i]) continue;
    if (kept != i) {
      ready_[kept] = ready_[i];
      ready_assignments_[kept] = std::move(ready_assignments_[i]);
    }
    ++kept;
  }
  ready_.resize(kept);
  ready_assignments_.resize(kept);
}

void LowLevelCore::Schedule(Time now, LowLevelActions& out) {
  TimeOutRuns(now, out);
  DropExpired(now, out);
  if (ready_.empty()) return;
  // With every PU busy, the only legal decision is kDrop of an item that has a
  // deadline; skip the policy when there is none, or when it never drops.
  const bool any_idle = std::any_of(pu_states_.begin(), pu_states_.end(), [](const auto& p) { return !p.busy; });
  if (!any_idle && (!policy_->MayDrop() || std::none_of(ready_.begin(), ready_.end(),
                                                         [](const auto& w) { return w.deadline.has_value(); }))) {
    return;
  }
  for (size_t i = 0; i < pu_states_.size(); ++i) {
    pu_states_[i].expected_free = running_[i] ? std::max(now, running_[i]->expected_end) : now;
  }
  SetService(now);
  policy::Snapshot snapshot;
  snapshot.now = now;
  snapshot.ready = ready_;
  snapshot.pus = pu_states_;
  snapshot.latency = latency_;
  snapshot.decisions_so_far = decisions_so_far_;
  const std::vector<policy::Decision> decisions = policy_->Decide(snapshot);
  if (decisions.empty()) return;

  auto where = [&] { return absl::StrCat("device ", options_.device.value, ": policy '", policy_name_, "' "); };
  std::vector<bool> decided(ready_.size(), false);
  for (const policy::Decision& d : decisions) {
    auto it = std::find_if(ready_.begin(), ready_.end(), [&](const auto& w) { return w.id == d.item; });
    if (it == ready_.end()) {
      Violation(absl::StrCat(where(), "decided on assignment ", d.item.value, ", which is not in the ready queue"));
      continue;
    }
    const size_t k = static_cast<size_t>(it - ready_.begin());
    const policy::WorkItem& w = ready_[k];
    if (decided[k]) {
      Violation(absl::StrCat(where(), "decided twice on ", Describe(w)));
      continue;
    }
    if (d.kind == policy::Decision::Kind::kDrop) {
      if (!w.deadline) {
        Violation(absl::StrCat(where(), "dropped ", Describe(w), ", which has no deadline"));
        continue;
      }
      decided[k] = true;
      ++stats_.dropped_by_policy;
      Reject(ready_assignments_[k],
             absl::DeadlineExceededError(absl::StrCat(where(), "dropped ", Describe(w),
                                                      ": it can no longer meet its deadline")),
             now, out);
      continue;
    }
    std::optional<size_t> p = PuIndex(d.pu);
    if (!p) {
      Violation(absl::StrCat(where(), "ran ", Describe(w), " on PU ", d.pu.value, ", which this device lacks"));
      continue;
    }
    if (pu_states_[*p].busy) {
      Violation(absl::StrCat(where(), "ran ", Describe(w), " on PU ", d.pu.value, ", which is busy"));
      continue;
    }
    std::optional<Duration> expected = latency_->Expected(w.model, w.partition, d.pu);
    if (!expected) {
      Violation(absl::StrCat(where(), "ran ", Describe(w), " on PU ", d.pu.value, ", which cannot run it"));
      continue;
    }
    decided[k] = true;
    ++decisions_so_far_;
    ++stats_.started;
    pu_states_[*p].busy = true;
    pu_states_[*p].expected_free = now + *expected;
    Running run{w.id, w.request, w.model, w.partition, now, now + *expected};
    if (std::optional<Duration> limit = RunLimit(ready_assignments_[k], *expected)) {
      run.limit = *limit;
      run.timeout_at = now + *limit;
    }
    running_[*p] = run;
    Trace(TraceKind::kStarted, now, ready_assignments_[k], d.pu);
    out.starts.push_back(StartOnPu{d.pu, std::move(ready_assignments_[k])});
  }
  RemoveFromReady(decided);
}

Completion LowLevelCore::AnswerFor(AssignmentId id, RequestId request, ModelId model, PartitionId partition,
                                   absl::Status status) const {
  Completion c;
  c.id = id;
  c.request = request;
  c.model = model;
  c.partition = partition;
  c.device = options_.device;
  c.status = std::move(status);
  return c;
}

void LowLevelCore::Reject(const Assignment& a, absl::Status status, Time now, LowLevelActions& out) {
  Trace(TraceKind::kDropped, now, a, std::nullopt, status.code());
  Completion c = AnswerFor(a.id, a.request, a.model, a.partition, std::move(status));
  c.start = now;
  c.end = now;
  out.completions.push_back(std::move(c));
}

namespace {

// `ms` decayed from `from` to `to` with LowLevelCore::kServiceHalfLife.
double Decayed(double ms, Time from, Time to) {
  if (to <= from) return ms;
  const double halves = std::chrono::duration<double>(to - from) /
                        std::chrono::duration<double>(LowLevelCore::kServiceHalfLife);
  return ms * std::exp2(-halves);
}

}  // namespace

void LowLevelCore::Charge(ModelId model, Duration took, Time now) {
  Served& s = served_[model];
  s.ms = Decayed(s.ms, s.at, now) + std::chrono::duration<double, std::milli>(took).count();
  s.at = std::max(s.at, now);
}

void LowLevelCore::SetService(Time now) {
  // Requests of each model queued or running here (a request's partitions
  // may be here twice: counted once).
  absl::flat_hash_map<ModelId, absl::flat_hash_set<RequestId>> requests;
  for (const policy::WorkItem& w : ready_) requests[w.model].insert(w.request);
  for (const std::optional<Running>& r : running_) {
    if (r && !r->timed_out) requests[r->model].insert(r->request);
  }
  for (policy::WorkItem& w : ready_) {
    auto it = served_.find(w.model);
    const double ms = it == served_.end() ? 0 : Decayed(it->second.ms, it->second.at, now);
    w.service_ms = ms / static_cast<double>(requests[w.model].size());
  }
}

void LowLevelCore::Violation(std::string message) {
  if (options_.contract == ContractMode::kAbort) {
    std::fprintf(stderr, "baton: contract violation: %s\n", message.c_str());
    std::abort();
  }
  ++stats_.violations;
  last_violation_ = std::move(message);
}

std::optional<size_t> LowLevelCore::PuIndex(PuId pu) const {
  auto it = pu_index_.find(pu);
  if (it == pu_index_.end()) return std::nullopt;
  return it->second;
}

void LowLevelCore::Trace(TraceKind kind, Time now, const Assignment& a, std::optional<PuId> pu,
                         absl::StatusCode code) {
  if (observer_ == nullptr) return;
  observer_->OnEvent(
      TraceEvent{kind, now, a.request, a.model, a.partition, a.id, options_.device, pu, code, std::nullopt});
}

}  // namespace baton::dispatch
