#include "baton/serve/auth.h"

#include <arpa/inet.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "baton/core/file.h"

namespace baton::serve {

bool IsLoopbackLiteral(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return false;
}

bool BearerTokenMatches(std::string_view header, const std::string& token) {
  constexpr std::string_view kScheme = "Bearer ";
  if (token.empty() || header.substr(0, kScheme.size()) != kScheme) return false;
  const std::string_view given = header.substr(kScheme.size());
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ token[i % token.size()]);
  return diff == 0;
}

absl::Status CheckExposure(const std::string& what, const std::string& host, const std::string& tls_cert,
                           const std::string& tls_key, const std::string& token) {
  if (tls_cert.empty() != tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together; give both or neither");
  }
  if (!IsLoopbackLiteral(host) && (tls_cert.empty() || token.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to serve ", what, " on ", host,
        " without TLS and a token: anyone who can reach it could use this machine's PUs. Give --tls-cert, --tls-key "
        "and --token-file, or serve on 127.0.0.1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  BATON_ASSIGN_OR_RETURN(std::string text, ReadRegularFile(path, 4096, "token file"));
  std::string token(absl::StripAsciiWhitespace(text));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file '", path, "' is empty; put the token in it"));
  }
  return token;
}

}  // namespace baton::serve
