// `baton serve`'s HTTP front-end: the KServe v2 inference protocol's REST
// form (as Triton serves it) over a baton::Engine, and Prometheus metrics.
//
//   GET  /v2/health/live              200 {"live": true}
//   GET  /v2/health/ready             200 {"ready": true} (the engine is open before the server starts)
//   GET  /v2                          server metadata
//   GET  /v2/models/{m}               model metadata (KServe datatypes, -1 = free dim)
//   GET  /v2/models/{m}/ready         200 {"name", "ready": true}
//   POST /v2/models/{m}/infer         JSON tensors in and out (serve/kserve_json.h)
//   GET  /v2/systemsharedmemory[/region/{r}]/status     the system shared memory
//   POST /v2/systemsharedmemory/region/{r}/register      extension (shared_memory.h),
//   POST /v2/systemsharedmemory[/region/{r}]/unregister  with HttpOptions::shared_memory
//   GET  /metrics                     Prometheus text (serve/metrics.h)
//
// Errors answer {"error": "<baton's message>"} with 400 (bad request: an
// unknown model or input, a wrong datatype or shape, a data length that does
// not match the shape, a missing input, malformed JSON), 401 (token), 413
// (body over the limit), 429 (RESOURCE_EXHAUSTED: a full queue or the
// model's in-flight limit), 503 (closing), 504 (DEADLINE_EXCEEDED), 500.
//
// Requests from every connection share the engine (its dispatcher arbitrates
// the PUs). Each request is served on one of `threads` workers, which waits
// for the engine's answer and cancels the request if its client closes or
// resets the connection meanwhile (serve/connection_watch.h). A kept-alive
// connection idle between requests gives its worker up when another
// connection waits for one. Bodies are limited to max_request_bytes, and a
// client that sends or reads too slowly is cut off (each wait and each
// whole request have bounds). Connections: serve/http_connection.h.
//
// Security, as for `baton agent`: without TLS and a token the server only
// binds to a loopback address (Start refuses anything else and says why).
// With a token, every request but the health and metrics endpoints needs
// `Authorization: Bearer <token>`; health and metrics stay open only when the
// server is on loopback.
//
// Thread-safety: Start/Stop from one thread; the handlers run on the
// server's workers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>

#include "baton/baton.h"
#include "baton/core/status.h"
#include "baton/serve/served_engine.h"
#include "baton/serve/http_connection.h"
#include "baton/serve/metrics.h"

namespace httplib {
class Server;
}

namespace baton::serve {

class SharedMemoryRegistry;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = a free port (see HttpServer::port)
  size_t max_request_bytes = size_t{64} << 20;
  int threads = 8;  // requests served at once (1..256)
  // Connections accepted and waiting for one of the threads, at most
  // (1..65536); beyond it the server stops accepting until one is taken,
  // and new connections wait in the kernel's listen backlog.
  int max_waiting_connections = 64;
  // Idle keep-alive connections parked, at most (0..65536): a connection
  // holds a worker between its requests only while no other one waits for
  // a worker; otherwise it is parked, and past this many parked it keeps
  // its worker until its next request, as it would without parking.
  int max_idle_connections = 1024;
  // Inference requests that may wait for the engine off the `threads`, at
  // most (0..4096): while a request waits, a helper thread takes its
  // worker's place, so that slow models' requests do not hold every worker
  // (health checks, metrics and other requests are still read). Each waiting
  // request holds its inputs, as one over gRPC does. 0: a waiting request
  // holds its worker.
  int max_waiting_infer = 64;
  // How long Stop lets the connections being served finish before it shuts
  // them down (a client that keeps its request unfinished would hold it).
  std::chrono::seconds stop_grace{30};
  // Each read or write of a connection waits at most this long (--timeout-s).
  std::chrono::seconds read_timeout{10};
  std::chrono::seconds write_timeout{10};
  // A request's head and body must arrive within request_timeout plus 1 s for
  // each min_bytes_per_s bytes it brought (0: no allowance), from its first
  // byte; an answer gets the same to be taken. Its line and headers may take
  // max_head_bytes. A connection may idle keep_alive between requests.
  // Details: serve/http_connection.h.
  std::chrono::seconds request_timeout{60};
  size_t min_bytes_per_s = size_t{64} << 10;
  size_t max_head_bytes = size_t{64} << 10;
  std::chrono::seconds keep_alive{5};
  // A request for a model whose recent runs took at most this long may run
  // on the worker that read it when a PU is idle (InferOptions::run_here_up_to,
  // as GrpcOptions::run_here_up_to); others go to the PU workers, and the
  // worker watches its client while it waits. 0: never.
  std::chrono::microseconds run_here_up_to{100};
  std::string token;     // "" = no token
  std::string tls_cert;  // PEM files; both or neither
  std::string tls_key;
  // Client shared memory (`--allow-client-shm`), shared with the gRPC
  // front-end; null = the extension is off.
  std::shared_ptr<SharedMemoryRegistry> shared_memory;
};

class HttpServer {
 public:
  // Binds and starts serving `engine` (borrowed; it must outlive the server).
  // Errors: InvalidArgument for bad options (naming them), Unavailable when
  // the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Engine& engine, HttpOptions options);
  // The same over models that may be loaded and unloaded while it serves
  // (borrowed; it must outlive the server).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(ServedEngine& served, HttpOptions options);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  // Stops accepting, lets the requests being served finish (for at most
  // stop_grace; the connections still open then are shut down), joins the
  // threads. Idempotent.
  void Stop();
  // Connections Stop had to shut down after the grace.
  int connections_shut() const { return connections_shut_; }
  // Requests or answers cut short for being too slow or too large
  // (serve/http_connection.h), by reason, and the idle connections parked
  // now; also on GET /metrics.
  HttpStats http_stats() const;

 private:
  HttpServer(std::unique_ptr<ServedEngine> owned, ServedEngine& served, HttpOptions options);
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(ServedEngine& served, HttpOptions options,
                                                           std::unique_ptr<ServedEngine> owned);
  void Route();
  HttpLimits Limits() const;

  std::unique_ptr<ServedEngine> owned_;  // when started on a fixed engine
  ServedEngine& served_;
  const HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::atomic<int> connections_shut_{0};
  std::atomic<uint64_t> cut_idle_{0}, cut_deadline_{0}, cut_head_{0};
  std::thread thread_;
};

}  // namespace baton::serve
