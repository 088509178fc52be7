#include "baton/serve/http_connection.h"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace baton::serve {

namespace {

using Clock = std::chrono::steady_clock;

// How often a connection idle between requests looks whether the server stops.
constexpr std::chrono::milliseconds kStopCheck{100};
constexpr size_t kReadBuffer = 16 << 10;
// How long a closing connection with bytes unread waits for its client to close.
constexpr std::chrono::seconds kLinger{1};

void IpAndPort(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int got = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                       : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (got != 0) return;
  if (addr.ss_family == AF_INET) {
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  } else {
    return;
  }
  // Numeric, as the HTTP library writes it (ConnectionWatch compares with it).
  std::array<char, NI_MAXHOST> host{};
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host.data(), host.size(), nullptr, 0,
                  NI_NUMERICHOST) == 0) {
    ip = host.data();
  }
}

// One connection: the bytes under the HTTP library's parser, every wait
// bounded (see the header). The socket is non-blocking, so that no read or
// write (a TLS record that arrives in part included) can wait past a bound.
class Connection final : public httplib::Stream {
 public:
  Connection(int fd, const HttpLimits& limits) : fd_(fd), limits_(limits) {
    const int flags = fcntl(fd_, F_GETFL, 0);
    if (flags >= 0) fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  ~Connection() override {
    if (ssl_ != nullptr) SSL_free(ssl_);
    Linger();
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // TLS: the handshake, within request_timeout. False when it failed.
  bool AcceptTls(SSL_CTX* ctx) {
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return false;
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const Clock::time_point deadline = Clock::now() + limits_.request_timeout;
    while (true) {
      ERR_clear_error();
      const int r = SSL_accept(ssl_);
      if (r == 1) return true;
      const int err = SSL_get_error(ssl_, r);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return false;
      if (!Wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) return false;
    }
  }
  SSL* ssl() const { return ssl_; }

  // Waits, for at most keep_alive, until the next request begins to arrive
  // (or the peer closes); false when it did not or `stopping` says so.
  bool AwaitRequest(const std::function<bool()>& stopping) {
    if (Buffered()) return true;
    const Clock::time_point until = Clock::now() + limits_.keep_alive;
    while (!stopping()) {
      const Clock::time_point now = Clock::now();
      if (now >= until) return false;
      pollfd p{fd_, POLLIN, 0};
      const auto step = std::min<Clock::duration>(until - now, kStopCheck);
      const int r = poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(step).count()));
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
    return false;
  }

  void BeginRequest() {
    request_start_ = Clock::now();
    bytes_in_ = 0;
    head_bytes_ = 0;
    in_head_ = true;
    responding_ = false;
  }
  void HeadReceived() { in_head_ = false; }
  RequestCut cut() const { return cut_; }
  bool responded() const { return responding_; }

  // Ends the connection; a TLS one says close_notify first when `graceful`.
  void Finish(bool graceful) {
    if (ssl_ != nullptr && graceful && cut_ == RequestCut::kNone) SSL_shutdown(ssl_);  // one try, no wait
  }

  bool is_readable() const override {
    return Buffered() || Wait(POLLIN, ReadDeadline());
  }
  bool is_writable() const override { return Wait(POLLOUT, Clock::now() + limits_.io_timeout); }

  ssize_t read(char* ptr, size_t size) override {
    if (size == 0) return 0;
    if (buffer_at_ < buffer_end_) {
      const size_t n = std::min(size, buffer_end_ - buffer_at_);
      std::copy_n(buffer_.data() + buffer_at_, n, ptr);
      buffer_at_ += n;
      return static_cast<ssize_t>(n);
    }
    if (cut_ != RequestCut::kNone) return -1;
    size_t want = kReadBuffer;
    if (in_head_) {
      if (head_bytes_ >= limits_.max_head_bytes) {
        cut_ = RequestCut::kHeadTooLarge;
        return -1;
      }
      want = std::min(want, limits_.max_head_bytes - head_bytes_);
    }
    // A large read (a body) goes straight to the caller.
    const bool direct = !in_head_ && size >= kReadBuffer;
    const ssize_t n = Receive(direct ? ptr : buffer_.data(), direct ? std::min<size_t>(size, INT_MAX) : want);
    if (n <= 0) return n;
    const auto got = static_cast<size_t>(n);
    bytes_in_ += got;
    if (in_head_) head_bytes_ += got;
    if (direct) return n;
    const size_t out = std::min(size, got);
    std::copy_n(buffer_.data(), out, ptr);
    buffer_at_ = out;
    buffer_end_ = got;
    return static_cast<ssize_t>(out);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!responding_) {
      responding_ = true;
      response_start_ = Clock::now();
      bytes_out_ = 0;
    }
    const int len = static_cast<int>(std::min<size_t>(size, INT_MAX));
    while (true) {
      const Clock::time_point deadline = Deadline(response_start_, bytes_out_);
      ssize_t n = 0;
      short want = POLLOUT;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int r = SSL_write(ssl_, ptr, len);
        if (r > 0) {
          n = r;
        } else {
          const int err = SSL_get_error(ssl_, r);
          if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return -1;
          want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        }
      } else {
        n = send(fd_, ptr, static_cast<size_t>(len), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        n = std::max<ssize_t>(n, 0);
      }
      if (n > 0) {
        bytes_out_ += static_cast<size_t>(n);
        return n;
      }
      if (!Wait(want, deadline)) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { IpAndPort(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { IpAndPort(fd_, false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  // Closing a socket with bytes unread makes the kernel reset the
  // connection, and the client may then lose the answer just written (a 413,
  // 408 or 431 for a request whose rest was not read). As nginx does, the
  // sending side is closed first and what the client still sends is read and
  // dropped, for at most kLinger, until it closes.
  void Linger() {
    int unread = 0;
    if (ioctl(fd_, FIONREAD, &unread) != 0 || unread == 0) return;
    shutdown(fd_, SHUT_WR);
    const Clock::time_point until = Clock::now() + kLinger;
    std::array<char, 16 << 10> scratch;
    for (Clock::time_point now = Clock::now(); now < until; now = Clock::now()) {
      pollfd p{fd_, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(until - now).count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || recv(fd_, scratch.data(), scratch.size(), 0) <= 0) return;
    }
  }

  bool Buffered() const { return buffer_at_ < buffer_end_ || (ssl_ != nullptr && SSL_pending(ssl_) > 0); }

  // `start` plus request_timeout plus the allowance for `bytes` moved.
  Clock::time_point Deadline(Clock::time_point start, size_t bytes) const {
    Clock::duration allowance{0};
    if (limits_.min_bytes_per_s > 0) {
      allowance = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(static_cast<double>(bytes) / static_cast<double>(limits_.min_bytes_per_s)));
    }
    return start + limits_.request_timeout + allowance;
  }
  Clock::time_point ReadDeadline() const { return Deadline(request_start_, bytes_in_); }

  // Reads what is there (up to n bytes), waiting within the bounds; 0 at the
  // end of the stream, -1 on an error or a cut.
  ssize_t Receive(char* to, size_t n) {
    while (true) {
      short want = POLLIN;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int r = SSL_read(ssl_, to, static_cast<int>(n));
        if (r > 0) return r;
        const int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return -1;
        want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
      } else {
        const ssize_t r = recv(fd_, to, n, 0);
        if (r >= 0) return r;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
      }
      if (!Wait(want, ReadDeadline())) return -1;
    }
  }

  // Waits until the socket is ready for `events`, for at most io_timeout and
  // not past `deadline`; records the cut when it is not.
  bool Wait(short events, Clock::time_point deadline) const {
    const Clock::time_point idle_until = Clock::now() + limits_.io_timeout;
    const Clock::time_point until = std::min(idle_until, deadline);
    while (true) {
      const Clock::time_point now = Clock::now();
      if (now >= until) {
        cut_ = until == deadline && deadline < idle_until ? RequestCut::kDeadline : RequestCut::kIdle;
        return false;
      }
      pollfd p{fd_, events, 0};
      const int r = poll(&p, 1, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(until - now).count()));
      if (r > 0) return true;  // ready, or an error the next call reports
      if (r < 0 && errno != EINTR) return false;
    }
  }

  const int fd_;
  const HttpLimits limits_;
  SSL* ssl_ = nullptr;
  std::array<char, kReadBuffer> buffer_{};
  size_t buffer_at_ = 0, buffer_end_ = 0;
  Clock::time_point request_start_ = Clock::now();
  size_t bytes_in_ = 0;
  size_t head_bytes_ = 0;
  bool in_head_ = true;
  bool responding_ = false;
  Clock::time_point response_start_;
  size_t bytes_out_ = 0;
  mutable RequestCut cut_ = RequestCut::kNone;  // set by the waits
};

thread_local Connection* current = nullptr;

void WriteAll(Connection& conn, const std::string& bytes) {
  for (size_t at = 0; at < bytes.size();) {
    const ssize_t n = conn.write(bytes.data() + at, bytes.size() - at);
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

// httplib's Server with its connections served by Connection (it keeps the
// parsing, routing and answers).
class BoundedServer final : public httplib::Server {
 public:
  BoundedServer(const HttpLimits& limits, SSL_CTX* ctx, std::function<void(RequestCut)> on_cut)
      : limits_(limits), ctx_(ctx), on_cut_(std::move(on_cut)) {}
  ~BoundedServer() override {
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  }
  BoundedServer(const BoundedServer&) = delete;
  BoundedServer& operator=(const BoundedServer&) = delete;

 private:
  bool process_and_close_socket(socket_t sock) override {
    Connection conn(sock, limits_);
    if (ctx_ != nullptr && !conn.AcceptTls(ctx_)) return false;
    current = &conn;
    SSL* ssl = conn.ssl();
    const std::function<void(httplib::Request&)> setup = [ssl](httplib::Request& req) { req.ssl = ssl; };
    bool ok = false;
    size_t left = keep_alive_max_count_;
    while (svr_sock_ != INVALID_SOCKET && left > 0 &&
           conn.AwaitRequest([this] { return svr_sock_ == INVALID_SOCKET; })) {
      conn.BeginRequest();
      bool closed = false;
      ok = process_request(conn, /*close_connection=*/left == 1, closed, ssl != nullptr ? setup : nullptr);
      if (!ok && conn.cut() != RequestCut::kNone && !conn.responded()) {
        // Cut in its first line: the library gave up without an answer.
        const RequestCut cut = conn.cut();
        const std::string body =
            nlohmann::json({{"error", MessageOfCut(cut, limits_)}}).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        const std::string head =
            absl::StrCat("HTTP/1.1 ", StatusOfCut(cut), cut == RequestCut::kHeadTooLarge ? " Request Header Fields Too Large"
                                                                                         : " Request Timeout",
                         "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                         "\r\nConnection: close\r\n\r\n");
        WriteAll(conn, head + body);
      }
      if (conn.cut() != RequestCut::kNone && on_cut_) on_cut_(conn.cut());
      if (!ok || closed || conn.cut() != RequestCut::kNone) break;
      --left;
    }
    current = nullptr;
    conn.Finish(ok);
    return ok;
  }

  const HttpLimits limits_;
  SSL_CTX* const ctx_;
  const std::function<void(RequestCut)> on_cut_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<httplib::Server>> NewBoundedHttpServer(const HttpLimits& limits,
                                                                      const std::string& tls_cert,
                                                                      const std::string& tls_key,
                                                                      std::function<void(RequestCut)> on_cut) {
  SSL_CTX* ctx = nullptr;
  if (!tls_cert.empty()) {
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, tls_cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, tls_key.c_str(), SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      if (ctx != nullptr) SSL_CTX_free(ctx);
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("the TLS certificate '", tls_cert, "' or key '", tls_key,
                                                     "' cannot be used (not readable, not PEM, or not a pair)"));
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  }
  return std::make_unique<BoundedServer>(limits, ctx, std::move(on_cut));
}

void HeadReceived() {
  if (current != nullptr) current->HeadReceived();
}

RequestCut CurrentCut() { return current != nullptr ? current->cut() : RequestCut::kNone; }

int CurrentSocket() { return current != nullptr ? current->socket() : -1; }

int StatusOfCut(RequestCut cut) { return cut == RequestCut::kHeadTooLarge ? 431 : 408; }

std::string MessageOfCut(RequestCut cut, const HttpLimits& limits) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  switch (cut) {
    case RequestCut::kHeadTooLarge:
      return absl::StrCat("the request's line and headers take more than ", limits.max_head_bytes >> 10,
                          " KiB; send fewer or shorter headers");
    case RequestCut::kIdle:
      return absl::StrCat("nothing of the request arrived for ", duration_cast<seconds>(limits.io_timeout).count(),
                          " s (--timeout-s); send it without pausing");
    case RequestCut::kDeadline:
      return absl::StrCat("the request did not arrive in time: it may take ",
                          duration_cast<seconds>(limits.request_timeout).count(),
                          " s (--request-timeout-s) plus 1 s for each ", limits.min_bytes_per_s >> 10,
                          " KiB it carries (--min-rate-kib-s); send faster, or raise them");
    case RequestCut::kNone:
      break;
  }
  return "";
}

}  // namespace baton::serve
