#include "baton/runtime/runtime.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/process.h"

namespace baton::runtime {

struct Runtime::Device {
  DeviceId id;
  std::string name;
  std::vector<PuSetup> pus;
  std::unique_ptr<DeviceShell> shell;    // a local device
  std::shared_ptr<RemoteDevice> remote;  // or a remote one
  // Dispatcher thread only; copied into status_ under stats_mu_.
  uint64_t lost = 0;
  uint64_t returned = 0;
  bool reachable = true;
};

Runtime::Runtime(policy::OnlineLatencyModel* latency, const RunnerTable* runners, RuntimeOptions options)
    : latency_(latency), runners_(runners), options_(options), epoch_(std::chrono::steady_clock::now()) {}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(std::vector<DeviceSetup> devices,
                                                         policy::OnlineLatencyModel* latency,
                                                         const RunnerTable* runners, RuntimeOptions options) {
  if (latency == nullptr || runners == nullptr) {
    return absl::InvalidArgumentError("runtime: a latency model and a runner table are required");
  }
  if (devices.empty()) return absl::InvalidArgumentError("runtime: no devices; give at least one device with a PU");
  std::unique_ptr<Runtime> rt(new Runtime(latency, runners, options));
  absl::flat_hash_map<PuId, std::string> pu_names;
  for (DeviceSetup& setup : devices) {
    if (rt->device_by_id_.contains(setup.id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("runtime: device id ", setup.id.value, " ('", setup.name, "') is used twice; ids must be unique"));
    }
    for (const PuSetup& pu : setup.pus) {
      if (auto [it, inserted] = pu_names.emplace(pu.id, pu.name); !inserted) {
        return absl::InvalidArgumentError(absl::StrCat("runtime: PU id ", pu.id.value, " is used by both '", it->second,
                                                       "' and '", pu.name, "'; PU ids must be unique over all devices"));
      }
    }
    auto device = std::make_unique<Device>();
    device->id = setup.id;
    device->name = setup.name;
    device->pus = setup.pus;
    if (setup.remote) {
      if (setup.pus.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("runtime: remote device '", setup.name, "' lists no PUs; connect to it before creating the runtime"));
      }
      for (const PuSetup& pu : setup.pus) latency->SetPuKind(pu.id, pu.kind);
      device->remote = std::move(setup.remote);
    } else {
      Runtime* self = rt.get();
      DeviceShell::Flush flush;
      if (options.inline_dispatch) {
        flush = [self](const std::atomic<bool>& pu_has_work) {
          if (pu_has_work.load()) {
            self->WakeDispatcher();
            return;
          }
          if (self->TakeRole()) self->DrainMail(/*call_back=*/true, /*inline_holder=*/true, &pu_has_work);
        };
      }
      BATON_ASSIGN_OR_RETURN(
          device->shell,
          DeviceShell::Create(setup.id, setup.name, std::move(setup.pus), std::move(setup.policy), setup.max_queue,
                              latency, runners, rt->epoch_,
                              [self](std::vector<dispatch::Completion> c) { self->PostCompletions(std::move(c)); },
                              dispatch::ExecTimeoutRule{}, std::move(flush)));
    }
    rt->status_.push_back(DeviceStatus{device->id, device->name, device->remote != nullptr, true, 0, 0});
    rt->device_by_id_.emplace(device->id, device.get());
    rt->devices_.push_back(std::move(device));
  }
  if (options.observer != nullptr) rt->set_observer(options.observer);
  return rt;
}

Runtime::~Runtime() { Stop(); }

absl::Status Runtime::AddModel(ModelId id, dispatch::ModelGraph graph, dispatch::ModelOptions options) {
  if (state_.load() != State::kCreated) {
    return absl::FailedPreconditionError(absl::StrCat("model '", graph.name, "': add models before Start"));
  }
  for (const dispatch::PartitionNode& p : graph.partitions) {
    auto it = device_by_id_.find(p.device);
    if (it == device_by_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", graph.name, "' partition '", p.name,
                                                     "' is placed on device ", p.device.value,
                                                     ", which this runtime does not have"));
    }
    const Device& device = *it->second;
    bool any = false;
    for (const PuSetup& pu : device.pus) {
      const bool capable = runners_->Find(id, p.id, pu.id) != nullptr;
      latency_->SetCapable(id, p.id, pu.id, capable);
      any = any || capable;
    }
    for (DeviceId f : p.fallback_devices) {
      auto fit = device_by_id_.find(f);
      if (fit == device_by_id_.end()) {
        return absl::InvalidArgumentError(absl::StrCat("model '", graph.name, "' partition '", p.name,
                                                       "' lists fallback device ", f.value,
                                                       ", which this runtime does not have"));
      }
      for (const PuSetup& pu : fit->second->pus) {
        latency_->SetCapable(id, p.id, pu.id, runners_->Find(id, p.id, pu.id) != nullptr);
      }
    }
    if (!any) {
      return absl::FailedPreconditionError(
          absl::StrCat("model '", graph.name, "' partition '", p.name, "': no PU of device '", device.name,
                       "' has a prepared runner for it; prepare it on a PU that supports its ops or place it elsewhere"));
    }
    if (p.fixed_pu && runners_->Find(id, p.id, *p.fixed_pu) == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("model '", graph.name, "' partition '", p.name,
                                                        "' is fixed to PU ", p.fixed_pu->value,
                                                        ", which has no runner for it on device '", device.name, "'"));
    }
  }
  return hl_.AddModel(id, std::move(graph), options);
}

void Runtime::set_observer(dispatch::DispatchObserver* observer) {
  observer_ = observer;
  hl_.set_observer(observer);
  for (auto& d : devices_) {
    if (d->shell) d->shell->set_observer(observer);
  }
}

absl::Status Runtime::Start() {
  std::lock_guard stop_lock(stop_mu_);
  if (state_.load() != State::kCreated) {
    return absl::FailedPreconditionError("runtime: Start was already called (a runtime starts once)");
  }
  ResetStats();
  state_.store(State::kRunning);
  for (auto& d : devices_) {
    if (d->shell) {
      d->shell->Start();
      continue;
    }
    const DeviceId id = d->id;
    d->remote->Start(RemoteDeviceEvents{
        .completion = [this](dispatch::Completion c) { Post(std::move(c)); },
        .returned = [this, id](std::vector<dispatch::Assignment> a) { Post(Returned{id, std::move(a)}); },
        .reachable = [this, id](bool up, std::string why) { Post(Reachability{id, up, std::move(why)}); },
        .now = [this] { return Now(); }});
  }
  dispatcher_ = std::thread([this] { DispatcherLoop(); });
  NameThread(dispatcher_.native_handle(), "dispatcher");
  return absl::OkStatus();
}

Time Runtime::Now() const { return Time(std::chrono::steady_clock::now() - epoch_); }

bool Runtime::Enqueue(NewRequest& request, absl::Status& refused, bool take_role, bool& took_role) {
  bool notify = false;
  {
    std::lock_guard lock(mail_mu_);
    const State state = state_.load();
    if (state == State::kCreated) {
      refused = absl::FailedPreconditionError("runtime: Submit before Start; call Start first");
      return false;
    }
    if (state == State::kStopped || !accepting_) {
      refused = absl::UnavailableError("runtime: stopped; the request was not run");
      return false;
    }
    pending_.fetch_add(1);
    mail_.push_back(std::move(request));
    if (!dispatching_ && take_role) {
      dispatching_ = true;
      took_role = true;
    } else {
      notify = !dispatching_;
    }
  }
  if (notify) mail_cv_.notify_one();
  return true;
}

RequestId Runtime::Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done) {
  const RequestId id(next_request_.fetch_add(1));
  const Time submitted = Now();
  NewRequest request{id, model, std::move(inputs), options, std::move(done), submitted, /*any_thread=*/false};
  absl::Status refused;
  bool took_role = false;
  if (!Enqueue(request, refused, options_.inline_dispatch, took_role)) {
    if (request.done) request.done(RequestResult{id, model, std::move(refused), {}, submitted, Now()});
    return id;
  }
  // The caller may hold locks its own callbacks take: it runs none here.
  if (took_role) DrainMail(/*call_back=*/false, /*inline_holder=*/true);
  return id;
}

std::future<RequestResult> Runtime::Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options) {
  auto promise = std::make_shared<std::promise<RequestResult>>();
  std::future<RequestResult> future = promise->get_future();
  Submit(model, std::move(inputs), options, [promise](RequestResult r) { promise->set_value(std::move(r)); });
  return future;
}

RequestResult Runtime::Run(ModelId model, NamedTensors inputs, dispatch::RequestOptions options) {
  const RequestId id(next_request_.fetch_add(1));
  const Time submitted = Now();
  auto promise = std::make_shared<std::promise<RequestResult>>();
  std::future<RequestResult> future = promise->get_future();
  NewRequest request{id,
                     model,
                     std::move(inputs),
                     options,
                     [promise](RequestResult r) { promise->set_value(std::move(r)); },
                     submitted,
                     /*any_thread=*/true};
  absl::Status refused;
  bool took_role = false;
  if (!StartHere(request, refused, took_role)) return RequestResult{id, model, std::move(refused), {}, submitted, Now()};
  if (took_role) WorkHere(id);
  RequestResult result = future.get();
  EndRun();
  return result;
}

RequestId Runtime::SubmitHere(ModelId model, NamedTensors inputs, dispatch::RequestOptions options,
                              DoneCallback done) {
  const RequestId id(next_request_.fetch_add(1));
  const Time submitted = Now();
  NewRequest request{id, model, std::move(inputs), options, std::move(done), submitted, /*any_thread=*/false};
  absl::Status refused;
  bool took_role = false;
  if (!StartHere(request, refused, took_role)) {
    if (request.done) request.done(RequestResult{id, model, std::move(refused), {}, submitted, Now()});
    return id;
  }
  if (took_role) WorkHere(id);
  EndRun();
  return id;
}

bool Runtime::StartHere(NewRequest& request, absl::Status& refused, bool& took_role) {
  {
    std::lock_guard lock(mail_mu_);
    ++runs_in_progress_;
  }
  if (Enqueue(request, refused, options_.inline_dispatch, took_role)) return true;
  EndRun();
  return false;
}

void Runtime::WorkHere(RequestId id) {
  std::optional<DeviceShell::DirectCatcher> catcher;
  if (options_.caller_runs) catcher.emplace(id);
  DrainMail(/*call_back=*/false, /*inline_holder=*/true, nullptr, id);
  // Each run this thread caught: run it here, then hand its completion to
  // the HL core (which may start the request's next partition, caught too).
  while (catcher && catcher->has_job()) {
    catcher->RunJob();
    if (TakeRole()) DrainMail(/*call_back=*/false, /*inline_holder=*/true, nullptr, id);
  }
}

void Runtime::EndRun() {
  std::lock_guard lock(mail_mu_);
  --runs_in_progress_;
  // Under the lock: Stop may destroy this runtime once it sees zero.
  runs_cv_.notify_all();
}

bool Runtime::Drain(std::optional<Duration> timeout) {
  std::unique_lock lock(drain_mu_);
  auto drained = [this] { return pending_.load() == 0; };
  if (!timeout) {
    drain_cv_.wait(lock, drained);
    return true;
  }
  return drain_cv_.wait_for(lock, *timeout, drained);
}

uint64_t Runtime::Abandon(absl::Status status) {
  if (state_.load() != State::kRunning) return 0;
  uint64_t before;
  {
    std::lock_guard lock(stats_mu_);
    before = abandoned_;
  }
  Post(AbandonAll{std::move(status)});
  Drain();
  std::lock_guard lock(stats_mu_);
  return abandoned_ - before;
}

void Runtime::Cancel(RequestId id) {
  if (state_.load() != State::kRunning) return;  // Stop answers everything itself
  Post(CancelRequest{id});
}

void Runtime::Stop(std::optional<Duration> drain_timeout) {
  std::lock_guard stop_lock(stop_mu_);
  if (state_.load() == State::kCreated) {
    state_.store(State::kStopped);
    return;
  }
  if (state_.load() == State::kStopped) return;
  {
    std::lock_guard lock(mail_mu_);
    accepting_ = false;
  }
  if (!Drain(drain_timeout)) {
    const double s = std::chrono::duration<double>(*drain_timeout).count();
    Post(AbandonAll{absl::UnavailableError(absl::StrCat(
        "runtime: stopped before the request finished (it was still in flight when the drain limit of ", s,
        " s passed)"))});
    Drain();
  }
  {
    std::lock_guard lock(mail_mu_);
    stopping_ = true;
  }
  mail_cv_.notify_all();
  dispatcher_.join();
  for (auto& d : devices_) {
    if (d->shell) d->shell->Stop();
    if (d->remote) d->remote->Stop();
  }
  {
    // Threads still inside Run have their answers; their direct runs were
    // cancelled by the shells' Stop.
    std::unique_lock lock(mail_mu_);
    runs_cv_.wait(lock, [this] { return runs_in_progress_ == 0; });
  }
  state_.store(State::kStopped);
}

void Runtime::DispatcherLoop() {
  std::unique_lock lock(mail_mu_);
  while (true) {
    if (stopping_ && !answers_waiting_ && (mail_.empty() || dispatching_)) return;
    const bool due = wake_ && *wake_ <= Now();
    if (!dispatching_ && (!mail_.empty() || answers_waiting_ || due)) {
      dispatching_ = true;
      lock.unlock();
      DrainMail(/*call_back=*/true, /*inline_holder=*/false);
      lock.lock();
      continue;
    }
    // Another thread holds the role: it ticks what is due before it lets go.
    std::optional<Time> until = wake_;
    if (until && *until <= Now()) until.reset();
    sleeping_until_ = until;
    if (until) {
      mail_cv_.wait_until(lock, epoch_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                             until->time_since_epoch()));
    } else {
      mail_cv_.wait(lock);
    }
    sleeping_until_.reset();
  }
}

void Runtime::WakeDispatcher() {
  bool notify;
  {
    std::lock_guard lock(mail_mu_);
    notify = !dispatching_ && !mail_.empty();
  }
  if (notify) mail_cv_.notify_one();
}

bool Runtime::TakeRole() {
  std::lock_guard lock(mail_mu_);
  if (dispatching_ || mail_.empty()) return false;
  dispatching_ = true;
  return true;
}

void Runtime::DrainMail(bool call_back, bool inline_holder, const std::atomic<bool>* stop_early,
                        std::optional<RequestId> own) {
  call_back_ = call_back;
  own_ = own;
  std::deque<MailItem> batch;
  for (int pass = 1;; ++pass) {
    {
      std::lock_guard lock(mail_mu_);
      batch.swap(mail_);
      if (call_back) answers_waiting_ = false;
    }
    for (MailItem& item : batch) Handle(item);
    batch.clear();
    if (call_back && !deferred_.empty()) {
      std::vector<Answer> answers;
      answers.swap(deferred_);
      for (Answer& a : answers) Deliver(std::move(a));
    }
    const std::optional<Time> wake = TickExpired(Now());
    bool notify = false;
    {
      std::lock_guard lock(mail_mu_);
      wake_ = wake;
      // A thread that took the role on its way elsewhere (a client, a PU)
      // hands a steady stream of mail to the dispatcher thread after a few
      // passes, and a PU worker after one pass once its PU has work again.
      if (!mail_.empty() && (!inline_holder || pass < kMaxInlinePasses) &&
          (stop_early == nullptr || !stop_early->load())) {
        continue;
      }
      dispatching_ = false;
      if (!mail_.empty()) notify = true;
      if (!deferred_.empty()) {  // answers this thread may not deliver
        answers_waiting_ = true;
        notify = true;
      }
      if (wake && (!sleeping_until_ || *wake < *sleeping_until_)) notify = true;
    }
    if (notify) mail_cv_.notify_one();
    return;
  }
}

void Runtime::Handle(MailItem& item) {
  if (auto* r = std::get_if<NewRequest>(&item)) {
    clients_[r->id] = Client{std::move(r->done), r->submitted, r->any_thread};
    Apply(hl_.OnRequest(r->id, r->model, std::move(r->inputs), r->options, Now()));
  } else if (auto* c = std::get_if<dispatch::Completion>(&item)) {
    if (observer_ != nullptr && c->pu.has_value()) {
      // A remote device's LL core runs in its agent: its runs reach the
      // observer from their completions (times already on this clock).
      auto it = device_by_id_.find(c->device);
      if (it != device_by_id_.end() && it->second->remote) {
        observer_->OnEvent(dispatch::TraceEvent{dispatch::TraceKind::kFinished, c->end, c->request, c->model,
                                                c->partition, c->id, c->device, c->pu, c->status.code(), c->start});
      }
    }
    Apply(hl_.OnCompletion(std::move(*c), Now()));
  } else if (auto* abandon = std::get_if<AbandonAll>(&item)) {
    dispatch::HighLevelActions answers = hl_.AbortAll(std::move(abandon->status), Now());
    {
      std::lock_guard lock(stats_mu_);
      abandoned_ += answers.finished.size();
    }
    Apply(std::move(answers));
  } else if (auto* cancel = std::get_if<CancelRequest>(&item)) {
    Apply(hl_.OnCancel(cancel->id, absl::CancelledError("cancelled by its client"), Now()));
  } else if (auto* back = std::get_if<Returned>(&item)) {
    Device& d = *device_by_id_.at(back->from);
    d.returned += back->assignments.size();
    Apply(hl_.OnReturned(std::move(back->assignments), back->from, Now()));
  } else {
    const Reachability& change = std::get<Reachability>(item);
    Device& d = *device_by_id_.at(change.device);
    if (d.reachable && !change.reachable) ++d.lost;
    if (d.reachable != change.reachable) {
      bool others = false;  // another device that can take the work
      for (const auto& other : devices_) others = others || (other.get() != &d && other->reachable);
      std::fprintf(stderr, "baton: device '%s' %s%s%s\n", d.name.c_str(),
                   change.reachable ? "is back; it takes work again"
                   : others         ? "is lost; its work goes to other devices"
                                    : "is lost, and no other device is reachable: its requests fail "
                                      "(UNAVAILABLE) until it is back",
                   change.why.empty() ? "" : ": ", change.why.c_str());
    }
    d.reachable = change.reachable;
    hl_.SetDeviceAvailable(change.device, change.reachable);
    std::lock_guard lock(stats_mu_);
    for (DeviceStatus& st : status_) {
      if (st.id == d.id) st = DeviceStatus{d.id, d.name, true, d.reachable, d.lost, d.returned};
    }
  }
}

std::optional<Time> Runtime::TickExpired(Time now) {
  if (std::optional<Time> t = hl_.NextExpiry(); t && *t <= now) Apply(hl_.OnTick(now));
  std::optional<Time> wake = hl_.NextExpiry();
  for (auto& d : devices_) {
    if (!d->shell) continue;  // an agent drops its own late work
    // Only the dispatcher adds queued work, so no device expiry can come earlier
    // before this thread looks again (a PU finishing only removes work).
    if (std::optional<Time> t = d->shell->TickIfDue(now); t && (!wake || *t < *wake)) wake = t;
  }
  return wake;
}

void Runtime::Apply(dispatch::HighLevelActions actions) {
  for (dispatch::SendAssignment& send : actions.assignments) {
    Device& d = *device_by_id_.at(send.device);
    if (d.shell) {
      d.shell->Submit(std::move(send.assignment));
    } else {
      d.remote->Submit(std::move(send.assignment));
    }
  }
  // After the sends: an id sent above may be withdrawn here.
  for (const dispatch::CancelAssignments& cancel : actions.cancels) {
    Device& d = *device_by_id_.at(cancel.device);
    if (d.shell) {
      d.shell->Cancel(cancel.ids);
    } else {
      d.remote->Cancel(cancel.ids);
    }
  }
  {
    // Before any callback: a client that has its answer sees it counted.
    std::lock_guard lock(stats_mu_);
    hl_stats_ = hl_.stats();
  }
  for (dispatch::FinishRequest& f : actions.finished) {
    auto it = clients_.find(f.request);
    if (it == clients_.end()) {  // cannot happen: the HL core answers each request once
      std::lock_guard lock(stats_mu_);
      ++answered_twice_;
      continue;
    }
    Answer answer{std::move(it->second), RequestResult{f.request, f.model, std::move(f.status), std::move(f.outputs),
                                                       it->second.submitted, f.finished, f.compute}};
    clients_.erase(it);
    if (call_back_ || answer.client.any_thread || f.request == own_) {
      Deliver(std::move(answer));
    } else {
      deferred_.push_back(std::move(answer));
    }
  }
}

void Runtime::Deliver(Answer answer) {
  if (answer.client.done) answer.client.done(std::move(answer.result));
  {
    std::lock_guard lock(drain_mu_);
    pending_.fetch_sub(1);
  }
  drain_cv_.notify_all();
}

void Runtime::PostCompletions(std::vector<dispatch::Completion> completions) {
  if (completions.empty()) return;
  bool notify;
  {
    std::lock_guard lock(mail_mu_);
    for (dispatch::Completion& c : completions) mail_.emplace_back(std::in_place_type<dispatch::Completion>, std::move(c));
    // Inline: the shell's flush, the role's holder (Submit and TickIfDue
    // run under it) or Run's caller (after a direct run) takes it from here.
    notify = !options_.inline_dispatch && !dispatching_;
  }
  if (notify) mail_cv_.notify_one();
}

template <typename Item>
void Runtime::Post(Item item) {
  bool notify;
  {
    std::lock_guard lock(mail_mu_);
    mail_.emplace_back(std::in_place_type<Item>, std::move(item));
    notify = !dispatching_;  // the holder looks at the mail before it lets go
  }
  if (notify) mail_cv_.notify_one();
}

std::vector<PuStats> Runtime::pu_stats(std::optional<Time> until) const {
  std::vector<PuStats> out;
  for (const auto& d : devices_) {
    std::vector<PuStats> s = d->shell ? d->shell->pu_stats(until) : d->remote->pu_stats();
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

RuntimeStats Runtime::stats() const {
  RuntimeStats s;
  for (const auto& d : devices_) {
    s.devices.push_back(d->shell ? d->shell->core_stats() : dispatch::LowLevelStats{});
  }
  std::lock_guard lock(stats_mu_);
  s.status = status_;
  s.abandoned = abandoned_;
  s.answered_twice = answered_twice_;
  // The HL core belongs to the dispatcher thread, which copies its counters here.
  s.high_level = state_.load() == State::kRunning ? hl_stats_ : hl_.stats();
  s.window = Now() - window_start_;
  return s;
}

void Runtime::ResetStats() {
  const Time now = Now();
  for (auto& d : devices_) {
    if (d->shell) d->shell->ResetStats(now);
    if (d->remote) d->remote->ResetStats();
  }
  std::lock_guard lock(stats_mu_);
  window_start_ = now;
}


}  // namespace baton::runtime
