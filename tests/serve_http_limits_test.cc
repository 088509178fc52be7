// `baton serve`'s REST front-end against slow and oversized clients
// (serve/http_connection.h): a request that arrives too slowly, in its first
// line, its headers or its body, is answered 408 and its connection closed; an
// answer its client takes too slowly is given up; a request head past the
// bound is answered 431 after reading no more than the bound. Each read
// timeout is set to 10 minutes, so only the whole-request bounds can act.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/baton.h"
#include "baton/graph/builder.h"
#include "baton/serve/http_server.h"
#include "spin_model.h"
#include "test_certs.h"
#include "wait_until.h"

namespace baton::serve {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kFloats = int64_t{2} << 20;  // the echo model's tensor: 8 MiB
constexpr size_t kTensorBytes = static_cast<size_t>(kFloats) * sizeof(float);

class HttpLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("baton_http_limits_test_" + std::to_string(getpid())));
    fs::create_directories(*dir_);
    graph::GraphBuilder b;
    b.AddInput("x", dtype::kFloat, {int64_t{1}, kFloats});
    b.AddNode("Identity", {"x"}, {"y"});
    b.AddOutput("y", dtype::kFloat, {int64_t{1}, kFloats});
    absl::StatusOr<std::string> bytes = b.Serialize();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    std::ofstream(*dir_ / "echo.onnx", std::ios::binary) << *bytes;
    absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
    ASSERT_TRUE(spin.ok()) << spin.status();
    std::ofstream(*dir_ / "spin.onnx", std::ios::binary) << *spin;
    EngineOptions eo;
    eo.no_profile = true;
    eo.cache_dir = (*dir_ / "cache").string();
    Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
        "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\nmodels: [{name: echo, path: "
        "echo.onnx}, {name: spin, path: spin.onnx, execution_timeout_ms: 600000}]\npolicy: {high_level: whole}\n",
        dir_->string(), eo);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = engine->release();
  }
  static void TearDownTestSuite() {
    if (engine_ != nullptr) engine_->Close();
    delete engine_;
    engine_ = nullptr;
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  // A server on a free port whose reads and writes may each wait 10 minutes,
  // and whose requests must arrive within 1 s (no allowance for their size
  // unless `min_bytes_per_s`).
  void StartServer(size_t min_bytes_per_s = 0, bool tls = false, int threads = 2, int max_idle = 1024) {
    ASSERT_NE(engine_, nullptr);
    HttpOptions o;
    o.threads = threads;
    o.max_idle_connections = max_idle;
    o.keep_alive = std::chrono::minutes(10);
    if (tls) {
      ASSERT_TRUE(baton::testing::MakeSelfSignedCertificate(*dir_)) << "openssl could not make a certificate";
      o.tls_cert = (*dir_ / "self.pem").string();
      o.tls_key = (*dir_ / "self.key").string();
    }
    o.port = 0;
    o.read_timeout = o.write_timeout = std::chrono::minutes(10);
    o.request_timeout = std::chrono::seconds(1);
    o.min_bytes_per_s = min_bytes_per_s;
    o.max_head_bytes = 16 << 10;
    absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(*engine_, o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // A connection to the server; `receive_buffer` > 0 fixes the socket's
  // receive buffer (no autotuning) to about that many bytes.
  int Connect(int receive_buffer = 0) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (receive_buffer > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    fds_.push_back(fd);
    return fd;
  }

  static bool SendAll(int fd, const std::string& bytes) {
    for (size_t at = 0; at < bytes.size();) {
      const ssize_t n = send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  }

  // Everything the server sends until it closes (at most a minute of waiting).
  static std::string ReadToEnd(int fd) {
    std::string out;
    std::vector<char> buf(64 << 10);
    const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) continue;
      const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      out.append(buf.data(), static_cast<size_t>(n));
    }
    return out;
  }

  // Sends `start`, then one `drip` byte every 20 ms until the server answers;
  // the answer, or "" if it never came in 3000 drips (a minute).
  static std::string Trickle(int fd, const std::string& start, char drip) {
    if (!SendAll(fd, start)) return "";
    for (int i = 0; i < 3000; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 20) > 0) return ReadToEnd(fd);
      if (!SendAll(fd, std::string(1, drip))) return ReadToEnd(fd);
    }
    return "";
  }

  void TearDown() override {
    for (int fd : fds_) close(fd);
    if (server_) server_->Stop();
  }

  static fs::path* dir_;
  static Engine* engine_;
  std::unique_ptr<HttpServer> server_;
  std::vector<int> fds_;
};

fs::path* HttpLimitsTest::dir_ = nullptr;
Engine* HttpLimitsTest::engine_ = nullptr;

TEST_F(HttpLimitsTest, HeadersThatArriveTooSlowlyAreAnswered408) {
  StartServer();
  const std::string answer = Trickle(Connect(), "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ", 'a');
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 408")) << answer;
  EXPECT_THAT(answer, HasSubstr("--request-timeout-s"));
  EXPECT_EQ(server_->http_stats().cut_deadline, 1u);
}

TEST_F(HttpLimitsTest, ARequestLineThatArrivesTooSlowlyIsAnswered408) {
  StartServer();
  const std::string answer = Trickle(Connect(), "GET /v2/hea", 'l');
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 408")) << answer;
  EXPECT_THAT(answer, HasSubstr("Connection: close"));
  EXPECT_THAT(answer, HasSubstr("--request-timeout-s"));
}

TEST_F(HttpLimitsTest, ABodyThatArrivesTooSlowlyIsAnswered408) {
  // 1 s more per KiB: the drip, 50 bytes a second, earns 0.05 s a second.
  StartServer(/*min_bytes_per_s=*/1024);
  const std::string answer =
      Trickle(Connect(), "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{", ' ');
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 408")) << answer;
  EXPECT_THAT(answer, HasSubstr("--min-rate-kib-s"));
  EXPECT_EQ(server_->http_stats().cut_deadline, 1u);
}

// A client that sends its request and then does not read the (8 MiB) answer
// holds its worker only until the answer's deadline; it then gets what the
// server had written, not all of it.
TEST_F(HttpLimitsTest, AnAnswerTakenTooSlowlyIsGivenUp) {
  StartServer();
  const std::string header = absl::StrCat(R"({"inputs":[{"name":"x","shape":[1,)", kFloats,
                                          R"(],"datatype":"FP32","parameters":{"binary_data_size":)", kTensorBytes,
                                          R"(}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]})");
  const std::string request =
      absl::StrCat("POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ", header.size() + kTensorBytes,
                   "\r\nInference-Header-Content-Length: ", header.size(), "\r\n\r\n", header,
                   std::string(kTensorBytes, '\0'));
  const int fd = Connect(/*receive_buffer=*/4096);
  ASSERT_TRUE(SendAll(fd, request));
  ASSERT_TRUE(
      baton::testing::WaitUntil([&] { return server_->http_stats().cut_deadline == 1; }, std::chrono::minutes(2)))
      << "the server still waits to write the answer";
  const std::string answer = ReadToEnd(fd);
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 200"));
  EXPECT_LT(answer.size(), kTensorBytes) << "the answer was cut off";
}

// A request whose line and headers run past the bound is answered 431 once
// the bound is read; what the client sends on is not kept. Both an endless
// line and endless short lines.
TEST_F(HttpLimitsTest, ARequestHeadPastTheBoundIsAnswered431) {
  StartServer();
  for (const std::string& chunk : {std::string(4096, 'a'), std::string("X-Many: a\r\n")}) {
    const int fd = Connect();
    ASSERT_TRUE(SendAll(fd, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Long: "));
    size_t sent = 0;
    for (; sent < (size_t{64} << 20); sent += chunk.size()) {  // 64 MiB at most; the bound is 16 KiB
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 0) > 0 || !SendAll(fd, chunk)) break;
    }
    const std::string answer = ReadToEnd(fd);
    EXPECT_THAT(answer, StartsWith("HTTP/1.1 431")) << answer.substr(0, 300);
    EXPECT_THAT(answer, HasSubstr("16 KiB"));
    EXPECT_LT(sent, size_t{64} << 20) << "the server answered before the client stopped";
  }
  EXPECT_EQ(server_->http_stats().cut_head_too_large, 2u);

  const int fd = Connect();
  ASSERT_TRUE(SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_THAT(ReadToEnd(fd), HasSubstr("baton_http_requests_cut_total{reason=\"head_too_large\"} 2"));
}

// The bounds leave requests that keep to them alone, kept-alive and pipelined.
TEST_F(HttpLimitsTest, RequestsWithinTheBoundsAreServedOnOneConnection) {
  StartServer();
  const int fd = Connect();
  const std::string live = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(SendAll(fd, live + live + "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  const std::string answers = ReadToEnd(fd);
  size_t ok = 0;
  for (size_t at = answers.find("HTTP/1.1 200"); at != std::string::npos; at = answers.find("HTTP/1.1 200", at + 1)) {
    ++ok;
  }
  EXPECT_EQ(ok, 3u) << answers;
  EXPECT_THAT(answers, HasSubstr("\"ready\":true"));
  const HttpStats cuts = server_->http_stats();
  EXPECT_EQ(cuts.cut_idle + cuts.cut_deadline + cuts.cut_head_too_large, 0u);
}

// Over TLS the same bounds hold, also for a record that never completes
// (the server's TLS library waits for a whole record before it can hand
// over a byte): whole records sent a byte each, and one record begun and
// then fed a byte at a time.
TEST_F(HttpLimitsTest, OverTlsSlowRecordsAndAnUnfinishedRecordAreAnswered408) {
  StartServer(/*min_bytes_per_s=*/0, /*tls=*/true);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  for (const bool unfinished : {false, true}) {
    SCOPED_TRACE(unfinished ? "an unfinished record" : "a byte per record");
    const int fd = Connect();
    SSL* ssl = SSL_new(ctx);
    ASSERT_NE(ssl, nullptr);
    SSL_set_fd(ssl, fd);
    ASSERT_EQ(SSL_connect(ssl), 1) << ERR_error_string(ERR_get_error(), nullptr);  // not verified: a test server
    const std::string start = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    ASSERT_EQ(SSL_write(ssl, start.data(), static_cast<int>(start.size())), static_cast<int>(start.size()));
    // Application data, 16 KiB announced; its bytes go under the TLS library.
    if (unfinished) {
      ASSERT_TRUE(SendAll(fd, std::string("\x17\x03\x03\x40\x00", 5)));
    }
    bool answered = false;
    for (int i = 0; i < 3000 && !answered; ++i) {  // a minute at most
      pollfd p{fd, POLLIN, 0};
      answered = poll(&p, 1, 20) > 0;
      if (!answered) {
        const bool sent = unfinished ? SendAll(fd, "a") : SSL_write(ssl, "a", 1) == 1;
        ASSERT_TRUE(sent);
      }
    }
    ASSERT_TRUE(answered) << "the server still waits for the request";
    std::string answer;
    std::vector<char> buf(4096);
    for (int n; (n = SSL_read(ssl, buf.data(), static_cast<int>(buf.size()))) > 0;) {
      answer.append(buf.data(), static_cast<size_t>(n));
    }
    EXPECT_THAT(answer, StartsWith("HTTP/1.1 408")) << answer;
    SSL_free(ssl);
  }
  SSL_CTX_free(ctx);
  EXPECT_EQ(server_->http_stats().cut_deadline, 2u);
}

// One request on a kept-alive connection and its whole answer; "" if none.
std::string Ask(int fd, const std::string& path) {
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) return "";
  std::string answer;
  std::vector<char> buf(4096);
  const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (std::chrono::steady_clock::now() < until) {
    const size_t head = answer.find("\r\n\r\n");
    const size_t length_at = answer.find("Content-Length: ");
    if (head != std::string::npos && length_at != std::string::npos &&
        answer.size() >= head + 4 + std::stoul(answer.substr(length_at + 16))) {
      return answer;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) continue;
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) return answer;
    answer.append(buf.data(), static_cast<size_t>(n));
  }
  return answer;
}

// A connection kept alive between its requests does not hold its worker
// while another connection waits for one: with one worker and keep-alive
// at 10 minutes, each of three clients is answered on its own connection,
// again and again.
TEST_F(HttpLimitsTest, IdleKeptAliveConnectionsLeaveTheWorkerToOthers) {
  StartServer(0, false, /*threads=*/1);
  const int a = Connect(), b = Connect(), c = Connect();
  for (int round = 0; round < 3; ++round) {
    for (const int fd : {a, b, c}) {
      EXPECT_THAT(Ask(fd, "/v2/health/live"), StartsWith("HTTP/1.1 200")) << "round " << round << ", fd " << fd;
    }
  }
}

// Past max_idle_connections parked, a connection keeps its worker until
// its next request, as without parking; none is closed (a client may be
// sending on it), and those parked stay.
TEST_F(HttpLimitsTest, PastTheIdleBoundAConnectionKeepsItsWorker) {
  StartServer(0, false, /*threads=*/1, /*max_idle=*/1);
  const int a = Connect();
  ASSERT_THAT(Ask(a, "/v2/health/live"), StartsWith("HTTP/1.1 200"));
  const int b = Connect();  // a is parked for b: the bound
  ASSERT_THAT(Ask(b, "/v2/health/live"), StartsWith("HTTP/1.1 200"));
  EXPECT_EQ(server_->http_stats().idle_connections, 1u) << "a is parked; b is idle on the worker";
  const int c = Connect();  // b cannot be parked for c: it keeps the worker
  const std::string live = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(SendAll(c, live));
  EXPECT_THAT(Ask(b, "/v2/health/ready"), StartsWith("HTTP/1.1 200")) << "b, not closed, is served";
  close(b);  // c gets the worker
  fds_.erase(std::find(fds_.begin(), fds_.end(), b));
  EXPECT_THAT(Ask(c, "/v2/health/ready"), StartsWith("HTTP/1.1 200")) << "c's first answer";
  EXPECT_THAT(Ask(a, "/v2/health/ready"), StartsWith("HTTP/1.1 200")) << "a, parked, is still served";
}

// The threads of this process with this name (/proc/self/task/*/comm).
int ThreadsNamed(const std::string& name) {
  int n = 0;
  for (const fs::directory_entry& task : fs::directory_iterator("/proc/self/task")) {
    std::string comm;
    std::getline(std::ifstream(task.path() / "comm"), comm);
    n += comm == name;
  }
  return n;
}

// A request waiting for the engine lends its worker's place: with one
// worker, while `spin` requests run (until their clients go), other
// connections are still read: a health check, and a second spin request,
// which waits too. Once the clients close, the runs are cancelled and the
// helper threads end. Before, the first spin request held the only worker,
// and nothing else was read until it was answered.
TEST_F(HttpLimitsTest, RequestsWaitingForTheEngineLeaveTheWorkerToOthers) {
  StartServer(0, false, /*threads=*/1);
  const std::string body = R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.0]}]})";
  const std::string spin = absl::StrCat("POST /v2/models/spin/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                        "application/json\r\nContent-Length: ",
                                        body.size(), "\r\n\r\n", body);
  const int a = Connect();
  ASSERT_TRUE(SendAll(a, spin));
  ASSERT_TRUE(baton::testing::WaitUntil([&] { return engine_->Stats().in_flight == 1; }));
  const int b = Connect();
  EXPECT_THAT(Ask(b, "/v2/health/ready"), StartsWith("HTTP/1.1 200")) << "read while the only worker waits";
  const int c = Connect();
  ASSERT_TRUE(SendAll(c, spin));
  EXPECT_TRUE(baton::testing::WaitUntil([&] { return engine_->Stats().in_flight == 2; }))
      << "a second request for the engine was not read";
  const int d = Connect();
  EXPECT_THAT(Ask(d, "/v2/health/live"), StartsWith("HTTP/1.1 200"));
  EXPECT_GE(ThreadsNamed("http-helper"), 1);
  for (const int fd : {a, b, c, d}) {
    close(fd);
    fds_.erase(std::find(fds_.begin(), fds_.end(), fd));
  }
  EXPECT_TRUE(baton::testing::WaitUntil([&] { return engine_->Stats().in_flight == 0; }))
      << "the spin runs were not cancelled when their clients went";
  EXPECT_TRUE(baton::testing::WaitUntil([&] { return ThreadsNamed("http-helper") == 0; }))
      << "helpers outlived the waits they stood in for";
  const int e = Connect();
  EXPECT_THAT(Ask(e, "/v2/health/ready"), StartsWith("HTTP/1.1 200"));
}

TEST_F(HttpLimitsTest, OutOfRangeBoundsAreRefusedByName) {
  ASSERT_NE(engine_, nullptr);
  HttpOptions o;
  o.port = 0;
  o.request_timeout = std::chrono::seconds(0);
  absl::StatusOr<std::unique_ptr<HttpServer>> s = HttpServer::Start(*engine_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--request-timeout-s"));
  o.request_timeout = std::chrono::seconds(60);
  o.max_head_bytes = 10;
  s = HttpServer::Start(*engine_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("max_head_bytes"));
  o.max_head_bytes = 65536;
  o.max_idle_connections = -1;
  s = HttpServer::Start(*engine_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--max-idle-connections"));
  o.max_idle_connections = 1024;
  o.max_waiting_infer = 4097;
  s = HttpServer::Start(*engine_, o);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--max-waiting-infer must be in 0..4096"));
}

}  // namespace
}  // namespace baton::serve
