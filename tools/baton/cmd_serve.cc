// `baton serve [CONFIG] [--plan PLAN] [--grpc HOST:PORT] [--http HOST:PORT] ...`:
// opens a baton::Engine on the config (the embedded default models without
// one) and serves it over the KServe v2 protocol, gRPC and REST, with
// Prometheus metrics (src/baton/serve/). SIGINT/SIGTERM while starting: the
// start-up ends at its next step (profiling within one measurement), exit 0.
// SIGINT/SIGTERM while serving: stop accepting, answer what is in
// flight (cancel what is left after --exit-timeout-secs), exit 0, or 1 when
// a cancelled run has still not ended 5 s later; a second signal exits at
// once with 128 + the signal. Exit status 2 for usage and start-up errors.
// --model-control-mode explicit: the --load-model models at start, then the
// config's models loaded and unloaded on request (serve::ServedEngine).

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/baton.h"
#include "baton/app/setup.h"
#include "baton/config/run_config.h"
#include "baton/core/file.h"
#include "baton/serve/auth.h"
#include "baton/serve/grpc_server.h"
#include "baton/serve/http_server.h"
#include "baton/serve/served_engine.h"
#include "baton/serve/server.h"
#include "baton/serve/shared_memory.h"
#include "commands.h"
#include "library.h"
#include "validators.h"

namespace baton::cli {

namespace {

struct ServeArgs {
  std::string config;
  std::string plan;
  std::string profile;
  std::string cache_dir;
  bool no_profile = false;
  std::string http = "127.0.0.1:8000";
  std::string grpc = "127.0.0.1:8001";
  bool no_http = false;
  bool no_grpc = false;
  int grpc_max_streams = 100;
  int stream_in_flight = 64;
  int grpc_memory_mb = 0;  // 0 = GrpcOptions' default
  int grpc_threads = 1;
  int run_here_up_to_us = 100;
  std::string token_file;
  std::string tls_cert;
  std::string tls_key;
  int threads = 8;
  int max_request_mb = 64;
  int timeout_s = 10;
  int request_timeout_s = 60;
  int min_rate_kib_s = 64;
  int max_idle_connections = 1024;
  int max_waiting_infer = 64;
  bool allow_client_shm = false;
  std::string trace;
  int64_t trace_max_events = 1'000'000;
  int exit_timeout_s = 30;
  std::string model_control_mode = "none";
  std::vector<std::string> load_models;
  bool quiet = false;
};

// How long the runs of cancelled requests get to end, past --exit-timeout-secs.
// ONNX Runtime stops a run between operators, so a cancelled run normally
// ends within milliseconds; one inside a single long operator does not.
constexpr std::chrono::seconds kStopSlack{5};

// Exits the process (status 1) unless destroyed within `limit` of its
// construction: stopping the server never waits longer than that.
class ExitAfter {
 public:
  explicit ExitAfter(std::chrono::seconds limit)
      : limit_(limit), thread_([this] {
          std::unique_lock lock(mu_);
          if (cv_.wait_for(lock, limit_, [this] { return done_; })) return;
          std::fprintf(stderr,
                       "baton serve: still stopping %lld s after the signal: a cancelled run has not ended (ONNX "
                       "Runtime stops a run only between operators); exiting without it\n",
                       static_cast<long long>(limit_.count()));
          std::fflush(nullptr);
          std::_Exit(1);
        }) {}
  ~ExitAfter() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  ExitAfter(const ExitAfter&) = delete;
  ExitAfter& operator=(const ExitAfter&) = delete;

 private:
  const std::chrono::seconds limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: it uses the members above
};

int Serve(const ServeArgs& args) {
  // Before any thread starts. A second signal while stopping exits at once.
  StopOnSignal stop_signal("stopping the start-up at its next step", "leaving what is in flight unanswered",
                           "baton serve");

  if (args.no_http && args.no_grpc) {
    std::cerr << "baton serve: --no-http and --no-grpc together leave nothing to serve; drop one\n";
    return 2;
  }
  serve::HttpOptions http;
  serve::GrpcOptions grpc;
  absl::Status address = absl::OkStatus();
  if (args.grpc.starts_with("unix:")) {
    grpc.unix_path = args.grpc.substr(5);
  } else {
    address = serve::ParseHostPort(args.grpc, "--grpc", grpc.host, grpc.port);
  }
  if (address.ok()) address = serve::ParseHostPort(args.http, "--http", http.host, http.port);
  if (!address.ok()) {
    std::cerr << "baton serve: " << address.message() << "\n";
    return 2;
  }
  http.stop_grace = std::chrono::seconds(args.exit_timeout_s);
  grpc.stop_grace = http.stop_grace;
  http.threads = args.threads;
  http.max_request_bytes = static_cast<size_t>(args.max_request_mb) << 20;
  http.read_timeout = std::chrono::seconds(args.timeout_s);
  http.write_timeout = std::chrono::seconds(args.timeout_s);
  http.request_timeout = std::chrono::seconds(args.request_timeout_s);
  http.min_bytes_per_s = static_cast<size_t>(args.min_rate_kib_s) << 10;
  http.max_idle_connections = args.max_idle_connections;
  http.max_waiting_infer = args.max_waiting_infer;
  http.tls_cert = args.tls_cert;
  http.tls_key = args.tls_key;
  if (!args.token_file.empty()) {
    absl::StatusOr<std::string> token = serve::ReadTokenFile(args.token_file);
    if (!token.ok()) {
      std::cerr << "baton serve: " << token.status().message() << "\n";
      return 2;
    }
    http.token = *std::move(token);
  }
  grpc.max_request_bytes = http.max_request_bytes;
  grpc.max_streams_per_connection = args.grpc_max_streams;
  grpc.max_stream_in_flight = args.stream_in_flight;
  grpc.threads = args.grpc_threads;
  grpc.memory_quota_bytes = static_cast<size_t>(args.grpc_memory_mb) << 20;
  grpc.run_here_up_to = std::chrono::microseconds(args.run_here_up_to_us);
  http.run_here_up_to = grpc.run_here_up_to;
  grpc.token = http.token;
  grpc.tls_cert = http.tls_cert;
  grpc.tls_key = http.tls_key;
  if (args.allow_client_shm) {
    grpc.shared_memory = std::make_shared<serve::SharedMemoryRegistry>(serve::SharedMemoryRegistry::kMaxRegions,
                                                                       http.max_request_bytes);
    http.shared_memory = grpc.shared_memory;
  }

  EngineOptions options;
  options.plan_path = args.plan;
  options.profile_path = args.profile;
  options.cache_dir = args.cache_dir;
  options.no_profile = args.no_profile;
  options.progress = StderrProgress(args.quiet);
  options.profile_progress = ProfileBar(args.quiet);
  options.trace = !args.trace.empty();
  options.trace_max_events = static_cast<size_t>(args.trace_max_events);
  options.stop = stop_signal.stop();
  if (options.trace) {
    // Written at exit: a path that cannot be written is a start-up error, not a lost trace.
    std::ofstream probe(args.trace, std::ios::app);
    if (!probe) {
      std::cerr << "baton serve: --trace: cannot write '" << args.trace << "': " << std::strerror(errno)
                << "; give a file in a writable folder\n";
      return 2;
    }
  }
  const bool explicit_control = args.model_control_mode == "explicit";
  if (!explicit_control && !args.load_models.empty()) {
    std::cerr << "baton serve: --load-model applies with --model-control-mode explicit only (without it every model of "
                 "the config is served)\n";
    return 2;
  }
  if (explicit_control && (!args.plan.empty() || options.trace)) {
    std::cerr << "baton serve: --model-control-mode explicit plans each set of loaded models as it changes: "
                 "--plan (a plan of a fixed set of models) and --trace (of one engine) do not apply\n";
    return 2;
  }
  // A signal while starting ends the start-up at its next step: a clean
  // stop with nothing in flight, so exit 0 as any stop on a signal does.
  auto start_failed = [&](const std::string& message, bool cancelled) {
    if (stop_signal.signal() != 0 && cancelled) {
      std::cerr << "baton serve: stopped while starting, before serving anything: " << message << "\n";
      return 0;
    }
    std::cerr << "baton serve: " << message << "\n";
    return 2;
  };
  const auto open = [&args, options](const std::vector<std::string>& models) {
    EngineOptions o = options;
    o.models = models;
    return args.config.empty() ? Engine::OpenText(config::ToYaml(*LoadConfigOrDefault("")), "", o)
                               : Engine::Open(args.config, o);
  };
  std::unique_ptr<Engine> engine;  // fixed (model control mode none)
  std::unique_ptr<serve::ServedEngine> served;
  if (explicit_control) {
    absl::StatusOr<config::RunConfig> config = LoadConfigOrDefault(args.config);
    if (!config.ok()) return start_failed(std::string(config.status().message()), false);
    std::vector<std::string> configured;
    for (const config::ModelConfig& m : config->models) configured.push_back(m.name);
    std::vector<std::string> initial = args.load_models;
    if (initial.size() == 1 && initial[0] == "*") initial = configured;
    // Each change opens an engine on the models then loaded; its progress
    // lines say what it does (profiling only what no profile holds yet).
    const bool quiet = args.quiet;
    auto explicit_open = [open, quiet](const std::vector<std::string>& models) {
      if (!quiet) std::cerr << "baton serve: opening the models [" << absl::StrJoin(models, ", ") << "]\n";
      Result<std::unique_ptr<Engine>> opened = open(models);
      if (!opened.ok()) {
        std::cerr << "baton serve: could not open [" << absl::StrJoin(models, ", ") << "]: "
                  << opened.status().message() << "\n";
      } else if (!quiet) {
        std::cerr << "baton serve: serving [" << absl::StrJoin(models, ", ") << "]\n";
      }
      return opened;
    };
    absl::StatusOr<std::unique_ptr<serve::ServedEngine>> s =
        serve::ServedEngine::Explicit(configured, std::move(initial), explicit_open);
    if (!s.ok()) return start_failed(std::string(s.status().message()), absl::IsCancelled(s.status()));
    served = *std::move(s);
  } else {
    Result<std::unique_ptr<Engine>> opened = open({});
    if (!opened.ok()) return start_failed(opened.status().message(), opened.status().code() == StatusCode::kCancelled);
    engine = std::move(opened).value();
    served = std::make_unique<serve::ServedEngine>(*engine);
  }
  stop_signal.SetWhatNext(absl::StrCat("no new connections; answering what is in flight (for up to ",
                                       args.exit_timeout_s, " s, --exit-timeout-secs; then it is cancelled)"));
  serve::ServerOptions front_ends;
  if (!args.no_grpc) front_ends.grpc = grpc;
  if (!args.no_http) front_ends.http = http;
  absl::StatusOr<std::unique_ptr<serve::Server>> server = serve::Server::Start(*served, std::move(front_ends));
  if (!server.ok()) {
    std::cerr << "baton serve: " << server.status().message() << "\n";
    return 2;
  }
  const serve::GrpcServer* grpc_server = (*server)->grpc();
  const serve::HttpServer* http_server = (*server)->http();
  std::vector<std::string> names = served->Loaded();
  if (names.empty()) names.push_back("none loaded");
  // Tests and scripts read the ports from these lines.
  auto shown = [](const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; };
  if (grpc_server) {
    std::cout << "baton serve: KServe v2 gRPC listening on "
              << (grpc.unix_path.empty() ? absl::StrCat(shown(grpc.host), ":", grpc_server->port())
                                         : absl::StrCat("unix:", grpc.unix_path))
              << " (models: " << absl::StrJoin(names, ", ") << ")" << std::endl;
  }
  if (http_server) {
    std::cout << "baton serve: KServe v2 HTTP listening on " << shown(http.host) << ":" << http_server->port()
              << " (models: " << absl::StrJoin(names, ", ") << ")" << std::endl;
  }
  if (explicit_control) {
    std::cerr << "baton serve: --model-control-mode explicit: loads and unloads the config's models ["
              << absl::StrJoin(served->configured(), ", ") << "] on request (the repository extension)\n";
  }
  if (http.token.empty() || http.tls_cert.empty()) {
    std::cerr << "baton serve: without " << (http.tls_cert.empty() ? "TLS" : "a token")
              << ", so serving on loopback only\n";
  }
  stop_signal.Wait();
  {
    // Both front-ends stop accepting, then answer what they have in flight
    // and cancel what is left after --exit-timeout-secs; then the engine
    // drains. All of it within kStopSlack more, or the process exits anyway.
    const ExitAfter bound(http.stop_grace + kStopSlack);
    (*server)->Stop();
    if (http_server != nullptr && http_server->connections_shut() > 0) {
      std::cerr << "baton serve: HTTP: " << http_server->connections_shut() << " connections still unfinished "
                << http.stop_grace.count() << " s after the signal were closed\n";
    }
    served.reset();  // explicit: closes the engines it opened
    if (engine) engine->Close();
  }
  if (options.trace) {
    Result<TraceSummary> written = engine->WriteTrace(args.trace);
    if (!written.ok()) {
      std::cerr << "baton serve: --trace: " << written.status().message() << "\n";
      return 1;
    }
    std::cerr << "baton serve: trace: " << written->runs << " partition runs written to " << args.trace
              << (written->dropped_events > 0
                      ? absl::StrCat(" (", written->dropped_events, " events over the limit left out)")
                      : std::string())
              << "\n";
  }
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve the config's models over the KServe v2 / Triton protocol, gRPC and REST (docs/serve.md). Exit status: 0 "
      "after SIGINT/SIGTERM (1 when a cancelled run did not end within 5 s), 2 usage or start-up error, 128 + the "
      "signal after a second signal.");
  cmd->add_option("CONFIG", args->config, "YAML run configuration (default: the embedded models)");
  cmd->add_option("--plan", args->plan, "Carry out this plan (`baton plan`)");
  cmd->add_option("--profile", args->profile, "Use this profile (default: the plan's, else one cached per config)");
  cmd->add_flag("--no-profile", args->no_profile,
                "No profiling: plan from estimated costs (whole, capability, balanced)");
  cmd->add_option("--cache-dir", args->cache_dir,
                  "Zoo models and profiles (default: $BATON_CACHE_DIR or ~/.cache/baton)");
  cmd->add_option("--grpc", args->grpc, "HOST:PORT, or unix:PATH for a Unix domain socket, for KServe v2 gRPC and gRPC health (default 127.0.0.1:8001)");
  cmd->add_option("--http", args->http, "HOST:PORT for KServe v2 REST and /metrics (default 127.0.0.1:8000)");
  cmd->add_flag("--no-grpc", args->no_grpc, "Serve REST only");
  cmd->add_flag("--no-http", args->no_http, "Serve gRPC only (no REST, no /metrics)");
  cmd->add_option("--grpc-max-streams", args->grpc_max_streams,
                  "gRPC calls at once on one connection (default 100)")
      ->check(IntIn(1, 10000));
  cmd->add_option("--grpc-memory-mb", args->grpc_memory_mb,
                  "gRPC's memory for messages being read and held, all connections together; past it new calls "
                  "are answered RESOURCE_EXHAUSTED (default 4 x --max-request-mb, at least 256)")
      ->check(IntIn(1, 1048576));
  cmd->add_option("--grpc-threads", args->grpc_threads,
                  "Threads that read, parse and answer gRPC calls (default 1: the fewest thread hand-overs per "
                  "call; more let large requests be parsed side by side)")
      ->check(IntIn(1, 64));
  cmd->add_option("--stream-in-flight", args->stream_in_flight,
                  "Requests of one ModelStreamInfer stream in flight before reading pauses (default 64)")
      ->check(IntIn(1, 10000));
  cmd->add_option("--run-here-up-to-us", args->run_here_up_to_us,
                  "gRPC and REST requests for a model whose recent runs took at most this many microseconds run "
                  "on the thread that read them when a PU is free, saving two thread hand-overs (0 = never; "
                  "default 100)")
      ->check(IntIn(0, 100000));
  cmd->add_option("--token-file", args->token_file, "File with the bearer token requests must carry");
  cmd->add_option("--tls-cert", args->tls_cert, "PEM server certificate chain (HTTPS)");
  cmd->add_option("--tls-key", args->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--threads", args->threads, "HTTP requests served at once (default 8)")->check(IntIn(1, 256));
  cmd->add_option("--max-request-mb", args->max_request_mb, "Largest request (HTTP body, gRPC message), in MiB (default 64)")
      ->check(IntIn(1, 2047));
  cmd->add_option("--timeout-s", args->timeout_s,
                  "Cut off an HTTP client when one read or write of its connection waits this long (default 10)")
      ->check(IntIn(1, 3600));
  cmd->add_option("--max-idle-connections", args->max_idle_connections,
                  "Kept-alive HTTP connections parked idle between requests, at most; a parked connection holds "
                  "no worker while another connection waits for one; past this many, a connection keeps its "
                  "worker until its next request (default 1024)")
      ->check(IntIn(0, 65536));
  cmd->add_option("--max-waiting-infer", args->max_waiting_infer,
                  "HTTP inference requests that may wait for the engine without holding one of the --threads, at "
                  "most; while one waits, a helper thread reads other requests (health checks, metrics, other "
                  "models); 0: a waiting request holds its worker (default 64)")
      ->check(IntIn(0, 4096));
  cmd->add_option("--request-timeout-s", args->request_timeout_s,
                  "An HTTP request must arrive (and its answer be taken) within this many seconds from its first "
                  "byte, plus 1 s per --min-rate-kib-s KiB it carries; else 408 and the connection is closed "
                  "(default 60)")
      ->check(IntIn(1, 86400));
  cmd->add_option("--min-rate-kib-s", args->min_rate_kib_s,
                  "With --request-timeout-s: the rate, in KiB/s, that earns a large request or answer more time "
                  "(0 = none; default 64)")
      ->check(IntIn(0, 1048576));
  cmd->add_flag("--allow-client-shm", args->allow_client_shm,
                "Let clients on this machine register POSIX shared memory regions and pass tensors through them "
                "(the KServe / Triton system shared memory extension; any process that can reach the server can "
                "then make it read or write shared memory objects the server's user can open)");
  cmd->add_option("--trace", args->trace,
                  "At exit, write a Chrome/Perfetto trace of the PU runs, queues and failed requests to this file");
  cmd->add_option("--trace-max-events", args->trace_max_events,
                  "With --trace: keep the first this many events, about 100 bytes of memory each (default 1000000)")
      ->check(CLI::Range(int64_t{1}, int64_t{100'000'000}));
  cmd->add_option("--exit-timeout-secs", args->exit_timeout_s,
                  "On SIGINT/SIGTERM, wait this long for the requests in flight to be answered, then cancel what "
                  "is left; a run still going 5 s later is left behind and the exit status is 1 (Triton's name; "
                  "default 30). A second signal exits at once")
      ->check(IntIn(0, 3600));
  cmd->add_option("--model-control-mode", args->model_control_mode,
                  "none: serve every model of the config from start to exit; explicit: serve the --load-model "
                  "models and load and unload the config's models on request (the repository extension), each change "
                  "planning the PUs for the models then loaded (Triton's name; default none)")
      ->check(CLI::IsMember({"none", "explicit"}));
  cmd->add_option("--load-model", args->load_models,
                  "With --model-control-mode explicit: a model of the config to load at start (repeat it for more; "
                  "'*' for all; default none, as Triton)");
  cmd->add_flag("-q,--quiet", args->quiet, "No start-up progress lines");
  cmd->callback([args, exit_code] {
    *exit_code = Serve(*args);
    if (*exit_code == 0) ExitCleanlyAfterSignal();
  });
}

}  // namespace baton::cli
