// The HL side of a `baton agent`: a runtime::RemoteDevice over gRPC, and the
// executors that stand for the agent's PUs when models are cut and deployed.
//
// GrpcRemoteDevice
//   * Connect: opens a channel (TLS and a bearer token when configured), says
//     Hello and learns the agent's PUs. Fails with Unavailable naming the
//     address when the agent does not answer within connect_timeout.
//   * Load: sends a partition once per agent (cached by content hash here
//     and there); the bytes are kept so that a restarted agent can be loaded
//     again when it rejoins.
//   * Submit: the assignment goes on one bidirectional Execute stream (many in
//     flight); messages above the agent's chunk size travel as Frames. The
//     assignment (with its inputs) is kept until it is answered, so that it can
//     be handed back if the agent is lost.
//   * Failure detection: a broken stream, a failed write, or no message from
//     the agent for `lost_after` (it answers a ping every `heartbeat`) marks it
//     lost: every unanswered assignment is handed back exactly once
//     (`returned`), and answers that arrive later are dropped by id. A
//     supervisor thread reconnects every `reconnect_every`; when the agent is
//     back (reloaded if it restarted) it reports reachable again.
//   * Times: a completion's end is when it arrived here; its start is end minus
//     the run time the agent measured.
//
// RemoteExecutor: one per agent PU. QueryCapability comes from a local
// executor of the same kind and op support (`capability`, borrowed; it runs
// nothing); Prepare loads the partition on the agent and fails with
// FailedPrecondition when the agent says that PU cannot run it.
//
// Thread-safety: GrpcRemoteDevice is thread-safe (see runtime::RemoteDevice);
// RemoteExecutor is immutable.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "baton/agent/v1/agent.grpc.pb.h"
#include "baton/backend/executor.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/net/codec.h"
#include "baton/net/security.h"
#include "baton/runtime/device_shell.h"
#include "baton/runtime/remote_device.h"

namespace baton::net {

struct RemoteDeviceOptions {
  std::string name;     // the device's name in the config (for messages)
  std::string address;  // host:port of the agent
  ClientSecurityOptions security;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds heartbeat{250};
  std::chrono::milliseconds lost_after{2000};
  std::chrono::milliseconds reconnect_every{500};
};

struct RemoteDeviceCounters {
  uint64_t sent = 0;
  uint64_t answered = 0;
  uint64_t returned = 0;      // handed back after a loss
  uint64_t late_dropped = 0;  // answers for assignments already handed back (or unknown)
  uint64_t lost = 0;
  uint64_t rejoined = 0;
  uint64_t loads_sent = 0;    // partitions sent over the network (cache misses)
};

class GrpcRemoteDevice : public runtime::RemoteDevice {
 public:
  static absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> Connect(RemoteDeviceOptions options);
  ~GrpcRemoteDevice() override;

  const pb::HelloReply& hello() const { return hello_; }
  const std::string& name() const { return options_.name; }
  // Global ids of the agent's PUs, in Hello order; DeviceId of this device.
  // Before Start.
  void Bind(DeviceId device, std::vector<runtime::PuSetup> pus, const runtime::RunnerTable* runners);

  // Loads `bytes` (an ONNX model) on the agent unless it is loaded already;
  // returns its handle and the indices of the agent PUs that can run it.
  struct Loaded {
    std::string handle;
    std::vector<int> capable_pus;
  };
  absl::StatusOr<Loaded> Load(const std::string& partition_name, const std::string& bytes);

  // One Stats RPC.
  absl::StatusOr<pb::StatsReply> Stats();

  // The link to the agent, measured with Echo: the median round trip of an
  // empty call, and the bandwidth of `probe_bytes` sent on top of it.
  struct Link {
    double rtt_ms = 0;
    double mbps = 0;
  };
  absl::StatusOr<Link> MeasureLink(int64_t probe_bytes = int64_t{256} << 10);

  // runtime::RemoteDevice
  void Submit(dispatch::Assignment assignment) override;
  void Start(runtime::RemoteDeviceEvents events) override;
  void Stop() override;
  std::vector<runtime::PuStats> pu_stats() const override;
  void ResetStats() override;
  bool reachable() const override;

  RemoteDeviceCounters counters() const;
  // Test hook: treats the agent as lost now, as a missed heartbeat would.
  void SimulateLoss(const std::string& why);

 private:
  struct Stream;
  struct Loadable {
    std::string name;
    std::string bytes;
    Loaded loaded;
  };

  explicit GrpcRemoteDevice(RemoteDeviceOptions options);
  void AddAuth(grpc::ClientContext& context) const;
  absl::Status Hello(std::chrono::milliseconds timeout, pb::HelloReply& reply);
  absl::StatusOr<Loaded> LoadOnAgent(const std::string& name, const std::string& bytes);
  // Opens a new Execute stream and starts its threads (mu_ not held);
  // `rejoin` counts it as a rejoin.
  absl::Status OpenStream(bool rejoin);
  void ReaderLoop(std::shared_ptr<Stream> stream);
  void WriterLoop(std::shared_ptr<Stream> stream);
  void SupervisorLoop();
  // Joins a retired stream's threads and finishes its call (mu_ not held).
  void Reap(Stream& stream);
  // Marks the agent lost (once per connection) and hands back in-flight work.
  void Lose(const std::shared_ptr<Stream>& stream, const std::string& why);
  void Deliver(std::vector<dispatch::Assignment> returned);
  Time Now() const;
  std::optional<std::string> HandleFor(const dispatch::Assignment& a) const;

  const RemoteDeviceOptions options_;
  ClientSecurity security_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Agent::Stub> stub_;
  pb::HelloReply hello_;  // immutable after Connect (PU list)

  DeviceId device_;
  std::vector<runtime::PuSetup> pus_;
  const runtime::RunnerTable* runners_ = nullptr;
  runtime::RemoteDeviceEvents events_;

  mutable std::mutex load_mu_;  // serialises loads; guards loads_ and instance_
  absl::flat_hash_map<std::string, Loadable> loads_;  // by content hash
  std::string instance_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // supervisor wake-ups
  std::shared_ptr<Stream> stream_;  // guarded by mu_; null while lost
  absl::flat_hash_map<AssignmentId, dispatch::Assignment> in_flight_;  // guarded by mu_
  std::vector<dispatch::Assignment> bounced_;  // guarded by mu_; submitted while lost, to hand back
  std::vector<std::shared_ptr<Stream>> retired_;  // guarded by mu_; lost streams whose threads are joined later
  std::vector<Duration> busy_;      // guarded by mu_; per PU
  std::vector<uint64_t> runs_;      // guarded by mu_
  std::vector<uint64_t> failures_;  // guarded by mu_
  RemoteDeviceCounters counters_;   // guarded by mu_
  bool started_ = false;            // guarded by mu_
  bool stopping_ = false;           // guarded by mu_
  std::thread supervisor_;
  std::atomic<uint64_t> ping_seq_{0};
};

class RemoteExecutor : public backend::Executor {
 public:
  RemoteExecutor(std::shared_ptr<GrpcRemoteDevice> device, int pu_index, std::string pu_name, std::string kind,
                 const backend::Executor* capability);
  const std::string& pu_name() const override { return pu_name_; }
  std::string kind() const override { return kind_; }
  std::vector<bool> QueryCapability(const graph::Model& model) const override;
  absl::StatusOr<std::unique_ptr<backend::PreparedPartition>> Prepare(
      const graph::Model& model, const graph::Submodel& partition) const override;

 private:
  std::shared_ptr<GrpcRemoteDevice> device_;
  int pu_index_;
  std::string pu_name_;
  std::string kind_;
  const backend::Executor* capability_;
};

// The prepared partition behind a remote PU: only its handle; it never runs
// here (the agent runs it).
class RemotePartition : public backend::PreparedPartition {
 public:
  explicit RemotePartition(std::string handle) : handle_(std::move(handle)) {}
  const std::string& handle() const { return handle_; }
  absl::StatusOr<backend::RunResult> Run(std::span<const std::pair<std::string, const Tensor*>>) const override;

 private:
  std::string handle_;
};

}  // namespace baton::net
