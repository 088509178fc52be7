#include "baton/dispatch/high_level.h"

#include <algorithm>
#include <cassert>
#include <iterator>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace baton::dispatch {

// A ModelGraph turned into index tables, so that forwarding a tensor is a walk
// over a short list of (partition, input slot) pairs.
struct HighLevelCore::CompiledModel {
  struct Reader {
    uint32_t partition;  // index into graph.partitions
    uint32_t slot;       // index into that partition's inputs
  };
  struct TensorInfo {
    std::vector<Reader> readers;
    std::optional<uint32_t> model_output;  // index into graph.outputs
  };

  ModelId id;
  ModelGraph graph;
  ModelOptions options;
  absl::flat_hash_map<std::string, uint32_t> tensor_index;
  std::vector<TensorInfo> tensors;
  std::vector<uint32_t> input_tensors;                  // per model input
  std::vector<std::vector<uint32_t>> partition_outputs;  // per partition, per output: tensor index
  size_t in_flight = 0;

  uint32_t TensorIndex(const std::string& name) {
    auto [it, inserted] = tensor_index.emplace(name, static_cast<uint32_t>(tensors.size()));
    if (inserted) tensors.emplace_back();
    return it->second;
  }
};

// One request in flight: the per-request instance of its model's graph.
struct HighLevelCore::Request {
  RequestId id;
  CompiledModel* model = nullptr;
  std::optional<Time> deadline;
  int priority = 0;
  Time arrived{};
  uint64_t serial = 0;
  std::vector<std::vector<Tensor>> inputs;  // [partition][input slot]
  std::vector<uint32_t> missing;            // inputs not yet present, per partition
  std::vector<bool> present;                // per tensor: already delivered
  std::vector<Tensor> outputs;              // per model output
  size_t outputs_missing = 0;
  std::vector<AssignmentId> outstanding;    // sent and not yet answered
  Duration compute{};                       // PU time of its partitions that ran
};

HighLevelCore::HighLevelCore() = default;
HighLevelCore::~HighLevelCore() = default;
HighLevelCore::HighLevelCore(HighLevelCore&&) noexcept = default;
HighLevelCore& HighLevelCore::operator=(HighLevelCore&&) noexcept = default;

absl::Status HighLevelCore::AddModel(ModelId id, ModelGraph graph, ModelOptions options) {
  if (models_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("model id ", id.value, " is already registered (as '",
                                                 models_[id]->graph.name, "')"));
  }
  if (options.max_in_flight < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model '", graph.name, "': max_in_flight is ",
                                                   options.max_in_flight, "; it must be at least 1"));
  }
  if (options.exec_timeout && *options.exec_timeout <= Duration(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", graph.name, "': the execution timeout must be positive (or unset)"));
  }
  BATON_RETURN_IF_ERROR(ValidateModelGraph(graph));
  auto m = std::make_unique<CompiledModel>();
  m->id = id;
  m->options = options;
  for (const auto& in : graph.inputs) m->input_tensors.push_back(m->TensorIndex(in));
  m->partition_outputs.resize(graph.partitions.size());
  for (uint32_t p = 0; p < graph.partitions.size(); ++p) {
    const PartitionNode& node = graph.partitions[p];
    for (uint32_t slot = 0; slot < node.inputs.size(); ++slot) {
      m->tensors[m->TensorIndex(node.inputs[slot])].readers.push_back({p, slot});
    }
    for (const auto& out : node.outputs) m->partition_outputs[p].push_back(m->TensorIndex(out));
  }
  for (uint32_t o = 0; o < graph.outputs.size(); ++o) {
    m->tensors[m->TensorIndex(graph.outputs[o])].model_output = o;
  }
  m->graph = std::move(graph);
  models_.emplace(id, std::move(m));
  return absl::OkStatus();
}

const ModelGraph* HighLevelCore::model(ModelId id) const {
  auto it = models_.find(id);
  return it == models_.end() ? nullptr : &it->second->graph;
}

size_t HighLevelCore::in_flight(ModelId model) const {
  auto it = models_.find(model);
  return it == models_.end() ? 0 : it->second->in_flight;
}

HighLevelActions HighLevelCore::OnRequest(RequestId id, ModelId model, NamedTensors inputs,
                                          RequestOptions options, Time now) {
  HighLevelActions out;
  ExpireRequests(now, out);
  ++stats_.requests;
  Trace(TraceKind::kRequestArrived, now, id, model);
  auto mit = models_.find(model);
  if (mit == models_.end()) {
    Answer(id, model, absl::NotFoundError(absl::StrCat("request ", id.value, ": no model with id ", model.value,
                                                       " is registered")),
           now, out);
    return out;
  }
  CompiledModel& m = *mit->second;
  if (requests_.contains(id)) {
    Answer(id, model,
           absl::AlreadyExistsError(absl::StrCat("request ", id.value, " is already in flight; request ids "
                                                 "must be unique")),
           now, out);
    return out;
  }
  // The inputs must be exactly the model's inputs.
  std::vector<bool> seen(m.graph.inputs.size(), false);
  for (const auto& [name, tensor] : inputs) {
    auto pos = std::find(m.graph.inputs.begin(), m.graph.inputs.end(), name);
    std::string problem;
    if (pos == m.graph.inputs.end()) {
      problem = absl::StrCat("'", name, "' is not an input of the model");
    } else if (seen[pos - m.graph.inputs.begin()]) {
      problem = absl::StrCat("input '", name, "' is given twice");
    } else {
      seen[pos - m.graph.inputs.begin()] = true;
      continue;
    }
    Answer(id, model,
           absl::InvalidArgumentError(absl::StrCat("request ", id.value, " for model '", m.graph.name, "': ",
                                                   problem)),
           now, out);
    return out;
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) {
      Answer(id, model,
             absl::InvalidArgumentError(absl::StrCat("request ", id.value, " for model '", m.graph.name,
                                                     "': input '", m.graph.inputs[i], "' is missing")),
             now, out);
      return out;
    }
  }
  if (DeadlinePassed(options.deadline, now)) {
    Answer(id, model,
           absl::DeadlineExceededError(absl::StrCat("request ", id.value, " for model '", m.graph.name,
                                                    "' arrived after its deadline")),
           now, out);
    return out;
  }
  if (m.in_flight >= static_cast<size_t>(m.options.max_in_flight)) {
    Answer(id, model,
           absl::ResourceExhaustedError(absl::StrCat(
               "request ", id.value, ": model '", m.graph.name, "' already has ", m.in_flight,
               " requests in flight (max_in_flight); retry later or raise max_in_flight")),
           now, out);
    return out;
  }

  auto owned = std::make_unique<Request>();
  Request& r = *owned;
  r.id = id;
  r.model = &m;
  r.deadline = options.deadline;
  r.priority = options.priority;
  r.arrived = now;
  r.serial = next_serial_++;
  const size_t num_partitions = m.graph.partitions.size();
  r.inputs.resize(num_partitions);
  r.missing.resize(num_partitions);
  std::vector<uint32_t> ready;
  for (uint32_t p = 0; p < num_partitions; ++p) {
    r.inputs[p].resize(m.graph.partitions[p].inputs.size());
    r.missing[p] = static_cast<uint32_t>(m.graph.partitions[p].inputs.size());
    if (r.missing[p] == 0) ready.push_back(p);
  }
  r.present.assign(m.tensors.size(), false);
  r.outputs.resize(m.graph.outputs.size());
  r.outputs_missing = m.graph.outputs.size();
  requests_.emplace(id, std::move(owned));
  ++m.in_flight;
  if (r.deadline) expiries_.push({*r.deadline, id, r.serial});

  for (auto& [name, tensor] : inputs) {
    Forward(r, m.tensor_index.at(name), std::move(tensor), ready);
  }
  if (r.outputs_missing == 0) {
    Finish(r, absl::OkStatus(), now, out);  // every output is a model input: nothing to run
  } else {
    SendReady(r, ready, now, out);
  }
  PruneExpiries();
  return out;
}

HighLevelActions HighLevelCore::OnCompletion(Completion c, Time now) {
  HighLevelActions out;
  ExpireRequests(now, out);
  auto it = outstanding_.find(c.id);
  Request* r = nullptr;
  if (it != outstanding_.end()) {
    auto rit = requests_.find(it->second.request);
    assert(rit != requests_.end() && "an outstanding assignment outlived its request");
    if (rit != requests_.end()) {
      r = rit->second.get();
      const PartitionNode& node = r->model->graph.partitions[it->second.partition];
      // A completion that names another request or partition than the one its
      // id was sent for is not the answer to that assignment.
      if (c.request != r->id || c.model != r->model->id || c.partition != node.id) r = nullptr;
    }
  }
  if (r == nullptr) {
    ++stats_.completions_ignored;
    Trace(TraceKind::kCompletionIgnored, now, c.request, c.model, c.partition, c.id, c.device);
    PruneExpiries();
    return out;
  }
  const uint32_t p = it->second.partition;
  outstanding_.erase(it);
  auto pos = std::find(r->outstanding.begin(), r->outstanding.end(), c.id);
  assert(pos != r->outstanding.end());
  *pos = r->outstanding.back();
  r->outstanding.pop_back();

  if (c.pu.has_value() && c.end > c.start) r->compute += c.end - c.start;
  const PartitionNode& node = r->model->graph.partitions[p];
  auto where = [&] {
    return absl::StrCat("model '", r->model->graph.name, "' partition '", node.name, "' (id ", node.id.value,
                        ") on device ", c.device.value, ": ");
  };
  if (!c.status.ok()) {
    Finish(*r, absl::Status(c.status.code(), absl::StrCat(where(), c.status.message())), now, out);
    PruneExpiries();
    return out;
  }
  // Exiting node: every declared output must be there before anything moves.
  const std::vector<uint32_t>& outs = r->model->partition_outputs[p];
  std::vector<Tensor*> values(outs.size(), nullptr);
  for (size_t k = 0; k < outs.size(); ++k) {
    values[k] = FindTensor(c.outputs, node.outputs[k]);
    if (values[k] == nullptr) {
      Finish(*r,
             absl::InternalError(absl::StrCat(where(), "the completion lacks output '", node.outputs[k],
                                              "'; an executor must return every partition output")),
             now, out);
      PruneExpiries();
      return out;
    }
  }
  std::vector<uint32_t> ready;
  for (size_t k = 0; k < outs.size(); ++k) Forward(*r, outs[k], std::move(*values[k]), ready);
  if (r->outputs_missing == 0) {
    Finish(*r, absl::OkStatus(), now, out);
  } else {
    SendReady(*r, ready, now, out);
  }
  PruneExpiries();
  return out;
}

HighLevelActions HighLevelCore::AbortAll(absl::Status status, Time now) {
  HighLevelActions out;
  std::vector<RequestId> ids;
  ids.reserve(requests_.size());
  for (const auto& entry : requests_) ids.push_back(entry.first);
  std::sort(ids.begin(), ids.end(), [](RequestId a, RequestId b) { return a.value < b.value; });
  for (RequestId id : ids) Finish(*requests_.at(id), status, now, out);
  PruneExpiries();
  return out;
}

HighLevelActions HighLevelCore::OnCancel(RequestId id, absl::Status status, Time now) {
  HighLevelActions out;
  auto it = requests_.find(id);
  if (it == requests_.end()) return out;
  Finish(*it->second, std::move(status), now, out);
  PruneExpiries();
  return out;
}

HighLevelActions HighLevelCore::OnTick(Time now) {
  HighLevelActions out;
  ExpireRequests(now, out);
  PruneExpiries();
  return out;
}

std::optional<Time> HighLevelCore::NextExpiry() const {
  if (expiries_.empty()) return std::nullopt;
  return ExpiryTime(expiries_.top().at);
}

void HighLevelCore::ExpireRequests(Time now, HighLevelActions& out) {
  while (!expiries_.empty() && now > expiries_.top().at) {
    Expiry e = expiries_.top();
    expiries_.pop();
    auto it = requests_.find(e.request);
    if (it == requests_.end() || it->second->serial != e.serial) continue;  // already answered
    Request& r = *it->second;
    Finish(r,
           absl::DeadlineExceededError(absl::StrCat(
               "request ", r.id.value, " for model '", r.model->graph.name, "' passed its deadline (",
               ToMillis(e.at.time_since_epoch()), " ms) with ", r.outputs_missing, " of ",
               r.model->graph.outputs.size(), " model outputs missing")),
           now, out);
  }
}

void HighLevelCore::PruneExpiries() {
  while (!expiries_.empty()) {
    const Expiry& e = expiries_.top();
    auto it = requests_.find(e.request);
    if (it != requests_.end() && it->second->serial == e.serial) return;
    expiries_.pop();
  }
}

void HighLevelCore::Forward(Request& r, uint32_t tensor, Tensor value, std::vector<uint32_t>& ready) {
  assert(!r.present[tensor] && "a tensor was delivered twice");
  r.present[tensor] = true;
  const CompiledModel::TensorInfo& info = r.model->tensors[tensor];
  size_t remaining = info.readers.size() + (info.model_output.has_value() ? 1 : 0);
  // Clone for every destination but the last, which gets the tensor itself.
  auto take = [&]() -> Tensor { return --remaining == 0 ? std::move(value) : value.Clone(); };
  for (const auto& reader : info.readers) {
    r.inputs[reader.partition][reader.slot] = take();
    if (--r.missing[reader.partition] == 0) ready.push_back(reader.partition);
  }
  if (info.model_output) {
    r.outputs[*info.model_output] = take();
    --r.outputs_missing;
  }
}

std::optional<DeviceId> HighLevelCore::DeviceFor(const PartitionNode& node, std::optional<DeviceId> exclude) const {
  auto usable = [&](DeviceId d) { return !unavailable_.contains(d) && (!exclude || d != *exclude); };
  if (usable(node.device)) return node.device;
  for (DeviceId d : node.fallback_devices) {
    if (usable(d)) return d;
  }
  return std::nullopt;
}

absl::Status HighLevelCore::NoDeviceError(const Request& r, const PartitionNode& node) const {
  std::string devices = absl::StrCat(node.device.value);
  for (DeviceId d : node.fallback_devices) absl::StrAppend(&devices, ", ", d.value);
  return absl::UnavailableError(absl::StrCat("model '", r.model->graph.name, "' partition '", node.name,
                                             "': no device that can run it is available (devices ", devices,
                                             " are all lost); restart the agents or add a local PU that "
                                             "supports it"));
}

void HighLevelCore::SendReady(Request& r, const std::vector<uint32_t>& ready, Time now,
                              HighLevelActions& out) {
  std::vector<DeviceId> where(ready.size());
  for (size_t i = 0; i < ready.size(); ++i) {
    const PartitionNode& node = r.model->graph.partitions[ready[i]];
    std::optional<DeviceId> d = DeviceFor(node, std::nullopt);
    if (!d) {
      Finish(r, NoDeviceError(r, node), now, out);
      return;
    }
    where[i] = *d;
  }
  for (size_t i = 0; i < ready.size(); ++i) {
    const uint32_t p = ready[i];
    const PartitionNode& node = r.model->graph.partitions[p];
    Assignment a;
    a.id = AssignmentId(next_assignment_++);
    a.request = r.id;
    a.model = r.model->id;
    a.partition = node.id;
    a.inputs.reserve(node.inputs.size());
    for (size_t slot = 0; slot < node.inputs.size(); ++slot) {
      a.inputs.emplace_back(node.inputs[slot], std::move(r.inputs[p][slot]));
    }
    a.deadline = r.deadline;
    a.priority = r.priority;
    a.exec_timeout = r.model->options.exec_timeout;
    // A fixed PU belongs to the partition's own device.
    if (where[i] == node.device) a.fixed_pu = node.fixed_pu;
    else ++stats_.rerouted;
    outstanding_.emplace(a.id, Outstanding{r.id, p, where[i]});
    r.outstanding.push_back(a.id);
    ++stats_.assignments_sent;
    Trace(TraceKind::kAssignmentSent, now, r.id, r.model->id, node.id, a.id, where[i]);
    out.assignments.push_back(SendAssignment{where[i], std::move(a)});
  }
}

void HighLevelCore::SetDeviceAvailable(DeviceId device, bool available) {
  if (available) {
    unavailable_.erase(device);
  } else {
    unavailable_.insert(device);
  }
}

HighLevelActions HighLevelCore::OnReturned(std::vector<Assignment> returned, DeviceId from, Time now) {
  HighLevelActions out;
  ExpireRequests(now, out);
  for (Assignment& a : returned) {
    auto it = outstanding_.find(a.id);
    if (it == outstanding_.end()) continue;  // its request is already answered
    auto rit = requests_.find(it->second.request);
    if (rit == requests_.end()) continue;
    Request& r = *rit->second;
    const PartitionNode& node = r.model->graph.partitions[it->second.partition];
    std::optional<DeviceId> d = DeviceFor(node, from);
    if (!d) {
      Finish(r, NoDeviceError(r, node), now, out);
      continue;
    }
    a.fixed_pu = *d == node.device ? node.fixed_pu : std::nullopt;
    it->second.device = *d;
    ++stats_.reissued;
    ++stats_.assignments_sent;
    Trace(TraceKind::kAssignmentSent, now, r.id, r.model->id, node.id, a.id, *d);
    out.assignments.push_back(SendAssignment{*d, std::move(a)});
  }
  PruneExpiries();
  return out;
}

void HighLevelCore::Finish(Request& r, absl::Status status, Time now, HighLevelActions& out) {
  // Withdraw what is still out: nobody wants its answer any more.
  std::sort(r.outstanding.begin(), r.outstanding.end(),
            [](AssignmentId a, AssignmentId b) { return a.value < b.value; });
  for (AssignmentId a : r.outstanding) {
    auto it = outstanding_.find(a);
    if (it == outstanding_.end()) continue;
    const DeviceId device = it->second.device;
    outstanding_.erase(it);
    auto c = std::find_if(out.cancels.begin(), out.cancels.end(),
                          [&](const CancelAssignments& x) { return x.device == device; });
    if (c == out.cancels.end()) {
      out.cancels.push_back(CancelAssignments{device, {}});
      c = std::prev(out.cancels.end());
    }
    c->ids.push_back(a);
    ++stats_.withdrawn;
  }
  --r.model->in_flight;
  NamedTensors outputs;
  if (status.ok()) {
    outputs.reserve(r.outputs.size());
    for (size_t o = 0; o < r.outputs.size(); ++o) {
      outputs.emplace_back(r.model->graph.outputs[o], std::move(r.outputs[o]));
    }
  }
  const RequestId id = r.id;
  const ModelId model = r.model->id;
  const Time arrived = r.arrived;
  const Duration compute = r.compute;
  requests_.erase(id);  // `r` is gone from here on
  Answer(id, model, std::move(status), now, out);
  out.finished.back().outputs = std::move(outputs);
  out.finished.back().arrived = arrived;
  out.finished.back().compute = compute;
}

void HighLevelCore::Answer(RequestId id, ModelId model, absl::Status status, Time now,
                           HighLevelActions& out) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      ++stats_.answered_ok;
      break;
    case absl::StatusCode::kResourceExhausted:
      ++stats_.rejected;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      ++stats_.deadline_exceeded;
      break;
    case absl::StatusCode::kCancelled:
      ++stats_.cancelled;
      break;
    default:
      ++stats_.failed;
  }
  Trace(TraceKind::kRequestFinished, now, id, model, std::nullopt, std::nullopt, std::nullopt, status.code());
  out.finished.push_back(FinishRequest{id, model, std::move(status), {}, now, now});
}

void HighLevelCore::Trace(TraceKind kind, Time now, RequestId request, ModelId model,
                          std::optional<PartitionId> partition, std::optional<AssignmentId> assignment,
                          std::optional<DeviceId> device, absl::StatusCode code) {
  if (observer_ == nullptr) return;
  observer_->OnEvent(TraceEvent{kind, now, request, model, partition, assignment, device, std::nullopt, code, std::nullopt});
}

}  // namespace baton::dispatch
