#include "baton/dispatch/virtual_shell.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace baton::dispatch {

namespace {

// Heap order: the earliest time first, then the earliest scheduled.
template <typename E>
bool Later(const E& a, const E& b) {
  return a.at > b.at || (a.at == b.at && a.seq > b.seq);
}

}  // namespace

struct VirtualShell::Device {
  explicit Device(LowLevelCore c) : core(std::move(c)) {}
  uint32_t index = 0;
  LowLevelCore core;
  std::unique_ptr<LowLevelPort> port;  // what the HL side talks to
  CompletionSink sink;                 // what the LL side answers through
  std::optional<Time> tick;            // the earliest LL tick already scheduled
  bool touched = false;                // got an event in this step
};

// Delivers assignments to one device's LL core after the link delay.
class VirtualShell::VirtualPort : public LowLevelPort {
 public:
  VirtualPort(VirtualShell* shell, uint32_t device) : shell_(shell), device_(device) {}
  void Submit(Assignment assignment) override {
    shell_->Schedule(shell_->now_ + shell_->options_.link_delay, DeliverAssignment{device_, std::move(assignment)});
  }
  // After the same link delay, so it reaches the core after the assignments
  // sent before it.
  void Cancel(std::span<const AssignmentId> ids) override {
    shell_->Schedule(shell_->now_ + shell_->options_.link_delay,
                     DeliverCancel{device_, std::vector<AssignmentId>(ids.begin(), ids.end())});
  }

 private:
  VirtualShell* shell_;
  uint32_t device_;
};

VirtualShell::VirtualShell(VirtualExecutor* executor, VirtualShellOptions options)
    : executor_(executor), options_(options) {}

VirtualShell::~VirtualShell() = default;

absl::Status VirtualShell::AddDevice(LowLevelOptions options, std::unique_ptr<policy::LowLevelPolicy> policy,
                                     const policy::LatencyModel* latency) {
  const DeviceId id = options.device;
  if (device_index_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("device ", id.value, " was already added to the shell"));
  }
  BATON_ASSIGN_OR_RETURN(LowLevelCore core, LowLevelCore::Create(std::move(options), std::move(policy), latency));
  auto device = std::make_unique<Device>(std::move(core));
  device->index = static_cast<uint32_t>(devices_.size());
  device->port = std::make_unique<VirtualPort>(this, device->index);
  device->sink = [this](Completion c) {
    Schedule(now_ + options_.link_delay, DeliverCompletion{std::move(c)});
  };
  device->core.set_observer(observer_);
  device_index_.emplace(id, device->index);
  devices_.push_back(std::move(device));
  return absl::OkStatus();
}

absl::Status VirtualShell::AddModel(ModelId id, ModelGraph graph, ModelOptions options) {
  for (const auto& p : graph.partitions) {
    if (!device_index_.contains(p.device)) {
      std::vector<uint32_t> ids;
      for (const auto& d : devices_) ids.push_back(d->core.device().value);
      return absl::InvalidArgumentError(absl::StrCat("model '", graph.name, "' partition '", p.name,
                                                     "' is placed on device ", p.device.value,
                                                     ", which the shell lacks (devices: ", absl::StrJoin(ids, ", "),
                                                     "); add the device first"));
    }
  }
  return hl_.AddModel(id, std::move(graph), options);
}

RequestId VirtualShell::Submit(ModelId model, NamedTensors inputs, RequestOptions options, Time at) {
  const RequestId id(next_request_++);
  at = std::max(at, now_);
  pending_.emplace(id, Pending{at, std::nullopt, 0});
  Schedule(at, ArriveRequest{id, model, std::move(inputs), options});
  return id;
}

absl::Status VirtualShell::AddStream(StreamSpec spec) {
  if (!spec.make) return absl::InvalidArgumentError("stream: no request maker");
  if (const auto* p = std::get_if<Periodic>(&spec.arrival); p && p->period <= Duration(0)) {
    return absl::InvalidArgumentError("stream: the period must be positive");
  }
  if (const auto* p = std::get_if<Poisson>(&spec.arrival); p && !(p->per_second > 0)) {
    return absl::InvalidArgumentError("stream: the Poisson rate must be positive");
  }
  const auto* closed = std::get_if<ClosedLoop>(&spec.arrival);
  if (closed && closed->concurrency < 1) {
    return absl::InvalidArgumentError("stream: the closed-loop concurrency must be at least 1");
  }
  const auto s = static_cast<uint32_t>(streams_.size());
  const Time start = std::max(spec.start, now_);
  const uint64_t first = closed ? std::min<uint64_t>(closed->concurrency, spec.count) : (spec.count > 0 ? 1 : 0);
  streams_.push_back(Stream{std::move(spec), Rng(options_.seed ^ (0x9E3779B97F4A7C15ull * (s + 1))), 0});
  for (uint64_t i = 0; i < first; ++i) Schedule(start, StreamNext{s});
  return absl::OkStatus();
}

void VirtualShell::RunUntilIdle() {
  while (!queue_.empty()) Step();
}

void VirtualShell::RunUntil(Time t) {
  while (!queue_.empty() && queue_.front().at <= t) Step();
  now_ = std::max(now_, t);
}

void VirtualShell::set_observer(DispatchObserver* observer) {
  observer_ = observer;
  hl_.set_observer(observer);
  for (auto& d : devices_) d->core.set_observer(observer);
}

const LowLevelCore* VirtualShell::low_level(DeviceId device) const {
  auto it = device_index_.find(device);
  return it == device_index_.end() ? nullptr : &devices_[it->second]->core;
}

LowLevelPort* VirtualShell::port(DeviceId device) {
  auto it = device_index_.find(device);
  return it == device_index_.end() ? nullptr : devices_[it->second]->port.get();
}

void VirtualShell::Schedule(Time at, Payload payload) {
  queue_.push_back(Event{at, next_seq_++, std::move(payload)});
  std::push_heap(queue_.begin(), queue_.end(), Later<Event>);
}

void VirtualShell::Step() {
  std::pop_heap(queue_.begin(), queue_.end(), Later<Event>);
  Event event = std::move(queue_.back());
  queue_.pop_back();
  now_ = event.at;
  ++events_processed_;
  std::visit([this](auto& payload) { Handle(payload); }, event.payload);
  ScheduleTicks();
}

void VirtualShell::Handle(ArriveRequest& e) {
  Apply(hl_.OnRequest(e.id, e.model, std::move(e.inputs), e.options, now_));
}

void VirtualShell::Handle(StreamNext& e) {
  IssueFromStream(e.stream);
  Stream& s = streams_[e.stream];
  if (s.issued >= s.spec.count) return;
  if (const auto* p = std::get_if<Periodic>(&s.spec.arrival)) {
    Schedule(now_ + p->period, StreamNext{e.stream});
  } else if (const auto* q = std::get_if<Poisson>(&s.spec.arrival)) {
    const Duration mean(static_cast<Duration::rep>(1e9 / q->per_second));
    Schedule(now_ + s.rng.Exponential(mean), StreamNext{e.stream});
  }
  // Closed loop: the next request follows an answer (see Apply).
}

void VirtualShell::Handle(DeliverAssignment& e) {
  Device& d = *devices_[e.device];
  Apply(d, d.core.OnAssignment(std::move(e.assignment), now_));
}

void VirtualShell::Handle(DeliverCancel& e) {
  Device& d = *devices_[e.device];
  Apply(d, d.core.OnCancel(e.ids, absl::CancelledError("withdrawn by the dispatcher: its request was already answered"),
                           now_));
}

void VirtualShell::Handle(PuDone& e) {
  Device& d = *devices_[e.device];
  Apply(d, d.core.OnPuFinished(std::move(e.result), now_));
}

void VirtualShell::Handle(DeliverCompletion& e) { Apply(hl_.OnCompletion(std::move(e.completion), now_)); }

void VirtualShell::Handle(TickHighLevel&) {
  if (hl_tick_ == now_) hl_tick_.reset();
  Apply(hl_.OnTick(now_));
}

void VirtualShell::Handle(TickLowLevel& e) {
  Device& d = *devices_[e.device];
  if (d.tick == now_) d.tick.reset();
  Apply(d, d.core.OnTick(now_));
}

void VirtualShell::IssueFromStream(uint32_t index) {
  Stream& s = streams_[index];
  RequestTemplate t = s.spec.make(s.issued, s.rng);
  const RequestId id(next_request_++);
  pending_.emplace(id, Pending{now_, index, s.issued});
  ++s.issued;
  RequestOptions options;
  if (t.deadline) options.deadline = now_ + *t.deadline;
  options.priority = t.priority;
  Apply(hl_.OnRequest(id, s.spec.model, std::move(t.inputs), options, now_));
}

void VirtualShell::Apply(HighLevelActions actions) {
  for (auto& send : actions.assignments) {
    devices_[device_index_.at(send.device)]->port->Submit(std::move(send.assignment));
  }
  for (auto& cancel : actions.cancels) {
    devices_[device_index_.at(cancel.device)]->port->Cancel(cancel.ids);
  }
  for (auto& f : actions.finished) {
    auto it = pending_.find(f.request);
    if (it == pending_.end()) {
      ++duplicate_answers_;
      continue;
    }
    RequestRecord record{f.request, f.model,          std::move(f.status),     std::move(f.outputs),
                         it->second.submitted, now_, it->second.stream, it->second.stream_index};
    pending_.erase(it);
    if (on_finish_) on_finish_(record);
    if (record.stream) {
      Stream& s = streams_[*record.stream];
      if (const auto* c = std::get_if<ClosedLoop>(&s.spec.arrival); c && s.issued < s.spec.count) {
        Schedule(now_ + c->think, StreamNext{*record.stream});
      }
    }
    if (!options_.keep_outputs) record.outputs.clear();
    finished_.push_back(std::move(record));
  }
}

void VirtualShell::Apply(Device& device, LowLevelActions actions) {
  device.touched = true;
  for (auto& start : actions.starts) {
    const Duration run = executor_->RunTime(device.core.device(), start.pu, start.assignment);
    absl::StatusOr<NamedTensors> outputs = executor_->Outputs(device.core.device(), start.pu, start.assignment);
    PuResult result;
    result.pu = start.pu;
    result.assignment = start.assignment.id;
    result.status = outputs.status();
    if (outputs.ok()) result.outputs = std::move(*outputs);
    result.start = now_;
    result.end = now_ + run;
    Schedule(result.end, PuDone{device.index, std::move(result)});
  }
  for (auto& c : actions.completions) device.sink(std::move(c));
}

void VirtualShell::ScheduleTicks() {
  if (std::optional<Time> next = hl_.NextExpiry(); next && (!hl_tick_ || *next < *hl_tick_)) {
    hl_tick_ = std::max(*next, now_);
    Schedule(*hl_tick_, TickHighLevel{});
  }
  for (auto& d : devices_) {
    if (!d->touched) continue;
    d->touched = false;
    std::optional<Time> next = d->core.NextExpiry();
    if (std::optional<Time> t = d->core.NextRunTimeout(); t && (!next || *t < *next)) next = t;
    if (next && (!d->tick || *next < *d->tick)) {
      d->tick = std::max(*next, now_);
      Schedule(*d->tick, TickLowLevel{d->index});
    }
  }
}

}  // namespace baton::dispatch
