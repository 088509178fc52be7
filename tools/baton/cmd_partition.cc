// `baton partition MODEL (--parts K | --cut T1,T2,...) --out DIR`: writes each
// partition as a standalone .onnx model plus plan.json describing the DAG.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "commands.h"
#include "validators.h"
#include "format.h"
#include "nlohmann/json.hpp"

namespace baton::cli {

namespace {

namespace fs = std::filesystem;

struct PartitionArgs {
  std::string model;
  int parts = 0;
  std::vector<std::string> cut;
  std::string out;
};

int RunPartition(const PartitionArgs& args) {
  auto loaded = graph::Model::LoadFile(args.model);
  if (!loaded.ok()) {
    std::cerr << "baton partition: " << loaded.status().message() << "\n";
    return 2;
  }
  const graph::Model& m = **loaded;
  std::string note;
  auto plan = args.cut.empty() ? partition::CutBalanced(m, args.parts, &note) : partition::CutAtTensors(m, args.cut);
  if (!plan.ok()) {
    std::cerr << "baton partition: " << plan.status().message() << "\n";
    return 2;
  }
  if (!note.empty()) std::cerr << "baton partition: note: " << note << "\n";
  std::error_code ec;
  fs::create_directories(args.out, ec);
  if (ec) {
    std::cerr << "baton partition: cannot create output directory '" << args.out << "': " << ec.message() << "\n";
    return 2;
  }
  std::string stem = fs::path(args.model).stem().string();
  auto plan_json = nlohmann::ordered_json::parse(plan->ToJson(m));
  for (const auto& p : plan->partitions) {
    auto sub = graph::ExtractSubmodel(m, p.nodes, stem + "." + p.name);
    if (!sub.ok()) {
      std::cerr << "baton partition: " << sub.status().message() << "\n";
      return 2;
    }
    std::string file = stem + "." + p.name + ".onnx";
    std::ofstream out(fs::path(args.out) / file, std::ios::binary);
    out.write(sub->onnx_bytes.data(), static_cast<std::streamsize>(sub->onnx_bytes.size()));
    if (!out) {
      std::cerr << "baton partition: cannot write '" << (fs::path(args.out) / file).string() << "'\n";
      return 2;
    }
    plan_json["partitions"][p.id.value]["file"] = file;
    std::cout << p.name << ": " << p.nodes.size() << " nodes, " << HumanCount(p.flops) << " FLOPs, "
              << p.interface.inputs.size() << " inputs, " << p.interface.outputs.size() << " outputs -> " << file << "\n";
  }
  std::ofstream plan_out(fs::path(args.out) / "plan.json");
  plan_out << plan_json.dump(2) << "\n";
  if (!plan_out) {
    std::cerr << "baton partition: cannot write plan.json in '" << args.out << "'\n";
    return 2;
  }
  std::cout << "wrote " << plan->partitions.size() << " partitions and plan.json (" << plan->edges.size()
            << " tensor edges) to " << args.out << "\n";
  return 0;
}

}  // namespace

void AddPartitionCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PartitionArgs>();
  CLI::App* cmd = app.add_subcommand("partition", "Cut a model into partitions and write them with a plan JSON");
  cmd->add_option("MODEL", args->model, "Path of an .onnx model")->required();
  auto* parts = cmd->add_option("--parts", args->parts, "Number of partitions, balanced by estimated cost")
                    ->check(IntIn(1, 1024));
  auto* cut = cmd->add_option("--cut", args->cut, "Cut after these tensors, in order (comma-separated)")
                  ->delimiter(',');
  parts->excludes(cut);
  cmd->add_option("--out", args->out, "Output directory")->required();
  cmd->callback([args, exit_code, parts, cut] {
    if (parts->count() == 0 && cut->count() == 0) {
      std::cerr << "baton partition: give either --parts K or --cut T1,T2,...\n";
      *exit_code = 2;
      return;
    }
    *exit_code = RunPartition(*args);
  });
}

}  // namespace baton::cli
