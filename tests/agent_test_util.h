// Starting `baton agent` and `baton serve` processes on loopback for the
// integration tests. Each one's stderr goes to a file that is checked when it
// is stopped or killed: a sanitizer report there, a process that died on its
// own, or one that does not stop on SIGTERM with exit status 0 fails the test,
// so a crashed agent can never pass for a "lost" one.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sanitizer_report.h"
#include "test_paths.h"

namespace baton::testing {

// One `baton COMMAND --listen 127.0.0.1:0 ARGS...` child (`--http` for
// serve); the port is read from its start-up line ("... listening on
// HOST:PORT ..."). The destructor stops it with SIGTERM and expects exit 0.
class BatonProcess {
 public:
  BatonProcess(std::string command, std::vector<std::string> args, std::vector<std::string> prefix = {})
      : command_(std::move(command)),
        listen_flag_(command_ == "serve" ? "--http" : "--listen"),
        args_(std::move(args)),
        prefix_(std::move(prefix)) {
    Start();
  }
  ~BatonProcess() { Stop(); }
  BatonProcess(const BatonProcess&) = delete;
  BatonProcess& operator=(const BatonProcess&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  int grpc_port() const { return grpc_port_; }  // `baton serve`'s gRPC port (-1: none)
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  const std::string& banner() const { return banner_; }
  pid_t pid() const { return pid_; }
  // The child's stderr so far.
  std::string Stderr() const {
    std::ifstream in(err_path_);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
  }

  void Signal(int sig) {
    if (pid_ <= 0) return;
    stopping_ = stopping_ || sig == SIGTERM || sig == SIGINT;
    ::kill(pid_, sig);
  }
  // Sends `sig` (SIGKILL: a crash the test stages) and reaps the child
  // (returns its wait status). Fails the test when the agent had already
  // died on its own, printed a sanitizer report, or did not exit within a
  // minute of the signal (it is then killed).
  int Kill(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    if (!WaitExit(std::chrono::seconds(60), &status)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      ADD_FAILURE() << "baton " << command_ << " " << pid_ << " did not exit within 60 s of signal " << sig
                    << "; its stderr:\n" << Stderr();
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      ADD_FAILURE() << "baton " << command_ << " " << pid_ << " had exited with status " << WEXITSTATUS(status)
                    << " before the test sent it signal " << sig << "; its stderr:\n" << Stderr();
    }
    Reap();
    return status;
  }
  // Stops it as a user does (SIGTERM) and expects exit status 0 within
  // `limit`; after that it is killed and the test fails. Once the test has
  // sent SIGTERM or SIGINT itself, no second one is sent: `serve` and `run`
  // take a second signal as "stop at once".
  void Stop(std::chrono::seconds limit = std::chrono::seconds(60)) {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);  // a test may have left it stopped
    if (!stopping_) ::kill(pid_, SIGTERM);
    int status = 0;
    if (!WaitExit(limit, &status)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      ADD_FAILURE() << "baton " << command_ << " " << pid_ << " did not exit within " << limit.count() << " s of SIGTERM; its stderr:\n"
                    << Stderr();
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ADD_FAILURE() << "baton " << command_ << " " << pid_ << " ended with "
                    << (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                          : "signal " + std::to_string(WTERMSIG(status)))
                    << " on SIGTERM (expected exit status 0); its stderr:\n"
                    << Stderr();
    }
    Reap();
  }
  // Waits at most `limit` for it to exit after a signal the test sent, and
  // reaps it: its wait status, or -1 when it was still running (it is then
  // killed and the test fails). `err`, when given, gets its whole stderr.
  int AwaitExit(std::chrono::seconds limit, std::string* err = nullptr) {
    if (pid_ <= 0) return -1;
    int status = 0;
    if (!WaitExit(limit, &status)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      ADD_FAILURE() << "baton " << command_ << " " << pid_ << " did not exit within " << limit.count()
                    << " s; its stderr:\n" << Stderr();
      status = -1;
    }
    if (err != nullptr) *err = Stderr();
    Reap();
    return status;
  }
  // Starts it again on the same port (a restarted agent).
  void Restart() {
    Kill(SIGKILL);
    std::vector<std::string> args = args_;
    bool replaced = false;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == listen_flag_) {
        args[i + 1] = address();
        replaced = true;
      }
    }
    if (!replaced) {
      args.push_back(listen_flag_);
      args.push_back(address());
    }
    const int port = port_;
    args_.swap(args);
    Start();
    args_.swap(args);
    if (port_ != port) port_ = -1;
  }

 private:
  // Waits for it to exit (a pidfd becomes readable), at most `limit`, and
  // reaps it into `status`; false when it is still running. Without
  // pidfd_open (Linux < 5.3), waitpid blocks until it exits.
  bool WaitExit(std::chrono::seconds limit, int* status) {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      const bool exited = ::poll(&p, 1, static_cast<int>(limit.count() * 1000)) > 0;
      ::close(pidfd);
      if (!exited) return false;
    }
    return ::waitpid(pid_, status, 0) == pid_;
  }
  // Closes the pipe, checks the stderr file for a sanitizer report, removes it.
  void Reap() {
    const std::string report = SanitizerReport(Stderr());
    if (!report.empty()) ADD_FAILURE() << "baton " << command_ << " " << pid_ << " printed a sanitizer report:\n" << report;
    pid_ = -1;
    stopping_ = false;
    if (out_) {
      std::fclose(out_);
      out_ = nullptr;
    }
    if (!err_path_.empty()) std::remove(err_path_.c_str());
    err_path_.clear();
  }

  void Start() {
    port_ = -1;  // until the banner names it (Restart compares it with the old one)
    grpc_port_ = -1;
    int fds[2];
    if (::pipe(fds) != 0) return;
    std::string err_template = ::testing::TempDir() + "baton_agent_stderr_XXXXXX";
    const int err_fd = ::mkstemp(err_template.data());
    if (err_fd < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return;
    }
    err_path_ = err_template;
    // `prefix` runs it through another command (e.g. `ip netns exec NS`).
    std::vector<std::string> argv_s = prefix_;
    argv_s.push_back(BATON_CLI);
    argv_s.push_back(command_);
    bool has_listen = false, has_grpc = false, no_http = false, no_grpc = false;
    for (const std::string& a : args_) {
      has_listen = has_listen || a == listen_flag_;
      has_grpc = has_grpc || a == "--grpc";
      no_http = no_http || a == "--no-http";
      no_grpc = no_grpc || a == "--no-grpc";
    }
    if (!has_listen) {
      argv_s.push_back(listen_flag_);
      argv_s.push_back("127.0.0.1:0");
    }
    if (command_ == "serve" && !has_grpc) {
      argv_s.push_back("--grpc");
      argv_s.push_back("127.0.0.1:0");
    }
    // `baton serve` prints a line per front-end (gRPC first), other commands one.
    const int lines = command_ == "serve" ? (no_http ? 0 : 1) + (no_grpc ? 0 : 1) : 1;
    argv_s.insert(argv_s.end(), args_.begin(), args_.end());
    // Built before fork: the child of a threaded process may only make
    // async-signal-safe calls until exec. An allocation there can wait
    // forever on an allocator lock another thread held at the fork (the
    // likeliest cause of a restarted agent that, once in CI under
    // AddressSanitizer, printed no banner within 120 s).
    std::vector<char*> argv;
    for (std::string& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(err_fd, 2);
      ::close(fds[0]);
      ::close(fds[1]);
      ::close(err_fd);
      ::execvp(argv[0], argv.data());
      _exit(127);
    }
    ::close(fds[1]);
    ::close(err_fd);
    out_ = ::fdopen(fds[0], "r");
    // A child that neither prints its banner nor exits would block the read
    // below for good (a whole test run then times out without a word): after
    // kBannerWait it is killed, its stderr goes into the banner, and ok() is false.
    std::mutex banner_mu;
    std::condition_variable banner_cv;
    bool banner_read = false, banner_late = false;
    std::thread watchdog([&] {
      std::unique_lock lock(banner_mu);
      if (!banner_cv.wait_for(lock, kBannerWait, [&] { return banner_read; })) {
        banner_late = true;
        ::kill(pid_, SIGKILL);
      }
    });
    char line[1024];
    // "baton agent 'NAME' listening on HOST:PORT (PUs: ...)",
    // "baton serve: KServe v2 gRPC listening on HOST:PORT (models: ...)",
    // "baton serve: KServe v2 HTTP listening on HOST:PORT (models: ...)".
    // port() is the agent's or the HTTP port (the gRPC one with --no-http).
    for (int n = 0; n < lines && out_ && std::fgets(line, sizeof(line), out_); ++n) {
      banner_ += line;
      const char* on = std::strstr(line, "listening on ");
      if (on == nullptr) break;
      const std::string address(on + 13, std::strcspn(on + 13, " \n"));  // HOST:PORT, [V6]:PORT
      const size_t last = address.rfind(':');
      if (last == std::string::npos) break;
      const char* colon = on + 13 + last;
      const int port = std::atoi(colon + 1);
      if (std::strstr(line, " gRPC ") != nullptr) {
        grpc_port_ = port;
        if (!no_http) continue;
      }
      host_.assign(on + 13, colon);
      port_ = port;
    }
    {
      std::lock_guard lock(banner_mu);
      banner_read = true;
    }
    banner_cv.notify_all();
    watchdog.join();
    if (banner_late) port_ = -1;
    if (port_ <= 0) banner_ += Stderr();  // why it did not start
    if (banner_late) {
      banner_ += "(no banner within " + std::to_string(kBannerWait.count()) + " s: killed)\n";
      // Reaped here, so that Stop does not report the kill as its own failure.
      int status = 0;
      ::waitpid(pid_, &status, 0);
      Reap();
    }
  }
  static constexpr std::chrono::seconds kBannerWait{120};

  std::string command_;
  std::string listen_flag_;
  std::vector<std::string> args_;
  std::vector<std::string> prefix_;
  pid_t pid_ = -1;
  bool stopping_ = false;  // the test sent it SIGTERM or SIGINT (Signal)
  FILE* out_ = nullptr;
  int port_ = -1;
  int grpc_port_ = -1;
  std::string host_ = "127.0.0.1";
  std::string banner_;
  std::string err_path_;
};

// `baton agent` (the tests' most common child).
class AgentProcess : public BatonProcess {
 public:
  explicit AgentProcess(std::vector<std::string> args, std::vector<std::string> prefix = {})
      : BatonProcess("agent", std::move(args), std::move(prefix)) {}
};

}  // namespace baton::testing
