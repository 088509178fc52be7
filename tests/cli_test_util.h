// Running the `baton` binary as a user runs it, for the CLI tests, and the
// temporary folder with the small zoo that their suites share.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

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

// Runs `baton ARGS...` (no shell) with stdout and stderr in one pipe, and
// calls `action(pid)` once its output contains `trigger` (then reads on to
// the end). Each read waits at most 120 s; without the trigger by then, or at
// the end, the process is killed (SIGKILL) and `signalled` stays false. The
// exit code is -1 when it did not exit normally.
struct SignalledRun {
  bool signalled = false;
  int exit_code = -1;
  std::string output;
};
inline SignalledRun ActWhenPrinted(const std::vector<std::string>& args, const std::string& trigger,
                                   const std::function<void(pid_t)>& action) {
  SignalledRun r;
  int fds[2];
  if (::pipe(fds) != 0) return r;
  std::vector<std::string> argv_s = {BATON_CLI};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  // Built before fork: the child may not allocate (agent_test_util.h, Start).
  std::vector<char*> argv;
  for (std::string& arg : argv_s) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return r;
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  char buf[4096];
  bool silent = false;  // printed nothing for 2 minutes: hung
  while (true) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 120'000) <= 0) {
      silent = true;
      break;
    }
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    r.output.append(buf, static_cast<size_t>(n));
    if (!r.signalled && r.output.find(trigger) != std::string::npos) {
      action(pid);
      r.signalled = true;
    }
  }
  ::close(fds[0]);
  if (!r.signalled || silent) ::kill(pid, SIGKILL);
  if (silent) ADD_FAILURE() << "`baton` printed nothing for 2 minutes and was killed; its output:\n" << r.output;
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string report = SanitizerReport(r.output);
  if (!report.empty()) ADD_FAILURE() << "`baton` printed a sanitizer report:\n" << report;
  return r;
}

// ActWhenPrinted that sends `sig` at the trigger.
inline SignalledRun SignalWhenPrinted(const std::vector<std::string>& args, const std::string& trigger, int sig) {
  return ActWhenPrinted(args, trigger, [sig](pid_t pid) { ::kill(pid, sig); });
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
