#include "baton/serve/server.h"

#include <cstdint>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace baton::serve {

absl::Status ParseHostPort(std::string_view address, std::string_view flag, std::string& host, int& port) {
  const size_t colon = address.rfind(':');
  const std::string_view digits = colon == std::string_view::npos ? "" : address.substr(colon + 1);
  int64_t value = -1;
  if (colon == std::string_view::npos || colon == 0 || digits.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(std::string(digits), &value) || value < 0 || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(flag), " wants HOST:PORT with a port in 0..65535 (0 picks a free "
                                                   "one), got '", std::string(address.substr(0, 256)), "'"));
  }
  std::string_view h = address.substr(0, colon);
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  host = std::string(h);
  port = static_cast<int>(value);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Engine& engine, ServerOptions options) {
  auto served = std::make_unique<ServedEngine>(engine);
  BATON_ASSIGN_OR_RETURN(std::unique_ptr<Server> s, Start(*served, std::move(options)));
  s->owned_ = std::move(served);
  return s;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServedEngine& served, ServerOptions options) {
  if (!options.grpc && !options.http) {
    return absl::InvalidArgumentError("no front-end to serve: ask for gRPC, HTTP or both");
  }
  std::unique_ptr<Server> s(new Server);
  if (options.grpc) {
    BATON_ASSIGN_OR_RETURN(s->grpc_, GrpcServer::Start(served, *std::move(options.grpc)));
  }
  if (options.http) {
    BATON_ASSIGN_OR_RETURN(s->http_, HttpServer::Start(served, *std::move(options.http)));
  }
  return s;
}

Server::~Server() { Stop(); }

void Server::Stop() {
  if (grpc_ && http_) {
    // GrpcServer::Stop stops accepting and then waits for its calls; the
    // HTTP server stops on a thread of its own meanwhile, so it does not take
    // new requests while gRPC drains.
    std::thread http;
    try {
      http = std::thread([this] { http_->Stop(); });
    } catch (const std::system_error&) {
      http_->Stop();  // no thread to be had: one after the other
    }
    grpc_->Stop();
    if (http.joinable()) http.join();
  } else if (grpc_) {
    grpc_->Stop();
  } else if (http_) {
    http_->Stop();
  }
}

}  // namespace baton::serve
