// `baton serve`'s REST connections, read and written with a bound on every
// wait, on the time one request or answer may take, and on the size of a
// request's head. The HTTP library (cpp-httplib) parses the requests and
// writes the answers; the connection under it is ours, because the library
// bounds only each single read or write (a client that sends a byte every few
// seconds would hold its worker for good) and buffers a header line whole
// before its own 8 KiB check (an endless line would take all the memory).
//
// The bounds (HttpLimits):
//   * each read or write waits at most `io_timeout` (`--timeout-s`);
//   * a request's head and body must arrive within `request_timeout`, plus
//     1 s for each `min_bytes_per_s` bytes it has brought so far
//     (`--request-timeout-s`, `--min-rate-kib-s`, as Apache's mod_reqtimeout
//     does with its MinRate); the clock starts with its first byte. An
//     answer gets the same to be taken by the client, from its first byte;
//   * a request's line and headers may take `max_head_bytes`;
//   * between requests a connection may idle `keep_alive` (on its worker
//     while no other connection needs one, else parked, see HttpWorkers),
//     and a TLS handshake must end within `request_timeout`.
// A request cut short is answered 408 (too slow) or 431 (head too large) when
// nothing of its answer was written yet, and its connection is closed.
//
// Thread-safety: a connection is served by one thread; the functions below
// that take no connection are about the one the calling thread serves.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace baton::serve {

struct HttpLimits {
  std::chrono::milliseconds io_timeout{10'000};
  std::chrono::milliseconds request_timeout{60'000};
  size_t min_bytes_per_s = size_t{64} << 10;  // 0: no allowance beyond request_timeout
  size_t max_head_bytes = size_t{64} << 10;
  std::chrono::milliseconds keep_alive{5'000};
};

// Why the request being served (or its answer) was cut short, if it was.
enum class RequestCut {
  kNone,
  kIdle,          // nothing moved for io_timeout
  kDeadline,      // not all of it within request_timeout and the rate allowance
  kHeadTooLarge,  // its line and headers went past max_head_bytes
};

// The workers that serve the connections, one request at a time each. A
// connection keeps its worker between requests only while no other
// connection waits for one; otherwise it is parked (one thread watches all
// parked connections) until its next request comes.
struct HttpWorkers {
  int threads = 8;
  // Connections accepted (or parked ones with a request) waiting for a
  // worker, at most; beyond it the server stops accepting until one is
  // taken, and new connections wait in the kernel's listen backlog.
  int max_waiting = 64;
  // Idle keep-alive connections parked, at most; past it a connection keeps
  // its worker until its next request (as it would without parking).
  int max_idle = 1024;
  // Helper threads at most, each serving connections while a worker waits
  // for the engine (EngineWait); 0: a waiting worker keeps its place.
  int max_lent = 256;
  // How long stopping lets the workers finish; then `stuck` is called (it
  // should shut their connections down so that they return).
  std::chrono::seconds stop_grace{30};
  std::function<void()> stuck;
};

// An HTTP server (an httplib::SSLServer's work when `tls_cert` is given:
// TLS 1.2 or later with that PEM chain and `tls_key`) whose connections are
// served under `limits` by `workers`; `on_cut` (may be empty) hears of each
// request or answer cut short, on the thread that served it. Errors:
// InvalidArgument naming a TLS file that cannot be used.
absl::StatusOr<std::unique_ptr<httplib::Server>> NewBoundedHttpServer(const HttpLimits& limits,
                                                                      const HttpWorkers& workers,
                                                                      const std::string& tls_cert,
                                                                      const std::string& tls_key,
                                                                      std::function<void(RequestCut)> on_cut);

// Idle kept-alive connections parked now by a server NewBoundedHttpServer
// made (0 for any other, or while it does not listen).
size_t IdleConnections(const httplib::Server& server);

// For handlers, about the connection the calling thread serves (no effect,
// kNone and -1 on a thread that serves none):
// the request's line and headers are in; what follows is its body.
void HeadReceived();
RequestCut CurrentCut();
int CurrentSocket();
// For the scope of a handler's wait for the engine, its worker's place goes
// to a helper thread if connections wait for a worker (HttpWorkers::max_lent),
// so that a slow model's requests do not keep health checks, metrics and
// other models' requests from being read.
class EngineWait {
 public:
  EngineWait();
  ~EngineWait();
  EngineWait(const EngineWait&) = delete;
  EngineWait& operator=(const EngineWait&) = delete;

 private:
  void* pool_;  // the worker's pool; nullptr on a thread that is not a worker
};

// The HTTP status (408 or 431) and the message a request cut short is
// answered with.
int StatusOfCut(RequestCut cut);
std::string MessageOfCut(RequestCut cut, const HttpLimits& limits);

}  // namespace baton::serve
