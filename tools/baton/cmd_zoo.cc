// `baton zoo`: writes the built-in models (see baton/zoo/zoo.h) as .onnx files.
//
//   baton zoo --list [--small]                 name, size and description of each model
//   baton zoo --out DIR [--small] [--only a,b] writes DIR/<name>.onnx (DIR is created)
//
// Exit codes: 0 success, 1 a file could not be written, 2 bad arguments
// (unknown model name, neither --out nor --list).
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_format.h"
#include "baton/zoo/zoo.h"
#include "commands.h"
#include "format.h"

namespace baton::cli {
namespace {

struct ZooArgs {
  std::string out;
  bool list = false;
  bool small = false;
  std::vector<std::string> only;
};

int RunList(const ZooArgs& args) {
  std::cout << absl::StrFormat("%-12s %9s %9s  %s\n", "model", "params", "MACs", "description");
  for (const zoo::ZooEntry& entry : zoo::List()) {
    absl::StatusOr<zoo::ZooStats> stats = zoo::Stats(entry.name, args.small);
    if (!stats.ok()) {
      std::cerr << "baton zoo: " << stats.status().message() << "\n";
      return 1;
    }
    std::cout << absl::StrFormat("%-12s %9s %9s  %s\n", entry.name, HumanCount(stats->parameters),
                                 HumanCount(stats->macs), entry.description);
  }
  std::cout << (args.small ? "(small variants)\n" : "(full variants; --small for the reduced ones)\n");
  return 0;
}

// Writes `bytes` to `path` through a temporary file in the same directory, so
// that a reader never sees a half-written model.
bool WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      std::cerr << "baton zoo: cannot create '" << tmp.string() << "': " << std::strerror(errno) << "\n";
      return false;
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::cerr << "baton zoo: writing '" << tmp.string() << "' failed (disk full?)\n";
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::cerr << "baton zoo: cannot rename '" << tmp.string() << "' to '" << path.string() << "': " << ec.message()
              << "\n";
    std::filesystem::remove(tmp, ec);
    return false;
  }
  return true;
}

int RunZoo(const ZooArgs& args) {
  if (args.list) return RunList(args);
  if (args.out.empty()) {
    std::cerr << "baton zoo: give --out DIR to write the models, or --list to see them\n";
    return 2;
  }
  std::vector<std::string> names = args.only;
  if (names.empty()) {
    for (const zoo::ZooEntry& entry : zoo::List()) names.push_back(entry.name);
  }
  // Check every name before writing anything.
  for (const std::string& name : names) {
    absl::StatusOr<zoo::ZooStats> stats = zoo::Stats(name, args.small);
    if (!stats.ok()) {
      std::cerr << "baton zoo: " << stats.status().message() << "\n";
      return 2;
    }
  }
  const std::filesystem::path dir(args.out);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    std::cerr << "baton zoo: cannot create output directory '" << dir.string()
              << "': " << (ec ? ec.message() : "a file of that name exists") << "\n";
    return 1;
  }
  for (const std::string& name : names) {
    absl::StatusOr<std::string> bytes = zoo::Generate(name, args.small);
    if (!bytes.ok()) {
      std::cerr << "baton zoo: " << bytes.status().message() << "\n";
      return 1;
    }
    const std::filesystem::path path = dir / (name + ".onnx");
    if (!WriteFile(path, *bytes)) return 1;
    const zoo::ZooStats stats = *zoo::Stats(name, args.small);
    std::cout << absl::StrFormat("wrote %s  (%s params, %s MACs, %s)\n", path.string(), HumanCount(stats.parameters),
                                 HumanCount(stats.macs), HumanBytes(static_cast<int64_t>(bytes->size())));
  }
  return 0;
}

}  // namespace

void AddZooCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ZooArgs>();
  CLI::App* cmd = app.add_subcommand(
      "zoo", "Write the built-in models (ResNet, MobileNetV2, ..., If/Loop) as ONNX files; deterministic bytes");
  cmd->add_option("--out,-o", args->out, "Directory to write <name>.onnx into (created if missing)");
  cmd->add_flag("--list", args->list, "List the models with parameter and MAC counts instead of writing them");
  cmd->add_flag("--small", args->small, "Use the reduced variants (same topology, runs in milliseconds)");
  cmd->add_option("--only", args->only, "Write only these models (comma-separated names)")->delimiter(',');
  cmd->footer(
      "Models are fixed-shape, batch 1, ai.onnx opset 17, with weights from a fixed seed.\n"
      "Example: baton zoo --out models --small --only resnet,ifloop");
  cmd->callback([args, exit_code] { *exit_code = RunZoo(*args); });
}

}  // namespace baton::cli
