// `baton plan [CONFIG] --profile PROFILE -o PLAN [--policy P]`: runs a
// high-level policy on the profiled problem and writes the plan (partitions by
// node names, placement, per-PU order, predictions and bounds), which `baton
// run CONFIG --plan PLAN` carries out.
// Exit status: 0 done, 2 usage, config, profile or planning errors.
#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "commands.h"
#include "validators.h"
#include "library.h"

namespace baton::cli {

namespace {

struct PlanArgs {
  std::string config;
  std::string profile;
  std::string output;
  std::string policy;  // "" = the config's policy.high_level
  int stages = -1;
  int iterations = -1;
  bool quiet = false;
  std::string cache_dir;
};

int Plan(const PlanArgs& args) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "baton plan: " << s.message() << "\n";
    return 2;
  };
  absl::StatusOr<config::RunConfig> config = LoadConfigOrDefault(args.config);
  if (!config.ok()) return fail(config.status());
  const std::string policy_name = args.policy.empty() ? config->policy.high_level : args.policy;
  absl::StatusOr<plan::HighLevelPolicy> policy = plan::ParseHighLevelPolicy(policy_name);
  if (!policy.ok()) return fail(policy.status());
  plan::PlanOptions options;
  options.max_stages = args.stages >= 0 ? args.stages : config->policy.stages;
  if (args.iterations >= 0) options.iterations = args.iterations;
  options.seed = config->run.seed;
  const Say say = StderrProgress(args.quiet);
  absl::StatusOr<profile::Profile> profile = profile::Profile::Load(args.profile);
  if (!profile.ok()) return fail(profile.status());
  const std::string cache = args.cache_dir.empty() ? DefaultCacheDir() : args.cache_dir;
  absl::StatusOr<std::vector<LoadedModel>> models = LoadModels(*config, cache, 0, false, say);
  if (!models.ok()) return fail(models.status());
  absl::StatusOr<PuSet> pus = MakePus(*config);
  if (!pus.ok()) return fail(pus.status());

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Planning> planning = BuildPlanning(*config, *models, *pus, *profile, args.profile);
  if (!planning.ok()) return fail(planning.status());
  const auto bounds_done = std::chrono::steady_clock::now();
  absl::StatusOr<plan::PlanFile> file = MakePlan(*planning, *config, *models, *pus, *policy, options, args.profile);
  if (!file.ok()) return fail(file.status());
  const auto planned = std::chrono::steady_clock::now();
  if (absl::Status s = file->Save(args.output); !s.ok()) return fail(s);

  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::cout << "baton plan: policy " << file->policy << " (objective: " << file->objective << ")\n";
  for (size_t mi = 0; mi < file->models.size(); ++mi) {
    const plan::PlanModel& m = file->models[mi];
    std::cout << absl::StrFormat("  %-12s %2zu partitions  predicted %7.1f req/s, latency %7.2f ms (bound %.2f ms)\n",
                                 m.name, m.partitions.size(), m.predicted_rps, m.predicted_latency_ms,
                                 m.latency_bound_ms);
    if (m.max_batch && mi < planning->batching.size()) {
      std::cout << "      dynamic batching: " << planning->batching[mi].reason << "\n";
    }
    for (size_t k = 0; k < m.partitions.size(); ++k) {
      const plan::PlanPartition& p = m.partitions[k];
      // PUs with their share of the runs ("npu0 85%,gpu0 15%") when the plan has a split.
      std::vector<std::string> listed;
      for (size_t i = 0; i < p.pus.size(); ++i) {
        listed.push_back(i < p.shares.size() ? absl::StrFormat("%s %.0f%%", p.pus[i], 100 * p.shares[i]) : p.pus[i]);
      }
      std::cout << absl::StrFormat("      p%zu  %3zu nodes  %-28s on %-36s %7.2f ms\n", k, p.nodes.size(),
                                   absl::StrCat(p.nodes.front(), "..", p.nodes.back()).substr(0, 28),
                                   absl::StrJoin(listed, ","), p.predicted_ms);
    }
  }
  for (const plan::PlanPu& p : file->pus) {
    std::cout << absl::StrFormat("  PU %-8s predicted busy %5.1f %%\n", p.name, 100 * p.predicted_busy);
  }
  const double ratio = file->bound_throughput_rps > 0 ? file->predicted_throughput_rps / file->bound_throughput_rps : 0;
  std::cout << absl::StrFormat(
      "predicted throughput %.1f req/s; bound %.1f req/s (predicted/bound %.2f); bounds %.0f ms, planning %.0f ms -> %s\n",
      file->predicted_throughput_rps, file->bound_throughput_rps, ratio, ms(bounds_done - start),
      ms(planned - bounds_done), args.output);
  return 0;
}

}  // namespace

void AddPlanCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Make a plan (partitions, placement, per-PU order, predictions, bounds) from a profile.\n"
      "Policies: capability, balanced, lp, search (docs/policies.md). Run it with `baton run CONFIG --plan PLAN`.\n"
      "Exit status: 0 done, 2 error.");
  cmd->add_option("CONFIG", args->config, "YAML run configuration (default: the embedded workload)");
  cmd->add_option("--profile", args->profile, "The profile from `baton profile`")->required();
  cmd->add_option("-o,--output", args->output, "The plan to write (JSON)")->required();
  cmd->add_option("--policy", args->policy, "High-level policy (default: the config's policy.high_level)");
  cmd->add_option("--stages", args->stages, "balanced: stages per model (0 = number of PUs)")
      ->check(IntIn(0, 64));
  cmd->add_option("--iterations", args->iterations, "search: moves tried")->check(IntIn(0, 100'000'000));
  cmd->add_flag("--quiet", args->quiet, "No progress on stderr");
  cmd->add_option("--cache-dir", args->cache_dir, "Where zoo models are generated");
  cmd->callback([args, exit_code] { *exit_code = Plan(*args); });
}

}  // namespace baton::cli
