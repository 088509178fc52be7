// The agent's start-up checks, in one process: which hosts count as loopback
// (by their literal form, no DNS), the listen port's range, and TLS files that
// are not PEM, each refused with a message that names the file or value and
// the fix, before gRPC is asked to listen.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/backend/executor.h"
#include "baton/net/agent_server.h"
#include "baton/net/security.h"
#include "nothing_executor.h"

namespace baton::net {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// Claims nothing; the agent needs a PU to start, these tests never run one.
using testing::NothingExecutor;

absl::StatusOr<std::unique_ptr<AgentServer>> Start(const AgentOptions& options) {
  static const NothingExecutor* executor = new NothingExecutor("idle0");
  AgentPu pu;
  pu.name = "idle0";
  pu.kind = "emu";
  pu.executor = executor;
  return AgentServer::Start(options, {pu});
}

TEST(IsLoopbackHostTest, DecidesFromTheLiteralOnly) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "127.255.255.255", "localhost", "LocalHost", "::1", "[::1]",
                           "0:0:0:0:0:0:0:1"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host : {"127.example.com", "127.0.0.1.nip.io", "0.0.0.0", "10.0.0.1", "128.0.0.1", "127.0.0",
                           "127.0.0.256", "127.0.0.1 ", "::", "[::]", "::2", "[::1", "localhost.example.com",
                           "localhost.", "", "example.com", "1.127.0.0"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << "'" << host << "'";
  }
}

TEST(ListenPortTest, AcceptsOnlyDigitsIn0To65535) {
  for (const auto& [address, port] : std::vector<std::pair<std::string, int>>{
           {"127.0.0.1:0", 0}, {"127.0.0.1:50051", 50051}, {"0.0.0.0:65535", 65535}, {"[::1]:8080", 8080},
           {"localhost:00080", 80}}) {
    absl::StatusOr<int> got = ListenPort(address);
    ASSERT_TRUE(got.ok()) << address << ": " << got.status();
    EXPECT_EQ(*got, port) << address;
  }
  for (const auto& [address, value] : std::vector<std::pair<std::string, std::string>>{
           {"127.0.0.1:99999", "'99999'"},
           {"127.0.0.1:65536", "'65536'"},
           {"127.0.0.1:-1", "'-1'"},
           {"127.0.0.1:+80", "'+80'"},
           {"127.0.0.1:80a", "'80a'"},
           {"127.0.0.1: 80", "' 80'"},
           {"127.0.0.1:", "''"},
           {"[::1]:99999", "'99999'"},
           {"127.0.0.1:99999999999999999999999", "'99999999999999999999999'"}}) {
    absl::StatusOr<int> got = ListenPort(address);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(std::string(got.status().message()), AllOf(HasSubstr(value), HasSubstr("0..65535"))) << address;
  }
  for (const std::string address : {"127.0.0.1", "[::1]", "localhost"}) {
    absl::StatusOr<int> got = ListenPort(address);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(std::string(got.status().message()), HasSubstr("HOST:PORT")) << address;
  }
}

TEST(AgentStartTest, RefusesAListenPortOutOfRange) {
  // 0.0.0.0 without security would be moved to loopback: the port is checked first.
  for (const std::string listen : {"127.0.0.1:99999", "0.0.0.0:70000", "127.0.0.1:http"}) {
    AgentOptions options;
    options.listen = listen;
    absl::StatusOr<std::unique_ptr<AgentServer>> server = Start(options);
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << listen;
    EXPECT_THAT(std::string(server.status().message()),
                AllOf(HasSubstr(listen), HasSubstr("0..65535"), Not(HasSubstr("in use"))));
  }
}

class AgentTlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("baton_agent_tls_", ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  static absl::Status StartWith(const std::string& cert, const std::string& key, const std::string& ca = "") {
    AgentOptions options;
    options.security.tls_cert_file = cert;
    options.security.tls_key_file = key;
    options.security.client_ca_file = ca;
    return Start(options).status();
  }

  static constexpr char kCertLike[] = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
  static constexpr char kKeyLike[] = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
  fs::path dir_;
};

TEST_F(AgentTlsFilesTest, FilesThatAreNotPemAreRefusedNamingTheFile) {
  const std::string passwd = Write("passwd", "root:x:0:0:root:/root:/bin/bash\n");
  const std::string cert = Write("cert.pem", kCertLike);
  const std::string key = Write("key.pem", kKeyLike);
  const std::string empty = Write("empty.pem", "");
  struct Case {
    std::string cert, key, ca, file, flag;
  };
  for (const Case& c : std::vector<Case>{
           {passwd, passwd, "", passwd, "--tls-cert"},             // the reported case
           {cert, passwd, "", passwd, "--tls-key"},
           {cert, cert, "", cert, "--tls-key"},                    // a certificate is not a key
           {key, key, "", key, "--tls-cert"},                      // nor a key a certificate
           {cert, key, passwd, passwd, "--client-ca"},
           {cert, key, key, key, "--client-ca"},
           {dir_.string(), key, "", dir_.string(), "--tls-cert"},  // a directory
           {cert, empty, "", empty, "--tls-key"}}) {
    SCOPED_TRACE(absl::StrCat(c.cert, " ", c.key, " ", c.ca));
    const absl::Status status = StartWith(c.cert, c.key, c.ca);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("'" + c.file + "'"), HasSubstr(c.flag), Not(HasSubstr("in use"))));
  }
  const std::string missing = (dir_ / "missing.pem").string();
  const absl::Status status = StartWith(cert, missing);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr(missing), HasSubstr("--tls-key")));
}

TEST_F(AgentTlsFilesTest, PemThatGrpcRefusesIsNotCalledAPortInUse) {
  // PEM blocks around bytes that are no certificate or key: only gRPC can tell.
  const absl::Status status = StartWith(Write("cert.pem", kCertLike), Write("key.pem", kKeyLike));
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("could not listen on 127.0.0.1:0"), HasSubstr("may be in use"),
                    HasSubstr("TLS files are not accepted by gRPC"), Not(HasSubstr("is in use"))));
}

TEST(AgentStartTest, PortInUseIsNamedAsAPossibleCause) {
  absl::StatusOr<std::unique_ptr<AgentServer>> first = Start(AgentOptions());
  ASSERT_TRUE(first.ok()) << first.status();
  AgentOptions options;
  options.listen = (*first)->address();
  absl::StatusOr<std::unique_ptr<AgentServer>> second = Start(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              AllOf(HasSubstr("could not listen on " + (*first)->address()), HasSubstr("the port may be in use"),
                    HasSubstr("--listen"), Not(HasSubstr("is in use")), Not(HasSubstr("TLS"))));
}

}  // namespace
}  // namespace baton::net
