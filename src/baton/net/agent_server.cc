#include "baton/net/agent_server.h"

#include <grpcpp/resource_quota.h>

#include <cstdio>
#include <regex>

#include "baton/core/process.h"
#include "baton/net/agent_server_impl.h"

namespace baton::net {

absl::Status AgentServer::Impl::Init() {
  BATON_ASSIGN_OR_RETURN(latency_, policy::OnlineLatencyModel::Create({}));
  absl::StatusOr<std::unique_ptr<policy::LowLevelPolicy>> policy = policy::MakeLowLevelPolicy(options_.low_level);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("agent '", options_.name, "': low-level policy: ", policy.status().message()));
  }
  std::vector<runtime::PuSetup> setups;
  for (size_t i = 0; i < pus_.size(); ++i) {
    setups.push_back(
        runtime::PuSetup{PuId(static_cast<uint32_t>(i)), pus_[i].name, pus_[i].kind, pus_[i].pin_cores, pus_[i].nice,
                          pus_[i].batch_scheduling});
  }
  BATON_ASSIGN_OR_RETURN(
      shell_, runtime::DeviceShell::Create(DeviceId(0), options_.name, std::move(setups), std::move(*policy),
                                           options_.max_queue, latency_.get(), &runners_, epoch_,
                                           [this](std::vector<dispatch::Completion> c) { OnCompletions(std::move(c)); },
                                           dispatch::ExecTimeoutRule{.cap = options_.max_run}));
  shell_->Start();
  ticker_ = std::thread([this] { TickLoop(); });

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // Without this gRPC binds with SO_REUSEPORT: a second agent on the same port
  // would silently share its connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  grpc::ResourceQuota quota("baton-agent");
  quota.SetMaxThreads(options_.max_threads);
  builder.SetResourceQuota(quota);
  builder.AddListeningPort(security_.listen, security_.credentials, &port_);
  builder.RegisterService(this);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    // gRPC does not say why (its own log line on stderr may): name the possible causes, claim none.
    return absl::UnavailableError(absl::StrCat(
        "agent '", options_.name, "': could not listen on ", security_.listen,
        ": the port may be in use, or the host may not be an address of this machine",
        security_.tls ? ", or the TLS files are not accepted by gRPC (--tls-cert, --tls-key, --client-ca)" : "",
        "; choose another --listen HOST:PORT", security_.tls ? ", or check the TLS files" : ""));
  }
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(true);
    health->SetServingStatus(pb::Agent::service_full_name(), true);
  }
  const std::string host = HostOf(security_.listen);
  address_ = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port_) : absl::StrCat(host, ":", port_);
  return absl::OkStatus();
}

void AgentServer::Impl::Shutdown() {
  {
    std::lock_guard lock(streams_mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
    for (const std::shared_ptr<Stream>& s : streams_) {
      s->context->TryCancel();
      std::lock_guard stream_lock(s->mu);
      s->closed = true;
      s->cv.notify_all();
    }
  }
  if (server_) {
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) health->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
    server_->Wait();
  }
  {
    std::lock_guard lock(tick_mu_);
    tick_stop_ = true;
    tick_cv_.notify_all();
  }
  if (ticker_.joinable()) ticker_.join();
  if (shell_) shell_->Stop();
  ReapPrepareThreads(/*all=*/true);
}

grpc::Status AgentServer::Impl::Echo(grpc::ServerContext* context, const pb::EchoRequest* request,
                                     pb::EchoReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  reply->set_received(static_cast<int64_t>(request->payload().size()));
  return grpc::Status::OK;
}

grpc::Status AgentServer::Impl::CheckAuth(const grpc::ServerContext* context) {
  if (!security_.token) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end() && TokenMatches(std::string(it->second.data(), it->second.size()), *security_.token)) {
    return grpc::Status::OK;
  }
  ++auth_failures_;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      absl::StrCat("agent '", options_.name,
                                   "': missing or wrong bearer token; give the agent's token (token_file)"));
}

// ---------------------------------------------------------------------------
// Hello, Stats, Unload

grpc::Status AgentServer::Impl::Hello(grpc::ServerContext* context, const pb::HelloRequest* request,
                                      pb::HelloReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  if (grpc::Status id = CheckClientId(request->client()); !id.ok()) return id;
  ExpireClients();
  if (!request->client().empty()) {
    std::shared_lock lock(partitions_mu_);
    auto it = clients_.find(request->client());
    reply->set_client_loads(it != clients_.end() ? static_cast<int64_t>(it->second.handles.size()) : 0);
  }
  reply->set_name(options_.name);
  reply->set_version(kVersion);
  for (const AgentPu& pu : pus_) {
    pb::PuInfo* info = reply->add_pus();
    ToProto(pu.info, info);
    if (info->name().empty()) info->set_name(pu.name);
    if (info->kind().empty()) info->set_kind(pu.kind);
  }
  reply->set_max_partition_bytes(options_.max_partition_bytes);
  reply->set_chunk_bytes(options_.chunk_bytes);
  reply->set_instance(instance_);
  reply->set_load_timeout_ms(options_.load_timeout.count());
  return grpc::Status::OK;
}

grpc::Status AgentServer::Impl::Stats(grpc::ServerContext* context, const pb::StatsRequest*, pb::StatsReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  ExpireClients();
  *reply = MakeStats();
  return grpc::Status::OK;
}

pb::StatsReply AgentServer::Impl::MakeStats() const {
  pb::StatsReply out;
  out.set_uptime_ns(std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - epoch_).count());
  out.set_queued(shell_->queued());
  out.set_running(shell_->running());
  for (const runtime::PuStats& s : shell_->pu_stats()) {
    pb::PuStatsProto* p = out.add_pus();
    p->set_name(s.name);
    p->set_kind(s.kind);
    p->set_busy_ns(s.busy.count());
    p->set_runs(s.runs);
    p->set_failures(s.failures);
  }
  out.set_loads(loads_);
  out.set_loads_rejected(loads_rejected_);
  out.set_unloads(unloads_);
  out.set_budget_refusals(budget_refusals_);
  out.set_clients_expired(clients_expired_);
  out.set_max_loaded_param_bytes(options_.max_loaded_param_bytes);
  out.set_assignments(assignments_);
  out.set_completions_ok(completions_ok_);
  out.set_completions_failed(completions_failed_);
  out.set_dropped_deadline(dropped_deadline_);
  out.set_auth_failures(auth_failures_);
  {
    std::shared_lock lock(partitions_mu_);
    out.set_partitions_loaded(partitions_.size());
    out.set_loaded_param_bytes(loaded_param_bytes_);
  }
  {
    std::lock_guard lock(streams_mu_);
    out.set_streams(streams_.size());
  }
  return out;
}

grpc::Status AgentServer::Impl::Unload(grpc::ServerContext* context, const pb::UnloadRequest* request,
                                       pb::UnloadReply*) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  if (grpc::Status id = CheckClientId(request->client()); !id.ok()) return id;
  if (!request->client().empty()) {
    std::unique_lock lock(partitions_mu_);
    auto c = clients_.find(request->client());
    // Not this client's (any more: given back after the client grace): nothing to give back.
    if (c == clients_.end() || c->second.handles.erase(request->handle()) == 0) return grpc::Status::OK;
    c->second.last_seen = std::chrono::steady_clock::now();
  }
  const absl::Status dropped = DropLoad(request->handle());
  if (!dropped.ok()) return grpc::Status(grpc::StatusCode::NOT_FOUND, std::string(dropped.message()));
  return grpc::Status::OK;
}

absl::Status AgentServer::Impl::DropLoad(const std::string& handle) {
  std::unique_lock lock(partitions_mu_);
  auto it = partitions_.find(handle);
  if (it == partitions_.end()) {
    return absl::NotFoundError(absl::StrCat("agent '", options_.name, "': partition handle '", handle,
                                            "' is not loaded (never loaded, already unloaded, or the agent restarted)"));
  }
  Partition& p = *it->second;
  if (--p.refs > 0) return absl::OkStatus();  // another Load still uses it
  for (size_t u = 0; u < pus_.size(); ++u) {
    const PuId pu(static_cast<uint32_t>(u));
    runners_.Erase(p.model, PartitionId(0), pu);
    latency_->SetCapable(p.model, PartitionId(0), pu, false);
  }
  // A run still going holds its session (RunnerTable::Hold) until it returns.
  const ModelId model = p.model;
  // No client holds it any more (an Unload without a client id may give back a named client's Load).
  for (auto& [id, c] : clients_) c.handles.erase(handle);
  loaded_param_bytes_ -= p.param_bytes;
  partitions_.erase(it);
  ++unloads_;
  lock.unlock();
  // Its work still queued or running is withdrawn and answered: no PU is
  // capable of it any more, so it would otherwise wait for good.
  std::vector<AssignmentId> orphans;
  {
    std::lock_guard inflight_lock(inflight_mu_);
    for (const auto& [id, f] : inflight_) {
      if (f.model == model) orphans.push_back(AssignmentId(id));
    }
  }
  if (!orphans.empty()) {
    shell_->Cancel(orphans, absl::FailedPreconditionError(absl::StrCat(
                                "agent '", options_.name, "': partition handle '", handle,
                                "' was unloaded while this assignment waited or ran; load it again")));
  }
  return absl::OkStatus();
}

void AgentServer::Impl::AddLoadLocked(Partition& p, const std::string& handle, const std::string& client,
                                      bool fresh) {
  bool counted = true;
  if (!client.empty()) {
    Client& c = clients_[client];
    c.last_seen = std::chrono::steady_clock::now();
    counted = c.handles.insert(handle).second;  // a repeat of this client's Load counts once
  }
  if (counted && !fresh) ++p.refs;  // a fresh partition's refs (1) is this Load
}

void AgentServer::Impl::ExpireClients() {
  std::vector<std::string> handles;
  {
    std::unique_lock lock(partitions_mu_);
    const auto now = std::chrono::steady_clock::now();
    for (auto it = clients_.begin(); it != clients_.end();) {
      Client& c = it->second;
      if (c.streams > 0 || now - c.last_seen < options_.client_grace) {
        ++it;
        continue;
      }
      if (!c.handles.empty()) {
        ++clients_expired_;
        std::fprintf(stderr,
                     "baton agent '%s': a client had no Execute stream open for %.0f s; the %zu partition Load(s) "
                     "it held are given back (it loads them again if it comes back)\n",
                     options_.name.c_str(), std::chrono::duration<double>(options_.client_grace).count(),
                     c.handles.size());
      }
      handles.insert(handles.end(), c.handles.begin(), c.handles.end());
      it = clients_.erase(it);
    }
  }
  for (const std::string& h : handles) (void)DropLoad(h);  // NotFound: gone already
}

grpc::Status AgentServer::Impl::CheckClientId(const std::string& client) const {
  if (client.size() <= kMaxClientIdBytes) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("agent '", options_.name, "': a client id of ", client.size(),
                                   " bytes; send at most ", kMaxClientIdBytes, " (baton sends 32 hex digits)"));
}

std::string AgentServer::Impl::ClientOf(const grpc::ServerContext* context) {
  const auto& md = context->client_metadata();
  auto it = md.find("baton-client");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// ---------------------------------------------------------------------------
// Load

grpc::Status AgentServer::Impl::Execute(grpc::ServerContext* context,
                                        grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  auto stream = std::make_shared<Stream>(options_.answered_ids_kept);
  stream->context = context;
  stream->budget_ns = options_.client_run_budget.count() * 1000000;
  stream->budget_at = shell_->Now();
  {
    std::lock_guard lock(streams_mu_);
    if (shut_down_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          absl::StrCat("agent '", options_.name, "' is shutting down; connect again later"));
    }
    streams_.insert(stream);
  }
  // A client that names itself is around while one of its streams is open.
  const std::string client = ClientOf(context);
  if (grpc::Status id = CheckClientId(client); !id.ok()) {
    std::lock_guard lock(streams_mu_);
    streams_.erase(stream);
    return id;
  }
  if (!client.empty()) {
    std::unique_lock lock(partitions_mu_);
    ++clients_[client].streams;
  }
  struct Away {
    Impl& impl;
    const std::string& client;
    ~Away() {
      if (client.empty()) return;
      std::unique_lock lock(impl.partitions_mu_);
      Client& c = impl.clients_[client];
      --c.streams;
      c.last_seen = std::chrono::steady_clock::now();
    }
  } away{*this, client};
  std::thread writer([this, &stream, rw] { WriteLoop(*stream, rw); });
  grpc::Status result = ReadLoop(context, rw, stream);
  {
    std::lock_guard lock(stream->mu);
    if (!result.ok() || context->IsCancelled() || stopping_) {
      stream->closed = true;
    } else {
      stream->draining = true;  // the client half-closed: answer what it sent, then end
    }
    stream->cv.notify_all();
  }
  bool closed;
  {
    std::lock_guard lock(stream->mu);
    closed = stream->closed;
  }
  // Nobody will read the answers: free the queue and the PUs for other clients.
  if (closed) CancelFromStream(stream, nullptr, absl::CancelledError("the Execute stream that sent it ended"));
  writer.join();
  uint64_t duplicates = 0;
  {
    std::lock_guard lock(stream->mu);
    duplicates = stream->duplicates_dropped;
  }
  if (duplicates > 1) {
    std::fprintf(stderr,
                 "baton: agent '%s': an Execute stream ended after %llu repeats of ids in flight, all dropped\n",
                 options_.name.c_str(), static_cast<unsigned long long>(duplicates));
  }
  {
    std::lock_guard lock(streams_mu_);
    streams_.erase(stream);
  }
  if (result.ok() && context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the Execute stream was cancelled");
  }
  return result;
}

grpc::Status AgentServer::Impl::ReadLoop(grpc::ServerContext* context,
                                         grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw,
                                         const std::shared_ptr<Stream>& stream) {
  FrameReader frames(options_.max_partition_bytes);
  pb::ExecuteIn in;
  while (WaitForRoom(context, *stream) && rw->Read(&in)) {
    switch (in.kind_case()) {
      case pb::ExecuteIn::kAssignment:
        HandleAssignment(in.assignment(), stream);
        break;
      case pb::ExecuteIn::kFrame: {
        absl::StatusOr<std::optional<std::string>> whole = frames.Add(in.frame());
        if (!whole.ok()) {
          return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              absl::StrCat("agent '", options_.name, "': ", whole.status().message(),
                                           " (max_partition_bytes); send smaller inputs"));
        }
        if (!whole->has_value()) break;
        pb::Assignment assignment;
        if (!assignment.ParseFromString(**whole)) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("agent '", options_.name,
                                           "': the frames of an ExecuteIn do not form an Assignment; send the "
                                           "slices of one serialized Assignment, consecutively, the last with "
                                           "last = true"));
        }
        HandleAssignment(assignment, stream);
        break;
      }
      case pb::ExecuteIn::kPing: {
        std::lock_guard lock(stream->mu);
        stream->pongs.push_back(in.ping().seq());
        stream->cv.notify_all();
        break;
      }
      case pb::ExecuteIn::kCancel: {
        if (in.cancel().ids_size() > kMaxCancelIds) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("agent '", options_.name, "': a Cancel carries ", in.cancel().ids_size(),
                                           " ids; send at most ", kMaxCancelIds, " per message"));
        }
        const absl::flat_hash_set<uint64_t> ids(in.cancel().ids().begin(), in.cancel().ids().end());
        CancelFromStream(stream, &ids, absl::CancelledError("withdrawn by its sender (Cancel)"));
        break;
      }
      case pb::ExecuteIn::KIND_NOT_SET:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("agent '", options_.name,
                                         "': an ExecuteIn message carries nothing; set assignment, frame, ping or "
                                         "cancel"));
    }
    if (stopping_ || context->IsCancelled()) break;
  }
  return grpc::Status::OK;
}

void AgentServer::Impl::Reject(Stream& stream, uint64_t hl_id, const absl::Status& status) {
  ++completions_failed_;
  OutItem item;
  pb::Completion* c = item.message.mutable_completion();
  c->set_id(hl_id);
  c->set_code(static_cast<int32_t>(status.code()));
  c->set_message(std::string(status.message()));
  std::lock_guard lock(stream.mu);
  stream.ids.Answered(hl_id);
  stream.outbox.push_back(std::move(item));
  stream.cv.notify_all();
}

bool AgentServer::Impl::AdmitId(const pb::Assignment& in, Stream& stream) {
  StreamIds::Seen seen = StreamIds::Seen::kNew;
  bool first_duplicate = false;
  {
    std::lock_guard lock(stream.mu);
    seen = stream.ids.Admit(in.id());
    if (seen == StreamIds::Seen::kInFlight) first_duplicate = ++stream.duplicates_dropped == 1;
  }
  switch (seen) {
    case StreamIds::Seen::kNew:
      return true;
    case StreamIds::Seen::kInFlight:
      // Not answered: a second completion for an id whose first copy is still
      // running would be taken as that copy's answer (the HL side keeps the
      // first completion per id). The first copy's completion answers the id.
      if (first_duplicate) {
        std::fprintf(stderr,
                     "baton: agent '%s': dropped assignment %llu: an assignment with that id is still in flight on "
                     "the same Execute stream (ids must be unique per stream); its completion answers the id. "
                     "Further repeats on this stream are counted and reported when it ends\n",
                     options_.name.c_str(), static_cast<unsigned long long>(in.id()));
      }
      return false;
    case StreamIds::Seen::kAnswered:
      Reject(stream, in.id(),
             absl::AlreadyExistsError(absl::StrCat("agent '", options_.name, "': assignment ", in.id(),
                                                   " was already answered on this Execute stream and is not run "
                                                   "again; give each assignment of a stream its own id")));
      return false;
  }
  return false;
}

void AgentServer::Impl::RefillBudgetLocked(Stream& stream, Time now) const {
  const int64_t budget = options_.client_run_budget.count() * 1000000;
  const int64_t window = options_.client_budget_window.count() * 1000000;
  const int64_t elapsed = (now - stream.budget_at).count();
  if (elapsed <= 0) return;
  // budget * elapsed / window, without overflow for long idle times.
  const double refill = static_cast<double>(budget) * static_cast<double>(elapsed) / static_cast<double>(window);
  stream.budget_ns = static_cast<int64_t>(
      std::min(static_cast<double>(budget), static_cast<double>(stream.budget_ns) + refill));
  stream.budget_at = now;
}

void AgentServer::Impl::HandleAssignment(const pb::Assignment& in, const std::shared_ptr<Stream>& stream) {
  ++assignments_;
  if (!AdmitId(in, *stream)) return;
  const Time arrival = shell_->Now();
  const std::string what = absl::StrCat("agent '", options_.name, "': assignment ", in.id());
  if (options_.client_run_budget.count() > 0) {
    int64_t short_ns = 0;
    {
      std::lock_guard lock(stream->mu);
      RefillBudgetLocked(*stream, arrival);
      if (stream->budget_ns <= 0) short_ns = 1 - stream->budget_ns;
    }
    if (short_ns > 0) {
      ++budget_refusals_;
      const double wait_ms = static_cast<double>(short_ns) * static_cast<double>(options_.client_budget_window.count()) /
                             static_cast<double>(options_.client_run_budget.count() * 1000000);
      Reject(*stream, in.id(),
             absl::ResourceExhaustedError(absl::StrCat(
                 what, ": this client's runs used its execution-time budget of ", options_.client_run_budget.count(),
                 " ms of PU time per ", options_.client_budget_window.count(), " ms; send again in ",
                 static_cast<int64_t>(wait_ms) + 1, " ms, or ask the agent's operator for a larger --client-budget-s")));
      return;
    }
  }
  ModelId model;
  std::vector<std::pair<std::string, ElemType>> expected;
  {
    std::shared_lock lock(partitions_mu_);
    auto it = partitions_.find(in.handle());
    if (it == partitions_.end()) {
      lock.unlock();
      Reject(*stream, in.id(),
             absl::NotFoundError(absl::StrCat(what, ": partition handle '", in.handle(),
                                              "' is not loaded (unloaded, or the agent restarted); Load it first")));
      return;
    }
    model = it->second->model;
    expected = it->second->inputs;
  }
  absl::StatusOr<dispatch::NamedTensors> inputs = FromProto(in.inputs());
  if (!inputs.ok()) {
    Reject(*stream, in.id(), absl::InvalidArgumentError(absl::StrCat(what, ": ", inputs.status().message())));
    return;
  }
  std::vector<std::string> names;
  for (const auto& [name, type] : expected) names.push_back(name);
  for (const auto& [name, type] : expected) {
    const Tensor* t = dispatch::FindTensor(*inputs, name);
    if (t == nullptr) {
      Reject(*stream, in.id(),
             absl::InvalidArgumentError(absl::StrCat(what, ": input '", name, "' is missing; send every input of "
                                                     "the partition (", absl::StrJoin(names, ", "), ")")));
      return;
    }
    if (type != 0 && t->elem_type() != type) {
      Reject(*stream, in.id(),
             absl::InvalidArgumentError(absl::StrCat(what, ": input '", name, "' is ", ElemTypeName(t->elem_type()),
                                                     " but the partition expects ", ElemTypeName(type))));
      return;
    }
  }
  if (inputs->size() != expected.size()) {
    for (const auto& input : *inputs) {
      const std::string& name = input.first;  // not a structured binding: clang before 16 cannot capture one
      if (std::none_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; })) {
        Reject(*stream, in.id(),
               absl::InvalidArgumentError(absl::StrCat(what, ": '", name, "' is not an input of the partition (",
                                                       absl::StrJoin(names, ", "), ")")));
        return;
      }
    }
    Reject(*stream, in.id(), absl::InvalidArgumentError(absl::StrCat(what, ": an input is sent twice")));
    return;
  }
  if (in.exec_timeout_ns() < 0) {
    Reject(*stream, in.id(),
           absl::InvalidArgumentError(absl::StrCat(what, ": exec_timeout_ns is ", in.exec_timeout_ns(),
                                                   "; give a positive number of nanoseconds, or 0 for the agent's rule")));
    return;
  }
  if (in.has_fixed_pu() && (in.fixed_pu() < 0 || static_cast<size_t>(in.fixed_pu()) >= pus_.size())) {
    Reject(*stream, in.id(),
           absl::InvalidArgumentError(absl::StrCat(what, ": fixed_pu ", in.fixed_pu(), " is not a PU index (0..",
                                                   pus_.size() - 1, "); use an index into HelloReply.pus")));
    return;
  }

  dispatch::Assignment a;
  a.id = AssignmentId(next_assignment_++);
  a.request = RequestId(next_request_++);
  a.model = model;
  a.partition = PartitionId(0);
  a.inputs = std::move(*inputs);
  if (in.has_deadline()) a.deadline = DeadlineFromBudget(arrival, in.deadline_budget_ns());
  a.priority = in.priority();
  if (in.has_fixed_pu()) a.fixed_pu = PuId(static_cast<uint32_t>(in.fixed_pu()));
  if (in.exec_timeout_ns() > 0) a.exec_timeout = Duration(in.exec_timeout_ns());

  {
    std::lock_guard lock(stream->mu);
    ++stream->in_flight;
  }
  {
    std::lock_guard lock(inflight_mu_);
    inflight_[a.id.value] = InFlight{stream, in.id(), arrival, a.model};
  }
  const bool has_deadline = a.deadline.has_value();
  shell_->Submit(std::move(a));  // may answer at once (through OnCompletions)
  if (has_deadline) {
    std::lock_guard lock(tick_mu_);
    tick_poked_ = true;
    tick_cv_.notify_all();
  }
}

void AgentServer::Impl::CancelFromStream(const std::shared_ptr<Stream>& stream,
                                         const absl::flat_hash_set<uint64_t>* hl_ids, const absl::Status& status) {
  std::vector<AssignmentId> ids;
  {
    std::lock_guard lock(inflight_mu_);
    for (const auto& [id, f] : inflight_) {
      if (f.stream == stream && (hl_ids == nullptr || hl_ids->contains(f.hl_id))) ids.push_back(AssignmentId(id));
    }
  }
  // Not under inflight_mu_: the shell answers through OnCompletions.
  if (!ids.empty()) shell_->Cancel(ids, status);
}

void AgentServer::Impl::OnCompletions(std::vector<dispatch::Completion> completions) {
  // Called with the shell's mutex held: only counts and moves.
  std::lock_guard lock(inflight_mu_);
  for (dispatch::Completion& c : completions) {
    if (c.status.ok()) {
      ++completions_ok_;
    } else {
      ++completions_failed_;
      if (c.status.code() == absl::StatusCode::kDeadlineExceeded) ++dropped_deadline_;
    }
    auto it = inflight_.find(c.id.value);
    if (it == inflight_.end()) continue;
    InFlight f = std::move(it->second);
    inflight_.erase(it);
    std::lock_guard stream_lock(f.stream->mu);
    if (options_.client_run_budget.count() > 0 && c.pu.has_value() && c.end > c.start) {
      // The PU time of the run (up to its answer: a stopped run is charged to its stop).
      RefillBudgetLocked(*f.stream, c.end);
      f.stream->budget_ns -= (c.end - c.start).count();
    }
    --f.stream->in_flight;
    f.stream->ids.Answered(f.hl_id);
    if (!f.stream->closed) {
      OutItem item;
      item.completion.emplace(std::move(c));
      item.hl_id = f.hl_id;
      item.arrival = f.arrival;
      f.stream->outbox.push_back(std::move(item));
    }
    f.stream->cv.notify_all();
  }
}

bool AgentServer::Impl::WaitForRoom(grpc::ServerContext* context, Stream& stream) {
  std::unique_lock lock(stream.mu);
  while (stream.outbox.size() + stream.pongs.size() >= kMaxOutbox && !stream.closed) {
    if (stopping_ || context->IsCancelled()) return false;
    stream.cv.wait_for(lock, kPollInterval);  // the writer notifies as it takes messages
  }
  return !stream.closed;
}

void AgentServer::Impl::WriteLoop(Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  NameThisThread("agent-writer");
  while (true) {
    // Pongs first, then one item, both taken under one lock.
    std::deque<uint64_t> pongs;
    std::optional<OutItem> item;
    {
      std::unique_lock lock(stream.mu);
      const auto ready = [&] {
        return stream.closed || !stream.outbox.empty() || !stream.pongs.empty() ||
               (stream.draining && stream.in_flight == 0);
      };
      while (!ready()) {
        // A client may cancel while the stream drains: nothing else wakes us then.
        if (stream.cv.wait_for(lock, kPollInterval, ready)) break;
        if (stream.context->IsCancelled()) stream.closed = true;
      }
      if (stream.closed || (stream.outbox.empty() && stream.pongs.empty())) return;
      // The reader may wait for room.
      if (stream.outbox.size() + stream.pongs.size() >= kMaxOutbox) stream.cv.notify_all();
      pongs.swap(stream.pongs);
      if (!stream.outbox.empty()) {
        item = std::move(stream.outbox.front());
        stream.outbox.pop_front();
      }
    }
    if (!SendPongs(pongs, rw) || (item && !WriteItem(*item, stream, rw))) {
      stream.context->TryCancel();  // wakes the reader
      std::lock_guard lock(stream.mu);
      stream.closed = true;
      return;
    }
  }
}

std::string AgentServer::Impl::ClientMessage(const dispatch::Completion& c, uint64_t hl_id) const {
  const std::string message(c.status.message());
  // The shell's own timeout message names this agent's internal ids, which
  // mean nothing to the client: say it in the client's terms, and name the cap.
  static const std::regex kTimeout("execution timeout of ([0-9.e+]+) ms");
  std::smatch m;
  if (c.status.code() != absl::StatusCode::kAborted || !std::regex_search(message, m, kTimeout)) return message;
  const std::string pu = c.pu && c.pu->value < pus_.size() ? pus_[c.pu->value].name : "?";
  return absl::StrCat("assignment ", hl_id, " ran past its execution timeout of ", m[1].str(), " ms on PU '", pu,
                      "' and was stopped; if it is legitimately this slow, raise the model's execution_timeout_ms (this "
                      "agent caps every run at its --max-run-s of ",
                      std::chrono::duration<double>(options_.max_run).count(), " s)");
}

bool AgentServer::Impl::WritePongs(Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  std::deque<uint64_t> pongs;
  {
    std::lock_guard lock(stream.mu);
    if (stream.pongs.empty()) return true;
    pongs.swap(stream.pongs);
    if (stream.outbox.size() + pongs.size() >= kMaxOutbox) stream.cv.notify_all();  // the reader may wait for room
  }
  return SendPongs(pongs, rw);
}

bool AgentServer::Impl::SendPongs(const std::deque<uint64_t>& pongs,
                                  grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  for (uint64_t seq : pongs) {
    pb::ExecuteOut out;
    out.mutable_pong()->set_seq(seq);
    if (!rw->Write(out)) return false;
  }
  return true;
}

bool AgentServer::Impl::WriteItem(OutItem& item, Stream& stream,
                                  grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  if (item.completion) {
    dispatch::Completion& c = *item.completion;
    pb::Completion* out = item.message.mutable_completion();
    out->set_id(item.hl_id);
    size_t output_bytes = 0;
    for (const auto& [name, tensor] : c.outputs) output_bytes += tensor.byte_size();
    if (c.status.ok() && output_bytes > options_.max_answer_bytes) {
      // One protobuf message cannot hold it (2 GiB): answered, not lost.
      c.status = absl::ResourceExhaustedError(absl::StrCat(
          "agent '", options_.name, "': the outputs of assignment ", item.hl_id, " are ", output_bytes,
          " bytes, above the ", options_.max_answer_bytes,
          " one answer can carry; cut the model so that no partition's outputs are that large"));
      c.outputs.clear();
    }
    out->set_code(static_cast<int32_t>(c.status.code()));
    out->set_message(ClientMessage(c, item.hl_id));
    out->set_ran(c.pu.has_value());
    if (c.pu) out->set_pu(static_cast<int32_t>(c.pu->value));
    out->set_queued_ns(std::max(Duration(0), c.start - item.arrival).count());
    out->set_run_ns(c.pu ? std::max(Duration(0), c.end - c.start).count() : 0);
    if (c.status.ok() && !c.outputs.empty()) {
      // Above the chunk size the outputs go out a frame at a time, copied
      // once each, with the pongs that come meanwhile between the frames: no
      // whole copy of hundreds of MB keeps the client from hearing us.
      TensorFrames frames(out->SerializeAsString(), pb::Completion::kOutputsFieldNumber, c.outputs,
                          options_.chunk_bytes);
      if (frames.total_bytes() > options_.chunk_bytes) {
        while (!frames.done()) {
          pb::ExecuteOut framed;
          *framed.mutable_frame() = frames.Next();
          if (!rw->Write(framed) || !WritePongs(stream, rw)) return false;
        }
        item.completion.reset();
        return true;
      }
      for (const auto& [name, tensor] : c.outputs) ToProto(name, tensor, out->add_outputs());
    }
    item.completion.reset();
  }
  if (item.message.has_completion() &&
      static_cast<int64_t>(item.message.completion().ByteSizeLong()) > options_.chunk_bytes) {
    for (pb::Frame& frame : SplitFrames(item.message.completion().SerializeAsString(), options_.chunk_bytes)) {
      pb::ExecuteOut out;
      *out.mutable_frame() = std::move(frame);
      if (!rw->Write(out)) return false;
    }
    return true;
  }
  return rw->Write(item.message);
}

void AgentServer::Impl::TickLoop() {
  NameThisThread("agent-ticker");
  std::unique_lock lock(tick_mu_);
  while (!tick_stop_) {
    tick_poked_ = false;
    const std::optional<Time> next = shell_->TickIfDue(shell_->Now());
    const auto pred = [&] { return tick_stop_ || tick_poked_; };
    if (next) {
      tick_cv_.wait_until(lock, epoch_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                             next->time_since_epoch()),
                          pred);
    } else {
      tick_cv_.wait(lock, pred);
    }
  }
}

// ---------------------------------------------------------------------------
// AgentServer

AgentServer::AgentServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AgentServer::~AgentServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<AgentServer>> AgentServer::Start(AgentOptions options, std::vector<AgentPu> pus) {
  const std::string agent = absl::StrCat("agent '", options.name, "'");
  if (options.name.empty()) return absl::InvalidArgumentError("agent name is empty; give the agent a name (--name)");
  if (pus.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(agent, " has no PUs; configure at least one (--config)"));
  }
  std::set<std::string> names;
  for (size_t i = 0; i < pus.size(); ++i) {
    if (pus[i].executor == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(agent, ": PU ", i, " ('", pus[i].name, "') has no executor"));
    }
    if (pus[i].name.empty() || !names.insert(pus[i].name).second) {
      return absl::InvalidArgumentError(absl::StrCat(agent, ": PU ", i, " has an empty or duplicate name '",
                                                     pus[i].name, "'; PU names must be unique"));
    }
  }
  if (options.max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_queue must be >= 1"));
  }
  if (options.max_partition_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_partition_bytes must be > 0, got ",
                                                   options.max_partition_bytes));
  }
  // A chunk plus its message's other fields must fit one gRPC message.
  constexpr int64_t kMaxChunk = kMaxGrpcMessageBytes / 2;
  if (options.max_answer_bytes < 1 || options.max_answer_bytes > kMaxAnswerBytes) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_answer_bytes must be in 1..", kMaxAnswerBytes,
                                                   ", got ", options.max_answer_bytes));
  }
  if (options.max_concurrent_loads < 1 || options.max_concurrent_loads > kMaxConcurrentLoads) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_concurrent_loads must be in 1..", kMaxConcurrentLoads,
                                                   ", got ", options.max_concurrent_loads));
  }
  if (options.max_threads < kMinThreads || options.max_threads > kMaxThreads) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_threads must be in ", kMinThreads, "..", kMaxThreads,
                                                   ", got ", options.max_threads));
  }
  if (options.chunk_bytes <= 0 || options.chunk_bytes > kMaxChunk) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": chunk_bytes must be in 1..", kMaxChunk, ", got ",
                                                   options.chunk_bytes));
  }
  if (options.max_run <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_run must be > 0"));
  }
  if (options.load_timeout <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": load_timeout must be > 0"));
  }
  if (options.max_param_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_param_bytes must be > 0"));
  }
  if (options.client_run_budget < std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": client_run_budget must be >= 0 (0 = none)"));
  }
  if (options.client_budget_window <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": client_budget_window must be > 0"));
  }
  if (options.client_grace < std::chrono::milliseconds(0) || options.client_grace > std::chrono::hours(24 * 7)) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": client_grace must be in 0 s..7 days"));
  }
  if (options.max_loaded_param_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_loaded_param_bytes must be >= 0 (0 = half of ",
                                                   "the physical memory), got ", options.max_loaded_param_bytes));
  }
  if (options.max_loaded_param_bytes == 0) {
    // Where the kernel does not say, 4 GiB (an 8 GiB edge board's half).
    options.max_loaded_param_bytes = PhysicalMemoryBytes().value_or(int64_t{8} << 30) / 2;
  }
  for (const std::string& op : options.allowed_ops) {
    if (op.empty()) return absl::InvalidArgumentError(absl::StrCat(agent, ": an allowed op name is empty"));
  }
  BATON_ASSIGN_OR_RETURN(ServerSecurity security, MakeServerSecurity(options.security, options.listen));
  auto impl = std::make_unique<Impl>(std::move(options), std::move(pus), std::move(security));
  BATON_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<AgentServer>(new AgentServer(std::move(impl)));
}

int AgentServer::port() const { return impl_->port(); }
const std::string& AgentServer::address() const { return impl_->address(); }
const std::string& AgentServer::notice() const { return impl_->notice(); }
const AgentOptions& AgentServer::options() const { return impl_->options(); }
void AgentServer::Shutdown() { impl_->Shutdown(); }
size_t AgentServer::loads_left_running() const { return impl_->loads_left_running(); }
pb::StatsReply AgentServer::Stats() const {
  impl_->ExpireClients();
  return impl_->MakeStats();
}

}  // namespace baton::net
