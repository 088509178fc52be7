// `baton inspect MODEL`: what a model takes, produces and costs.
#include <algorithm>
#include <iostream>
#include <map>

#include "absl/strings/str_format.h"
#include "baton/graph/model.h"
#include "commands.h"
#include "format.h"

namespace baton::cli {

namespace {

struct InspectArgs {
  std::string model;
  bool nodes = false;
};

int RunInspect(const InspectArgs& args) {
  auto loaded = graph::Model::LoadFile(args.model);
  if (!loaded.ok()) {
    std::cerr << "baton inspect: " << loaded.status().message() << "\n";
    return 2;
  }
  const graph::Model& m = **loaded;
  std::cout << "model:    " << m.display_name() << "\n";
  std::cout << "ir:       " << m.ir_version() << "   opsets:";
  for (const auto& [domain, version] : m.opsets()) std::cout << " " << (domain.empty() ? "ai.onnx" : domain) << "=" << version;
  std::cout << "\n\ninputs:\n";
  for (const auto& name : m.inputs()) std::cout << "  " << name << "  " << m.FindValue(name)->type.ToString() << "\n";
  std::cout << "outputs:\n";
  for (const auto& name : m.outputs()) std::cout << "  " << name << "  " << m.FindValue(name)->type.ToString() << "\n";

  std::map<std::string, int> histogram;
  for (const auto& node : m.nodes()) histogram[node.domain.empty() ? node.op_type : node.domain + "." + node.op_type]++;
  std::vector<std::pair<std::string, int>> ops(histogram.begin(), histogram.end());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::cout << "\nops (" << m.nodes().size() << " nodes, " << ops.size() << " kinds):\n";
  for (const auto& [op, count] : ops) std::cout << absl::StrFormat("  %-28s %6d\n", op, count);

  int64_t param_elements = 0;
  for (const auto& name : m.initializers()) param_elements += m.FindValue(name)->type.NumElements().value_or(0);
  std::cout << "\nparameters: " << HumanCount(param_elements) << " in initializers; "
            << HumanBytes(m.total_param_bytes()) << " of weights in all (with Constant nodes and subgraphs)\n";
  std::cout << "FLOPs:      " << HumanCount(m.total_flops()) << " per inference (estimate)\n";
  if (args.nodes) {
    std::cout << "\nnodes (topological order):\n";
    for (NodeId id : m.topo_order()) {
      const auto& node = m.node(id);
      std::cout << absl::StrFormat("  %-40s %-20s %10s  ->", node.name, node.op_type, HumanCount(node.flops));
      for (const auto& out : node.outputs) {
        if (!out.empty()) std::cout << " " << out << ":" << m.FindValue(out)->type.ToString();
      }
      std::cout << "\n";
    }
  }
  for (const auto& w : m.warnings()) std::cout << "note: " << w << "\n";
  return 0;
}

}  // namespace

void AddInspectCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "Print a model's inputs/outputs, op histogram, parameters and FLOPs");
  cmd->add_option("MODEL", args->model, "Path of an .onnx model")->required();
  cmd->add_flag("--nodes", args->nodes, "Also list every node with its FLOPs and output tensors (cut points)");
  cmd->callback([args, exit_code] { *exit_code = RunInspect(*args); });
}

}  // namespace baton::cli
