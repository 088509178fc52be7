// `baton verify`, the CLI binary, run as a user runs it: exit status 0 on a
// match, 1 on a mismatch, 2 on an error.
#include <filesystem>
#include <fstream>
#include <string>

#include "baton/zoo/zoo.h"
#include "cli_test_util.h"
#include "gtest/gtest.h"
#include "layernorm_model.h"
#include "test_paths.h"

namespace baton::verify {
namespace {

// The exit status of `baton verify ARGS` (its output is checked for sanitizer reports).
int RunCli(const std::string& args) { return baton::testing::Baton("verify " + args).exit_code; }

std::string WriteModel(const std::string& bytes, const std::string& file) {
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) / file;
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  return path.string();
}

TEST(VerifyCliTest, ExitStatusTellsMatchMismatchAndErrors) {
  ASSERT_TRUE(std::filesystem::exists(BATON_CLI)) << "baton CLI not built at " << BATON_CLI;
  auto resnet = zoo::Generate("resnet", /*small=*/true);
  ASSERT_TRUE(resnet.ok()) << resnet.status();
  const std::string resnet_path = WriteModel(*resnet, "verify_cli_resnet.onnx");
  EXPECT_EQ(RunCli(resnet_path), 0);
  EXPECT_EQ(RunCli(resnet_path + " --parts 4 --seed 9 --threads 2"), 0);
  EXPECT_EQ(RunCli(resnet_path + " --atol 0 --rtol 0 --parts 1"), 0);  // one partition: bit-identical
  EXPECT_EQ(RunCli(resnet_path + " --cut no_such_tensor"), 2);
  EXPECT_EQ(RunCli(resnet_path + " --input nope=1"), 2);
  EXPECT_EQ(RunCli(resnet_path + " --dim missing_equals"), 2);
  EXPECT_EQ(RunCli("/nonexistent/model.onnx"), 2);
  const std::string junk = WriteModel("not a model", "verify_cli_junk.onnx");
  EXPECT_EQ(RunCli(junk), 2);

  // See LayerNormModel: a zero tolerance sees the difference.
  auto bytes = baton::testing::LayerNormModel().Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::string ln = WriteModel(*bytes, "verify_cli_layernorm.onnx");
  EXPECT_EQ(RunCli(ln + " --cut mean"), 0);
  EXPECT_EQ(RunCli(ln + " --cut mean --atol 0 --rtol 0"), 1);
  for (const char* f : {"verify_cli_resnet.onnx", "verify_cli_junk.onnx", "verify_cli_layernorm.onnx"}) {
    std::filesystem::remove(std::filesystem::path(::testing::TempDir()) / f);
  }
}

}  // namespace
}  // namespace baton::verify
