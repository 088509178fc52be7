// serve::ConnectionWatch: finds a served TCP connection by its two ends and
// tells a peer that is still there from one that closed (with or without
// bytes left unread), half-closed or reset the connection, without reading
// from it.
#include "baton/serve/connection_watch.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace baton::serve {
namespace {

int PortOf(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  return getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 ? ntohs(a.sin_port) : -1;
}

// A listening socket on 127.0.0.1, a client connected to it and the server's
// end of that connection, as an HTTP server holds it.
struct Connection {
  int listener = -1, client = -1, served = -1;
  Connection() {
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, 4) != 0) return;
    addr.sin_port = htons(static_cast<uint16_t>(PortOf(listener)));
    client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    served = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  }
  ~Connection() {
    for (int fd : {listener, client, served}) {
      if (fd >= 0) close(fd);
    }
  }
  ConnectionWatch Watch() const { return ConnectionWatch(PortOf(listener), "127.0.0.1", PortOf(client)); }
};

TEST(ConnectionWatchTest, FindsTheServedEndOfAConnection) {
  Connection c;
  ASSERT_GE(c.served, 0);
  EXPECT_EQ(FindTcpConnection(PortOf(c.listener), "127.0.0.1", PortOf(c.client)), c.served);
  EXPECT_EQ(FindTcpConnection(PortOf(c.listener), "10.0.0.1", PortOf(c.client)), std::nullopt) << "another peer";
  EXPECT_EQ(FindTcpConnection(PortOf(c.listener), "127.0.0.1", 1), std::nullopt) << "another peer port";
  EXPECT_EQ(FindTcpConnection(-1, "127.0.0.1", PortOf(c.client)), std::nullopt);
  EXPECT_EQ(FindTcpConnection(PortOf(c.listener), "127.0.0.1", PortOf(c.client), /*max_descriptors=*/0), std::nullopt)
      << "the scan is bounded";
}

TEST(ConnectionWatchTest, APeerThatWaitsOrSendsIsThereOneThatClosesIsGone) {
  Connection c;
  ASSERT_GE(c.served, 0);
  ConnectionWatch watch = c.Watch();
  EXPECT_FALSE(watch.PeerGone());
  ASSERT_EQ(send(c.client, "x", 1, 0), 1);  // a pipelined request: bytes waiting, not read by the watch
  EXPECT_FALSE(watch.PeerGone());
  EXPECT_FALSE(watch.PeerGone());
  char byte = 0;
  ASSERT_EQ(recv(c.served, &byte, 1, 0), 1) << "the watch left the byte for the server";
  EXPECT_EQ(byte, 'x');
  ASSERT_EQ(shutdown(c.client, SHUT_WR), 0);  // a half-close counts as gone
  EXPECT_TRUE(watch.PeerGone());
}

// A TLS client that closes cleanly sends a close_notify record, then its
// FIN: bytes wait unread before the FIN, and the peer is gone all the same.
// (Before, a peek that found bytes took the peer as there, and such a
// client's request ran to its end.)
TEST(ConnectionWatchTest, APeerThatSendsAndThenClosesIsGone) {
  Connection c;
  ASSERT_GE(c.served, 0);
  ConnectionWatch watch = c.Watch();
  const char close_notify[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00};  // TLS alert record, close_notify
  ASSERT_EQ(send(c.client, close_notify, sizeof(close_notify), 0), static_cast<ssize_t>(sizeof(close_notify)));
  EXPECT_FALSE(watch.PeerGone()) << "bytes without a FIN: the peer is there";
  close(c.client);
  c.client = -1;
  EXPECT_TRUE(watch.PeerGone());
  char bytes[sizeof(close_notify)] = {};
  EXPECT_EQ(recv(c.served, bytes, sizeof(bytes), MSG_DONTWAIT), static_cast<ssize_t>(sizeof(bytes)))
      << "the watch left the bytes for the server";
}

TEST(ConnectionWatchTest, AResetPeerIsGone) {
  Connection c;
  ASSERT_GE(c.served, 0);
  ConnectionWatch watch = c.Watch();
  EXPECT_FALSE(watch.PeerGone());
  const linger abort_on_close{1, 0};
  ASSERT_EQ(setsockopt(c.client, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)), 0);
  close(c.client);  // sends RST
  c.client = -1;
  EXPECT_TRUE(watch.PeerGone());
}

TEST(ConnectionWatchTest, AConnectionThatIsNotFoundIsNeverGone) {
  ConnectionWatch watch(1, "127.0.0.1", 1);
  EXPECT_FALSE(watch.PeerGone());
}

}  // namespace
}  // namespace baton::serve
