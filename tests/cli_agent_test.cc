// `baton agent` and `baton run` with remote devices, run as a user runs them:
// one local device and two agents complete a workload with every output
// verified against whole-model ONNX Runtime, and the report has per-device
// utilisation; an agent that is not there, or a bad agent flag, is a clear error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

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

class CliAgentTest : public baton::testing::ZooDirTest<CliAgentTest> {
 public:
  static constexpr const char* kDir = "baton_cli_agent_test_";
};

TEST_F(CliAgentTest, OneLocalDeviceAndTwoAgentsRunVerifiedWithPerDeviceUtilisation) {
  const std::string agent_cfg = std::string(BATON_SOURCE_DIR) + "/tests/data/agent_1cpu.yaml";
  AgentProcess a({"--name", "edge1", "--config", agent_cfg});
  // edge2 serves with bounds of its own; it says which at start-up.
  AgentProcess b({"--name", "edge2", "--config", agent_cfg, "--max-concurrent-loads", "2", "--max-threads", "64",
                  "--max-answer-mb", "256"});
  ASSERT_TRUE(a.ok() && b.ok()) << a.banner() << b.banner();
  EXPECT_THAT(a.Stderr(), HasSubstr("4 Loads at once, 128 gRPC threads, answers up to 1984 MiB, runs up to 60 s"));
  EXPECT_THAT(b.Stderr(), HasSubstr("2 Loads at once, 64 gRPC threads, answers up to 256 MiB"));
  const std::string config = Write("agents.yaml", R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu, threads: 1}
  - {name: edge1, address: )" + a.address() + R"(}
  - {name: edge2, address: )" + b.address() + R"(}
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 2}}
  - {name: seq, path: )" + Zoo("lstm") + R"(, arrival: {mode: closed, concurrency: 1, think_ms: 5}}
  - {name: det, path: )" + Zoo("yolo") + R"(, arrival: {mode: closed, concurrency: 1}}
policy: {high_level: balanced, low_level: sel, stages: 2, device_placement: round_robin}
run: {duration_s: 1.0, warmup_s: 0.2, slices: 1}
)");
  const std::string json = (dir_ / "agents.json").string();
  const std::string trace = (dir_ / "agents.trace.json").string();
  Result r = Baton("run " + config + " --verify --json " + json + " --trace " + trace);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("device utilisation (baton):"));
  EXPECT_THAT(r.output, HasSubstr("0 mismatches"));
  std::ifstream in(json);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  ASSERT_EQ(j["devices"].size(), 3u);
  EXPECT_EQ(j["devices"][0]["remote"], false);
  EXPECT_EQ(j["devices"][1]["remote"], true);
  EXPECT_EQ(j["devices"][1]["address"], a.address());
  // Models go round-robin over the devices: each device ran one and was busy.
  for (const auto& d : j["devices"]) {
    EXPECT_GT(d["utilization"].get<double>(), 0.0) << d.dump();
    EXPECT_TRUE(d.contains("lost")) << d.dump();
  }
  for (const auto& m : j["models"]) {
    EXPECT_GT(m["completed"].get<int>(), 0) << m.dump();
    EXPECT_EQ(m["failed"], 0) << m.dump();
  }
  EXPECT_THAT(j["baselines_note"].get<std::string>(), HasSubstr("remote devices"));

  // The trace covers the remote devices too: partition runs on every device's process.
  std::ifstream trace_in(trace);
  const nlohmann::json t = nlohmann::json::parse(trace_in, nullptr, false);
  ASSERT_FALSE(t.is_discarded());
  std::map<int, int> runs_per_device;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] == "X" && e["args"].contains("partition")) ++runs_per_device[e["pid"].get<int>()];
  }
  for (int d = 0; d < 3; ++d) EXPECT_GT(runs_per_device[d], 0) << "no partition run drawn for device " << d;
}

// Transfer-aware placement: a device behind a slow link (told by the config)
// gets no model whose inputs would take longer to send than to compute
// elsewhere; round_robin would put one there.
TEST_F(CliAgentTest, TransferAwarePlacementAvoidsASlowLink) {
  const std::string agent_cfg = std::string(BATON_SOURCE_DIR) + "/tests/data/agent_1cpu.yaml";
  AgentProcess fast({"--name", "fast", "--config", agent_cfg});
  AgentProcess slow({"--name", "slow", "--config", agent_cfg});
  ASSERT_TRUE(fast.ok() && slow.ok());
  auto config = [&](const std::string& placement) {
    return Write("links_" + placement + ".yaml", R"(
devices:
  - {name: fast, address: )" + fast.address() + R"(, link_latency_ms: 0.1, link_mbps: 10000}
  - {name: slow, address: )" + slow.address() + R"(, link_latency_ms: 20, link_mbps: 1}
models:
  - {name: a, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 1}}
  - {name: b, path: )" + Zoo("resnet") + R"(, arrival: {mode: closed, concurrency: 1}}
policy: {high_level: whole, low_level: fifo, device_placement: )" + placement + R"(}
run: {duration_s: 0.6, warmup_s: 0.1, slices: 1}
)");
  };
  const std::string aware_json = (dir_ / "aware.json").string();
  Result r = Baton("run " + config("transfer_aware") + " --json " + aware_json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("device placement: a -> fast"));
  EXPECT_THAT(r.output, HasSubstr("device placement: b -> fast"));
  std::ifstream in(aware_json);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  for (const auto& m : j["models"]) EXPECT_EQ(m["device"], "fast") << m.dump();
  const std::string rr_json = (dir_ / "rr.json").string();
  r = Baton("run " + config("round_robin") + " --json " + rr_json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in2(rr_json);
  const nlohmann::json k = nlohmann::json::parse(in2, nullptr, false);
  EXPECT_EQ(k["models"][1]["device"], "slow");
}

TEST_F(CliAgentTest, AnAgentThatIsNotThereIsAClearError) {
  const std::string config = Write("missing.yaml", R"(
devices:
  - {name: ghost, address: 127.0.0.1:1}
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(}
run: {duration_s: 0.5}
)");
  Result r = Baton("run " + config);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("device 'ghost'"));
  EXPECT_THAT(r.output, HasSubstr("127.0.0.1:1"));
  EXPECT_THAT(r.output, HasSubstr("baton agent --listen"));
}

TEST_F(CliAgentTest, RemoteDeviceKeysAreValidated) {
  const std::string both = Write("both.yaml", R"(
devices:
  - {name: e, address: 127.0.0.1:5000, pus: [{name: cpu0, kind: cpu}]}
models:
  - {name: cls, path: zoo:squeezenet}
)");
  Result r = Baton("run " + both);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("gets its PUs from its agent"));
  const std::string no_port = Write("noport.yaml", R"(
devices:
  - {name: e, address: edge1.lan}
models:
  - {name: cls, path: zoo:squeezenet}
)");
  r = Baton("run " + no_port);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("HOST:PORT"));
}

TEST_F(CliAgentTest, AgentRejectsBadFlagsAndConfigs) {
  Result r = Baton("agent --listen 127.0.0.1:0 --tls-cert /nonexistent.pem --tls-key /nonexistent.key");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("/nonexistent.pem"));
  const std::string bad = Write("bad_agent.yaml", "name: x\npus: [{name: cpu0, kind: tpu}]\n");
  r = Baton("agent --listen 127.0.0.1:0 --config " + bad);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("tpu"));
  // A bad bound: exit status 2, naming the flag and its range.
  for (const auto& [flag, says] : std::vector<std::pair<std::string, std::string>>{
           {"--max-loaded-mb -1", "--max-loaded-mb must be in 0.."},
           {"--client-budget-s nan", "--client-budget-s must be in 0..86400"},
           {"--client-grace-s -1", "--client-grace-s must be in 0..604800"},
           {"--max-concurrent-loads 0", "--max-concurrent-loads must be in 1..1024, got 0"},
           {"--max-threads 2", "--max-threads must be in 8..4096"},
           {"--max-answer-mb 4096", "--max-answer-mb must be in 1..1984"},
       }) {
    r = Baton("agent --listen 127.0.0.1:0 " + flag);
    EXPECT_EQ(r.exit_code, 2) << flag;
    EXPECT_THAT(r.output, HasSubstr(says)) << flag;
  }
}

}  // namespace
