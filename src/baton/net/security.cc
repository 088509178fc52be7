#include "baton/net/security.h"

#include <fstream>
#include <sstream>

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

namespace {
std::string PortOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? "" : address.substr(colon + 1);
}
}  // namespace

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::StatusOr<ServerSecurity> MakeServerSecurity(const ServerSecurityOptions& options, const std::string& listen) {
  ServerSecurity out;
  out.listen = listen;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  if (!options.client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--client-ca (client certificates) needs TLS: give --tls-cert and --tls-key");
  }
  if (!options.tls_cert_file.empty()) {
    BATON_ASSIGN_OR_RETURN(std::string cert, ReadSecretFile(options.tls_cert_file, "TLS certificate"));
    BATON_ASSIGN_OR_RETURN(std::string key, ReadSecretFile(options.tls_key_file, "TLS private key"));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!options.client_ca_file.empty()) {
      BATON_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadSecretFile(options.client_ca_file, "client CA certificate"));
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
    out.listen = absl::StrCat("127.0.0.1:", PortOf(listen));
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
