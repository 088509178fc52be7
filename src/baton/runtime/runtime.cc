#include "baton/runtime/runtime.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace baton::runtime {

void RunnerTable::Set(ModelId model, PartitionId partition, PuId pu, const backend::PreparedPartition* runner) {
  table_[policy::LatencyKey{model, partition, pu}] = runner;
}

const backend::PreparedPartition* RunnerTable::Find(ModelId model, PartitionId partition, PuId pu) const {
  auto it = table_.find(policy::LatencyKey{model, partition, pu});
  return it == table_.end() ? nullptr : it->second;
}

struct Runtime::Pu {
  PuSetup setup;
  std::optional<dispatch::StartOnPu> slot;  // guarded by Device::mu
  std::condition_variable cv;               // signalled when `slot` is filled or on stop
  Duration busy{};                          // guarded by Device::mu
  uint64_t runs = 0;                        // guarded by Device::mu
  uint64_t failures = 0;                    // guarded by Device::mu
  std::vector<PuRun> log;                   // guarded by Device::mu
  std::thread thread;
};

struct Runtime::Device {
  DeviceId id;
  std::string name;
  std::mutex mu;
  std::optional<dispatch::LowLevelCore> core;  // guarded by mu
  std::vector<std::unique_ptr<Pu>> pus;
  absl::flat_hash_map<PuId, Pu*> pu_by_id;
  std::unique_ptr<dispatch::LowLevelPort> port;
  Time window_start{};  // guarded by mu
  bool stop = false;    // guarded by mu
};

// The HL side's way into one local device: runs the LL core's OnAssignment
// under the device mutex, on the caller's (the dispatcher's) thread. Any
// completion it produces (a rejection) goes to the dispatcher's mailbox, so
// the sink is never entered from inside Submit.
class Runtime::LocalPort : public dispatch::LowLevelPort {
 public:
  LocalPort(Runtime* runtime, Device* device) : runtime_(runtime), device_(device) {}
  void Submit(dispatch::Assignment assignment) override {
    std::vector<dispatch::Completion> completions;
    std::lock_guard lock(device_->mu);
    runtime_->ApplyLocked(*device_, device_->core->OnAssignment(std::move(assignment), runtime_->Now()),
                          completions);
    runtime_->PostCompletions(std::move(completions));
  }

 private:
  Runtime* runtime_;
  Device* device_;
};

namespace {

// Pins the calling thread to `cores`; an error message, or "" on success.
std::string PinThisThread(const std::vector<int>& cores) {
  if (cores.empty()) return "";
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cores) CPU_SET(c, &set);
  const int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (rc == 0) return "";
  return absl::StrCat("could not pin to cores [", absl::StrJoin(cores, ", "), "] (error ", rc,
                      "); the PU runs unpinned. Check the cores the process may use (taskset -p $$)");
}

}  // namespace

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
    auto device = std::make_unique<Device>();
    device->id = setup.id;
    device->name = setup.name;
    dispatch::LowLevelOptions ll;
    ll.device = setup.id;
    ll.max_queue = setup.max_queue;
    for (PuSetup& pu : setup.pus) {
      if (auto [it, inserted] = pu_names.emplace(pu.id, pu.name); !inserted) {
        return absl::InvalidArgumentError(absl::StrCat("runtime: PU id ", pu.id.value, " is used by both '", it->second,
                                                       "' and '", pu.name, "'; PU ids must be unique over all devices"));
      }
      ll.pus.push_back(dispatch::PuSpec{pu.id, pu.kind});
      latency->SetPuKind(pu.id, pu.kind);
      auto p = std::make_unique<Pu>();
      p->setup = std::move(pu);
      device->pu_by_id.emplace(p->setup.id, p.get());
      device->pus.push_back(std::move(p));
    }
    BATON_ASSIGN_OR_RETURN(dispatch::LowLevelCore core,
                           dispatch::LowLevelCore::Create(std::move(ll), std::move(setup.policy), latency));
    device->core.emplace(std::move(core));
    device->port = std::make_unique<LocalPort>(rt.get(), device.get());
    rt->device_by_id_.emplace(device->id, device.get());
    rt->devices_.push_back(std::move(device));
  }
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
    for (const auto& pu : device.pus) {
      const bool capable = runners_->Find(id, p.id, pu->setup.id) != nullptr;
      latency_->SetCapable(id, p.id, pu->setup.id, capable);
      any = any || capable;
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
    std::lock_guard lock(d->mu);
    d->core->set_observer(observer);
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
    for (auto& pu : d->pus) {
      pu->thread = std::thread([this, dev = d.get(), p = pu.get()] { PuLoop(*dev, *p); });
    }
  }
  dispatcher_ = std::thread([this] { DispatcherLoop(); });
  return absl::OkStatus();
}

Time Runtime::Now() const { return Time(std::chrono::steady_clock::now() - epoch_); }

RequestId Runtime::Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options, DoneCallback done) {
  const RequestId id(next_request_.fetch_add(1));
  const Time submitted = Now();
  absl::Status refused;
  {
    std::lock_guard lock(mail_mu_);
    const State state = state_.load();
    if (state == State::kCreated) {
      refused = absl::FailedPreconditionError("runtime: Submit before Start; call Start first");
    } else if (state == State::kStopped || !accepting_) {
      refused = absl::UnavailableError("runtime: stopped; the request was not run");
    } else {
      pending_.fetch_add(1);
      mail_.push_back(NewRequest{id, model, std::move(inputs), options, std::move(done), submitted});
    }
  }
  if (!refused.ok()) {
    if (done) done(RequestResult{id, model, std::move(refused), {}, submitted, Now()});
    return id;
  }
  mail_cv_.notify_one();
  return id;
}

std::future<RequestResult> Runtime::Submit(ModelId model, NamedTensors inputs, dispatch::RequestOptions options) {
  auto promise = std::make_shared<std::promise<RequestResult>>();
  std::future<RequestResult> future = promise->get_future();
  Submit(model, std::move(inputs), options, [promise](RequestResult r) { promise->set_value(std::move(r)); });
  return future;
}

void Runtime::Drain() {
  std::unique_lock lock(drain_mu_);
  drain_cv_.wait(lock, [this] { return pending_.load() == 0; });
}

void Runtime::Stop() {
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
  Drain();
  {
    std::lock_guard lock(mail_mu_);
    stopping_ = true;
  }
  mail_cv_.notify_all();
  dispatcher_.join();
  for (auto& d : devices_) {
    {
      std::lock_guard lock(d->mu);
      d->stop = true;
    }
    for (auto& pu : d->pus) pu->cv.notify_all();
    for (auto& pu : d->pus) pu->thread.join();
  }
  state_.store(State::kStopped);
}

void Runtime::DispatcherLoop() {
  std::deque<MailItem> batch;
  std::optional<Time> wake;  // the earliest expiry at any level, from the last TickExpired
  while (true) {
    {
      std::unique_lock lock(mail_mu_);
      auto ready = [this] { return !mail_.empty() || stopping_; };
      if (wake) {
        mail_cv_.wait_until(lock, epoch_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               wake->time_since_epoch()),
                            ready);
      } else {
        mail_cv_.wait(lock, ready);
      }
      if (mail_.empty() && stopping_) return;
      batch.swap(mail_);
    }
    for (MailItem& item : batch) {
      if (auto* r = std::get_if<NewRequest>(&item)) {
        clients_[r->id] = Client{std::move(r->done), r->submitted};
        Apply(hl_.OnRequest(r->id, r->model, std::move(r->inputs), r->options, Now()));
      } else {
        Apply(hl_.OnCompletion(std::move(std::get<dispatch::Completion>(item)), Now()));
      }
    }
    batch.clear();
    wake = TickExpired(Now());
  }
}

std::optional<Time> Runtime::TickExpired(Time now) {
  if (std::optional<Time> t = hl_.NextExpiry(); t && *t <= now) Apply(hl_.OnTick(now));
  std::optional<Time> wake = hl_.NextExpiry();
  for (auto& d : devices_) {
    std::lock_guard lock(d->mu);
    if (std::optional<Time> t = d->core->NextExpiry(); t && *t <= now) {
      std::vector<dispatch::Completion> completions;
      ApplyLocked(*d, d->core->OnTick(now), completions);
      PostCompletions(std::move(completions));
    }
    // Only the dispatcher adds queued work, so no device expiry can come earlier
    // before this thread looks again (a PU finishing only removes work).
    if (std::optional<Time> t = d->core->NextExpiry(); t && (!wake || *t < *wake)) wake = t;
  }
  return wake;
}

void Runtime::Apply(dispatch::HighLevelActions actions) {
  for (dispatch::SendAssignment& send : actions.assignments) {
    device_by_id_.at(send.device)->port->Submit(std::move(send.assignment));
  }
  {
    // Before any callback: a client that has its answer sees it counted.
    std::lock_guard lock(stats_mu_);
    hl_stats_ = hl_.stats();
  }
  for (dispatch::FinishRequest& f : actions.finished) {
    auto it = clients_.find(f.request);
    if (it == clients_.end()) continue;  // cannot happen: the HL core answers each request once
    Client client = std::move(it->second);
    clients_.erase(it);
    if (client.done) {
      client.done(RequestResult{f.request, f.model, std::move(f.status), std::move(f.outputs), client.submitted,
                                f.finished});
    }
    {
      std::lock_guard lock(drain_mu_);
      pending_.fetch_sub(1);
    }
    drain_cv_.notify_all();
  }
}

void Runtime::ApplyLocked(Device& device, dispatch::LowLevelActions actions,
                          std::vector<dispatch::Completion>& completions) {
  for (dispatch::StartOnPu& start : actions.starts) {
    Pu* pu = device.pu_by_id.at(start.pu);
    pu->slot.emplace(std::move(start));
    pu->cv.notify_one();
  }
  for (dispatch::Completion& c : actions.completions) completions.push_back(std::move(c));
}

void Runtime::PostCompletions(std::vector<dispatch::Completion> completions) {
  if (completions.empty()) return;
  {
    std::lock_guard lock(mail_mu_);
    for (dispatch::Completion& c : completions) mail_.push_back(std::move(c));
  }
  mail_cv_.notify_one();
}

void Runtime::PuLoop(Device& device, Pu& pu) {
  if (std::string error = PinThisThread(pu.setup.pin_cores); !error.empty()) {
    std::fprintf(stderr, "baton: PU '%s': %s\n", pu.setup.name.c_str(), error.c_str());
  }
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  std::unique_lock lock(device.mu);
  while (true) {
    pu.cv.wait(lock, [&] { return pu.slot.has_value() || device.stop; });
    if (!pu.slot) return;
    dispatch::StartOnPu job = std::move(*pu.slot);
    pu.slot.reset();
    lock.unlock();

    const dispatch::Assignment& a = job.assignment;
    const backend::PreparedPartition* runner = runners_->Find(a.model, a.partition, pu.setup.id);
    feeds.clear();
    for (const auto& [name, tensor] : a.inputs) feeds.emplace_back(name, &tensor);
    dispatch::PuResult result;
    result.pu = pu.setup.id;
    result.assignment = a.id;
    result.start = Now();
    absl::StatusOr<backend::RunResult> run =
        runner != nullptr
            ? runner->Run(feeds)
            : absl::StatusOr<backend::RunResult>(absl::FailedPreconditionError(absl::StrCat(
                  "PU '", pu.setup.name, "' has no runner for model ", a.model.value, " partition ", a.partition.value)));
    result.end = Now();
    if (run.ok()) {
      // An emulated accelerator may charge more than the call took: hold the PU
      // (asleep, no CPU) until the charged end.
      const Time charged_end = result.start + run->busy;
      if (charged_end > result.end) {
        std::this_thread::sleep_until(epoch_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                   charged_end.time_since_epoch()));
        result.end = std::max(charged_end, Now());
      }
      latency_->Observe(a.model, a.partition, pu.setup.id, result.end - result.start);
      result.outputs = std::move(run->outputs);
    } else {
      result.status = run.status();
    }

    const PuRun record{pu.setup.id, device.id, a.model, a.request, a.partition, result.start, result.end, run.ok()};
    lock.lock();
    if (result.end > device.window_start) pu.busy += result.end - std::max(result.start, device.window_start);
    ++pu.runs;
    if (!run.ok()) ++pu.failures;
    if (options_.record_runs) pu.log.push_back(record);
    std::vector<dispatch::Completion> completions;
    ApplyLocked(device, device.core->OnPuFinished(std::move(result), Now()), completions);
    PostCompletions(std::move(completions));
  }
}

std::vector<PuStats> Runtime::pu_stats() const {
  std::vector<PuStats> out;
  for (const auto& d : devices_) {
    std::lock_guard lock(d->mu);
    for (const auto& pu : d->pus) {
      out.push_back(PuStats{pu->setup.id, d->id, pu->setup.name, pu->setup.kind, pu->busy, pu->runs, pu->failures});
    }
  }
  return out;
}

RuntimeStats Runtime::stats() const {
  RuntimeStats s;
  for (const auto& d : devices_) {
    std::lock_guard lock(d->mu);
    s.devices.push_back(d->core->stats());
  }
  std::lock_guard lock(stats_mu_);
  // The HL core belongs to the dispatcher thread, which copies its counters here.
  s.high_level = state_.load() == State::kRunning ? hl_stats_ : hl_.stats();
  s.window = Now() - window_start_;
  return s;
}

void Runtime::ResetStats() {
  const Time now = Now();
  for (auto& d : devices_) {
    std::lock_guard lock(d->mu);
    d->window_start = now;
    for (auto& pu : d->pus) {
      pu->busy = Duration(0);
      pu->runs = 0;
      pu->failures = 0;
    }
  }
  std::lock_guard lock(stats_mu_);
  window_start_ = now;
}

std::vector<PuRun> Runtime::TakeRuns() {
  std::vector<PuRun> out;
  for (auto& d : devices_) {
    std::lock_guard lock(d->mu);
    for (auto& pu : d->pus) {
      out.insert(out.end(), pu->log.begin(), pu->log.end());
      pu->log.clear();
    }
  }
  return out;
}

}  // namespace baton::runtime
