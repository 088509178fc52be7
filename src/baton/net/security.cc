#include "baton/net/security.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace baton::net {

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(what, " '", path, "' cannot be read; check the path and its permissions"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (absl::StrContains(what, "token")) text = std::string(absl::StripTrailingAsciiWhitespace(text));
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is empty"));
  return text;
}

std::string HostOf(const std::string& address) {
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    return close == std::string::npos ? address : address.substr(1, close - 1);
  }
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

absl::StatusOr<int> ListenPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  const size_t bracket = address.rfind(']');
  if (colon == std::string::npos || (bracket != std::string::npos && colon < bracket)) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", address,
                                                   "' has no port; give HOST:PORT (e.g. 127.0.0.1:50051; port 0 "
                                                   "picks a free one)"));
  }
  const std::string port = address.substr(colon + 1);
  // Saturates at 65536 so that a long digit string cannot overflow.
  int value = port.empty() ? -1 : 0;
  for (const char ch : port) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(ch))) {
      value = -1;
      break;
    }
    value = std::min(value * 10 + (ch - '0'), 65536);
  }
  if (value < 0 || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", address, "': port '", port,
                                                   "' is not a number in 0..65535; give HOST:PORT with a port in "
                                                   "0..65535 (0 picks a free one)"));
  }
  return value;
}

bool IsLoopbackHost(const std::string& host) {
  std::string literal = host;
  if (literal.size() >= 2 && literal.front() == '[' && literal.back() == ']') {
    literal = literal.substr(1, literal.size() - 2);
  }
  if (absl::EqualsIgnoreCase(literal, "localhost")) return true;
  // Only literals count: a name is never resolved here ("127.example.com" is a name).
  in_addr v4{};
  if (inet_pton(AF_INET, literal.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, literal.c_str(), &v6) == 1) return std::memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
  return false;
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what, const std::string& flag,
                                        const std::string& marker) {
  namespace fs = std::filesystem;
  const std::string named = absl::StrCat(what, " '", path, "' (", flag, ")");
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat(named, " does not exist; check the path"));
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(named, " cannot be examined (", ec.message(), "); check the path and its permissions"));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(named, " is not a regular file; give the path of a PEM file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  if (in) ss << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(named, " cannot be read; check its permissions"));
  }
  const std::string text = ss.str();
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(named, " is empty; give a PEM file"));
  if (!absl::StrContains(text, marker)) {
    return absl::InvalidArgumentError(
        absl::StrCat(named, " is not a PEM ", what, ": it holds no '", marker,
                     "'; give a PEM file (e.g. made by `openssl req -x509 -newkey rsa:2048 -nodes -keyout "
                     "key.pem -out cert.pem`)"));
  }
  return text;
}

absl::StatusOr<ServerSecurity> MakeServerSecurity(const ServerSecurityOptions& options, const std::string& listen) {
  BATON_ASSIGN_OR_RETURN(const int port, ListenPort(listen));
  ServerSecurity out;
  out.listen = listen;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  if (!options.client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--client-ca (client certificates) needs TLS: give --tls-cert and --tls-key");
  }
  if (!options.tls_cert_file.empty()) {
    // Checked here: gRPC only fails later, in BuildAndStart, and cannot say which file it refused.
    BATON_ASSIGN_OR_RETURN(std::string cert, ReadPemFile(options.tls_cert_file, "TLS certificate", "--tls-cert",
                                                         "-----BEGIN CERTIFICATE-----"));
    BATON_ASSIGN_OR_RETURN(std::string key,
                           ReadPemFile(options.tls_key_file, "TLS private key", "--tls-key", "PRIVATE KEY-----"));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!options.client_ca_file.empty()) {
      BATON_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.client_ca_file, "client CA certificate",
                                                             "--client-ca", "-----BEGIN CERTIFICATE-----"));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    out.credentials = grpc::SslServerCredentials(ssl);
    out.tls = true;
  } else {
    out.credentials = grpc::InsecureServerCredentials();
  }
  if (!options.token_file.empty()) {
    BATON_ASSIGN_OR_RETURN(out.token, ReadSecretFile(options.token_file, "bearer token file"));
  }
  const std::string host = HostOf(listen);
  if (!(out.tls && out.token) && !IsLoopbackHost(host)) {
    out.listen = absl::StrCat("127.0.0.1:", port);
    out.notice = absl::StrCat("listening on loopback only (", out.listen, ", not ", listen,
                              "): an agent reachable from other machines needs TLS and a token; give --tls-cert, "
                              "--tls-key and --token-file");
  } else if (!out.tls || !out.token) {
    out.notice = absl::StrCat("listening on ", out.listen, " without ", !out.tls ? "TLS" : "a token",
                              "; loopback only");
  }
  return out;
}

bool TokenMatches(const std::string& metadata_value, const std::string& token) {
  const std::string expected = "Bearer " + token;
  unsigned diff = metadata_value.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i) {
    const char got = i < metadata_value.size() ? metadata_value[i] : '\0';
    diff |= static_cast<unsigned>(static_cast<unsigned char>(got) ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

absl::StatusOr<ClientSecurity> MakeClientSecurity(const ClientSecurityOptions& options) {
  ClientSecurity out;
  out.server_name = options.server_name;
  if (!options.ca_cert_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    BATON_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadSecretFile(options.ca_cert_file, "CA certificate"));
    if (options.client_cert_file.empty() != options.client_key_file.empty()) {
      return absl::InvalidArgumentError("a client certificate needs both client_cert and client_key");
    }
    if (!options.client_cert_file.empty()) {
      BATON_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadSecretFile(options.client_cert_file, "client certificate"));
      BATON_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadSecretFile(options.client_key_file, "client private key"));
    }
    out.credentials = grpc::SslCredentials(ssl);
  } else {
    out.credentials = grpc::InsecureChannelCredentials();
  }
  if (!options.token_file.empty()) {
    BATON_ASSIGN_OR_RETURN(out.token, ReadSecretFile(options.token_file, "bearer token file"));
  }
  return out;
}

}  // namespace baton::net
