// Whether the client of an HTTP request still waits for its answer, looked
// at on the request's own TCP connection without reading from it: by its
// descriptor (`baton serve` knows it: serve/http_connection.h), or found
// among this process's descriptors by its two ends (as an HTTP library that
// hands a handler no socket reports them).
//
//   ConnectionWatch watch(CurrentSocket());
//   while (answer.wait_for(100ms) != ready) if (watch.PeerGone()) cancel->Cancel();
//
// The peer counts as gone once the connection has received its FIN (the
// client closed, or half-closed, its side: an HTTP/1.1 client sends nothing
// while it waits for an answer, so, as nginx does by default, a half-close is
// taken as giving up) or was reset. Bytes waiting before the FIN do not
// change that: a TLS client that closes cleanly sends a close_notify record
// first, and a pipelined request whose client then closes gets no answer
// either way. Bytes without a FIN count as the client being there.
//
// Thread-safety: use one watch from the thread that serves the request; the
// connection cannot close under it (the HTTP library closes it only after the
// handler returns).
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace baton::serve {

class ConnectionWatch {
 public:
  ConnectionWatch(int local_port, std::string remote_addr, int remote_port)
      : local_port_(local_port), remote_addr_(std::move(remote_addr)), remote_port_(remote_port) {}
  // The connection's own descriptor, when the server knows it (-1: none, never gone).
  explicit ConnectionWatch(int fd) : local_port_(-1), remote_port_(-1), looked_up_(true) {
    if (fd >= 0) fd_ = fd;
  }

  // True once the peer has closed or reset the connection. The connection is
  // looked up on the first call (one pass over /proc/self/fd, at most
  // kMaxDescriptors entries); when it cannot be found, always false.
  bool PeerGone();

  static constexpr int kMaxDescriptors = 65536;

 private:
  int local_port_;
  std::string remote_addr_;
  int remote_port_;
  bool looked_up_ = false;
  std::optional<int> fd_;
};

// The descriptor of this process's TCP socket whose local port is
// `local_port` and whose peer is `remote_addr` (numeric, as getnameinfo
// writes it) port `remote_port`; nullopt when there is none.
std::optional<int> FindTcpConnection(int local_port, const std::string& remote_addr, int remote_port,
                                     int max_descriptors = ConnectionWatch::kMaxDescriptors);

// Shuts down (both ways) every connected TCP socket of this process whose
// local port is `local_port`, so that a thread blocked reading or writing one
// returns; the descriptors stay open for their owners to close. Returns how
// many. For stopping a server whose clients would hold it.
int ShutdownTcpConnections(int local_port, int max_descriptors = ConnectionWatch::kMaxDescriptors);

}  // namespace baton::serve
