// The HL side of a `baton agent`: a runtime::RemoteDevice over gRPC, and the
// executors that stand for the agent's PUs when models are cut and deployed.
//
// GrpcRemoteDevice
//   * Connect: opens a channel (TLS and a bearer token when configured), says
//     Hello and learns the agent's PUs. Fails with Unavailable naming the
//     address when the agent does not answer within connect_timeout.
//   * Load: sends a partition once per agent (cached by content hash here
//     and there); the bytes are kept so that a restarted agent can be loaded
//     again when it rejoins. The destructor gives every Load back (Unload,
//     within 3 s in all), so the agent can free what no client uses.
//   * Submit: the assignment goes on one bidirectional Execute stream (many in
//     flight); messages above the agent's chunk size travel as Frames. The
//     assignment (with its inputs) is kept until it is answered, so that it can
//     be handed back if the agent is lost.
//   * Cancel: a Cancel message on the same stream withdraws what the HL side
//     no longer wants (the siblings of a failed request).
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
// gRPC and the generated protocol stay in remote_device.cc (GrpcRemoteDevice
// holds them behind a pointer); this header includes neither.
//
// Thread-safety: GrpcRemoteDevice is thread-safe (see runtime::RemoteDevice);
// RemoteExecutor is immutable.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/net/agent_types.h"
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
  // An assignment the agent has not answered this long after it was sent,
  // while it answers pings, is answered DEADLINE_EXCEEDED and withdrawn: a
  // broken agent cannot hold a request without a deadline for good.
  std::chrono::milliseconds answer_timeout{std::chrono::minutes(10)};
};

// How long a client waits for one Load of `bytes` on an agent that said
// `hello`: the agent's own load timeout (120 s when it does not say), plus
// 30 s, plus the bytes at 1 MiB/s (a slow edge link). The agent answers
// DEADLINE_EXCEEDED itself when its sessions take longer than its timeout,
// so this only bounds a transfer or an agent that hangs. A Load the agent
// refuses because it takes no more at once (kLoadRetryAfterMsKey) is tried
// again, at growing intervals, while this budget lasts.
std::chrono::milliseconds LoadCallBudget(const AgentHello& hello, size_t bytes);

struct RemoteDeviceCounters {
  uint64_t sent = 0;
  uint64_t answered = 0;
  uint64_t returned = 0;      // handed back after a loss
  uint64_t late_dropped = 0;  // answers for assignments already handed back (or unknown)
  uint64_t lost = 0;
  uint64_t rejoined = 0;
  uint64_t loads_sent = 0;    // partitions sent over the network (cache misses)
  uint64_t cancels_sent = 0;  // assignment ids sent in Cancel messages
  uint64_t unloads_sent = 0;  // partitions given back to the agent (Unload accepted)
  uint64_t expired = 0;       // answered DEADLINE_EXCEEDED here after answer_timeout (counted in answered too)
  uint64_t given_back = 0;    // times the agent had given our Loads back (we were away past its client grace)
  uint64_t loads_retried = 0;  // Loads tried again because the agent was taking as many as it takes at once
};

class GrpcRemoteDevice : public runtime::RemoteDevice {
 public:
  static absl::StatusOr<std::shared_ptr<GrpcRemoteDevice>> Connect(RemoteDeviceOptions options);
  ~GrpcRemoteDevice() override;

  // What the agent said in Hello (its PUs, in order, and limits).
  const AgentHello& hello() const;
  const std::string& name() const;
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

  // The link to the agent, measured with Echo: the median round trip of an
  // empty call, and the bandwidth of `probe_bytes` sent on top of it.
  struct Link {
    double rtt_ms = 0;
    double mbps = 0;
  };
  absl::StatusOr<Link> MeasureLink(int64_t probe_bytes = int64_t{256} << 10);

  // runtime::RemoteDevice
  void Submit(dispatch::Assignment assignment) override;
  // Sends a Cancel on the current stream for the ids it still waits for;
  // the agent answers each Cancelled (or with its result if it finished).
  void Cancel(std::span<const AssignmentId> ids) override;
  void Start(runtime::RemoteDeviceEvents events) override;
  void Stop() override;
  std::vector<runtime::PuStats> pu_stats() const override;
  void ResetStats() override;
  bool reachable() const override;

  RemoteDeviceCounters counters() const;
  // Test hook: treats the agent as lost now, as a missed heartbeat would.
  void SimulateLoss(const std::string& why);

 private:
  class Impl;  // the channel, the streams and their threads (remote_device.cc)
  explicit GrpcRemoteDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
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
  absl::StatusOr<backend::RunResult> Run(std::span<const std::pair<std::string, const Tensor*>>, RunCancel* = nullptr) const override;

 private:
  std::string handle_;
};

}  // namespace baton::net
