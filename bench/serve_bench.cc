// Latency `baton serve` adds per request over loopback, against the
// in-process baton::Engine::Infer (issue targets: <= 150 us median for gRPC,
// <= 300 us for HTTP/JSON).
//
// Model: y = x * 2 + 1 over float[1, 64] (bench/bench_common.h), one 1-thread
// CPU PU, high-level `whole`, no profile. One engine serves all three sides:
// direct Infer calls, a gRPC ModelInfer client (raw contents, one channel),
// and an HTTP/JSON client (one keep-alive connection), all in this process
// over 127.0.0.1, and an empty gRPC call (ServerLive) for the transport's own
// cost. Rounds rotate which side goes first; each side times
// `calls` sequential requests. Printed: per-call medians over the rounds (wall
// time, and the process's context switches and CPU time while that side
// ran), the medians of the per-round differences, and how this machine's idle CPUs
// wait (on a VM with the cpuidle-haltpoll driver, guest_halt_poll_ns = 0 makes
// every wake-up of an idle vCPU go through the hypervisor, which dominates a
// loopback round trip). Numbers go in docs/benchmarks.md.
//
//   serve_bench [--rounds N] [--calls N] [--run-here-up-to-us N] [--only SIDE]
//   (--benchmark_* flags: a smoke run; --run-here-up-to-us: both servers'
//   run_here_up_to (GrpcOptions, HttpOptions), default theirs, 0 = hand every request to
//   the engine's PU worker; --only engine|grpc|http|live|tcp: time that side
//   alone, e.g. under `perf record`, and print no differences)
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "bench_common.h"
#include "baton/baton.h"
#include "baton/core/file.h"
#include "baton/serve/grpc_server.h"
#include "baton/serve/http_server.h"
#include "httplib.h"
#include "inference/grpc_service.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using baton::Tensor;

// A one-line sysfs setting without its newline, or "-" when there is none.
std::string Setting(const std::string& path) {
  absl::StatusOr<std::string> text = baton::ReadRegularFile(path, 4096, "sysfs setting");
  if (!text.ok()) return "-";
  return std::string(absl::StripTrailingAsciiWhitespace(*text));
}

using baton::bench::Median;

// What every thread of this process has used so far: context switches
// (voluntary and involuntary) and CPU time (user and system, µs).
struct Usage {
  int64_t switches = 0;
  double cpu_us = 0;
};
Usage ProcessUsage() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  const auto us = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
  return {static_cast<int64_t>(u.ru_nvcsw) + u.ru_nivcsw, us(u.ru_utime) + us(u.ru_stime)};
}

constexpr int kSides = 5;  // engine, gRPC, HTTP, gRPC ServerLive, TCP echo

// A TCP echo over loopback between this process's threads, with TCP_NODELAY
// on both ends: the floor under any request-response protocol on this
// machine (two small writes and two wake-ups per round trip).
class TcpEcho {
 public:
  // False when a socket call failed (errno says why).
  bool Start() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener_, 1) != 0 || ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return false;
    }
    echo_ = std::thread([this] {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      NoDelay(fd);
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0 || !WriteAll(fd, buf, static_cast<size_t>(n))) break;
      }
      ::close(fd);
    });
    client_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (client_ < 0 || ::connect(client_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return false;
    NoDelay(client_);
    return true;
  }
  // One round trip of `message`.
  bool RoundTrip(const std::string& message) {
    if (!WriteAll(client_, message.data(), message.size())) return false;
    char buf[4096];
    size_t got = 0;
    while (got < message.size()) {
      const ssize_t n = ::read(client_, buf, std::min(sizeof(buf), message.size() - got));
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  }
  ~TcpEcho() {
    if (client_ >= 0) ::shutdown(client_, SHUT_RDWR);  // ends the echo thread's read
    if (listener_ >= 0) ::shutdown(listener_, SHUT_RDWR);  // or its accept
    if (echo_.joinable()) echo_.join();
    if (client_ >= 0) ::close(client_);
    if (listener_ >= 0) ::close(listener_);
  }

 private:
  static void NoDelay(int fd) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  static bool WriteAll(int fd, const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  int listener_ = -1;
  int client_ = -1;
  std::thread echo_;
};

}  // namespace

int main(int argc, char** argv) {
  int rounds = 15, calls = 1000;
  int run_here_us = -1;  // -1: GrpcOptions' default
  int only = -1;         // -1: every side; else the index in `sides` below
  const char* side_names[kSides] = {"engine", "grpc", "http", "live", "tcp"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (a == "--calls" && i + 1 < argc) {
      calls = std::atoi(argv[++i]);
    } else if (a == "--run-here-up-to-us" && i + 1 < argc) {
      run_here_us = std::atoi(argv[++i]);
    } else if (a == "--only" && i + 1 < argc) {
      const std::string side = argv[++i];
      for (int s = 0; s < kSides; ++s) {
        if (side == side_names[s]) only = s;
      }
      if (only < 0) {
        std::fprintf(stderr, "serve_bench: --only takes engine, grpc, http, live or tcp, not '%s'\n", side.c_str());
        return 2;
      }
    } else if (a.rfind("--benchmark_", 0) == 0) {
      rounds = 2;
      calls = 20;
    } else {
      std::fprintf(stderr, "usage: %s [--rounds N] [--calls N] [--run-here-up-to-us N] [--only engine|grpc|http|live|tcp]\n", argv[0]);
      return 2;
    }
  }
  constexpr int kN = 64;
  const fs::path dir = fs::temp_directory_path() / ("baton_serve_bench_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "affine.onnx", std::ios::binary) << baton::bench::AffineModel(kN);

  baton::EngineOptions eo;
  eo.no_profile = true;
  eo.cache_dir = (dir / "cache").string();
  auto engine = baton::Engine::OpenText(
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\n"
      "models: [{name: affine, path: affine.onnx}]\n"
      "policy: {high_level: whole, low_level: share}\n",
      dir.string(), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "serve_bench: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  baton::serve::GrpcOptions go;
  go.port = 0;
  if (run_here_us >= 0) go.run_here_up_to = std::chrono::microseconds(run_here_us);
  auto grpc_srv = baton::serve::GrpcServer::Start(**engine, go);
  baton::serve::HttpOptions ho;
  ho.port = 0;
  ho.run_here_up_to = go.run_here_up_to;  // as `baton serve --run-here-up-to-us` sets both
  auto http_srv = baton::serve::HttpServer::Start(**engine, ho);
  if (!grpc_srv.ok() || !http_srv.ok()) {
    std::fprintf(stderr, "serve_bench: cannot start the servers\n");
    return 1;
  }
  std::vector<float> x(kN, 0.5f);

  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*grpc_srv)->port()), grpc::InsecureChannelCredentials()));
  inference::ModelInferRequest request;
  request.set_model_name("affine");
  auto* in = request.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(kN);
  request.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float)));

  httplib::Client http("127.0.0.1", (*http_srv)->port());
  http.set_keep_alive(true);
  http.set_tcp_nodelay(true);
  nlohmann::json body = {{"inputs", {{{"name", "x"}, {"datatype", "FP32"}, {"shape", {1, kN}}, {"data", x}}}}};
  const std::string body_text = body.dump();

  // Times `calls` sequential calls; `used` gets the process's context switches
  // and CPU time per call meanwhile (only this side runs, so they are its own:
  // client and server together).
  auto timed = [&](const std::function<bool()>& call, Usage* used = nullptr) {
    const Usage before = ProcessUsage();
    const auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) {
      if (!call()) {
        std::fprintf(stderr, "serve_bench: a request failed\n");
        std::exit(1);
      }
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    if (used != nullptr) {
      const Usage after = ProcessUsage();
      used->switches = after.switches - before.switches;
      used->cpu_us = after.cpu_us - before.cpu_us;
    }
    return us / calls;
  };
  TcpEcho echo;
  if (!echo.Start()) {
    std::perror("serve_bench: the TCP echo");
    return 1;
  }
  const std::string echo_message(kN * sizeof(float), 'x');
  const std::function<bool()> sides[kSides] = {
      [&] {
        baton::Tensors t;
        t.emplace("x", Tensor::Borrow(baton::dtype::kFloat, {1, kN}, x.data(), x.size() * sizeof(float)));
        return (*engine)->Infer("affine", std::move(t)).ok();
      },
      [&] {
        grpc::ClientContext ctx;
        inference::ModelInferResponse resp;
        return stub->ModelInfer(&ctx, request, &resp).ok() && resp.raw_output_contents_size() == 1;
      },
      [&] {
        auto r = http.Post("/v2/models/affine/infer", body_text, "application/json");
        return r && r->status == 200;
      },
      [&] {
        grpc::ClientContext ctx;
        inference::ServerLiveResponse resp;
        return stub->ServerLive(&ctx, {}, &resp).ok() && resp.live();
      },
      [&] { return echo.RoundTrip(echo_message); },
  };
  const auto runs = [&](int s) { return only < 0 || only == s; };
  for (int s = 0; s < kSides; ++s) {
    if (runs(s)) timed(sides[s]);  // warm-up
  }
  std::vector<double> us[kSides], sw[kSides], cpu[kSides], grpc_over, http_over;
  for (int r = 0; r < rounds; ++r) {
    double t[kSides] = {};
    Usage w[kSides];
    for (int k = 0; k < kSides; ++k) {
      const int s = (r + k) % kSides;  // rotate which side goes first
      if (runs(s)) t[s] = timed(sides[s], &w[s]);
    }
    for (int s = 0; s < kSides; ++s) {
      if (!runs(s)) continue;
      us[s].push_back(t[s]);
      sw[s].push_back(static_cast<double>(w[s].switches) / calls);
      cpu[s].push_back(w[s].cpu_us / calls);
    }
    grpc_over.push_back(t[1] - t[0]);
    http_over.push_back(t[2] - t[0]);
  }
  std::printf(
      "serve_bench: float32[1,%d] affine model, %d rounds x %d sequential calls, rotating, loopback, gRPC and "
      "HTTP run here up to %lld us\n",
      kN, rounds, calls, static_cast<long long>(go.run_here_up_to.count()));
  const char* names[kSides] = {"Engine::Infer (in process)     ", "gRPC ModelInfer (raw contents) ",
                               "HTTP/JSON POST .../infer       ", "gRPC ServerLive (no inference) ",
                               "TCP echo, 256 B (no gRPC)      "};
  const char* notes[kSides] = {"", "", "", " (gRPC's transport alone)", " (this machine's loopback floor)"};
  for (int s = 0; s < kSides; ++s) {
    if (!runs(s)) continue;
    std::printf("  %s     median %.2f us/call, %.1f context switches/call, %.1f us of CPU/call%s\n", names[s],
                Median(us[s]), Median(sw[s]), Median(cpu[s]), notes[s]);
  }
  if (only < 0) {
    std::printf("  gRPC added (per-round difference)   median %.2f us/call (target <= 150)\n", Median(grpc_over));
    std::printf("  HTTP added (per-round difference)   median %.2f us/call (target <= 300)\n", Median(http_over));
  }
  std::printf("  idle CPUs: cpuidle driver %s, guest_halt_poll_ns %s\n",
              Setting("/sys/devices/system/cpu/cpuidle/current_driver").c_str(),
              Setting("/sys/module/haltpoll/parameters/guest_halt_poll_ns").c_str());
  (*grpc_srv)->Stop();
  (*http_srv)->Stop();
  (*engine)->Close();
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
