// The `baton` command line, run as a user runs it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "baton/core/version.h"
#include "cli_test_util.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using Result = baton::testing::CliResult;
using baton::testing::Baton;

class CliTest : public baton::testing::ZooDirTest<CliTest> {
 public:
  static constexpr const char* kDir = "baton_cli_test_";
};

TEST_F(CliTest, HelpOnEverySubcommand) {
  for (const char* sub : {"zoo", "inspect", "partition", "verify"}) {
    Result r = Baton(std::string(sub) + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr("Usage")) << sub;
  }
  EXPECT_NE(Baton("").exit_code, 0);
  // The version from its one source (baton/core/version.h).
  Result v = Baton("--version");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output, HasSubstr(std::string("baton ") + baton::kVersion));
}

TEST_F(CliTest, ZooListsAndWritesEveryModel) {
  Result r = Baton("zoo --list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"resnet", "mobilenetv2", "squeezenet", "vgg", "unet", "yolo", "transformer", "lstm"}) {
    EXPECT_THAT(r.output, HasSubstr(name));
    EXPECT_TRUE(fs::exists(Zoo(name))) << name;
  }
}

TEST_F(CliTest, InspectPrintsInterfaceOpsParametersFlops) {
  Result r = Baton("inspect " + Zoo("yolo"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("inputs:"));
  EXPECT_THAT(r.output, HasSubstr("outputs:"));
  EXPECT_THAT(r.output, HasSubstr("Conv"));
  EXPECT_THAT(r.output, HasSubstr("parameters:"));
  EXPECT_THAT(r.output, HasSubstr("FLOPs:"));
}

TEST_F(CliTest, PartitionWritesPiecesAndPlan) {
  fs::path out = dir_ / "parts";
  Result r = Baton("partition " + Zoo("resnet") + " --parts 3 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(out / "plan.json");
  nlohmann::json plan = nlohmann::json::parse(in);
  ASSERT_EQ(plan["partitions"].size(), 3u);
  for (const auto& p : plan["partitions"]) {
    EXPECT_TRUE(fs::exists(out / p["file"].get<std::string>())) << p.dump();
    EXPECT_FALSE(p["nodes"].empty());
  }
  EXPECT_FALSE(plan["edges"].empty());
  // Each written piece is itself a valid model that baton can inspect.
  Result piece = Baton("inspect " + (out / plan["partitions"][1]["file"].get<std::string>()).string());
  EXPECT_EQ(piece.exit_code, 0) << piece.output;
}

TEST_F(CliTest, PartitionAtNamedTensors) {
  // The tensors `inspect --nodes` lists are the ones --cut takes.
  Result nodes = Baton("inspect --nodes " + Zoo("vgg"));
  ASSERT_EQ(nodes.exit_code, 0) << nodes.output;
  ASSERT_THAT(nodes.output, HasSubstr("-> features.1.pool:float32[1,8,16,16]"));
  ASSERT_THAT(nodes.output, HasSubstr("-> features.3.pool:float32[1,16,8,8]"));
  fs::path out = dir_ / "cut";
  Result cut = Baton("partition " + Zoo("vgg") + " --cut features.1.pool,features.3.pool --out " + out.string());
  ASSERT_EQ(cut.exit_code, 0) << cut.output;
  std::ifstream in(out / "plan.json");
  const nlohmann::json plan = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(plan.is_discarded());
  ASSERT_EQ(plan["partitions"].size(), 3u) << plan.dump(2);
  // Each cut tensor leaves the partition that ends with it.
  const nlohmann::json& first = plan["partitions"][0]["nodes"];
  EXPECT_EQ(first.back(), "features.1.pool") << first.dump();
  EXPECT_EQ(plan["partitions"][1]["nodes"].back(), "features.3.pool") << plan["partitions"][1].dump();
  for (const auto& p : plan["partitions"]) {
    Result piece = Baton("inspect " + (out / p["file"].get<std::string>()).string());
    EXPECT_EQ(piece.exit_code, 0) << piece.output;
  }
  // And the pieces run together as the whole model does.
  Result verified = Baton("verify " + Zoo("vgg") + " --cut features.1.pool,features.3.pool");
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  Result bad = Baton("partition " + Zoo("vgg") + " --cut no_such_tensor --out " + out.string());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("no_such_tensor"));
  Result neither = Baton("partition " + Zoo("vgg") + " --out " + out.string());
  EXPECT_NE(neither.exit_code, 0);
  EXPECT_THAT(neither.output, HasSubstr("--parts"));
}

TEST_F(CliTest, VerifyPassesOnZooModels) {
  for (const char* name : {"squeezenet", "transformer", "ifloop"}) {
    Result r = Baton(std::string("verify ") + Zoo(name) + " --parts 3 --seed 3");
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.output;
  }
}

TEST_F(CliTest, BadInputGivesClearErrorAndNonZeroExit) {
  Result missing = Baton("inspect " + (dir_ / "nope.onnx").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.output, HasSubstr("does not exist"));
  fs::path garbage = dir_ / "garbage.onnx";
  std::ofstream(garbage) << "this is not a model";
  for (const char* sub : {"inspect", "verify"}) {
    Result r = Baton(std::string(sub) + " " + garbage.string());
    EXPECT_NE(r.exit_code, 0) << sub;
    EXPECT_THAT(r.output, HasSubstr("garbage.onnx")) << sub;
  }
}

TEST_F(CliTest, OutOfRangeOptionsExitTwoWithTheBound) {
  const std::string model = (dir_ / "m.onnx").string();
  struct Case {
    std::string args;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{{"verify " + model + " --parts 0", "--parts: must be an integer in 1..1024, got 0"},
                                         {"verify " + model + " --threads 100000", "1..1024, got 100000"},
                                         {"verify " + model + " --atol -1", "must be a finite number >= 0, got -1"},
                                         {"run --duration nan", "must be a finite number > 0, got nan"},
                                         {"run --duration inf", "got inf"},
                                         {"run --slices 2147483647", "1..1000"},
                                         {"partition " + model + " --parts 0", "1..1024"}}) {
    Result r = Baton(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.says)) << c.args;
    EXPECT_LT(r.output.size(), 400u) << "no 309-digit bound: " << r.output;
  }
  EXPECT_EQ(Baton("run --help").exit_code, 0);
}

TEST_F(CliTest, ConfigPlanAndProfilePathsMustBeRegularFiles) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& args : {"run " + fifo.string(), "run --plan " + fifo.string(),
                                  std::string("run --profile /dev/zero"), "plan --profile /dev/zero -o " + (dir_ / "p.json").string()}) {
    Result r = Baton(args);  // used to block on the FIFO or read /dev/zero until memory ran out
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("not a regular file")) << args;
  }
}

}  // namespace
