// `baton verify MODEL [--parts K | --cut T1,T2] [--seed S] [--dim PARAM=N ...]
//                     [--shape NAME=D1,D2 ...] [--input NAME=VALUE ...] [--threads N]`:
// cuts the model, runs the partitions one after another in ONNX Runtime and
// compares every model output with a run of the whole model on the same random
// inputs. Exit status: 0 when every output is within tolerance, 1 when some
// output differs or a partition fails, 2 for usage and load errors.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "baton/graph/model.h"
#include "baton/partition/plan.h"
#include "baton/verify/verify.h"
#include "commands.h"
#include "validators.h"

namespace baton::cli {

namespace {

struct VerifyArgs {
  std::string model;
  int parts = 2;
  std::vector<std::string> cut;
  uint64_t seed = 1;
  std::vector<std::string> shapes;
  std::vector<std::string> dims;
  std::vector<std::string> fixed;
  int threads = 1;
  int64_t int_low = 0;
  int64_t int_high = 10;
  double atol = verify::Tolerance{}.abs;
  double rtol = verify::Tolerance{}.rel;
};

// Splits "KEY=VALUE"; false when there is no '=' or the key is empty.
bool SplitAssignment(const std::string& text, std::string* key, std::string* value) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return false;
  *key = text.substr(0, eq);
  *value = text.substr(eq + 1);
  return true;
}

// Prints rows as left-aligned columns separated by two spaces.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string Diff(double v) { return absl::StrFormat("%.3g", v); }

int RunVerify(const VerifyArgs& args) {
  verify::InputOptions input_options;
  input_options.int_low = args.int_low;
  input_options.int_high = args.int_high;
  for (const std::string& text : args.shapes) {
    std::string key, value;
    std::vector<int64_t> shape;
    bool ok = SplitAssignment(text, &key, &value);
    for (absl::string_view d : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      int64_t size = 0;
      ok = ok && absl::SimpleAtoi(d, &size) && size >= 0;
      shape.push_back(size);
    }
    if (!ok) {
      std::cerr << "baton verify: --shape expects NAME=D1,D2,... (NAME= for a scalar), got '" << text << "'\n";
      return 2;
    }
    input_options.shapes[key] = shape;
  }
  for (const std::string& d : args.dims) {
    std::string key, value;
    int64_t size = 0;
    if (!SplitAssignment(d, &key, &value) || !absl::SimpleAtoi(value, &size) || size < 0) {
      std::cerr << "baton verify: --dim expects PARAM=N with N >= 0, got '" << d << "'\n";
      return 2;
    }
    input_options.dims[key] = size;
  }
  for (const std::string& f : args.fixed) {
    std::string key, value;
    double v = 0;
    if (!SplitAssignment(f, &key, &value) || !absl::SimpleAtod(value, &v)) {
      std::cerr << "baton verify: --input expects NAME=NUMBER, got '" << f << "'\n";
      return 2;
    }
    input_options.fixed_values[key] = v;
  }

  auto loaded = graph::Model::LoadFile(args.model);
  if (!loaded.ok()) {
    std::cerr << "baton verify: " << loaded.status().message() << "\n";
    return 2;
  }
  const graph::Model& model = **loaded;
  std::string note;
  auto plan =
      args.cut.empty() ? partition::CutBalanced(model, args.parts, &note) : partition::CutAtTensors(model, args.cut);
  if (!plan.ok()) {
    std::cerr << "baton verify: " << plan.status().message() << "\n";
    return 2;
  }
  if (!note.empty()) std::cerr << "baton verify: note: " << note << "\n";
  auto inputs = verify::RandomInputs(model, args.seed, input_options);
  if (!inputs.ok()) {
    std::cerr << "baton verify: " << inputs.status().message() << "\n";
    return 2;
  }
  ort::SessionOptions session_options;
  session_options.intra_op_threads = args.threads;
  const verify::Tolerance tolerance{.abs = args.atol, .rel = args.rtol};
  auto report = verify::VerifyPlan(model, *plan, *inputs, session_options, tolerance);
  if (!report.ok()) {
    std::cerr << "baton verify: " << report.status().message() << "\n";
    return 2;
  }

  std::cout << "model " << model.display_name() << ": " << model.nodes().size() << " nodes, " << plan->partitions.size()
            << " partitions, seed " << args.seed << "\n";
  std::vector<std::string> shapes;
  for (const auto& [name, t] : *inputs) shapes.push_back(name + ": " + t.DebugString());
  std::cout << "inputs: " << absl::StrJoin(shapes, ", ") << "\n\n";

  std::vector<std::vector<std::string>> parts = {{"partition", "nodes", "inputs", "outputs", "status"}};
  for (const auto& p : report->partitions) {
    parts.push_back({p.name, std::to_string(p.num_nodes), std::to_string(p.inputs.size()),
                     std::to_string(p.outputs.size()), p.ran ? "ran" : "FAILED"});
  }
  PrintTable(parts);
  std::cout << "\n";
  std::vector<std::vector<std::string>> outs = {{"output", "produced by", "max abs diff", "max rel diff", "result"}};
  for (const auto& o : report->outputs) {
    outs.push_back({o.name, o.produced_by.empty() ? "-" : o.produced_by, Diff(o.comparison.max_abs),
                    Diff(o.comparison.max_rel), o.comparison.ok ? "ok" : "MISMATCH"});
  }
  PrintTable(outs);
  std::cout << "\n";
  if (!report->ok) {
    std::cerr << "baton verify: FAILED (tolerance: abs " << tolerance.abs << " or rel " << tolerance.rel << ")\n"
              << report->message << "\n";
    return 1;
  }
  std::cout << "OK: " << report->message << " (tolerance: abs " << tolerance.abs << " or rel " << tolerance.rel
            << ")\n";
  return 0;
}

}  // namespace

void AddVerifyCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<VerifyArgs>();
  CLI::App* cmd =
      app.add_subcommand("verify",
                         "Check that a partitioned model computes what the whole model computes.\n"
                         "Runs the whole model and then its partitions one after another in ONNX Runtime on the\n"
                         "same random inputs and compares every model output (element passes when\n"
                         "|diff| <= atol or |diff| <= rtol * |expected|; integers, bools and strings exactly).\n"
                         "Random inputs: floats uniform in [-1,1), integers in [int-low, int-high), bools random;\n"
                         "a symbolic dim takes --dim, else 1 when it is an input's first dim, else 64;\n"
                         "--shape sets an input's whole shape (needed when dims are unnamed or the rank unknown).\n"
                         "Exit status: 0 all outputs match, 1 mismatch or a partition failed, 2 usage/load error.");
  cmd->add_option("MODEL", args->model, "Path of an .onnx model")->required();
  auto* parts = cmd->add_option("--parts", args->parts, "Number of partitions, balanced by estimated cost")
                    ->check(IntIn(1, 1024))
                    ->capture_default_str();
  auto* cut =
      cmd->add_option("--cut", args->cut, "Cut after these tensors, in order (comma-separated)")->delimiter(',');
  parts->excludes(cut);
  cmd->add_option("--seed", args->seed, "Seed of the random inputs")->capture_default_str();
  cmd->add_option("--dim", args->dims, "Size of a symbolic dim, PARAM=N (repeatable)");
  cmd->add_option("--shape", args->shapes, "Whole shape of input NAME, NAME=D1,D2,... (repeatable)");
  cmd->add_option("--input", args->fixed, "Fill input NAME with one value, NAME=VALUE (repeatable)");
  cmd->add_option("--threads", args->threads, "ONNX Runtime intra-op threads per session")
      ->check(IntIn(1, 1024))
      ->capture_default_str();
  cmd->add_option("--int-low", args->int_low, "Lowest random integer input value")->capture_default_str();
  cmd->add_option("--int-high", args->int_high, "Random integer inputs stay below this")->capture_default_str();
  cmd->add_option("--atol", args->atol, "Absolute tolerance")->check(kNonNegative)->capture_default_str();
  cmd->add_option("--rtol", args->rtol, "Relative tolerance")->check(kNonNegative)->capture_default_str();
  cmd->callback([args, exit_code] { *exit_code = RunVerify(*args); });
}

}  // namespace baton::cli
