// Certificates for the TLS tests, made with the openssl command at test time
// (no key material in the tree): in `dir`, a CA (ca.pem, ca.key), a server
// certificate for localhost and 127.0.0.1 signed by it (server.pem,
// server.key) and a client certificate signed by it (client.pem, client.key),
// plus two token files, good.token ("s3cret-token\n") and bad.token.
// MakeSelfSignedCertificate makes the one-file setup without a CA.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"

namespace baton::testing {

// False when openssl failed (or is missing); the caller's test then fails saying so.
inline bool MakeTestCertificates(const std::filesystem::path& dir) {
  const std::string script = absl::StrCat(
      "cd '", dir.string(), "' && ",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=baton-test-ca ",
      ">/dev/null 2>&1 && ",
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost >/dev/null 2>&1 && ",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext && ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 ",
      "-extfile san.ext >/dev/null 2>&1 && ",
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=hl >/dev/null 2>&1 && ",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 ",
      ">/dev/null 2>&1 && ",
      "printf 's3cret-token\\n' > good.token && printf 'wrong-token' > bad.token");
  return std::system(script.c_str()) == 0;
}

// In `dir`, a self-signed certificate for localhost and 127.0.0.1 with no CA
// (self.pem, self.key), made by the one command docs/serve.md gives users.
inline bool MakeSelfSignedCertificate(const std::filesystem::path& dir) {
  const std::string script = absl::StrCat(
      "cd '", dir.string(), "' && ",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout self.key -out self.pem -days 2 -subj /CN=localhost ",
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1");
  return std::system(script.c_str()) == 0;
}

}  // namespace baton::testing
