// Transfer-aware placement over a real slow link: an agent in a network
// namespace behind a veth pair whose both ends are limited by a token-bucket
// filter (tc tbf, 4 Mbit/s), and a second agent on loopback. The HL side
// measures both links when it connects; transfer-aware placement keeps
// models off the slow link and beats round-robin placement on the slowest
// model's throughput. Needs root and iproute2 (ip netns, veth, tc tbf): the
// test is skipped where the machine does not allow them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent_test_util.h"
#include "cli_test_util.h"
#include "nlohmann/json.hpp"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using baton::testing::AgentProcess;
using baton::testing::Baton;
using Result = baton::testing::CliResult;

int Sh(const std::string& cmd) { return std::system(("( " + cmd + " ) >/dev/null 2>&1").c_str()); }

class SlowLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    const int id = static_cast<int>(::getpid() % 200) + 20;
    ns_ = absl::StrCat("baton_slow_", ::getpid());
    host_if_ = absl::StrCat("bsh", id);
    ns_if_ = absl::StrCat("bsn", id);
    host_ip_ = absl::StrCat("10.78.", id, ".1");
    agent_ip_ = absl::StrCat("10.78.", id, ".2");
    const std::string e = "ip netns exec " + ns_ + " ";
    const bool ok =
        Sh("ip netns add " + ns_) == 0 && Sh("ip link add " + host_if_ + " type veth peer name " + ns_if_) == 0 &&
        Sh("ip link set " + ns_if_ + " netns " + ns_) == 0 &&
        Sh("ip addr add " + host_ip_ + "/24 dev " + host_if_) == 0 && Sh("ip link set " + host_if_ + " up") == 0 &&
        Sh(e + "ip addr add " + agent_ip_ + "/24 dev " + ns_if_) == 0 && Sh(e + "ip link set " + ns_if_ + " up") == 0 &&
        Sh(e + "ip link set lo up") == 0 &&
        Sh("tc qdisc add dev " + host_if_ + " root tbf rate 4mbit burst 16kbit latency 400ms") == 0 &&
        Sh(e + "tc qdisc add dev " + ns_if_ + " root tbf rate 4mbit burst 16kbit latency 400ms") == 0;
    if (!ok) {
      TearDown();
      GTEST_SKIP() << "this machine does not allow network namespaces with veth and tc tbf";
    }
    dir_ = fs::temp_directory_path() / absl::StrCat("baton_netns_", ::getpid());
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    // An agent reachable from another address needs TLS and a token.
    const std::string certs = absl::StrCat(
        "cd ", d, " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca && ",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=slow && ",
        "printf 'subjectAltName=IP:", agent_ip_, "' > san.ext && ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 ",
        "-extfile san.ext && printf 'tok' > agent.token");
    ASSERT_EQ(Sh(certs), 0) << "openssl could not make the test certificates";
    Result z = Baton("zoo --small --out " + (dir_ / "zoo").string());
    ASSERT_EQ(z.exit_code, 0) << z.output;
  }
  void TearDown() override {
    Sh("ip link del " + host_if_);
    Sh("ip netns del " + ns_);
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string F(const std::string& name) const { return (dir_ / name).string(); }

  std::string ns_, host_if_, ns_if_, host_ip_, agent_ip_;
  fs::path dir_;
};

TEST_F(SlowLinkTest, TransferAwarePlacementKeepsModelsOffASlowLinkThatRoundRobinUses) {
  const std::string agent_cfg = std::string(BATON_SOURCE_DIR) + "/tests/data/agent_1cpu.yaml";
  AgentProcess fast({"--name", "fast", "--config", agent_cfg});
  AgentProcess slow({"--name", "slow", "--config", agent_cfg, "--listen", agent_ip_ + ":0", "--tls-cert",
                     F("server.pem"), "--tls-key", F("server.key"), "--token-file", F("agent.token")},
                    {"ip", "netns", "exec", ns_});
  ASSERT_TRUE(fast.ok()) << fast.banner();
  ASSERT_TRUE(slow.ok()) << slow.banner();
  ASSERT_THAT(slow.banner(), HasSubstr(agent_ip_));
  auto run = [&](const std::string& placement) {
    const std::string config = (dir_ / ("slow_" + placement + ".yaml")).string();
    std::ofstream(config) << R"(
devices:
  - {name: fast, address: )" << fast.address() << R"(}
  - {name: slow, address: )" << slow.address() << R"(, ca_cert: )" << F("ca.pem") << R"(, token_file: )"
                          << F("agent.token") << R"(}
models:
  - {name: a, path: )" << (dir_ / "zoo" / "squeezenet.onnx").string() << R"(, arrival: {mode: closed, concurrency: 1}}
  - {name: b, path: )" << (dir_ / "zoo" / "resnet.onnx").string() << R"(, arrival: {mode: closed, concurrency: 1}}
policy: {high_level: whole, low_level: fifo, device_placement: )" << placement << R"(}
run: {duration_s: 2, warmup_s: 0.3, slices: 1}
)";
    const std::string json = (dir_ / ("slow_" + placement + ".json")).string();
    Result r = Baton("run " + config + " --json " + json);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::ifstream in(json);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    double slowest = 1e300;
    std::string devices;  // each model's device, in config order
    if (!j.is_discarded()) {
      for (const auto& m : j["models"]) {
        slowest = std::min(slowest, m["throughput_rps"].get<double>());
        devices += m.value("device", "?") + " ";
      }
    }
    return std::make_tuple(r.output, slowest, devices);
  };
  auto [aware_out, aware, aware_devices] = run("transfer_aware");
  auto [rr_out, rr, rr_devices] = run("round_robin");
  std::printf("slowest model over a 4 Mbit/s link: transfer_aware %.1f req/s, round_robin %.1f req/s\n", aware, rr);
  EXPECT_THAT(aware_out, HasSubstr("device 'slow'"));
  EXPECT_THAT(aware_out, HasSubstr("measured"));
  EXPECT_THAT(aware_out, HasSubstr("device placement: a -> fast"));
  EXPECT_THAT(aware_out, HasSubstr("device placement: b -> fast"));
  EXPECT_EQ(aware_devices, "fast fast ");
  EXPECT_THAT(rr_devices, HasSubstr("slow")) << "round-robin puts a model behind the slow link";
  // Round-robin puts one model behind the slow link; transfer-aware keeps both
  // on the fast device (checked above). What that is worth in req/s is a
  // measurement, printed above and kept out of the assertions: a loaded
  // machine must not fail this test.
  EXPECT_GT(aware, 0) << aware_out;
  EXPECT_GT(rr, 0) << rr_out;
}

}  // namespace
