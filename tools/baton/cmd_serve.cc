// `baton serve [CONFIG] [--plan PLAN] [--http HOST:PORT] ...`: opens a
// baton::Engine on the config (the embedded default models without one) and
// serves it over the KServe v2 REST protocol with Prometheus metrics
// (src/baton/serve/). SIGINT/SIGTERM: stop accepting, answer what is in
// flight, exit 0. Exit status 2 for usage and start-up errors.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/baton.h"
#include "baton/config/run_config.h"
#include "baton/core/file.h"
#include "baton/serve/http_server.h"
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
  std::string token_file;
  std::string tls_cert;
  std::string tls_key;
  int threads = 8;
  int max_request_mb = 64;
  int timeout_s = 10;
  bool quiet = false;
};

int Serve(const ServeArgs& args) {
  sigset_t stop_signals = BlockStopSignals();

  serve::HttpOptions http;
  const size_t colon = args.http.rfind(':');
  const std::string port = colon == std::string::npos ? "" : args.http.substr(colon + 1);
  int64_t port_value = -1;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(port, &port_value) || port_value < 0 ||
      port_value > 65535 || port.find_first_not_of("0123456789") != std::string::npos) {
    std::cerr << "baton serve: --http wants HOST:PORT with a port in 0..65535 (0 picks a free one), got '"
              << args.http << "'\n";
    return 2;
  }
  http.host = args.http.substr(0, colon);
  if (http.host.size() > 2 && http.host.front() == '[' && http.host.back() == ']') {
    http.host = http.host.substr(1, http.host.size() - 2);
  }
  http.port = static_cast<int>(port_value);
  http.threads = args.threads;
  http.max_request_bytes = static_cast<size_t>(args.max_request_mb) << 20;
  http.read_timeout = std::chrono::seconds(args.timeout_s);
  http.write_timeout = std::chrono::seconds(args.timeout_s);
  http.tls_cert = args.tls_cert;
  http.tls_key = args.tls_key;
  if (!args.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadRegularFile(args.token_file, 4096, "token file");
    if (!token.ok()) {
      std::cerr << "baton serve: " << token.status().message() << "\n";
      return 2;
    }
    http.token = std::string(absl::StripAsciiWhitespace(*token));
    if (http.token.empty()) {
      std::cerr << "baton serve: token file '" << args.token_file << "' is empty; put the token in it\n";
      return 2;
    }
  }

  EngineOptions options;
  options.plan_path = args.plan;
  options.profile_path = args.profile;
  options.cache_dir = args.cache_dir;
  options.no_profile = args.no_profile;
  options.progress = StderrProgress(args.quiet);
  Result<std::unique_ptr<Engine>> engine =
      args.config.empty()
          ? Engine::OpenText(config::ToYaml(*LoadConfigOrDefault("")), "", options)
          : Engine::Open(args.config, options);
  if (!engine.ok()) {
    std::cerr << "baton serve: " << engine.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<serve::HttpServer>> server = serve::HttpServer::Start(**engine, http);
  if (!server.ok()) {
    std::cerr << "baton serve: " << server.status().message() << "\n";
    return 2;
  }
  std::vector<std::string> names;
  for (const ModelInfo& m : (*engine)->Models()) names.push_back(m.name);
  // Tests and scripts read the port from this line.
  std::cout << "baton serve: KServe v2 HTTP listening on " << http.host << ":" << (*server)->port()
            << " (models: " << absl::StrJoin(names, ", ") << ")" << std::endl;
  if (http.token.empty() || http.tls_cert.empty()) {
    std::cerr << "baton serve: without " << (http.tls_cert.empty() ? "TLS" : "a token")
              << ", so serving on loopback only\n";
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::cerr << "baton serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
            << ": no new connections; answering what is in flight\n";
  (*server)->Stop();
  (*engine)->Close();
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve the config's models over the KServe v2 / Triton REST protocol (docs/serve.md). Exit status: 0 after "
      "SIGINT/SIGTERM, 2 usage or start-up error.");
  cmd->add_option("CONFIG", args->config, "YAML run configuration (default: the embedded models)");
  cmd->add_option("--plan", args->plan, "Carry out this plan (`baton plan`)");
  cmd->add_option("--profile", args->profile, "Use this profile (default: the plan's, else one cached per config)");
  cmd->add_flag("--no-profile", args->no_profile,
                "No profiling: plan from estimated costs (whole, capability, balanced)");
  cmd->add_option("--cache-dir", args->cache_dir,
                  "Zoo models and profiles (default: $BATON_CACHE_DIR or ~/.cache/baton)");
  cmd->add_option("--http", args->http, "HOST:PORT for KServe v2 REST and /metrics (default 127.0.0.1:8000)");
  cmd->add_option("--token-file", args->token_file, "File with the bearer token requests must carry");
  cmd->add_option("--tls-cert", args->tls_cert, "PEM server certificate chain (HTTPS)");
  cmd->add_option("--tls-key", args->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--threads", args->threads, "Requests served at once (default 8)")->check(IntIn(1, 256));
  cmd->add_option("--max-request-mb", args->max_request_mb, "Largest request body, in MiB (default 64)")
      ->check(IntIn(1, 4096));
  cmd->add_option("--timeout-s", args->timeout_s, "Cut off a client that sends or reads slower (default 10)")
      ->check(IntIn(1, 3600));
  cmd->add_flag("-q,--quiet", args->quiet, "No start-up progress lines");
  cmd->callback([args, exit_code] {
    *exit_code = Serve(*args);
    if (*exit_code == 0) ExitCleanlyAfterSignal();
  });
}

}  // namespace baton::cli
