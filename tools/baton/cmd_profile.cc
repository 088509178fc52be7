// `baton profile [CONFIG] -o PROFILE`: measures every candidate partition of
// every configured model on every PU kind (see src/baton/profiler/profiler.h)
// and writes the profile that `baton plan` reads. Resumes from PROFILE when it
// exists (measurements with the same keys are kept).
// Exit status: 0 done, 2 usage, config or measurement errors.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "commands.h"
#include "validators.h"
#include "library.h"

namespace baton::cli {

namespace {

struct ProfileArgs {
  std::string config;
  std::string output;
  int budget = 24;
  int min_atoms = 0;
  int warmup_runs = 2;
  int min_runs = 7;
  double min_time_ms = 100;
  bool fresh = false;
  bool quiet = false;
  std::string cache_dir;
};

int Profile(const ProfileArgs& args) {
  // Before any thread starts: SIGINT/SIGTERM stop after the measurement in
  // progress, keeping everything measured so far for the resume.
  StopOnSignal stop_signal("saving what is measured, then stopping");
  absl::StatusOr<config::RunConfig> config = LoadConfigOrDefault(args.config);
  if (!config.ok()) {
    std::cerr << "baton profile: " << config.status().message() << "\n";
    return 2;
  }
  profiler::ProfilerOptions options;
  options.budget = args.budget;
  options.min_atoms = args.min_atoms;
  options.warmup_runs = args.warmup_runs;
  options.min_runs = args.min_runs;
  options.max_runs = std::max(args.min_runs, options.max_runs);  // the default, raised to --min-runs
  options.min_time_ms = args.min_time_ms;
  options.seed = config->run.seed;
  options.stop = stop_signal.stop();
  if (absl::Status s = options.Validate(); !s.ok()) {
    std::cerr << "baton profile: " << s.message() << "\n";
    return 2;
  }
  const Say say = StderrProgress(args.quiet);
  const std::string cache = args.cache_dir.empty() ? DefaultCacheDir() : args.cache_dir;
  absl::StatusOr<std::vector<LoadedModel>> models = LoadModels(*config, cache, 0, false, say);
  absl::StatusOr<PuSet> pus = models.ok() ? MakePus(*config) : absl::StatusOr<PuSet>(models.status());
  if (!pus.ok()) {
    std::cerr << "baton profile: " << pus.status().message() << "\n";
    return 2;
  }
  std::error_code ec;
  if (args.fresh && !std::filesystem::remove(args.output, ec) && ec) {
    std::cerr << "baton profile: --fresh: cannot remove '" << args.output << "': " << ec.message()
              << "; remove it yourself or pick another -o\n";
    return 2;
  }
  if (say && std::filesystem::exists(args.output, ec)) say("resuming from " + args.output);
  absl::StatusOr<profile::Profile> p = ProfileInto(args.output, *models, *pus, options, ProfileBar(args.quiet));
  if (!p.ok() && p.status().code() == absl::StatusCode::kCancelled && stop_signal.signal() != 0) {
    std::cerr << "\nbaton profile: " << p.status().message() << " in " << args.output
              << "; run the same command again to resume\n";
    return 128 + stop_signal.signal();
  }
  if (!p.ok()) {
    std::cerr << "\nbaton profile: " << p.status().message() << "\n";
    return 2;
  }
  size_t ranges = 0, entries = 0;
  for (const profile::ProfiledModel& m : p->models) {
    ranges += m.ranges.size();
    for (const profile::ProfiledRange& r : m.ranges) entries += r.latency.size();
  }
  std::cout << "baton profile: " << p->models.size() << " models, " << ranges << " candidate partitions, " << entries
            << " measurements on " << p->pu_kinds.size() << " PU kinds; partition overhead "
            << absl::StrFormat("%.3f", p->partition_overhead_ms) << " ms, handover "
            << absl::StrFormat("%.3f", p->same_device.fixed_ms) << " ms -> " << args.output << "\n";
  return 0;
}

}  // namespace

void AddProfileCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Measure every candidate partition of every model on every PU kind (for `baton plan`).\n"
      "Candidates: capability units cut into atoms, merged into larger ranges up to --budget per model.\n"
      "Resumes from -o PROFILE when it exists; --fresh starts over. SIGINT/SIGTERM save what is measured\n"
      "and stop. Exit status: 0 done, 2 error, 128 + the signal when stopped by one.");
  cmd->add_option("CONFIG", args->config, "YAML run configuration (default: the embedded workload)");
  cmd->add_option("-o,--output", args->output, "The profile to write (JSON)")->required();
  cmd->add_option("--budget", args->budget, "Candidate partitions per model (default 24)")->check(IntIn(1, 10'000));
  cmd->add_option("--min-atoms", args->min_atoms, "Atoms per model at least (0 = max(4, 2 x PUs))")
      ->check(IntIn(0, 10'000));
  cmd->add_option("--warmup-runs", args->warmup_runs, "Unmeasured runs first (default 2)")->check(IntIn(0, 1'000'000));
  cmd->add_option("--min-runs", args->min_runs, "Measured runs at least (default 7)")->check(IntIn(1, 1'000'000));
  cmd->add_option("--min-time-ms", args->min_time_ms, "Measured time at least, per entry (default 100)")
      ->check(kNonNegative);
  cmd->add_flag("--fresh", args->fresh, "Ignore an existing PROFILE instead of resuming it");
  cmd->add_flag("--quiet", args->quiet, "No progress on stderr");
  cmd->add_option("--cache-dir", args->cache_dir, "Where zoo models are generated");
  cmd->callback([args, exit_code] { *exit_code = Profile(*args); });
}

}  // namespace baton::cli
