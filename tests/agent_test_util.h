// Starting `baton agent` processes on loopback for the integration tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace baton::testing {

// One `baton agent --listen 127.0.0.1:0 ARGS...` child; the port is read from
// its start-up line. The destructor kills it.
class AgentProcess {
 public:
  explicit AgentProcess(std::vector<std::string> args, std::vector<std::string> prefix = {})
      : args_(std::move(args)), prefix_(std::move(prefix)) {
    Start();
  }
  ~AgentProcess() { Kill(SIGKILL); }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  const std::string& banner() const { return banner_; }
  pid_t pid() const { return pid_; }

  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Sends `sig` and reaps the child (returns its wait status).
  int Kill(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (out_) {
      std::fclose(out_);
      out_ = nullptr;
    }
    return status;
  }
  // Starts it again on the same port (a restarted agent).
  void Restart() {
    Kill(SIGKILL);
    std::vector<std::string> args = args_;
    bool replaced = false;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--listen") {
        args[i + 1] = address();
        replaced = true;
      }
    }
    if (!replaced) {
      args.push_back("--listen");
      args.push_back(address());
    }
    const int port = port_;
    args_.swap(args);
    Start();
    args_.swap(args);
    if (port_ != port) port_ = -1;
  }

 private:
  void Start() {
    int fds[2];
    if (::pipe(fds) != 0) return;
    // `prefix` runs it through another command (e.g. `ip netns exec NS`).
    std::vector<std::string> argv_s = prefix_;
    argv_s.push_back(BATON_CLI);
    argv_s.push_back("agent");
    bool has_listen = false;
    for (const std::string& a : args_) has_listen = has_listen || a == "--listen";
    if (!has_listen) {
      argv_s.push_back("--listen");
      argv_s.push_back("127.0.0.1:0");
    }
    argv_s.insert(argv_s.end(), args_.begin(), args_.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv;
      for (std::string& s : argv_s) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execvp(argv[0], argv.data());
      _exit(127);
    }
    ::close(fds[1]);
    out_ = ::fdopen(fds[0], "r");
    char line[1024];
    // "baton agent 'NAME' listening on HOST:PORT (PUs: ...)"
    if (out_ && std::fgets(line, sizeof(line), out_)) {
      banner_ = line;
      const char* on = std::strstr(line, "listening on ");
      if (on) {
        const char* colon = std::strchr(on + 13, ':');
        if (colon) {
          host_.assign(on + 13, colon);
          port_ = std::atoi(colon + 1);
        }
      }
    }
  }

  std::vector<std::string> args_;
  std::vector<std::string> prefix_;
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  int port_ = -1;
  std::string host_ = "127.0.0.1";
  std::string banner_;
};

}  // namespace baton::testing
