// The Load path of the agent: a partition received over the network is
// untrusted input; it is size-capped, hash-checked, validated without external
// data, checked against the op allow-list and the parameter budget, then its
// sessions are created within load_timeout (see agent_server.h).
#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/process.h"
#include "baton/net/agent_server_impl.h"

namespace baton::net {

grpc::Status AgentServer::Impl::Load(grpc::ServerContext* context, grpc::ServerReader<pb::LoadChunk>* reader,
                                     pb::LoadReply* reply) {
  if (grpc::Status auth = CheckAuth(context); !auth.ok()) return auth;
  // Each Load holds up to max_partition_bytes while it is received, and a
  // session creation after that: at most max_concurrent_loads at once.
  struct InProgress {
    std::atomic<size_t>& n;
    ~InProgress() { --n; }
  } in_progress{loads_in_progress_};
  if (++loads_in_progress_ > options_.max_concurrent_loads) {
    // Transient: the trailer tells baton's clients to try again shortly.
    ++loads_rejected_;
    context->AddTrailingMetadata(kLoadRetryAfterMsKey, std::to_string(kLoadRetryAfterMs));
    return ToGrpc(absl::ResourceExhaustedError(absl::StrCat(
        "agent '", options_.name, "': ", options_.max_concurrent_loads,
        " Loads are in progress already (the most it takes at once); load again once one has finished")));
  }
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
  if (header.content_hash().size() != kContentHashHexDigits) {
    return absl::InvalidArgumentError(absl::StrCat(
        agent, ": partition '", header.name(), "': the header's content_hash has ", header.content_hash().size(),
        " characters; set it to the SHA-256 of the bytes, 64 lowercase hex digits"));
  }
  if (header.total_bytes() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": total_bytes is ", header.total_bytes(), "; set it to the size of the ONNX model"));
  }
  if (header.client().size() > kMaxClientIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": a client id of ", header.client().size(),
                                                   " bytes; send at most ", kMaxClientIdBytes,
                                                   " (baton sends 32 hex digits)"));
  }
  if (header.total_bytes() > options_.max_partition_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " is ", header.total_bytes(), " bytes, above this agent's limit of ", options_.max_partition_bytes,
        " bytes; cut the model into smaller partitions, or start the agent with a larger --max-partition-mb"));
  }
  // Memory follows the bytes that arrive, not what the header declares (a
  // client could declare the limit and send nothing).
  std::string bytes;
  bytes.reserve(static_cast<size_t>(std::min<int64_t>(header.total_bytes(), int64_t{16} << 20)));
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
  if (const std::string hash = Sha256Hex(bytes); hash != header.content_hash()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the bytes hash to ", hash,
                                                   ", not to the header's content_hash; the partition was corrupted "
                                                   "or hashed differently (SHA-256 of the exact bytes); resend it"));
  }

  pb::LoadReply reply;
  reply.set_handle(header.content_hash());
  const std::string& client = header.client();
  ExpireClients();  // what clients gone for good hold counts against the budget below
  {
    std::unique_lock lock(partitions_mu_);
    if (auto it = partitions_.find(header.content_hash()); it != partitions_.end()) {
      AddLoadLocked(*it->second, it->first, client, /*fresh=*/false);  // one more Load to give back
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
  {
    // Checked again when it is added (another Load may fit in first).
    std::shared_lock lock(partitions_mu_);
    BATON_RETURN_IF_ERROR(CheckBudget(m.total_param_bytes(), what));
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
  partition->param_bytes = m.total_param_bytes();
  std::vector<std::shared_ptr<const backend::PreparedPartition>> shared_of_pu(pus_.size());
  for (std::unique_ptr<backend::PreparedPartition>& p : prepared) {
    std::shared_ptr<const backend::PreparedPartition> shared(std::move(p));
    for (size_t u = 0; u < pus_.size(); ++u) {
      if (runner_of_pu[u] == shared.get()) shared_of_pu[u] = shared;
    }
    partition->prepared.push_back(std::move(shared));
  }
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
    AddLoadLocked(*it->second, it->first, client, /*fresh=*/false);
    reply.set_cached(true);
    for (int32_t u : it->second->capable) reply.add_capable_pus(u);
    return reply;
  }
  BATON_RETURN_IF_ERROR(CheckBudget(partition->param_bytes, what));
  partition->model = ModelId(next_model_++);
  for (size_t u = 0; u < pus_.size(); ++u) {
    const PuId pu(static_cast<uint32_t>(u));
    latency_->SetCapable(partition->model, PartitionId(0), pu, capable[u]);
    if (capable[u]) runners_.Set(partition->model, PartitionId(0), pu, shared_of_pu[u]);
  }
  for (int32_t u : partition->capable) reply.add_capable_pus(u);
  loaded_param_bytes_ += partition->param_bytes;
  Partition& added = *partitions_.emplace(header.content_hash(), std::move(partition)).first->second;
  AddLoadLocked(added, header.content_hash(), client, /*fresh=*/true);
  return reply;
}

absl::Status AgentServer::Impl::CheckBudget(int64_t param_bytes, const std::string& what) const {
  if (loaded_param_bytes_ + param_bytes <= options_.max_loaded_param_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      what, " has ", param_bytes, " bytes of parameters; with the ", loaded_param_bytes_, " bytes of the ",
      partitions_.size(), " partitions loaded now that is above this agent's memory budget of ",
      options_.max_loaded_param_bytes,
      " bytes; unload partitions that are no longer used (a baton run unloads its own when it ends; those of "
      "clients that ended without unloading are given back after --client-grace-s), or start the agent with a "
      "larger --max-loaded-mb"));
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
    // ONNX Runtime cannot stop a session creation: one that outlived its
    // Load keeps its thread and memory until it returns. Bound how many.
    size_t stuck = 0;
    for (const auto& [t, thread] : prepare_threads_) {
      std::lock_guard task_lock(t->mu);
      stuck += t->abandoned && !t->done;
    }
    if (stuck >= options_.max_stuck_loads) {
      return absl::UnavailableError(absl::StrCat(
          what, ": ", stuck, " earlier loads are still creating sessions after they timed out (at most ",
          options_.max_stuck_loads, "); load again once they finish, or restart the agent"));
    }
    prepare_threads_.emplace_back(task, std::thread([task, model, executors] {
      NameThisThread("agent-prepare");
      const graph::Submodel whole = graph::WholeSubmodel(*model);
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
      if (stopping_) {
        task->abandoned = true;
        return absl::UnavailableError(absl::StrCat(what, ": the agent is shutting down"));
      }
      if (context->IsCancelled()) {
        task->abandoned = true;
        return absl::CancelledError(absl::StrCat(what, ": the client cancelled the load"));
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        task->abandoned = true;
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
  std::vector<std::pair<std::shared_ptr<PrepareTask>, std::thread>> taken;
  {
    std::lock_guard lock(prepare_mu_);
    for (auto it = prepare_threads_.begin(); it != prepare_threads_.end();) {
      bool done = all;
      if (!done) {
        std::lock_guard task_lock(it->first->mu);
        done = it->first->done;
      }
      if (done) {
        taken.push_back(std::move(*it));
        it = prepare_threads_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // At Shutdown, a creation that does not finish within kLoadShutdownWait is
  // left running (detached): waiting for it could take forever.
  const auto deadline = std::chrono::steady_clock::now() + kLoadShutdownWait;
  for (auto& [task, thread] : taken) {
    bool done = false;
    {
      std::unique_lock task_lock(task->mu);
      done = task->cv.wait_until(task_lock, deadline, [&] { return task->done; });
    }
    if (done) {
      thread.join();
    } else {
      thread.detach();
      ++loads_left_running_;
    }
  }
}

// ---------------------------------------------------------------------------
// Execute

}  // namespace baton::net
