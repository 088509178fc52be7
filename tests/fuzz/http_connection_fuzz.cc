// Fuzz target: the bytes a client sends on one connection to `baton serve`'s
// REST front-end (serve/http_connection.h: baton's reads and writes under
// the HTTP library's parser, the request bounds, pipelining, parking). A
// server with small bounds listens on loopback for the whole run; each input
// is sent on a new connection, whose sending side is then closed, and
// everything the server answers is read until it closes. The server must
// close within 10 s of the client's end of input (its bounds are 2 s):
// otherwise the target traps, as a hang.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "baton/serve/http_connection.h"
#include "fuzz_target.h"
#include "httplib.h"

namespace baton::fuzz {

namespace {

struct Server {
  std::unique_ptr<httplib::Server> http;
  int port = -1;
  std::thread thread;
};

Server& TheServer() {
  static Server* server = [] {
    auto* s = new Server;  // for the whole run
    serve::HttpLimits limits;
    limits.io_timeout = std::chrono::seconds(2);
    limits.request_timeout = std::chrono::seconds(2);
    limits.min_bytes_per_s = 0;
    limits.max_head_bytes = 4096;
    limits.keep_alive = std::chrono::seconds(1);
    serve::HttpWorkers workers;
    workers.threads = 2;
    workers.max_waiting = 8;
    workers.max_idle = 4;
    absl::StatusOr<std::unique_ptr<httplib::Server>> made = serve::NewBoundedHttpServer(limits, workers, "", "", {});
    if (!made.ok()) __builtin_trap();
    s->http = *std::move(made);
    httplib::Server& srv = *s->http;
    srv.set_payload_max_length(1 << 16);
    srv.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      serve::HeadReceived();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    srv.Get("/a", [](const httplib::Request& req, httplib::Response& res) {
      res.set_content(req.get_header_value("X"), "text/plain");
    });
    srv.Post("/b", [](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& read) {
      size_t total = 0;
      const bool ok = read([&](const char*, size_t n) {
        total += n;
        return total <= (1 << 16);
      });
      res.status = ok ? 200 : (serve::CurrentCut() != serve::RequestCut::kNone ? 408 : 400);
      res.set_content(std::to_string(total), "text/plain");
    });
    s->port = srv.bind_to_any_port("127.0.0.1");
    if (s->port <= 0) __builtin_trap();
    httplib::Server* raw = s->http.get();
    s->thread = std::thread([raw] { raw->listen_after_bind(); });
    s->thread.detach();
    return s;
  }();
  return *server;
}

}  // namespace

std::vector<std::string> Seeds() {
  return {
      "GET /a HTTP/1.1\r\nHost: x\r\nX: hello\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
      "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "POST /b HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
      "POST /c HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /a HTTP/1.0\r\n\r\n",
  };
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const baton::fuzz::Server& server = baton::fuzz::TheServer();
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(server.port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return 0;
  }
  // The server may close early (a head too large): a failed send ends the input.
  for (size_t at = 0; at < size;) {
    const ssize_t n = send(fd, data + at, size - at, MSG_NOSIGNAL);
    if (n <= 0) break;
    at += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  std::array<char, 4096> buf;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    if (std::chrono::steady_clock::now() > until) __builtin_trap();  // the server held the connection
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    if (recv(fd, buf.data(), buf.size(), 0) <= 0) break;
  }
  close(fd);
  return 0;
}
