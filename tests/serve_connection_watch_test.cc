// serve::FindTcpConnection finds a served TCP connection by its two ends;
// serve::ConnectionWatch tells a peer that is still there from one that
// closed (with or without bytes left unread), half-closed or reset the
// connection, without reading from it.
#include "baton/serve/connection_watch.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "baton/baton.h"
#include "baton/serve/http_server.h"
#include "baton/zoo/zoo.h"
#include "wait_until.h"

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
  ConnectionWatch Watch() const { return ConnectionWatch(served); }
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

TEST(ConnectionWatchTest, NoConnectionIsNeverGone) {
  ConnectionWatch watch(-1);
  EXPECT_FALSE(watch.PeerGone());
}

// ShutdownTcpConnections wakes a thread blocked reading a connection of the
// port, and touches no other.
TEST(ShutdownTcpConnectionsTest, ShutsTheConnectionsOfOnePort) {
  Connection c, other;
  ASSERT_GE(c.served, 0);
  ASSERT_GE(other.served, 0);
  bool woke = false;
  std::thread reader([&] {
    char byte = 0;
    woke = recv(c.served, &byte, 1, 0) == 0;  // blocks until shut down
  });
  EXPECT_EQ(ShutdownTcpConnections(PortOf(c.listener)), 1);
  reader.join();
  EXPECT_TRUE(woke);
  char byte = 0;
  EXPECT_EQ(recv(c.client, &byte, 1, 0), 0) << "the client sees the connection end";
  ConnectionWatch watch = other.Watch();
  EXPECT_FALSE(watch.PeerGone()) << "another port's connection is left alone";
}

// HttpServer::Stop does not wait for good for a client that never finishes
// its request: after stop_grace its connection is shut down.
TEST(HttpServerStopTest, AClientThatNeverFinishesItsRequestDoesNotHoldStop) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("baton_http_stop_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::string> bytes = zoo::Generate("squeezenet", /*small=*/true);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::ofstream(dir / "m.onnx", std::ios::binary) << *bytes;
  EngineOptions eo;
  eo.no_profile = true;
  eo.cache_dir = (dir / "cache").string();
  Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\nmodels: [{name: m, path: m.onnx}]\n"
      "policy: {high_level: whole}\n",
      dir.string(), eo);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  HttpOptions ho;
  ho.port = 0;
  ho.threads = 1;
  ho.read_timeout = std::chrono::seconds(600);  // the client alone would hold its worker for 10 minutes
  ho.stop_grace = std::chrono::seconds(1);
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(**engine, ho);
  ASSERT_TRUE(server.ok()) << server.status();
  const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string half = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n";  // no blank line: unfinished
  ASSERT_EQ(send(client, half.data(), half.size(), 0), static_cast<ssize_t>(half.size()));
  // The worker is in the request once it has read what was sent: the served
  // end's receive queue (this process's own socket) is then empty.
  std::optional<int> served;
  ASSERT_TRUE(baton::testing::WaitUntil([&] {  // once the server has accepted it
    served = FindTcpConnection((*server)->port(), "127.0.0.1", PortOf(client));
    return served.has_value();
  }));
  ASSERT_TRUE(baton::testing::WaitUntil([&] {
    int waiting = -1;
    return ioctl(*served, FIONREAD, &waiting) == 0 && waiting == 0;
  }));
  std::atomic<bool> stopped{false};
  std::thread stop([&] {
    (*server)->Stop();
    stopped = true;
  });
  const bool in_time = baton::testing::WaitUntil([&] { return stopped.load(); }, std::chrono::seconds(120));
  if (!in_time) shutdown(client, SHUT_RDWR);  // let the test end
  stop.join();
  EXPECT_TRUE(in_time) << "Stop waited for the unfinished request";
  EXPECT_EQ((*server)->connections_shut(), 1);
  char byte = 0;
  EXPECT_LE(recv(client, &byte, 1, 0), 0) << "the client's connection was closed";
  close(client);
  (*engine)->Close();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace baton::serve
