// Internal to src/baton/net: the AgentServer's implementation class, shared by
// agent_server.cc (serving, streams, stats) and agent_load.cc (the Load path:
// untrusted-partition checks and session creation). Not a public header.
#pragma once

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
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/core/dtype.h"
#include "baton/net/content_hash.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/net/codec.h"
#include "baton/net/security.h"
#include "baton/net/stream_ids.h"
#include "baton/policy/latency_model.h"
#include "baton/policy/policy.h"
#include "baton/runtime/device_shell.h"

namespace baton::net {
namespace agent_internal {

inline constexpr char kVersion[] = "0.1";
// How often waits that cannot be woken by gRPC (a client cancelling a Load or a
// draining stream) look at the call's state again.
inline constexpr std::chrono::milliseconds kPollInterval{100};
// How long Shutdown lets open calls finish before gRPC cancels them.
inline constexpr std::chrono::seconds kShutdownGrace{2};
// How long Shutdown waits for session creations still running (ONNX Runtime
// cannot stop one); it leaves the rest running (loads_left_running).
inline constexpr std::chrono::seconds kLoadShutdownWait{5};

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Sessions of one Load, created on a thread of their own so the RPC can give
// up after load_timeout; the thread keeps the task alive and finishes it.
struct PrepareTask {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;       // guarded by mu
  bool abandoned = false;  // guarded by mu: its Load gave up waiting (timeout, cancel, shutdown)
  std::vector<absl::StatusOr<std::unique_ptr<backend::PreparedPartition>>> results;  // guarded by mu; per job
};

}  // namespace agent_internal


using namespace agent_internal;  // NOLINT: this internal header's own helpers

class AgentServer::Impl final : public pb::Agent::Service {
 public:
  Impl(AgentOptions options, std::vector<AgentPu> pus, ServerSecurity security)
      : options_(std::move(options)),
        pus_(std::move(pus)),
        security_(std::move(security)),
        instance_(RandomHexId()),  // changes on every start: a client can tell the cache is empty
        epoch_(std::chrono::steady_clock::now()),
        allowed_ops_(options_.allowed_ops.begin(), options_.allowed_ops.end()) {}

  ~Impl() override { Shutdown(); }

  absl::Status Init();
  void Shutdown();
  pb::StatsReply MakeStats() const;
  // Gives back the Loads of clients away for longer than client_grace.
  void ExpireClients();
  size_t loads_left_running() const { return loads_left_running_.load(); }

  int port() const { return port_; }
  const std::string& address() const { return address_; }
  const std::string& notice() const { return security_.notice; }
  const AgentOptions& options() const { return options_; }

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
    std::vector<std::shared_ptr<const backend::PreparedPartition>> prepared;  // also in runners_
    int64_t param_bytes = 0;  // counted in loaded_param_bytes_
    uint64_t refs = 1;        // Loads minus Unloads
    std::vector<int32_t> capable;                                       // PU indices
    std::vector<std::pair<std::string, ElemType>> inputs;               // what an assignment must feed
  };

  // Something the writer of a stream sends: a completion from the shell
  // (converted on the writer thread, not under the shell's mutex; above the
  // chunk size, one frame at a time) or a ready message (immediate rejection).
  struct OutItem {
    std::optional<dispatch::Completion> completion;
    uint64_t hl_id = 0;
    Time arrival{};
    pb::ExecuteOut message;
  };

  struct Stream {
    explicit Stream(size_t answered_ids_kept) : ids(answered_ids_kept) {}
    grpc::ServerContext* context = nullptr;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<OutItem> outbox;  // guarded by mu
    // Pings to answer (their seq), written before what waits in the outbox and
    // between the frames of a large completion, so that the client keeps
    // hearing the agent. Counted with the outbox against kMaxOutbox.
    std::deque<uint64_t> pongs;  // guarded by mu
    size_t in_flight = 0;        // guarded by mu; submitted, not yet answered by the shell
    bool closed = false;         // guarded by mu; the writer stops, later completions are discarded
    bool draining = false;       // guarded by mu; the client half-closed: finish once all is answered
    StreamIds ids;               // guarded by mu; what this stream sent: its ids run once
    uint64_t duplicates_dropped = 0;  // guarded by mu; repeats of an id in flight (logged at the first and the end)
    // The client's execution-time budget left (client_run_budget), as of budget_at.
    int64_t budget_ns = 0;   // guarded by mu; may go below 0 (a run longer than what was left)
    Time budget_at{};        // guarded by mu
  };

  struct InFlight {
    std::shared_ptr<Stream> stream;
    uint64_t hl_id = 0;
    Time arrival{};
    ModelId model{};  // the partition's, to withdraw its work when it is unloaded
  };

  grpc::Status CheckAuth(const grpc::ServerContext* context);
  absl::StatusOr<pb::LoadReply> DoLoad(grpc::ServerContext* context, grpc::ServerReader<pb::LoadChunk>* reader);
  absl::Status CheckOps(const graph::Model& model, const std::string& what) const;
  // ResourceExhausted when `param_bytes` more would exceed max_loaded_param_bytes.
  // Called with partitions_mu_ held (shared or unique).
  absl::Status CheckBudget(int64_t param_bytes, const std::string& what) const;
  // Creates the sessions of `model` for the capable PUs (updating `capable` for
  // PUs whose Prepare fails) within load_timeout.
  absl::StatusOr<std::vector<std::unique_ptr<backend::PreparedPartition>>> PrepareAll(
      grpc::ServerContext* context, std::shared_ptr<const graph::Model> model, const std::string& what,
      std::vector<bool>& capable, std::vector<const backend::PreparedPartition*>& runner_of_pu);
  void ReapPrepareThreads(bool all);
  // Gives back one Load of `handle`; the last frees the partition and
  // withdraws its work. NotFound when it is not loaded.
  absl::Status DropLoad(const std::string& handle);
  // Counts one Load of `p` by `client` (none: ""): a client's repeated Load
  // of a handle counts once. With partitions_mu_ held (unique); `fresh`: p
  // was just added with refs = 1.
  void AddLoadLocked(Partition& p, const std::string& handle, const std::string& client, bool fresh);
  // The client id of a call (metadata "baton-client"; "" when absent).
  static std::string ClientOf(const grpc::ServerContext* context);
  // INVALID_ARGUMENT for a client id longer than kMaxClientIdBytes.
  grpc::Status CheckClientId(const std::string& client) const;
  static constexpr size_t kMaxClientIdBytes = 128;

  grpc::Status ReadLoop(grpc::ServerContext* context, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw,
                        const std::shared_ptr<Stream>& stream);
  void WriteLoop(Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw);
  // Waits until fewer than kMaxOutbox messages wait to be written; false
  // when the stream closed, was cancelled or the agent is stopping.
  bool WaitForRoom(grpc::ServerContext* context, Stream& stream);
  bool WriteItem(OutItem& item, Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw);
  // Writes the pongs waiting; false when the stream broke.
  bool WritePongs(Stream& stream, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw);
  // Writes `pongs`, taken from the stream already; false when the stream broke.
  static bool SendPongs(const std::deque<uint64_t>& pongs, grpc::ServerReaderWriter<pb::ExecuteOut, pb::ExecuteIn>* rw);
  void HandleAssignment(const pb::Assignment& in, const std::shared_ptr<Stream>& stream);
  // Withdraws what `stream` sent and is not answered yet: the assignments with
  // these stream ids, or all of them (nullptr). They are answered `status`.
  void CancelFromStream(const std::shared_ptr<Stream>& stream, const absl::flat_hash_set<uint64_t>* hl_ids,
                        const absl::Status& status);
  // Most ids one Cancel message may carry.
  static constexpr int kMaxCancelIds = 65536;
  // Messages waiting for a stream's writer at which its reader stops reading
  // (pongs and rejections are answered without running anything, so a client
  // that sends and does not read would otherwise grow the outbox without end).
  static constexpr size_t kMaxOutbox = 1024;
  // Adds what client_budget_window refilled since stream.budget_at (capped at
  // client_run_budget). With stream.mu held.
  void RefillBudgetLocked(Stream& stream, Time now) const;
  // Answers `hl_id` at once with `status` (the id, if in flight, counts as answered).
  void Reject(Stream& stream, uint64_t hl_id, const absl::Status& status);
  // False when `in` repeats an id of `stream` (it is then answered or dropped).
  bool AdmitId(const pb::Assignment& in, Stream& stream);
  void OnCompletions(std::vector<dispatch::Completion> completions);  // the shell's sink
  // The completion's message as the client should read it (its own id, the PU's name).
  std::string ClientMessage(const dispatch::Completion& c, uint64_t hl_id) const;
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
  // What a client that names itself holds (one Load per handle), and whether
  // it is around (AgentOptions::client_grace).
  struct Client {
    std::set<std::string> handles;
    int streams = 0;  // Execute streams open
    std::chrono::steady_clock::time_point last_seen;
  };
  std::map<std::string, Client> clients_;  // guarded by partitions_mu_; by client id
  int64_t loaded_param_bytes_ = 0;  // guarded by partitions_mu_; over partitions_
  std::atomic<uint32_t> next_model_{0};

  std::mutex prepare_mu_;
  std::vector<std::pair<std::shared_ptr<PrepareTask>, std::thread>> prepare_threads_;  // guarded by prepare_mu_
  std::atomic<size_t> loads_left_running_{0};  // detached by Shutdown

  std::mutex inflight_mu_;  // lock order: shell mutex, inflight_mu_, Stream::mu
  absl::flat_hash_map<uint64_t, InFlight> inflight_;  // guarded by inflight_mu_; by agent AssignmentId
  std::atomic<uint64_t> next_assignment_{0};
  std::atomic<uint64_t> next_request_{0};

  mutable std::mutex streams_mu_;
  std::set<std::shared_ptr<Stream>> streams_;  // guarded by streams_mu_; open Execute streams
  bool shut_down_ = false;                     // guarded by streams_mu_
  std::atomic<bool> stopping_{false};

  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool tick_stop_ = false;   // guarded by tick_mu_
  bool tick_poked_ = false;  // guarded by tick_mu_
  std::thread ticker_;

  std::atomic<uint64_t> budget_refusals_{0};
  std::atomic<uint64_t> clients_expired_{0};
  std::atomic<size_t> loads_in_progress_{0};  // Loads being received or creating sessions (max_concurrent_loads)
  std::atomic<uint64_t> loads_{0}, loads_rejected_{0}, unloads_{0}, assignments_{0}, completions_ok_{0},
      completions_failed_{0}, dropped_deadline_{0}, auth_failures_{0};

  // Declared last: destroyed first (the shell's workers read the runners and
  // call the sink; the server's handlers use everything above).
  std::unique_ptr<runtime::DeviceShell> shell_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace baton::net
