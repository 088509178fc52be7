// `baton agent --listen HOST:PORT [--config AGENT.yaml] ...`: serves the PUs of
// this machine to a remote high-level dispatcher over the agent protocol (see
// src/baton/net/agent_server.h and docs/agent.md) until SIGINT or SIGTERM.
// Prints exactly one line on stdout once it listens:
//   baton agent 'NAME' listening on HOST:PORT (PUs: cpu0, cpu1)
// Exit status: 0 stopped by a signal, 1 could not start (e.g. port in use),
// 2 bad flags or configuration.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "baton/config/run_config.h"
#include "baton/net/agent_server.h"
#include "commands.h"
#include "library.h"

namespace baton::cli {

namespace {

struct AgentArgs {
  std::string listen;
  std::string config;
  std::string name;
  std::string tls_cert;
  std::string tls_key;
  std::string client_ca;
  std::string token_file;
  std::string low_level = "fifo";
  int64_t max_partition_mb = net::kDefaultMaxPartitionBytes >> 20;
  int64_t max_loaded_mb = 0;  // 0 = half of the physical memory
  std::vector<std::string> allowed_ops;
  double load_timeout_s = 30;
  double max_run_s = 60;
  double client_budget_s = 0;          // 0 = none
  double client_budget_window_s = 60;
  double client_grace_s = 60;
  int64_t max_concurrent_loads = static_cast<int64_t>(net::AgentOptions{}.max_concurrent_loads);
  int64_t max_threads = net::AgentOptions{}.max_threads;
  int64_t max_answer_mb = static_cast<int64_t>(net::kMaxAnswerBytes >> 20);
};

constexpr int64_t kMaxPartitionMb = int64_t{1} << 20;  // 1 TiB: far above any real partition

int Agent(const AgentArgs& args) {
  sigset_t stop_signals = BlockStopSignals();

  if (args.listen.empty() || args.listen.find(':') == std::string::npos) {
    std::cerr << "baton agent: give --listen HOST:PORT (e.g. --listen 127.0.0.1:50051; port 0 picks a free one)"
              << (args.listen.empty() ? std::string() : ", got '" + args.listen + "'") << "\n";
    return 2;
  }
  if (args.max_partition_mb <= 0 || args.max_partition_mb > kMaxPartitionMb) {
    std::cerr << "baton agent: --max-partition-mb must be in 1.." << kMaxPartitionMb << ", got "
              << args.max_partition_mb << "\n";
    return 2;
  }
  if (args.max_loaded_mb < 0 || args.max_loaded_mb > kMaxPartitionMb) {
    std::cerr << "baton agent: --max-loaded-mb must be in 0.." << kMaxPartitionMb
              << " (0 = half of this machine's memory), got " << args.max_loaded_mb << "\n";
    return 2;
  }
  if (!(std::isfinite(args.load_timeout_s) && args.load_timeout_s > 0 && args.load_timeout_s <= 86400)) {
    std::cerr << "baton agent: --load-timeout-s must be > 0 and at most 86400 (a day), got " << args.load_timeout_s
              << "\n";
    return 2;
  }
  if (!(std::isfinite(args.max_run_s) && args.max_run_s > 0 && args.max_run_s <= 86400)) {
    std::cerr << "baton agent: --max-run-s must be > 0 and at most 86400 (a day), got " << args.max_run_s << "\n";
    return 2;
  }
  if (!(std::isfinite(args.client_budget_s) && args.client_budget_s >= 0 && args.client_budget_s <= 86400)) {
    std::cerr << "baton agent: --client-budget-s must be in 0..86400 (0 = no budget), got " << args.client_budget_s
              << "\n";
    return 2;
  }
  if (!(std::isfinite(args.client_budget_window_s) && args.client_budget_window_s >= 0.001 &&
        args.client_budget_window_s <= 86400)) {
    std::cerr << "baton agent: --client-budget-window-s must be in 0.001..86400, got " << args.client_budget_window_s
              << "\n";
    return 2;
  }
  if (!(std::isfinite(args.client_grace_s) && args.client_grace_s >= 0 && args.client_grace_s <= 604800)) {
    std::cerr << "baton agent: --client-grace-s must be in 0..604800 (a week), got " << args.client_grace_s << "\n";
    return 2;
  }
  if (args.max_concurrent_loads < 1 || args.max_concurrent_loads > static_cast<int64_t>(net::kMaxConcurrentLoads)) {
    std::cerr << "baton agent: --max-concurrent-loads must be in 1.." << net::kMaxConcurrentLoads << ", got "
              << args.max_concurrent_loads << "\n";
    return 2;
  }
  if (args.max_threads < net::kMinThreads || args.max_threads > net::kMaxThreads) {
    std::cerr << "baton agent: --max-threads must be in " << net::kMinThreads << ".." << net::kMaxThreads
              << " (each Execute stream and each Load holds one), got " << args.max_threads << "\n";
    return 2;
  }
  if (args.max_answer_mb < 1 || args.max_answer_mb > static_cast<int64_t>(net::kMaxAnswerBytes >> 20)) {
    std::cerr << "baton agent: --max-answer-mb must be in 1.." << (net::kMaxAnswerBytes >> 20)
              << " (one answer is one protobuf message, at most 2 GiB), got " << args.max_answer_mb << "\n";
    return 2;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  config::DeviceConfig device = config::DefaultAgentDevice(args.name.empty() ? "agent" : args.name, cores);
  if (!args.config.empty()) {
    absl::StatusOr<config::DeviceConfig> loaded = config::LoadAgentConfig(args.config);
    if (!loaded.ok()) {
      std::cerr << "baton agent: " << loaded.status().message() << "\n";
      return 2;
    }
    device = std::move(*loaded);
    if (!args.name.empty()) device.name = args.name;
  }

  AgentPus agent_pus = MakeAgentPus(device);
  std::vector<net::AgentPu>& pus = agent_pus.pus;

  net::AgentOptions options;
  options.name = device.name;
  options.listen = args.listen;
  options.security.tls_cert_file = args.tls_cert;
  options.security.tls_key_file = args.tls_key;
  options.security.client_ca_file = args.client_ca;
  options.security.token_file = args.token_file;
  options.low_level = args.low_level;
  options.max_partition_bytes = args.max_partition_mb << 20;
  options.max_loaded_param_bytes = args.max_loaded_mb << 20;
  options.allowed_ops = args.allowed_ops;
  options.load_timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(args.load_timeout_s * 1000)));
  options.max_run = std::chrono::milliseconds(static_cast<int64_t>(std::llround(args.max_run_s * 1000)));
  options.client_run_budget =
      std::chrono::milliseconds(static_cast<int64_t>(std::llround(args.client_budget_s * 1000)));
  options.client_budget_window =
      std::chrono::milliseconds(std::max<int64_t>(1, std::llround(args.client_budget_window_s * 1000)));
  options.client_grace = std::chrono::milliseconds(std::llround(args.client_grace_s * 1000));
  options.max_concurrent_loads = static_cast<size_t>(args.max_concurrent_loads);
  options.max_threads = static_cast<int>(args.max_threads);
  options.max_answer_bytes = static_cast<size_t>(args.max_answer_mb) << 20;
  absl::StatusOr<std::unique_ptr<net::AgentServer>> server = net::AgentServer::Start(options, std::move(pus));
  if (!server.ok()) {
    std::cerr << "baton agent: " << server.status().message() << "\n";
    const absl::StatusCode code = server.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? 2 : 1;
  }
  if (!(*server)->notice().empty()) std::cerr << "baton agent: " << (*server)->notice() << "\n";
  // Before the banner on stdout, which tells a waiting caller it is up.
  const net::AgentOptions& limits = (*server)->options();
  std::cerr << absl::StrFormat(
      "baton agent '%s': limits: partitions up to %d MiB, parameters loaded at once up to %d MiB, %d Loads at once, "
      "%d gRPC threads, answers up to %d MiB, runs up to %g s\n",
      device.name, limits.max_partition_bytes >> 20, limits.max_loaded_param_bytes >> 20, limits.max_concurrent_loads,
      limits.max_threads, limits.max_answer_bytes >> 20, absl::ToDoubleSeconds(absl::FromChrono(limits.max_run)));
  std::vector<std::string> names;
  for (const config::PuConfig& pu : device.pus) names.push_back(pu.name);
  std::printf("baton agent '%s' listening on %s (PUs: %s)\n", device.name.c_str(), (*server)->address().c_str(),
              absl::StrJoin(names, ", ").c_str());
  std::fflush(stdout);

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  std::cerr << "baton agent '" << device.name << "': stopping (" << (signal_number == SIGINT ? "SIGINT" : "SIGTERM")
            << ")\n";
  (*server)->Shutdown();
  if (const size_t left = (*server)->loads_left_running(); left > 0) {
    // They still use the executors: exit without destroying anything.
    std::cerr << "baton agent '" << device.name << "': " << left
              << " session creations did not finish; exiting without them\n";
    ExitCleanlyAfterSignal();
  }
  server->reset();  // before the executors it borrows
  return 0;
}

}  // namespace

void AddAgentCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<AgentArgs>();
  CLI::App* cmd = app.add_subcommand(
      "agent",
      "Serve this machine's PUs to a remote `baton run` (a device with `address:` in its config).\n"
      "Without TLS and a token it listens on loopback only. Runs until SIGINT/SIGTERM.\n"
      "Exit status: 0 stopped by a signal, 1 could not start, 2 bad flags or configuration.");
  // Not ->required(): a missing --listen is a usage error with exit status 2 like the others.
  cmd->add_option("--listen", args->listen, "HOST:PORT to listen on (port 0 picks a free one; required)");
  cmd->add_option("--config", args->config, "AGENT.yaml with the PUs (default: one 1-thread CPU PU per core)");
  cmd->add_option("--name", args->name, "The agent's name (default: the config's, else 'agent')");
  cmd->add_option("--tls-cert", args->tls_cert, "PEM server certificate chain (TLS)");
  cmd->add_option("--tls-key", args->tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--client-ca", args->client_ca, "PEM CA: require client certificates it signed");
  cmd->add_option("--token-file", args->token_file, "File with the bearer token every call must carry");
  cmd->add_option("--low-level", args->low_level, "The agent's low-level policy (default fifo)");
  cmd->add_option("--max-partition-mb", args->max_partition_mb, "Largest partition accepted, in MiB (default 512)");
  cmd->add_option("--max-loaded-mb", args->max_loaded_mb,
                  "Memory budget for the parameters of all partitions loaded at once, over all clients, in MiB "
                  "(default 0: half of this machine's memory)");
  cmd->add_option("--allowed-ops", args->allowed_ops, "Comma-separated op types partitions may use (default: any)")
      ->delimiter(',');
  cmd->add_option("--load-timeout-s", args->load_timeout_s, "Time to create one partition's sessions (default 30)");
  cmd->add_option("--max-run-s", args->max_run_s,
                  "Longest one run may take on this agent's PUs before it is stopped (default 60)");
  cmd->add_option("--client-budget-s", args->client_budget_s,
                  "PU time one client (an Execute stream) may use per --client-budget-window-s; past it its new "
                  "work is refused until the budget refills (default 0: no budget)");
  cmd->add_option("--client-budget-window-s", args->client_budget_window_s,
                  "The window of --client-budget-s, in seconds (default 60)");
  cmd->add_option("--client-grace-s", args->client_grace_s,
                  "A client that has had no Execute stream open this long gets its Loads given back, as if it had "
                  "unloaded them (a client killed before it unloads); it loads again when it comes back (default 60)");
  cmd->add_option("--max-concurrent-loads", args->max_concurrent_loads,
                  "Loads in progress at once (being received or creating sessions), over all clients; one more is "
                  "refused RESOURCE_EXHAUSTED (default 4)");
  cmd->add_option("--max-threads", args->max_threads,
                  "Threads gRPC may use for calls in progress (each Execute stream and each Load holds one); past "
                  "it new calls are refused RESOURCE_EXHAUSTED (default 128)");
  cmd->add_option("--max-answer-mb", args->max_answer_mb,
                  "Largest outputs one run may answer, in MiB; a larger answer is refused RESOURCE_EXHAUSTED "
                  "(default and most 1984: one protobuf message)");
  cmd->callback([args, exit_code] {
    *exit_code = Agent(*args);
    if (*exit_code == 0) ExitCleanlyAfterSignal();
  });
}

}  // namespace baton::cli
