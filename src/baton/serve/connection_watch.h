// Whether the client of an HTTP request still waits for its answer, looked
// at on the request's own TCP connection (by its descriptor: `baton serve`
// knows it, serve/http_connection.h) without reading from it.
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
// connection cannot close under it (it is closed only after the handler
// returns).
#pragma once

#include <sys/socket.h>

#include <optional>
#include <string>

namespace baton::serve {

class ConnectionWatch {
 public:
  // -1: no connection, never gone.
  explicit ConnectionWatch(int fd) : fd_(fd) {}

  // True once the peer has closed or reset the connection.
  bool PeerGone() const;

  static constexpr int kMaxDescriptors = 65536;

 private:
  int fd_;
};

// The numeric address (as getnameinfo writes it) and port of an AF_INET or
// AF_INET6 socket address; false for any other.
bool NumericAddress(const sockaddr_storage& addr, socklen_t len, std::string& ip, int& port);

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
