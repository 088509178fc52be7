#include "baton/serve/connection_watch.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <system_error>

namespace baton::serve {
namespace {

// The port of an AF_INET or AF_INET6 address; -1 for any other family.
int PortOf(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

// Calls `visit(fd, peer, peer_len)` for each connected socket of this process
// whose local port is `local_port` (at most `max_descriptors` descriptors
// looked at), until it returns true; returns the descriptor it stopped at.
template <typename Visit>
std::optional<int> ForEachTcpConnection(int local_port, int max_descriptors, Visit visit) {
  std::error_code ec;
  int seen = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator() && seen < max_descriptors; it.increment(ec), ++seen) {
    const std::string name = it->path().filename().string();
    int fd = -1;
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc() || fd < 0) continue;
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 || PortOf(local) != local_port) continue;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;  // not connected
    if (visit(fd, peer, peer_len)) return fd;
  }
  return std::nullopt;
}

}  // namespace

std::optional<int> FindTcpConnection(int local_port, const std::string& remote_addr, int remote_port,
                                     int max_descriptors) {
  if (local_port <= 0 || remote_port <= 0) return std::nullopt;
  return ForEachTcpConnection(local_port, max_descriptors, [&](int, const sockaddr_storage& peer, socklen_t len) {
    std::string ip;
    int port = -1;
    return NumericAddress(peer, len, ip, port) && port == remote_port && ip == remote_addr;
  });
}

int ShutdownTcpConnections(int local_port, int max_descriptors) {
  if (local_port <= 0) return 0;
  int shut = 0;
  ForEachTcpConnection(local_port, max_descriptors, [&](int fd, const sockaddr_storage&, socklen_t) {
    if (shutdown(fd, SHUT_RDWR) == 0) ++shut;
    return false;  // all of them
  });
  return shut;
}

bool NumericAddress(const sockaddr_storage& addr, socklen_t len, std::string& ip, int& port) {
  const int p = PortOf(addr);
  char host[NI_MAXHOST];
  if (p < 0 || getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0,
                           NI_NUMERICHOST) != 0) {
    return false;
  }
  ip = host;
  port = p;
  return true;
}

bool ConnectionWatch::PeerGone() const {
  if (fd_ < 0) return false;
  // POLLRDHUP: the peer's FIN has arrived, whether or not bytes wait before
  // it (a TLS close_notify record does); POLLHUP and POLLERR: a reset.
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace baton::serve
