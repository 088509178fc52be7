// Subcommands of the `baton` CLI. Each Add*Command registers one subcommand on
// `app`; its callback stores the process exit code in `*exit_code`.
#pragma once

#include "CLI/CLI.hpp"

namespace baton::cli {

void AddZooCommand(CLI::App& app, int* exit_code);
void AddInspectCommand(CLI::App& app, int* exit_code);
void AddPartitionCommand(CLI::App& app, int* exit_code);
void AddVerifyCommand(CLI::App& app, int* exit_code);
void AddRunCommand(CLI::App& app, int* exit_code);
void AddProfileCommand(CLI::App& app, int* exit_code);
void AddPlanCommand(CLI::App& app, int* exit_code);
void AddAgentCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);

}  // namespace baton::cli
