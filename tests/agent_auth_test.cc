// Security of `baton agent` across a real network stack (agent processes on
// loopback): TLS with server and client certificates, bearer tokens, and the
// loopback-only rule for agents without them. Certificates are made with the
// openssl command at test time (test_certs.h).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent_test_util.h"
#include "baton/net/remote_device.h"
#include "test_certs.h"
#include "test_paths.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using testing::AgentProcess;

class AgentAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / absl::StrCat("baton_auth_", ::getpid()));
    fs::create_directories(*dir_);
    certs_ok_ = testing::MakeTestCertificates(*dir_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  static std::string F(const std::string& name) { return (*dir_ / name).string(); }

  static absl::Status Try(const std::string& address, const std::string& ca, const std::string& token,
                          const std::string& client_cert = "", const std::string& client_key = "") {
    net::RemoteDeviceOptions o;
    o.name = "edge";
    o.address = address;
    o.connect_timeout = std::chrono::milliseconds(2000);
    o.security.ca_cert_file = ca;
    o.security.token_file = token;
    o.security.client_cert_file = client_cert;
    o.security.client_key_file = client_key;
    o.security.server_name = ca.empty() ? "" : "localhost";
    auto d = net::GrpcRemoteDevice::Connect(o);
    return d.status();
  }

  static fs::path* dir_;
  static bool certs_ok_;
};

fs::path* AgentAuthTest::dir_ = nullptr;
bool AgentAuthTest::certs_ok_ = false;

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// `baton agent ARGS` that is expected to refuse to start; `timeout` ends it
// (exit 124) should it start serving instead.
CliResult AgentThatMustNotStart(const std::string& args) {
  const std::string cmd = absl::StrCat("timeout 60 ", BATON_CLI, " agent ", args, " 2>&1");
  CliResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string report = testing::SanitizerReport(r.output);
  if (!report.empty()) ADD_FAILURE() << "`" << cmd << "` printed a sanitizer report:\n" << report;
  return r;
}

TEST_F(AgentAuthTest, TlsAgentWithTokenRefusesNoTokenWrongTokenAndPlaintext) {
  ASSERT_TRUE(certs_ok_) << "openssl could not make the test certificates";
  AgentProcess a({"--name", "secure", "--config", absl::StrCat(BATON_SOURCE_DIR, "/tests/data/agent_1cpu.yaml"),
                  "--tls-cert", F("server.pem"), "--tls-key", F("server.key"), "--token-file", F("good.token")});
  ASSERT_TRUE(a.ok()) << a.banner();
  EXPECT_TRUE(Try(a.address(), F("ca.pem"), F("good.token")).ok());
  absl::Status none = Try(a.address(), F("ca.pem"), "");
  EXPECT_EQ(none.code(), absl::StatusCode::kUnauthenticated) << none;
  absl::Status wrong = Try(a.address(), F("ca.pem"), F("bad.token"));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated) << wrong;
  absl::Status plain = Try(a.address(), "", F("good.token"));
  EXPECT_FALSE(plain.ok());
  EXPECT_NE(plain.code(), absl::StatusCode::kUnauthenticated) << "a plaintext client must not even get to auth";
}

TEST_F(AgentAuthTest, ClientCertificatesAreRequiredWhenTheAgentHasAClientCa) {
  ASSERT_TRUE(certs_ok_);
  AgentProcess a({"--name", "mtls", "--config", absl::StrCat(BATON_SOURCE_DIR, "/tests/data/agent_1cpu.yaml"),
                  "--tls-cert", F("server.pem"), "--tls-key", F("server.key"), "--client-ca", F("ca.pem"),
                  "--token-file", F("good.token")});
  ASSERT_TRUE(a.ok()) << a.banner();
  EXPECT_FALSE(Try(a.address(), F("ca.pem"), F("good.token")).ok());
  absl::Status with_cert = Try(a.address(), F("ca.pem"), F("good.token"), F("client.pem"), F("client.key"));
  EXPECT_TRUE(with_cert.ok()) << with_cert;
}

TEST_F(AgentAuthTest, AgentWithoutTlsAndTokenListensOnLoopbackOnlyAndSaysSo) {
  AgentProcess a({"--name", "open", "--listen", "0.0.0.0:0", "--config",
                  absl::StrCat(BATON_SOURCE_DIR, "/tests/data/agent_1cpu.yaml")});
  ASSERT_TRUE(a.ok()) << a.banner();
  EXPECT_NE(a.banner().find("127.0.0.1:"), std::string::npos) << a.banner();
  EXPECT_TRUE(Try(a.address(), "", "").ok());
}

TEST_F(AgentAuthTest, TokenWithoutTlsOnLoopbackIsEnforced) {
  AgentProcess a({"--name", "tok", "--token-file", F("good.token"), "--config",
                  absl::StrCat(BATON_SOURCE_DIR, "/tests/data/agent_1cpu.yaml")});
  ASSERT_TRUE(a.ok()) << a.banner();
  EXPECT_TRUE(Try(a.address(), "", F("good.token")).ok());
  EXPECT_EQ(Try(a.address(), "", F("bad.token")).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Try(a.address(), "", "").code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(AgentAuthTest, TlsFilesThatAreNotPemAndAPortOutOfRangeAreUsageErrors) {
  // The reported case: --tls-cert /etc/passwd was called "the port is in use".
  const std::string passwd = F("passwd");
  std::ofstream(passwd) << "root:x:0:0:root:/root:/bin/bash\n";
  CliResult r = AgentThatMustNotStart(absl::StrCat("--listen 127.0.0.1:0 --tls-cert ", passwd, " --tls-key ", passwd));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("'" + passwd + "' (--tls-cert)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("BEGIN CERTIFICATE"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("in use"), std::string::npos) << r.output;
  if (certs_ok_) {
    r = AgentThatMustNotStart(
        absl::StrCat("--listen 127.0.0.1:0 --tls-cert ", F("server.pem"), " --tls-key ", F("server.pem")));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("'" + F("server.pem") + "' (--tls-key)"), std::string::npos) << r.output;
  }

  // A port outside 0..65535 is refused, not replaced by a random one.
  r = AgentThatMustNotStart("--listen 127.0.0.1:99999");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("'99999'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0..65535"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("listening on"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace baton
