// `baton run`, run as a user runs it: results, JSON fields, trace, --verify,
// the emulated-accelerator baseline, and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cli_test_util.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using Result = baton::testing::CliResult;
using baton::testing::Baton;

class CliRunTest : public baton::testing::ZooDirTest<CliRunTest> {
 public:
  static constexpr const char* kDir = "baton_cli_run_test_";
};

TEST_F(CliRunTest, RunsTwoModelsOnCpuPusAgainstBothOrtBaselines) {
  const std::string config = Write("cpu.yaml", R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu, threads: 1}
      - {name: cpu1, kind: cpu, threads: 1}
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 2, think_ms: 5}}
  - {name: seq, path: )" + Zoo("lstm") + R"(, arrival: {mode: periodic, fps: 50}, deadline_ms: 500, priority: 1}
policy: {high_level: balanced, low_level: sel, stages: 2}
run: {duration_s: 0.6, warmup_s: 0.1, slices: 2}
)");
  const std::string json = (dir_ / "cpu.json").string();
  const std::string trace = (dir_ / "cpu.trace.json").string();
  Result r = Baton("run " + config + " --verify --json " + json + " --trace " + trace);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("ort_sequential"));
  EXPECT_THAT(r.output, HasSubstr("ort_concurrent"));
  EXPECT_THAT(r.output, HasSubstr("PU utilisation"));
  EXPECT_THAT(r.output, HasSubstr("0 mismatches"));

  nlohmann::json j = ReadJson(Path("cpu.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_GT(j["throughput_rps"].get<double>(), 0);
  ASSERT_EQ(j["models"].size(), 2u);
  for (const auto& m : j["models"]) {
    EXPECT_GT(m["completed"].get<int>(), 0) << m;
    for (const char* p : {"p50", "p95", "p99"}) {
      EXPECT_GT(m["latency_ms"][p].get<double>(), 0) << p;
    }
    EXPECT_LE(m["latency_ms"]["p50"].get<double>(), m["latency_ms"]["p99"].get<double>());
    // `stages: 2` is an upper bound: the planner cuts a model only where its
    // measured profile says a cut pays, so 1 is a valid answer too.
    EXPECT_GE(m["partitions"].get<int>(), 1);
    EXPECT_LE(m["partitions"].get<int>(), 2);
  }
  EXPECT_GT(j["baselines"]["ort_sequential"]["throughput_rps"].get<double>(), 0);
  EXPECT_GT(j["baselines"]["ort_concurrent"]["throughput_rps"].get<double>(), 0);
  EXPECT_GT(j["speedup_vs_best_baseline"].get<double>(), 0);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  EXPECT_EQ(j["verify"]["mismatches"].get<int>(), 0);
  ASSERT_EQ(j["pus"].size(), 2u);
  for (const auto& pu : j["pus"]) {
    EXPECT_GE(pu["utilization"].get<double>(), 0);
    EXPECT_LE(pu["utilization"].get<double>(), 1.05);
  }

  // The trace: a lane per PU, a slice per partition run.
  std::ifstream in(trace);
  nlohmann::json t = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(t.is_discarded());
  std::set<std::string> lanes;
  std::set<std::string> modes;  // the "mode" lane: which mode had the PUs when
  int slices = 0;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name") lanes.insert(e["args"]["name"].get<std::string>());
    if (e["ph"] == "X" && e["args"].contains("slice")) {
      modes.insert(e["name"].get<std::string>());
    } else if (e["ph"] == "X") {
      ++slices;
      EXPECT_TRUE(e["args"].contains("request"));
      EXPECT_TRUE(e["args"].contains("model"));
      EXPECT_GE(e["dur"].get<double>(), 0);
    }
  }
  EXPECT_EQ(lanes, (std::set<std::string>{"cpu0 (cpu)", "cpu1 (cpu)", "mode"}));
  EXPECT_GT(slices, 0);
  EXPECT_EQ(modes, (std::set<std::string>{"baton", "ort_sequential", "ort_concurrent"}));
}

TEST_F(CliRunTest, EmulatedAcceleratorGetsTheWholeOnOnePuBaseline) {
  const std::string config = Write("emu.yaml", R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu}
      - {name: npu0, kind: emu, speed: 6, unsupported_ops: [Relu, Softmax], compute: true}
models:
  - {name: a, path: )" + Zoo("squeezenet") + R"(}
  - {name: b, path: )" + Zoo("vgg") + R"(}
policy: {high_level: capability, low_level: heft}
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1}
)");
  Result r = Baton("run " + config + " --verify --json " + (dir_ / "emu.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("emu.json"));
  ASSERT_TRUE(j["baselines"].contains("whole_on_one_pu")) << j.dump(2);
  EXPECT_THAT(j["baselines"]["whole_on_one_pu"]["note"].get<std::string>(), HasSubstr("->"));
  EXPECT_TRUE(j.contains("speedup_vs_whole_on_one_pu"));
  EXPECT_EQ(j["verify"]["mismatches"].get<int>(), 0);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  for (const auto& m : j["models"]) EXPECT_GT(m["partitions"].get<int>(), 1) << "Relu forces cuts";
}

TEST_F(CliRunTest, VerifyRefusesEmulatorsWithoutOutputs) {
  const std::string config = Write("nocompute.yaml", R"(
devices: [{name: d, pus: [{name: npu0, kind: emu, compute: false}, {name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + Zoo("squeezenet") + R"(}]
)");
  Result r = Baton("run " + config + " --verify --duration 0.1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("npu0"));
  EXPECT_THAT(r.output, HasSubstr("compute: true"));
}

TEST_F(CliRunTest, ConfigErrorsNameTheKeyAndExitTwo) {
  const std::string bad = Write("bad.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: zoo:resnet, arrival: {mode: periodic, fsp: 3}}]
)");
  Result r = Baton("run " + bad);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("fsp"));
  EXPECT_THAT(r.output, HasSubstr("models[0].arrival"));

  Result missing = Baton("run " + (dir_ / "nope.yaml").string());
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("nope.yaml"));

  const std::string bad_model = Write("badmodel.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + (dir_ / "missing.onnx").string() + R"(}]
)");
  Result m = Baton("run " + bad_model + " --duration 0.1");
  EXPECT_EQ(m.exit_code, 2) << m.output;
  EXPECT_THAT(m.output, HasSubstr("model 'a'"));

  Result policy = Baton("run --print-config --low-level nonsense");
  EXPECT_EQ(policy.exit_code, 2) << policy.output;
  EXPECT_THAT(policy.output, HasSubstr("nonsense"));
}

TEST_F(CliRunTest, PrintsTheEmbeddedDefaultConfig) {
  Result r = Baton("run --print-config");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("devices:"));
  EXPECT_THAT(r.output, HasSubstr("zoo:"));
  Result help = Baton("run --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.output, HasSubstr("ort_concurrent"));
}

}  // namespace
