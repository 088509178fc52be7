#include "baton/serve/auth.h"

#include <arpa/inet.h>

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

}  // namespace baton::serve
