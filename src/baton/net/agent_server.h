// AgentServer: the server side of the agent protocol (proto/baton/agent/v1),
// the third shell around a low-level dispatcher core (see DESIGN.md). It owns
// one DeviceShell with the PUs of this machine; the high-level dispatcher of
// another process loads partitions into it (Load, cached by content hash) and
// streams assignments to it (Execute), receiving completions back.
//
// Execute streams: assignment ids are unique per stream. A repeat of an id
// still in flight on the stream is dropped (its first copy's completion
// answers the id; the agent logs the drop on stderr); a repeat of one of the
// last `answered_ids_kept` ids answered on the stream is answered at once
// with ALREADY_EXISTS and not run. Neither runs again.
//
// Partitions: cached by content hash and counted: every Load of a handle
// (also one answered `cached`) takes a reference, every Unload gives one back,
// and the last Unload frees its sessions (a run still going keeps them until it
// returns). Their parameters count against one memory budget per agent
// (max_loaded_param_bytes).
//
// Untrusted input: partition bytes are parsed without external data and
// within max_partition_bytes, checked against their content hash, the op
// allow-list and the parameter budgets before any session is created; every
// refusal is an error status that names the partition, the limit and the fix,
// and the agent keeps serving. When a token is configured, every Agent RPC
// must carry `authorization: Bearer <token>` (grpc.health.v1 is open).
//
// Threads: gRPC's sync-server threads run the RPCs; each Execute stream has a
// reader (its RPC thread) and a writer thread fed by an outbox; a ticker
// thread drops late work from the shell's queue; session creation for a Load
// runs on a thread of its own (the Load waits for it at most load_timeout; at
// most max_stuck_loads may outlive their Load; Shutdown waits 5 s for them).
//
// Thread-safety: Start, then any method from any thread. Shutdown is
// idempotent; the destructor calls it. Executors in AgentPu are borrowed and
// must outlive the server.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/core/status.h"
#include "baton/net/agent_types.h"

namespace baton::agent::v1 {
class StatsReply;  // generated (agent.pb.h); only net/ and its tests include it
}  // namespace baton::agent::v1

namespace baton::net {

// One PU of the agent. Its index in the vector given to Start is its index in
// HelloReply.pus, LoadReply.capable_pus and Assignment.fixed_pu.
struct AgentPu {
  std::string name;
  std::string kind;                       // "cpu" | "emu"
  AgentPuInfo info;                       // sent in HelloReply (name/kind filled from above when empty)
  const backend::Executor* executor = nullptr;  // borrowed; must outlive the server
  std::string share_key;                  // PUs with the same non-empty key share one prepared session
  std::vector<int> pin_cores;             // the PU's worker thread pins itself to these; empty = not pinned
  int nice = 0;                           // the worker thread runs this many nice steps above the process
  bool batch_scheduling = false;          // the worker thread runs under SCHED_BATCH
};

// Ranges of AgentOptions' bounds on calls. gRPC needs a few threads of its
// own besides the calls' (a client holds one Execute stream and up to 4 Loads
// at once).
inline constexpr size_t kMaxConcurrentLoads = 1024;
inline constexpr int kMinThreads = 8;
inline constexpr int kMaxThreads = 4096;

struct AgentOptions {
  std::string name = "agent";
  std::string listen = "127.0.0.1:0";  // host:port, port in 0..65535; 0 picks a free one (see AgentServer::port)
  ServerSecurityOptions security;
  std::string low_level = "fifo";  // the agent's low-level policy (policy::MakeLowLevelPolicy)
  size_t max_queue = 256;          // ready-queue capacity of the agent's low-level core
  int64_t max_partition_bytes = kDefaultMaxPartitionBytes;
  int64_t chunk_bytes = kDefaultChunkBytes;  // completions above this travel as Frames
  std::vector<std::string> allowed_ops;      // empty = any op
  std::chrono::milliseconds load_timeout{30000};  // budget for creating the sessions of one partition
  // The longest one run may take on this agent's PUs, whatever a client asks:
  // past it the run is stopped (ONNX Runtime's terminate flag) and answered
  // ABORTED, so an untrusted partition cannot hold a PU for longer.
  std::chrono::milliseconds max_run{60000};
  int64_t max_param_bytes = int64_t{1} << 31;     // a partition whose parameters exceed it is refused
  // The memory budget of the whole agent: the parameters of every partition
  // loaded at once, over all clients. A Load that would go above it is
  // refused (RESOURCE_EXHAUSTED) until partitions are unloaded. 0 = half of
  // this machine's physical memory.
  int64_t max_loaded_param_bytes = 0;
  // Per Execute stream, how many answered assignment ids the agent remembers
  // to refuse a repeat (ALREADY_EXISTS); ids in flight are always remembered.
  // 0 = only ids in flight. See "Assignment ids" in docs/agent.md.
  size_t answered_ids_kept = 1024;
  // ONNX Runtime cannot stop a session creation, so one that outlives its
  // Load's load_timeout keeps running on its thread. At most this many may;
  // past it, Loads are refused (UNAVAILABLE) until one of them returns.
  size_t max_stuck_loads = 2;
  // Loads at once (each being received, or creating its sessions); past it a
  // Load is refused RESOURCE_EXHAUSTED. A client reloading a restarted agent
  // sends 4 at once.
  size_t max_concurrent_loads = 4;  // 1..kMaxConcurrentLoads
  // Threads gRPC may use for calls in progress (each Execute stream and Load
  // holds one); past it new calls are refused RESOURCE_EXHAUSTED.
  int max_threads = 128;  // kMinThreads..kMaxThreads
  // The outputs one completion may carry; a run whose outputs are larger is
  // answered RESOURCE_EXHAUSTED (a protobuf message holds at most 2 GiB).
  size_t max_answer_bytes = kMaxAnswerBytes;
  // An execution-time budget per client (one Execute stream): the PU time its
  // runs may take in any client_budget_window, refilled evenly over the
  // window. A client that used it up gets RESOURCE_EXHAUSTED for its new
  // assignments until enough is refilled; other clients are not affected.
  // 0 = no budget (only max_run bounds a run).
  std::chrono::milliseconds client_run_budget{0};
  std::chrono::milliseconds client_budget_window{60000};
  // A client that names itself (LoadHeader.client) and has had no Execute
  // stream open for this long gets its Loads given back, as if it had
  // unloaded them: a client killed before it unloads does not hold the
  // memory budget until the agent restarts. It learns of it from Hello
  // (client_loads) when it comes back, and loads again.
  std::chrono::milliseconds client_grace{60000};
};

class AgentServer {
 public:
  // Validates the options, builds the device shell, binds and serves.
  // InvalidArgument naming the option for bad options or PUs, a listen port
  // outside 0..65535, or TLS files that are not PEM (NotFound when one does
  // not exist); Unavailable when gRPC cannot listen (it does not say why: the
  // message names the possible causes).
  static absl::StatusOr<std::unique_ptr<AgentServer>> Start(AgentOptions options, std::vector<AgentPu> pus);
  ~AgentServer();  // Shutdown()
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  int port() const;                    // the bound port (for a listen address with port 0)
  const std::string& address() const;  // host:port actually listened on
  const std::string& notice() const;   // the security notice of MakeServerSecurity ("" = none)
  // The options it serves with: as given, with max_loaded_param_bytes 0
  // resolved to its budget.
  const AgentOptions& options() const;

  // Stops serving: cancels open streams and loads, waits for the RPCs to
  // return, joins every thread it started. Work still queued is not answered.
  // A session creation still running after 5 s is left running (detached;
  // see loads_left_running). Idempotent.
  void Shutdown();
  // Session creations Shutdown left running. They still use their PUs'
  // executors: a process with any should exit (std::_Exit) rather than
  // destroy the executors.
  size_t loads_left_running() const;

  // What the Stats RPC answers (callers include agent.pb.h to read it).
  agent::v1::StatsReply Stats() const;

 private:
  class Impl;
  explicit AgentServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace baton::net
