// `baton serve`'s front-ends over one baton::Engine: the gRPC and the
// HTTP/REST servers, started together and stopped together.
//
// Stop: both stop accepting at once, then each answers what it has in
// flight (at the same time), so neither takes new work while the other
// drains; it returns when both are done.
//
// Thread-safety: Start/Stop from one thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "baton/baton.h"
#include "baton/core/status.h"
#include "baton/serve/grpc_server.h"
#include "baton/serve/http_server.h"
#include "baton/serve/served_engine.h"

namespace baton::serve {

// "HOST:PORT" ("[V6]:PORT"; port 0..65535, 0 = a free one) into host and
// port, or InvalidArgument naming `flag` and what it wants.
absl::Status ParseHostPort(std::string_view address, std::string_view flag, std::string& host, int& port);

struct ServerOptions {
  std::optional<GrpcOptions> grpc;  // nullopt: no gRPC front-end
  std::optional<HttpOptions> http;  // nullopt: no HTTP front-end
};

class Server {
 public:
  // Starts the front-ends asked for (at least one), serving `engine`
  // (borrowed; it must outlive the server). Errors: InvalidArgument when
  // none is asked for, else the first front-end's error (what had started is
  // stopped).
  static absl::StatusOr<std::unique_ptr<Server>> Start(Engine& engine, ServerOptions options);
  // The same over models loaded and unloaded while it serves (borrowed; it
  // must outlive the server).
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServedEngine& served, ServerOptions options);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  GrpcServer* grpc() const { return grpc_.get(); }  // null without gRPC
  HttpServer* http() const { return http_.get(); }  // null without HTTP
  // See above. Idempotent.
  void Stop();

 private:
  Server() = default;
  std::unique_ptr<ServedEngine> owned_;  // started on a fixed engine; outlives the front-ends
  std::unique_ptr<GrpcServer> grpc_;
  std::unique_ptr<HttpServer> http_;
};

}  // namespace baton::serve
