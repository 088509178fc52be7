// What the commands call: the library's composition root (app/) and the
// comparison harness (harness/), and the CLI's progress printer.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "baton/app/planning.h"
#include "baton/app/remote.h"
#include "baton/app/setup.h"
#include "baton/harness/run_session.h"
#include "baton/net/grpc_library.h"

namespace baton::cli {

using namespace baton::app;      // NOLINT: the commands are thin front-ends over these
using namespace baton::harness;  // NOLINT

// Progress lines on stderr with the time since this call, or nothing when quiet.
inline Say StderrProgress(bool quiet) {
  if (quiet) return nullptr;
  const auto start = std::chrono::steady_clock::now();
  return [start](const std::string& line) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cerr << absl::StrFormat("[%5.1fs] ", s) << line << "\n";
  };
}

// Profiling progress: a bar on a terminal, a line per 10 % otherwise, or
// nothing when quiet.
inline profiler::Progress ProfileBar(bool quiet) {
  if (quiet) return nullptr;
  const bool tty = ::isatty(2) != 0;
  auto last_decile = std::make_shared<int>(-1);
  return [tty, last_decile](int done, int total, const std::string& what) {
    const int width = 30;
    const int filled = total > 0 ? done * width / total : width;
    if (tty) {
      std::cerr << absl::StrFormat("\r[%s%s] %d/%d %-60.60s", std::string(filled, '#'),
                                   std::string(width - filled, '.'), done, total, what)
                << (done == total ? "\n" : "") << std::flush;
      return;
    }
    const int decile = total > 0 ? done * 10 / total : 10;
    if (decile != *last_decile) {
      *last_decile = decile;
      std::cerr << absl::StrFormat("profile: %d/%d measured (%s)\n", done, total, what);
    }
  };
}

// For the long-running commands (agent, serve): blocks SIGINT and SIGTERM in
// the calling thread before any other thread starts, so every thread inherits
// the mask and only a sigwait on the returned set sees them.
inline sigset_t BlockStopSignals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

// For `baton run`, `profile` and `serve`: the first SIGINT/SIGTERM sets
// stop() and wakes Wait() (the run finishes the slice it is in and reports
// what ran; the server answers what is in flight); a second one ends the
// process at once with 128 + the signal. Construct it before any other
// thread starts.
class StopOnSignal {
 public:
  // `what_next`: what the command does after the first signal; `at_once`:
  // what a second signal leaves undone (both printed).
  explicit StopOnSignal(std::string what_next = "finishing the current slice (or set-up step), then reporting what ran",
                        std::string at_once = "nothing written", std::string who = "baton")
      : what_next_(std::move(what_next)),
        at_once_(std::move(at_once)),
        who_(std::move(who)),
        signals_(BlockStopSignals()),
        watcher_([this] { Watch(); }) {}
  ~StopOnSignal() {
    done_.store(true);
    watcher_.join();
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  const std::atomic<bool>* stop() const { return &stop_; }
  int signal() const { return signal_.load(); }  // 0 = none yet
  // What a first signal from now on leads to (e.g. once start-up is over).
  void SetWhatNext(std::string what_next) {
    std::lock_guard lock(mu_);
    what_next_ = std::move(what_next);
  }
  // Blocks until the first signal; returns it.
  int Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return signal_.load() != 0; });
    return signal_.load();
  }

 private:
  void Watch() {
    const timespec poll{0, 100'000'000};  // checks done_ ten times a second
    while (!done_.load()) {
      const int sig = sigtimedwait(&signals_, nullptr, &poll);
      if (sig <= 0) continue;
      if (stop_.load()) {
        std::fprintf(stderr, "%s: second signal: stopping now, %s\n", who_.c_str(), at_once_.c_str());
        std::_Exit(128 + sig);
      }
      std::string what_next;
      {
        std::lock_guard lock(mu_);
        signal_.store(sig);
        stop_.store(true);
        what_next = what_next_;
      }
      cv_.notify_all();
      // Once this line is out, a second signal stops the process.
      std::fprintf(stderr, "%s: %s: %s (again to stop at once)\n", who_.c_str(), sig == SIGINT ? "SIGINT" : "SIGTERM",
                   what_next.c_str());
    }
  }

  std::string what_next_;  // guarded by mu_
  const std::string at_once_;
  const std::string who_;
  std::mutex mu_;
  std::condition_variable cv_;
  sigset_t signals_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<int> signal_{0};
  std::thread watcher_;
};

// How long a process waits at exit for gRPC's clean-up (grpc_library.h); it
// takes microseconds when nothing is left running.
inline constexpr absl::Duration kGrpcShutdownBound = absl::Seconds(5);

// Exit 0 after a long-running command stopped cleanly on a signal (its
// server, sessions and executors released). ONNX Runtime's process-wide
// environment is never destroyed (ort_runner.cc), so its threads outlive
// them, and the static destructors exit() runs would race with those threads
// (ThreadSanitizer reported it when agent_failover_test stopped agents with
// SIGTERM). Leave without them, once gRPC's own clean-up has finished
// (grpc_library.h).
[[noreturn]] inline void ExitCleanlyAfterSignal() {
  net::AwaitGrpcShutdown(kGrpcShutdownBound);
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(0);
}

}  // namespace baton::cli
