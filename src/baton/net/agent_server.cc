#include "baton/net/agent_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/core/dtype.h"
#include "baton/core/hash.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"
#include "baton/runtime/device_shell.h"

namespace baton::net {
namespace {

constexpr char kVersion[] = "0.1";
// How often waits that cannot be woken by gRPC (a client cancelling a Load or a
// draining stream) look at the call's state again.
constexpr std::chrono::milliseconds kPollInterval{100};
// How long Shutdown lets open calls finish before gRPC cancels them.
constexpr std::chrono::seconds kShutdownGrace{2};

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Changes on every start, so a client can tell that the agent's cache is empty.
std::string RandomInstance() {
  std::random_device device;
  std::seed_seq seed{device(), device(), device(), device(),
                     static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count())};
  std::mt19937_64 rng(seed);
  return absl::StrCat(absl::Hex(rng(), absl::kZeroPad16), absl::Hex(rng(), absl::kZeroPad16));
}

// The Submodel that is the whole (loaded partition) model: what the HL side
// extracted and sent is exactly one partition.
graph::Submodel WholeSubmodel(const graph::Model& model) {
  graph::Submodel sub;
  sub.interface.inputs = model.inputs();
  sub.interface.outputs = model.outputs();
  sub.nodes = model.topo_order();
  sub.onnx_bytes = model.SerializeToString();
  return sub;
}

// Sessions of one Load, created on a thread of their own so the RPC can give
// up after load_timeout; the thread keeps the task alive and finishes it.
struct PrepareTask {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // guarded by mu
  std::vector<absl::StatusOr<std::unique_ptr<backend::PreparedPartition>>> results;  // guarded by mu; per job
};

}  // namespace

class AgentServer::Impl final : public pb::Agent::Service {
 public:
  Impl(AgentOptions options, std::vector<AgentPu> pus, ServerSecurity security)
      : options_(std::move(options)),
        pus_(std::move(pus)),
        security_(std::move(security)),
        instance_(RandomInstance()),
        epoch_(std::chrono::steady_clock::now()),
        allowed_ops_(options_.allowed_ops.begin(), options_.allowed_ops.end()) {}

  ~Impl() override { Shutdown(); }

  absl::Status Init();
  void Shutdown();
  pb::StatsReply MakeStats() const;

  int port() const { return port_; }
  const std::string& address() const { return address_; }
  const std::string& notice() const { return security_.notice; }

  grpc::Status Hello(grpc::ServerContext* context, const pb::HelloRequest* request, pb::HelloReply* reply) override;
  grpc::Status Load(grpc::ServerContext* context, grpc::ServerReader<pb::LoadChunk>* reader,
                    pb::LoadReply* reply) override;
  grpc::Status Unload(grpc::ServerContext* context, const pb::UnloadRequest* request,
                      pb::UnloadReply* reply) override;
  grpc::Status Execute(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* stream) override;
  grpc::Status Stats(grpc::ServerContext* context, const pb::StatsRequest* request, pb::StatsReply* reply) override;
  grpc::Status Echo(grpc::ServerContext* context, const pb::EchoRequest* request, pb::EchoReply* reply) override;

 private:
  // One loaded partition (the key of `partitions_` is its handle).
  struct Partition {
    std::string name;
    ModelId model;
    std::shared_ptr<const graph::Model> graph;
    std::vector<std::unique_ptr<backend::PreparedPartition>> prepared;  // the runners point into these
    std::vector<int32_t> capable;                                       // PU indices
    std::vector<std::pair<std::string, ElemType>> inputs;               // what an assignment must feed
  };

  // Something the writer of a stream sends: a completion from the shell
  // (converted on the writer thread, not under the shell's mutex) or a ready
  // message (pong, immediate rejection).
  struct OutItem {
    std::optional<dispatch::Completion> completion;
    uint64_t hl_id = 0;
    Time arrival{};
    pb::ExecuteOut message;
  };

  struct Stream {
    grpc::ServerContext* context = nullptr;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<OutItem> outbox;  // guarded by mu
    size_t in_flight = 0;        // guarded by mu; submitted, not yet answered by the shell
    bool closed = false;         // guarded by mu; the writer stops, later completions are discarded
    bool draining = false;       // guarded by mu; the client half-closed: finish once all is answered
  };

  struct InFlight {
    std::shared_ptr<Stream> stream;
    uint64_t hl_id = 0;
    Time arrival{};
  };

  grpc::Status CheckAuth(const grpc::ServerContext* context);
  absl::StatusOr<pb::LoadReply> DoLoad(grpc::ServerContext* context, grpc::ServerReader<pb::LoadChunk>* reader);
  absl::Status CheckOps(const graph::Model& model, const std::string& what) const;
  // Creates the sessions of `model` for the capable PUs (updating `capable` for
  // PUs whose Prepare fails) within load_timeout.
  absl::StatusOr<std::vector<std::unique_ptr<backend::PreparedPartition>>> PrepareAll(
      grpc::ServerContext* context, std::shared_ptr<const graph::Model> model, const std::string& what,
      std::vector<bool>& capable, std::vector<const backend::PreparedPartition*>& runner_of_pu);
  void ReapPrepareThreads(bool all);

  grpc::Status ReadLoop(grpc::ServerContext* context, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw,
                        const std::shared_ptr<Stream>& stream);
  void WriteLoop(Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw);
  bool WriteItem(OutItem& item, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw);
  void HandleAssignment(const pb::Assignment& in, const std::shared_ptr<Stream>& stream);
  void Reject(Stream& stream, uint64_t hl_id, const absl::Status& status);
  void OnCompletions(std::vector<dispatch::Completion> completions);  // the shell's sink
  void TickLoop();

  const AgentOptions options_;
  const std::vector<AgentPu> pus_;
  const ServerSecurity security_;
  const std::string instance_;
  const std::chrono::steady_clock::time_point epoch_;
  const std::set<std::string> allowed_ops_;
  int port_ = 0;
  std::string address_;

  runtime::RunnerTable runners_;
  std::unique_ptr<policy::OnlineLatencyModel> latency_;

  mutable std::shared_mutex partitions_mu_;
  std::map<std::string, std::unique_ptr<Partition>> partitions_;  // guarded by partitions_mu_; by handle
  // Unloaded partitions: queued work may still hold their runners until Shutdown.
  std::vector<std::unique_ptr<Partition>> graveyard_;  // guarded by partitions_mu_
  std::atomic<uint32_t> next_model_{0};

  std::mutex prepare_mu_;
  std::vector<std::pair<std::shared_ptr<PrepareTask>, std::thread>> prepare_threads_;  // guarded by prepare_mu_

  std::mutex inflight_mu_;  // lock order: shell mutex, inflight_mu_, Stream::mu
  absl::flat_hash_map<uint32_t, InFlight> inflight_;  // guarded by inflight_mu_; by agent AssignmentId
  std::atomic<uint32_t> next_assignment_{0};
  std::atomic<uint32_t> next_request_{0};

  mutable std::mutex streams_mu_;
  std::set<std::shared_ptr<Stream>> streams_;  // guarded by streams_mu_; open Execute streams
  bool shut_down_ = false;                     // guarded by streams_mu_
  std::atomic<bool> stopping_{false};

  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool tick_stop_ = false;   // guarded by tick_mu_
  bool tick_poked_ = false;  // guarded by tick_mu_
  std::thread ticker_;

  std::atomic<uint64_t> loads_{0}, loads_rejected_{0}, assignments_{0}, completions_ok_{0},
      completions_failed_{0}, dropped_deadline_{0}, auth_failures_{0};

  // Declared last: destroyed first (the shell's workers read the runners and
  // call the sink; the server's handlers use everything above).
  std::unique_ptr<runtime::DeviceShell> shell_;
  std::unique_ptr<grpc::Server> server_;
};

absl::Status AgentServer::Impl::Init() {
  BATON_ASSIGN_OR_RETURN(latency_, policy::OnlineLatencyModel::Create({}));
  absl::StatusOr<std::unique_ptr<policy::LowLevelPolicy>> policy = policy::MakeLowLevelPolicy(options_.low_level);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("agent '", options_.name, "': low-level policy: ", policy.status().message()));
  }
  std::vector<runtime::PuSetup> setups;
  for (size_t i = 0; i < pus_.size(); ++i) {
    setups.push_back(runtime::PuSetup{PuId(static_cast<uint32_t>(i)), pus_[i].name, pus_[i].kind, pus_[i].pin_cores});
  }
  BATON_ASSIGN_OR_RETURN(
      shell_, runtime::DeviceShell::Create(DeviceId(0), options_.name, std::move(setups), std::move(*policy),
                                           options_.max_queue, latency_.get(), &runners_, epoch_,
                                           /*record_runs=*/false,
                                           [this](std::vector<dispatch::Completion> c) { OnCompletions(std::move(c)); }));
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
  builder.AddListeningPort(security_.listen, security_.credentials, &port_);
  builder.RegisterService(this);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("agent '", options_.name, "': cannot listen on ", security_.listen,
                                               " (the port is in use, or the host is not an address of this "
                                               "machine); choose another --listen HOST:PORT"));
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

grpc::Status AgentServer::Impl::Hello(grpc::ServerContext* context, const pb::HelloRequest*, pb::HelloReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  reply->set_name(options_.name);
  reply->set_version(kVersion);
  for (const AgentPu& pu : pus_) {
    pb::PuInfo* info = reply->add_pus();
    *info = pu.info;
    if (info->name().empty()) info->set_name(pu.name);
    if (info->kind().empty()) info->set_kind(pu.kind);
  }
  reply->set_max_partition_bytes(options_.max_partition_bytes);
  reply->set_chunk_bytes(options_.chunk_bytes);
  reply->set_instance(instance_);
  return grpc::Status::OK;
}

grpc::Status AgentServer::Impl::Stats(grpc::ServerContext* context, const pb::StatsRequest*, pb::StatsReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
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
  out.set_assignments(assignments_);
  out.set_completions_ok(completions_ok_);
  out.set_completions_failed(completions_failed_);
  out.set_dropped_deadline(dropped_deadline_);
  out.set_auth_failures(auth_failures_);
  {
    std::shared_lock lock(partitions_mu_);
    out.set_partitions_loaded(partitions_.size());
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
  std::unique_lock lock(partitions_mu_);
  auto it = partitions_.find(request->handle());
  if (it == partitions_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("agent '", options_.name, "': partition handle '", request->handle(),
                                     "' is not loaded (never loaded, already unloaded, or the agent restarted)"));
  }
  Partition& p = *it->second;
  for (size_t u = 0; u < pus_.size(); ++u) {
    const PuId pu(static_cast<uint32_t>(u));
    runners_.Erase(p.model, PartitionId(0), pu);
    latency_->SetCapable(p.model, PartitionId(0), pu, false);
  }
  // Work already queued may hold a runner: the sessions live until Shutdown.
  graveyard_.push_back(std::move(it->second));
  partitions_.erase(it);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// Load

grpc::Status AgentServer::Impl::Load(grpc::ServerContext* context, grpc::ServerReader<pb::LoadChunk>* reader,
                                     pb::LoadReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  absl::StatusOr<pb::LoadReply> result = DoLoad(context, reader);
  if (!result.ok()) {
    ++loads_rejected_;
    return ToGrpc(result.status());
  }
  ++loads_;
  *reply = std::move(*result);
  return grpc::Status::OK;
}

absl::StatusOr<pb::LoadReply> AgentServer::Impl::DoLoad(grpc::ServerContext* context,
                                                        grpc::ServerReader<pb::LoadChunk>* reader) {
  const std::string agent = absl::StrCat("agent '", options_.name, "'");
  pb::LoadChunk chunk;
  if (!reader->Read(&chunk)) {
    return absl::InvalidArgumentError(
        absl::StrCat(agent, ": the Load stream ended before its first chunk; send a LoadChunk with the header"));
  }
  if (!chunk.has_header()) {
    return absl::InvalidArgumentError(absl::StrCat(
        agent, ": the first Load chunk has no header; put content_hash, total_bytes and name in the first chunk"));
  }
  const pb::LoadHeader header = chunk.header();
  const std::string what = absl::StrCat(agent, ": partition '", header.name(), "' (", header.content_hash(), ")");
  if (header.content_hash().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the header has no content_hash; set it to HashHex (FNV-1a 64) of the bytes"));
  }
  if (header.total_bytes() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": total_bytes is ", header.total_bytes(), "; set it to the size of the ONNX model"));
  }
  if (header.total_bytes() > options_.max_partition_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " is ", header.total_bytes(), " bytes, above this agent's limit of ", options_.max_partition_bytes,
        " bytes; cut the model into smaller partitions, or start the agent with a larger --max-partition-mb"));
  }
  std::string bytes;
  bytes.reserve(static_cast<size_t>(header.total_bytes()));
  bool first = true;
  do {
    if (!first && chunk.has_header()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": a later Load chunk carries a header again; send the header in the first chunk only"));
    }
    first = false;
    if (static_cast<int64_t>(bytes.size() + chunk.data().size()) > header.total_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": more bytes arrived than the header's total_bytes (",
                                                     header.total_bytes(), "); send exactly total_bytes bytes"));
    }
    bytes.append(chunk.data());
    if (stopping_) return absl::UnavailableError(absl::StrCat(agent, " is shutting down; load the partition again"));
  } while (reader->Read(&chunk));
  if (context->IsCancelled()) return absl::CancelledError(absl::StrCat(what, ": the client cancelled the load"));
  if (static_cast<int64_t>(bytes.size()) != header.total_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": got ", bytes.size(), " of ", header.total_bytes(),
                                                   " bytes before the stream ended; resend the whole partition"));
  }
  if (const std::string hash = HashHex(bytes); hash != header.content_hash()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the bytes hash to ", hash,
                                                   ", not to the header's content_hash; the partition was corrupted "
                                                   "or hashed differently (FNV-1a 64 of the exact bytes); resend it"));
  }

  pb::LoadReply reply;
  reply.set_handle(header.content_hash());
  {
    std::shared_lock lock(partitions_mu_);
    if (auto it = partitions_.find(header.content_hash()); it != partitions_.end()) {
      reply.set_cached(true);
      for (int32_t u : it->second->capable) reply.add_capable_pus(u);
      return reply;
    }
  }

  graph::LoadOptions load_options;
  load_options.allow_external_data = false;
  load_options.max_model_bytes = options_.max_partition_bytes;
  absl::StatusOr<std::shared_ptr<const graph::Model>> model =
      graph::Model::LoadBytes(bytes, header.name().empty() ? header.content_hash() : header.name(), {}, load_options);
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a valid self-contained ONNX model: ",
                                                   model.status().message(),
                                                   "; send the partition extracted by baton (external data inlined)"));
  }
  const graph::Model& m = **model;
  BATON_RETURN_IF_ERROR(CheckOps(m, what));
  if (m.total_param_bytes() > options_.max_param_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " has ", m.total_param_bytes(), " bytes of parameters, above this agent's budget of ",
        options_.max_param_bytes, " bytes; cut the model into smaller partitions or place it on a larger device"));
  }

  // Capability: a PU is capable when it can run every node.
  std::vector<bool> capable(pus_.size(), false);
  std::vector<std::vector<bool>> caps(pus_.size());
  for (size_t u = 0; u < pus_.size(); ++u) {
    caps[u] = pus_[u].executor->QueryCapability(m);
    capable[u] = caps[u].size() == m.nodes().size() && std::all_of(caps[u].begin(), caps[u].end(), [](bool b) { return b; });
  }
  if (std::none_of(capable.begin(), capable.end(), [](bool b) { return b; })) {
    std::set<std::string> nowhere;
    std::vector<std::string> per_pu;
    for (const graph::Node& node : m.nodes()) {
      bool any = false;
      for (size_t u = 0; u < pus_.size(); ++u) any = any || (node.id.value < caps[u].size() && caps[u][node.id.value]);
      if (!any) nowhere.insert(node.op_type);
    }
    std::vector<std::string> names;
    for (size_t u = 0; u < pus_.size(); ++u) {
      names.push_back(pus_[u].name);
      std::set<std::string> missing;
      for (const graph::Node& node : m.nodes()) {
        if (!(node.id.value < caps[u].size() && caps[u][node.id.value])) missing.insert(node.op_type);
      }
      per_pu.push_back(absl::StrCat(pus_[u].name, " cannot run ", absl::StrJoin(missing, ", ")));
    }
    if (!nowhere.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, " uses ops that no PU of this agent supports: ", absl::StrJoin(nowhere, ", "), " (PUs: ",
          absl::StrJoin(names, ", "), "); place those nodes on another device"));
    }
    return absl::FailedPreconditionError(absl::StrCat(what, ": no single PU of this agent can run all of it (",
                                                      absl::StrJoin(per_pu, "; "),
                                                      "); cut the model so that each partition fits one PU"));
  }

  std::vector<const backend::PreparedPartition*> runner_of_pu(pus_.size(), nullptr);
  BATON_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<backend::PreparedPartition>> prepared,
                         PrepareAll(context, *model, what, capable, runner_of_pu));

  auto partition = std::make_unique<Partition>();
  partition->name = header.name();
  partition->graph = *model;
  partition->prepared = std::move(prepared);
  for (const std::string& input : m.inputs()) {
    const graph::Value* value = m.FindValue(input);
    partition->inputs.emplace_back(input, value != nullptr ? value->type.elem_type : ElemType{0});
  }
  for (size_t u = 0; u < pus_.size(); ++u) {
    if (capable[u]) partition->capable.push_back(static_cast<int32_t>(u));
  }

  std::unique_lock lock(partitions_mu_);
  if (auto it = partitions_.find(header.content_hash()); it != partitions_.end()) {
    // Loaded concurrently by another call: keep that one (ours was never used).
    reply.set_cached(true);
    for (int32_t u : it->second->capable) reply.add_capable_pus(u);
    return reply;
  }
  partition->model = ModelId(next_model_++);
  for (size_t u = 0; u < pus_.size(); ++u) {
    const PuId pu(static_cast<uint32_t>(u));
    latency_->SetCapable(partition->model, PartitionId(0), pu, capable[u]);
    if (capable[u]) runners_.Set(partition->model, PartitionId(0), pu, runner_of_pu[u]);
  }
  for (int32_t u : partition->capable) reply.add_capable_pus(u);
  partitions_.emplace(header.content_hash(), std::move(partition));
  return reply;
}

absl::Status AgentServer::Impl::CheckOps(const graph::Model& model, const std::string& what) const {
  if (allowed_ops_.empty()) return absl::OkStatus();
  std::set<std::string> refused;
  std::string first_node;
  for (const graph::Node& node : model.nodes()) {
    std::vector<std::string> ops = node.subgraph_ops;
    ops.push_back(node.op_type);
    for (const std::string& op : ops) {
      if (allowed_ops_.count(op)) continue;
      if (first_node.empty()) first_node = node.name;
      refused.insert(op);
    }
  }
  if (refused.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " uses ops this agent does not allow: ", absl::StrJoin(refused, ", "), " (first in node '",
                   first_node, "'); allowed: ", absl::StrJoin(allowed_ops_, ", "),
                   "; add them to the agent's --allowed-ops, or place these nodes on another device"));
}

absl::StatusOr<std::vector<std::unique_ptr<backend::PreparedPartition>>> AgentServer::Impl::PrepareAll(
    grpc::ServerContext* context, std::shared_ptr<const graph::Model> model, const std::string& what,
    std::vector<bool>& capable, std::vector<const backend::PreparedPartition*>& runner_of_pu) {
  // One job per distinct non-empty share_key, else per PU.
  std::vector<size_t> job_pu;                // the PU whose executor prepares job j
  std::vector<size_t> job_of_pu(pus_.size());
  std::map<std::string, size_t> job_of_key;
  for (size_t u = 0; u < pus_.size(); ++u) {
    if (!capable[u]) continue;
    if (!pus_[u].share_key.empty()) {
      if (auto it = job_of_key.find(pus_[u].share_key); it != job_of_key.end()) {
        job_of_pu[u] = it->second;
        continue;
      }
      job_of_key.emplace(pus_[u].share_key, job_pu.size());
    }
    job_of_pu[u] = job_pu.size();
    job_pu.push_back(u);
  }
  std::vector<const backend::Executor*> executors;
  for (size_t u : job_pu) executors.push_back(pus_[u].executor);

  ReapPrepareThreads(/*all=*/false);
  auto task = std::make_shared<PrepareTask>();
  {
    std::lock_guard lock(prepare_mu_);
    if (stopping_) return absl::UnavailableError(absl::StrCat(what, ": the agent is shutting down"));
    prepare_threads_.emplace_back(task, std::thread([task, model, executors] {
      const graph::Submodel whole = WholeSubmodel(*model);
      std::vector<absl::StatusOr<std::unique_ptr<backend::PreparedPartition>>> results;
      for (const backend::Executor* executor : executors) results.push_back(executor->Prepare(*model, whole));
      std::lock_guard task_lock(task->mu);
      task->results = std::move(results);
      task->done = true;
      task->cv.notify_all();
    }));
  }

  std::vector<absl::StatusOr<std::unique_ptr<backend::PreparedPartition>>> results;
  {
    const auto deadline = std::chrono::steady_clock::now() + options_.load_timeout;
    std::unique_lock lock(task->mu);
    while (!task->done) {
      if (stopping_) return absl::UnavailableError(absl::StrCat(what, ": the agent is shutting down"));
      if (context->IsCancelled()) return absl::CancelledError(absl::StrCat(what, ": the client cancelled the load"));
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            what, ": creating its sessions took longer than the agent's load timeout of ",
            options_.load_timeout.count(), " ms; start the agent with a larger --load-timeout-s or send smaller "
            "partitions"));
      }
      task->cv.wait_until(lock, std::min(deadline, now + kPollInterval));
    }
    results = std::move(task->results);
  }

  std::vector<std::unique_ptr<backend::PreparedPartition>> prepared;
  std::vector<const backend::PreparedPartition*> runner_of_job(results.size(), nullptr);
  std::optional<absl::Status> first_error;
  for (size_t j = 0; j < results.size(); ++j) {
    if (results[j].ok()) {
      runner_of_job[j] = results[j]->get();
      prepared.push_back(std::move(*results[j]));
    } else if (!first_error) {
      first_error = absl::Status(results[j].status().code(),
                                 absl::StrCat(what, " on PU '", pus_[job_pu[j]].name, "': ", results[j].status().message()));
    }
  }
  // A PU whose session could not be created cannot run the partition.
  bool any = false;
  for (size_t u = 0; u < pus_.size(); ++u) {
    if (!capable[u]) continue;
    runner_of_pu[u] = runner_of_job[job_of_pu[u]];
    capable[u] = runner_of_pu[u] != nullptr;
    any = any || capable[u];
  }
  if (!any && first_error) return *first_error;
  return prepared;
}

void AgentServer::Impl::ReapPrepareThreads(bool all) {
  std::vector<std::thread> finished;
  {
    std::lock_guard lock(prepare_mu_);
    for (auto it = prepare_threads_.begin(); it != prepare_threads_.end();) {
      bool done = all;
      if (!done) {
        std::lock_guard task_lock(it->first->mu);
        done = it->first->done;
      }
      if (done) {
        finished.push_back(std::move(it->second));
        it = prepare_threads_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::thread& t : finished) t.join();
}

// ---------------------------------------------------------------------------
// Execute

grpc::Status AgentServer::Impl::Execute(grpc::ServerContext* context,
                                        grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  auto stream = std::make_shared<Stream>();
  stream->context = context;
  {
    std::lock_guard lock(streams_mu_);
    if (shut_down_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          absl::StrCat("agent '", options_.name, "' is shutting down; connect again later"));
    }
    streams_.insert(stream);
  }
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
  writer.join();
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
  while (rw->Read(&in)) {
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
        OutItem item;
        item.message.mutable_pong()->set_seq(in.ping().seq());
        std::lock_guard lock(stream->mu);
        stream->outbox.push_back(std::move(item));
        stream->cv.notify_all();
        break;
      }
      case pb::ExecuteIn::KIND_NOT_SET:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("agent '", options_.name,
                                         "': an ExecuteIn message carries nothing; set assignment, frame or ping"));
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
  stream.outbox.push_back(std::move(item));
  stream.cv.notify_all();
}

void AgentServer::Impl::HandleAssignment(const pb::Assignment& in, const std::shared_ptr<Stream>& stream) {
  ++assignments_;
  const Time arrival = shell_->Now();
  const std::string what = absl::StrCat("agent '", options_.name, "': assignment ", in.id());
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
    for (const auto& [name, tensor] : *inputs) {
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
  if (in.has_deadline()) {
    // A budget <= 0 is already late: put the deadline strictly in the past.
    const Duration budget(in.deadline_budget_ns());
    a.deadline = arrival + (budget > Duration(0) ? budget : budget - Duration(1));
  }
  a.priority = in.priority();
  if (in.has_fixed_pu()) a.fixed_pu = PuId(static_cast<uint32_t>(in.fixed_pu()));

  {
    std::lock_guard lock(stream->mu);
    ++stream->in_flight;
  }
  {
    std::lock_guard lock(inflight_mu_);
    inflight_[a.id.value] = InFlight{stream, in.id(), arrival};
  }
  const bool has_deadline = a.deadline.has_value();
  shell_->Submit(std::move(a));  // may answer at once (through OnCompletions)
  if (has_deadline) {
    std::lock_guard lock(tick_mu_);
    tick_poked_ = true;
    tick_cv_.notify_all();
  }
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
    --f.stream->in_flight;
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

void AgentServer::Impl::WriteLoop(Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  while (true) {
    OutItem item;
    {
      std::unique_lock lock(stream.mu);
      const auto ready = [&] {
        return stream.closed || !stream.outbox.empty() || (stream.draining && stream.in_flight == 0);
      };
      while (!ready()) {
        // A client may cancel while the stream drains: nothing else wakes us then.
        if (stream.cv.wait_for(lock, kPollInterval, ready)) break;
        if (stream.context->IsCancelled()) stream.closed = true;
      }
      if (stream.closed || stream.outbox.empty()) return;
      item = std::move(stream.outbox.front());
      stream.outbox.pop_front();
    }
    if (!WriteItem(item, rw)) {
      stream.context->TryCancel();  // wakes the reader
      std::lock_guard lock(stream.mu);
      stream.closed = true;
      return;
    }
  }
}

bool AgentServer::Impl::WriteItem(OutItem& item, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw) {
  if (item.completion) {
    dispatch::Completion& c = *item.completion;
    pb::Completion* out = item.message.mutable_completion();
    out->set_id(item.hl_id);
    out->set_code(static_cast<int32_t>(c.status.code()));
    out->set_message(std::string(c.status.message()));
    if (c.status.ok()) {
      for (const auto& [name, tensor] : c.outputs) ToProto(name, tensor, out->add_outputs());
    }
    out->set_ran(c.pu.has_value());
    if (c.pu) out->set_pu(static_cast<int32_t>(c.pu->value));
    out->set_queued_ns(std::max(Duration(0), c.start - item.arrival).count());
    out->set_run_ns(c.pu ? std::max(Duration(0), c.end - c.start).count() : 0);
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
  if (options.chunk_bytes <= 0 || options.chunk_bytes > kMaxChunk) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": chunk_bytes must be in 1..", kMaxChunk, ", got ",
                                                   options.chunk_bytes));
  }
  if (options.load_timeout <= std::chrono::milliseconds(0)) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": load_timeout must be > 0"));
  }
  if (options.max_param_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(agent, ": max_param_bytes must be > 0"));
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
void AgentServer::Shutdown() { impl_->Shutdown(); }
pb::StatsReply AgentServer::Stats() const { return impl_->MakeStats(); }

}  // namespace baton::net
