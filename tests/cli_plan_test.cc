// `baton profile`, `baton plan` and `baton run --plan`, run as a user runs
// them: the plan round trip (write, read, run gives the same placement),
// bounds in the run report, and stale profiles and plans refused with what
// changed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "cli_test_util.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Result = baton::testing::CliResult;
using baton::testing::Baton;

class CliPlanTest : public baton::testing::ZooDirTest<CliPlanTest> {
 public:
  static constexpr const char* kDir = "baton_cli_plan_test_";

 protected:
  static void SetUpTestSuite() {
    ZooDirTest::SetUpTestSuite();
    if (::testing::Test::HasFatalFailure()) return;
    config_ = Config("squeezenet", "cpu1", 1);
    Result p = Baton("profile " + config_ + " -o " + Path("p.json") + Quick() + " --quiet");
    ASSERT_EQ(p.exit_code, 0) << p.output;
  }
  static std::string Quick() { return " --budget 10 --min-atoms 4 --warmup-runs 1 --min-runs 2 --min-time-ms 0"; }
  // Two CPU PUs and an emulated accelerator that cannot run Softmax or Flatten.
  static std::string Config(const std::string& cls_model, const std::string& second_cpu, int threads) {
    const std::string name = "c_" + cls_model + "_" + second_cpu + std::to_string(threads) + ".yaml";
    std::ofstream(dir_ / name) << R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu, threads: 1}
      - {name: )" << second_cpu << R"(, kind: cpu, threads: )" << threads << R"(}
      - {name: npu0, kind: emu, speed: 6, op_speed: {Conv: 12}, unsupported_ops: [Softmax, Flatten], compute: true}
models:
  - {name: cls, path: )" << Zoo(cls_model) << R"(, arrival: {mode: closed, concurrency: 2}}
  - {name: seq, path: )" << Zoo("lstm") << R"(, arrival: {mode: closed, concurrency: 1, think_ms: 5}}
policy: {high_level: search, low_level: fixed}
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1}
)";
    return (dir_ / name).string();
  }
  static inline std::string config_;
};

TEST_F(CliPlanTest, PlanWrittenReadAndRunGivesThePlannedPlacement) {
  for (const char* policy : {"capability", "balanced", "lp", "search"}) {
    SCOPED_TRACE(policy);
    const std::string plan = Path(std::string("plan_") + policy + ".json");
    Result r = Baton("plan " + config_ + " --profile " + Path("p.json") + " -o " + plan + " --policy " + policy +
                     " --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("predicted throughput"));
    EXPECT_THAT(r.output, HasSubstr("bound"));
    nlohmann::json p = ReadJson(plan);
    ASSERT_FALSE(p.is_discarded());
    EXPECT_EQ(p["policy"], policy);
    EXPECT_GT(p["predicted_throughput_rps"].get<double>(), 0);
    EXPECT_LE(p["predicted_throughput_rps"].get<double>(), p["bound_throughput_rps"].get<double>() * 1.0001);
    // Priorities: the saturating cls after the paced seq (the config sets none).
    ASSERT_EQ(p["models"].size(), 2u);
    EXPECT_EQ(p["models"][0]["priority"], 0);
    EXPECT_EQ(p["models"][1]["priority"], 1);
    // Every partition of a model the prediction serves has its split: one share per PU, summing to 1.
    for (const auto& m : p["models"]) {
      if (m["predicted_rps"].get<double>() <= 0) continue;
      for (const auto& q : m["partitions"]) {
        ASSERT_TRUE(q.contains("shares")) << q.dump();
        ASSERT_EQ(q["shares"].size(), q["pus"].size()) << q.dump();
        double sum = 0;
        for (const auto& v : q["shares"]) sum += v.get<double>();
        EXPECT_NEAR(sum, 1, 1e-9) << q.dump();
      }
    }

    const std::string json = Path(std::string("run_") + policy + ".json");
    r = Baton("run " + config_ + " --plan " + plan + " --verify --no-baselines --quiet --json " + json);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("0 mismatches"));
    nlohmann::json j = ReadJson(json);
    ASSERT_FALSE(j.is_discarded()) << r.output;
    EXPECT_EQ(j["plan"]["policy"], policy);
    EXPECT_GT(j["bound"]["throughput_rps"].get<double>(), 0);
    EXPECT_GT(j["bound_ratio"].get<double>(), 0);
    // The same partitions (as node sets) on the same PUs with the same
    // preferred PU (the runtime keeps no order among the other PUs).
    using Pus = std::pair<std::string, std::set<std::string>>;  // preferred, all
    auto pus_of = [](const nlohmann::json& list) {
      const auto v = list.get<std::vector<std::string>>();
      return Pus(v.at(0), std::set<std::string>(v.begin(), v.end()));
    };
    for (size_t m = 0; m < p["models"].size(); ++m) {
      EXPECT_EQ(j["models"][m]["priority"], p["models"][m]["priority"]);  // the run used the plan's priorities
      std::map<std::set<std::string>, Pus> planned, ran;
      for (const auto& q : p["models"][m]["partitions"]) {
        planned[q["nodes"].get<std::set<std::string>>()] = pus_of(q["pus"]);
      }
      for (const auto& q : j["models"][m]["placement"]) {
        ran[q["nodes"].get<std::set<std::string>>()] = pus_of(q["pus"]);
      }
      EXPECT_EQ(ran, planned) << p["models"][m]["name"];
    }
  }
}

// SIGINT during `baton profile` keeps what was measured; the same command
// then resumes from it instead of starting over.
TEST_F(CliPlanTest, ProfileInterruptedKeepsItsMeasurementsAndResumes) {
  const std::string out = Path("interrupted.json");
  const std::vector<std::string> args = {"profile", config_, "-o", out, "--budget", "10", "--min-atoms", "4",
                                         "--warmup-runs", "1", "--min-runs", "2", "--min-time-ms", "20"};
  const baton::testing::SignalledRun r = baton::testing::SignalWhenPrinted(args, "measured (", SIGINT);
  ASSERT_TRUE(r.signalled) << r.output;
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << r.output;
  EXPECT_THAT(r.output, HasSubstr("run the same command again to resume"));
  // Each measurement: "model range-key kind" -> its stats, as JSON text.
  auto measurements = [&] {
    std::map<std::string, std::string> m;
    const nlohmann::json j = ReadJson(out);
    for (const auto& model : j["models"]) {
      for (const auto& range : model["ranges"]) {
        for (const auto& [kind, stats] : range["latency"].items()) {
          m[model["name"].get<std::string>() + " " + range["key"].dump() + " " + kind] = stats.dump();
        }
      }
    }
    return m;
  };
  const std::map<std::string, std::string> saved = measurements();
  ASSERT_FALSE(saved.empty()) << "nothing measured before the signal was kept\n" << r.output;
  std::string resume_cmd;
  for (size_t i = 1; i < args.size(); ++i) resume_cmd += args[i] + " ";
  Result again = Baton("profile " + resume_cmd);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("resuming from"));
  const std::map<std::string, std::string> done = measurements();
  EXPECT_GT(done.size(), saved.size());
  for (const auto& [key, stats] : saved) {
    ASSERT_TRUE(done.contains(key)) << key;
    EXPECT_EQ(done.at(key), stats) << key << " was measured again instead of kept";
  }
}

TEST_F(CliPlanTest, ThePlanRecordsTheBatchingChoiceAndTheRunFollowsIt) {
  // A CPU-only config whose model may batch (`batching: auto`): `baton plan`
  // records the profile's verdict, and `baton run --plan` follows what the
  // plan says, capped by the config's max_batch.
  const std::string config = Path("batching.yaml");
  std::ofstream(config) << "devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]\n"
                        << "models:\n  - {name: cls, path: " << Zoo("squeezenet")
                        << ", arrival: {mode: closed, concurrency: 2}, max_batch: 4}\n"
                        << "run: {duration_s: 0.3, warmup_s: 0, slices: 1, baselines: false}\n";
  Result prof = Baton("profile " + config + " -o " + Path("pb.json") + Quick() + " --quiet");
  ASSERT_EQ(prof.exit_code, 0) << prof.output;
  const std::string plan = Path("pb_plan.json");
  Result made = Baton("plan " + config + " --profile " + Path("pb.json") + " -o " + plan + " --quiet");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  EXPECT_THAT(made.output, HasSubstr("dynamic batching: batch"));
  nlohmann::json p = ReadJson(plan);
  ASSERT_TRUE(p["models"][0].contains("max_batch")) << p["models"][0].dump().substr(0, 300);
  const int chosen = p["models"][0]["max_batch"].get<int>();
  EXPECT_TRUE(chosen == 1 || chosen == 2 || chosen == 4) << chosen;

  for (const auto& [written, want, reason] : {std::tuple{8, 4, "max_batch caps it"}, std::tuple{1, 1, "off"}}) {
    SCOPED_TRACE(written);
    p["models"][0]["max_batch"] = written;
    std::ofstream(plan) << p.dump(1);
    Result run = Baton("run " + config + " --plan " + plan + " --json " + Path("pb_run.json"));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    EXPECT_THAT(run.output, HasSubstr("dynamic batching: the plan's choice"));
    const nlohmann::json b = ReadJson(Path("pb_run.json"))["models"][0]["batching"];
    EXPECT_EQ(b["batch"], want) << b.dump();
    EXPECT_THAT(b["reason"].get<std::string>(), HasSubstr(reason));
    if (want > 1) {
      EXPECT_GT(b["batches"].get<int>(), 0);
    } else {
      EXPECT_EQ(b["batches"], 0);
    }
  }
}

TEST_F(CliPlanTest, ShareFollowsThePlanAndEveryOutputMatchesWholeModelOrt) {
  const std::string plan = Path("plan_share.json");
  Result r = Baton("plan " + config_ + " --profile " + Path("p.json") + " -o " + plan + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("%"));  // PUs are printed with their shares
  const std::string json = Path("run_share.json");
  r = Baton("run " + config_ + " --plan " + plan + " --low-level share --verify --no-baselines --quiet --json " +
            json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("0 mismatches"));
  nlohmann::json j = ReadJson(json);
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j["policy"]["low_level"], "share");
  EXPECT_GT(j["completed"].get<double>(), 0);
  // Each partition reports its runs per PU, one count per listed PU; every
  // partition ran (its first run on a PU is a warm-up and not counted, so a
  // partition that ran more than once somewhere shows a positive count).
  for (const auto& m : j["models"]) {
    for (const auto& q : m["placement"]) {
      ASSERT_TRUE(q.contains("runs")) << q.dump();
      const auto runs = q["runs"].get<std::vector<int64_t>>();
      ASSERT_EQ(runs.size(), q["pus"].size()) << q.dump();
      int64_t total = 0;
      for (int64_t n : runs) total += n;
      EXPECT_GT(total, 0) << m["name"] << " " << q.dump();
    }
  }
}

TEST_F(CliPlanTest, RunWithoutAProfileMeasuresOneAndReportsTheBound) {
  const std::string json = Path("auto.json");
  Result r = Baton("run " + config_ + " --no-baselines --quiet --cache-dir " + Path("cache") + " --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("bound"));
  nlohmann::json j = ReadJson(json);
  EXPECT_GT(j["bound"]["throughput_rps"].get<double>(), 0);
  EXPECT_GT(j["bound"]["latency_ms"]["cls"].get<double>(), 0);
  EXPECT_GT(j["bound_ratio"].get<double>(), 0);
  EXPECT_EQ(j["plan"]["policy"], "search");
  // The profile is cached: a second run finds it.
  ASSERT_TRUE(fs::exists(Path("cache") + "/profiles"));
  EXPECT_FALSE(fs::is_empty(Path("cache") + "/profiles"));
}

TEST_F(CliPlanTest, StaleProfilesAndPlansAreRefusedWithWhatChanged) {
  const std::string plan = Path("plan_stale.json");
  ASSERT_EQ(Baton("plan " + config_ + " --profile " + Path("p.json") + " -o " + plan + " --quiet").exit_code, 0);

  // Another model under the same name: the profile and the plan are both stale.
  const std::string other_model = Config("mobilenetv2", "cpu1", 1);
  Result r = Baton("plan " + other_model + " --profile " + Path("p.json") + " -o " + Path("x.json") + " --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("model 'cls' changed since it was profiled"));
  r = Baton("run " + other_model + " --plan " + plan + " --profile " + Path("p.json") + " --no-baselines --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("changed since it was"));
  r = Baton("run " + other_model + " --plan " + plan + " --no-profile --no-baselines --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("model 'cls' changed since it was planned"));

  // A PU renamed, or with other settings.
  r = Baton("run " + Config("squeezenet", "gpu1", 1) + " --plan " + plan + " --no-profile --no-baselines --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("PU 'cpu1' is in the plan but not in the config"));
  r = Baton("run " + Config("squeezenet", "cpu1", 2) + " --plan " + plan + " --no-profile --no-baselines --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("PU 'cpu1' now has other settings"));
  r = Baton("plan " + Config("squeezenet", "cpu1", 2) + " --profile " + Path("p.json") + " -o " + Path("y.json") +
            " --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("no measurements for PU 'cpu1'"));
}

TEST_F(CliPlanTest, ProfileResumesAndReportsProgress) {
  const std::string out = Path("p2.json");
  fs::copy_file(Path("p.json"), out);
  Result r = Baton("profile " + config_ + " -o " + out + Quick());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("resuming from"));
  EXPECT_THAT(r.output, HasSubstr("already profiled"));
  r = Baton("profile " + config_ + " -o " + Path("nowhere/dir/p.json") + " --budget 0");
  EXPECT_NE(r.exit_code, 0);
  // A path the file system refuses (a name longer than 255 bytes) is an
  // error naming it, with and without --fresh; it was an uncaught exception.
  const std::string too_long = Path(std::string(300, 'a') + "/p.json");
  r = Baton("profile " + config_ + " -o " + too_long + Quick());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("cannot be used: File name too long"));
  r = Baton("profile " + config_ + " -o " + too_long + " --fresh" + Quick());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--fresh: cannot remove"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("terminate")));
}

}  // namespace
