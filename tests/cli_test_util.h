// Running the `baton` binary as a user runs it, for the CLI tests, and the
// temporary folder with the small zoo that their suites share.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sanitizer_report.h"
#include "test_paths.h"

namespace baton::testing {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `baton ARGS` (the binary this build made) through the shell.
inline CliResult Baton(const std::string& args) {
  std::string cmd = std::string(BATON_CLI) + " " + args + " 2>&1";
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string report = SanitizerReport(r.output);
  if (!report.empty()) ADD_FAILURE() << "`baton " << args << "` printed a sanitizer report:\n" << report;
  return r;
}

// A test suite sharing one temporary folder that holds the small zoo
// (`baton zoo --small`), removed after the suite. The suite names the folder:
//   class CliRunTest : public ZooDirTest<CliRunTest> {
//    public:
//     static constexpr const char* kDir = "baton_cli_run_test_";  // + the pid
//   };
template <typename Suite>
class ZooDirTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / (std::string(Suite::kDir) + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    CliResult r = Baton("zoo --small --out " + (dir_ / "zoo").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  // The path of zoo model `name`, and of `name` in the folder.
  static std::string Zoo(const std::string& name) { return (dir_ / "zoo" / (name + ".onnx")).string(); }
  static std::string Path(const std::string& name) { return (dir_ / name).string(); }
  // Writes `text` to `name` in the folder; returns its path.
  static std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return Path(name);
  }
  // The JSON file at `path` (a null-like discarded value when it does not parse).
  static nlohmann::json ReadJson(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  static inline std::filesystem::path dir_;
};

}  // namespace baton::testing
