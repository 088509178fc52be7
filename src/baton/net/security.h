// Security settings of the agent protocol: TLS credentials (server
// certificate, optional client certificates), bearer tokens, and the rule that
// an agent without TLS and a token only listens on loopback. Internal to
// net/ (it includes gRPC); the options are in agent_types.h.
//
// Thread-safety: pure functions; TokenChecker is immutable after creation.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "baton/core/status.h"
#include "baton/net/agent_types.h"

namespace baton::net {

// Reads a secret or PEM file; NotFound / InvalidArgument (empty) naming the
// file and what it is for. A token file's trailing whitespace is dropped.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& what);

// "host:port" -> host (brackets of an IPv6 literal removed).
std::string HostOf(const std::string& address);
bool IsLoopbackHost(const std::string& host);

struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::optional<std::string> token;  // required on every call when set
  bool tls = false;
  std::string listen;  // the address to listen on (forced to loopback when insecure)
  std::string notice;  // a line to print at start-up ("" = none)
};

// Builds the server side. Without both TLS and a token, a non-loopback
// `listen` is replaced by 127.0.0.1:PORT and `notice` says so and why.
absl::StatusOr<ServerSecurity> MakeServerSecurity(const ServerSecurityOptions& options, const std::string& listen);

// True when `metadata_value` is "Bearer <token>" (constant-time compare).
bool TokenMatches(const std::string& metadata_value, const std::string& token);

struct ClientSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::optional<std::string> token;
  std::string server_name;
};
absl::StatusOr<ClientSecurity> MakeClientSecurity(const ClientSecurityOptions& options);

}  // namespace baton::net
