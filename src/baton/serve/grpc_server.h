// `baton serve`'s gRPC front-end: the KServe v2 / Triton inference protocol
// (`inference.GRPCInferenceService`, proto/inference/grpc_service.proto) over
// a baton::Engine, and the standard `grpc.health.v1.Health` service.
//
//   ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata
//   ModelInfer        inputs as raw_input_contents or typed contents; outputs
//                     as raw_output_contents; requested outputs honoured; id echoed
//   ModelStreamInfer  a bidirectional stream; answers in completion order
//   ModelStatistics   per model: success, fail, queue and compute counts and durations
//   SystemSharedMemoryStatus / Register / Unregister
//                     the system shared memory extension (serve/shared_memory.h),
//                     when GrpcOptions::shared_memory is set: inputs and requested
//                     outputs may name a registered region instead of carrying bytes
//
// Errors are gRPC statuses with baton's message: INVALID_ARGUMENT for a bad
// request, an unknown model included (naming the tensor or model and what was
// expected), RESOURCE_EXHAUSTED when a queue or in-flight limit is full (at once),
// DEADLINE_EXCEEDED (the `timeout` parameter or the call's gRPC deadline
// passed; RequestDeadline), UNAUTHENTICATED, UNAVAILABLE while closing. On a stream
// an error answer carries `error_message` and the stream goes on.
//
// No request blocks a thread: ModelInfer hands the request to the engine and
// is answered from the engine's completion. The server runs on gRPC's
// asynchronous API, with `threads` threads polling one completion queue.
// Requests from every connection share the engine's dispatcher.
//
// Limits: messages up to max_request_bytes; gRPC's memory for messages over
// every connection up to memory_quota_bytes; at most max_streams_per_connection
// calls at once on one connection (HTTP/2 streams); a ModelStreamInfer stream
// reads no further requests while max_stream_in_flight of its own are being
// answered or wait to be written to a client that does not read. Dead peers
// are found by keepalive pings.
//
// Security, as for the HTTP front-end (http_server.h): without TLS and a
// token, Start refuses any but a loopback address. With a token, every call
// needs the metadata `authorization: Bearer <token>`, except ServerLive and
// ServerReady on a loopback address, and the health service anywhere.
//
// Thread-safety: Start/Stop from one thread; the handlers run on gRPC's threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "baton/baton.h"
#include "baton/core/status.h"
#include "baton/serve/served_engine.h"

namespace baton::serve {

class SharedMemoryRegistry;

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 8001;  // 0 = a free port (see GrpcServer::port)
  // Non-empty: listen on this Unix domain socket instead of host:port (as
  // gRPC's "unix:PATH"). Local only, like loopback; the file's permissions
  // decide who may connect. A stale socket file (nothing listening) is
  // replaced; a live one or any other file is an error.
  std::string unix_path;
  size_t max_request_bytes = size_t{64} << 20;
  // gRPC's memory for messages being read and held, over all connections
  // (grpc::ResourceQuota): past it, new calls are answered RESOURCE_EXHAUSTED
  // instead of read. 0 = 4 x max_request_bytes, at least 256 MiB.
  size_t memory_quota_bytes = 0;
  int max_streams_per_connection = 100;  // 1..10000
  int max_stream_in_flight = 64;         // per ModelStreamInfer stream, 1..10000
  // Threads that poll the server's completion queue and run its handlers
  // (gRPC's asynchronous API), 1..64. One makes the fewest thread hand-overs
  // per call; more let calls be parsed, and fast models run
  // (run_here_up_to), side by side.
  int threads = 1;
  std::string token;                     // "" = no token
  std::string tls_cert;                  // PEM files; both or neither
  std::string tls_key;
  // Client shared memory (`--allow-client-shm`), shared with the HTTP
  // front-end; null = the extension is off and requests naming a region are
  // refused.
  std::shared_ptr<SharedMemoryRegistry> shared_memory;
  // How long Stop lets calls in flight finish before cancelling them.
  std::chrono::seconds stop_grace{30};
  // A request for a model whose recent runs took at most this long runs on
  // the gRPC thread that read it when a PU it may use is free
  // (InferOptions::run_here_up_to): that thread is held about as long as
  // parsing a large message holds it, and the request saves two thread
  // hand-overs. 0 = always hand requests to the engine's threads.
  std::chrono::microseconds run_here_up_to{100};
  // The server pings an idle or busy connection every keepalive_time and
  // closes it when the ping is not answered within keepalive_timeout (a dead
  // peer then frees its calls). Both 1 s..1 h.
  std::chrono::milliseconds keepalive_time{10000};
  std::chrono::milliseconds keepalive_timeout{10000};
};

// The memory quota Start gives gRPC for `options` (memory_quota_bytes, or its default).
size_t GrpcMemoryQuota(const GrpcOptions& options);

// What ModelInfer does with a request before the engine sees it, on its
// serialized bytes: parse, then check against `model` (the inputs it would
// run with, or the INVALID_ARGUMENT it would answer), with `shm` as the
// registry (null = off). For fuzzing and tests.
absl::Status CheckSerializedInferRequest(std::string_view bytes, const ModelInfo& model,
                                         const SharedMemoryRegistry* shm = nullptr);

// The deadline a ModelInfer call's request gets: the earlier of its
// `timeout` parameter (`requested`, from arrival) and what is left of the
// call's gRPC deadline (`call_deadline`, time_point::max() = none; what
// Triton's clients set as client_timeout), never below zero. A client that
// has given up on its call therefore does not leave work behind in the
// queues: baton drops it as for `timeout`.
std::optional<std::chrono::nanoseconds> RequestDeadline(std::optional<std::chrono::nanoseconds> requested,
                                                        std::chrono::system_clock::time_point call_deadline,
                                                        std::chrono::system_clock::time_point now);

class GrpcServer {
 public:
  // Binds and starts serving `engine` (borrowed; it must outlive the server).
  // Errors: InvalidArgument for bad options (naming them), Unavailable when
  // the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(Engine& engine, GrpcOptions options);
  // The same over models that may be loaded and unloaded while it serves
  // (borrowed; it must outlive the server).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(ServedEngine& served, GrpcOptions options);
  ~GrpcServer();  // Stop()
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const;
  // Stops accepting calls and answers the ones in flight, then returns. A
  // stream answers requests that still arrive UNAVAILABLE and ends when its
  // client stops sending, or (UNAVAILABLE) once it has been quiet for 1 s;
  // calls still open after stop_grace are cancelled. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(ServedEngine& served, GrpcOptions options,
                                                           std::unique_ptr<ServedEngine> owned);
  std::unique_ptr<Impl> impl_;
};

}  // namespace baton::serve
