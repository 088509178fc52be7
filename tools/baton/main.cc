// The `baton` command line: composition root of the project.
#include <cstdio>

#include <string>

#include "CLI/CLI.hpp"
#include "baton/core/version.h"
#include "baton/net/grpc_library.h"
#include "commands.h"
#include "library.h"

int main(int argc, char** argv) {
  CLI::App app{"baton: run many DNNs at once on the processing units of edge devices"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("baton ") + baton::kVersion);
  int exit_code = 0;
  baton::cli::AddZooCommand(app, &exit_code);
  baton::cli::AddInspectCommand(app, &exit_code);
  baton::cli::AddPartitionCommand(app, &exit_code);
  baton::cli::AddVerifyCommand(app, &exit_code);
  baton::cli::AddRunCommand(app, &exit_code);
  baton::cli::AddProfileCommand(app, &exit_code);
  baton::cli::AddPlanCommand(app, &exit_code);
  baton::cli::AddAgentCommand(app, &exit_code);
  baton::cli::AddServeCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2, as documented
    // (CLI11's own codes, 105 for a failed check, would leak out otherwise).
    return app.exit(e) == 0 ? 0 : 2;
  }
  // A command that used gRPC may have dropped its last channel on one of
  // gRPC's threads; let that clean-up finish before the process exits.
  baton::net::AwaitGrpcShutdown(baton::cli::kGrpcShutdownBound);
  return exit_code;
}
