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

// The port of a listen address "HOST:PORT" ("[V6]:PORT"): digits only, in
// 0..65535 (0 = pick a free one). InvalidArgument naming the address, the
// value and the range otherwise (gRPC would silently listen elsewhere).
absl::StatusOr<int> ListenPort(const std::string& address);

// True when `host` is loopback by its literal form alone (no DNS lookup):
// "localhost" (any case), an IPv4 literal in 127.0.0.0/8 (dotted quad), or the
// IPv6 loopback "::1" (any spelling of it, with or without brackets). Every
// other name, e.g. "127.example.com" or "127.0.0.1.nip.io", is not.
bool IsLoopbackHost(const std::string& host);

// Reads a PEM file for TLS: `flag` names the option it came from, `marker` is
// a text every valid file holds ("-----BEGIN CERTIFICATE-----" for a
// certificate, "PRIVATE KEY-----" for a key). NotFound when the file does not
// exist; InvalidArgument naming the file, the flag and the fix when it is not
// a readable regular file, is empty, or has no `marker`.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what, const std::string& flag,
                                        const std::string& marker);

struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::optional<std::string> token;  // required on every call when set
  bool tls = false;
  std::string listen;  // the address to listen on (forced to loopback when insecure)
  std::string notice;  // a line to print at start-up ("" = none)
};

// Builds the server side. Without both TLS and a token, a non-loopback
// `listen` is replaced by 127.0.0.1:PORT and `notice` says so and why.
// InvalidArgument for a bad port in `listen` (ListenPort) or a TLS file that
// is not PEM (ReadPemFile), before any gRPC object is made.
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
