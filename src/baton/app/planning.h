// From a profile and a configuration to a planning problem, bounds, plans,
// and back from a plan file to what the runtime deploys. Shared by `baton
// plan` and `baton run`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "baton/config/run_config.h"
#include "baton/core/status.h"
#include "baton/plan/plan_file.h"
#include "baton/policy/latency_model.h"
#include "baton/plan/policies.h"
#include "baton/profile/bounds.h"
#include "baton/profile/problem.h"
#include "baton/profile/profile.h"
#include "baton/profiler/profiler.h"
#include "baton/runtime/deployment.h"
#include "baton/runtime/speed_probe.h"
#include "baton/app/setup.h"

namespace baton::app {

struct Planning {
  profile::Problem problem;           // PUs in PuId order, models in config order: bounds, predictions, speed factors
  // `problem` made subadditive (profile::Subadditive): what the high-level
  // policies place on.
  profile::Problem planned;
  std::vector<profiler::ModelCut> cuts;  // per model
  profile::Bounds bounds;
  // Per model: its dynamic batching (ChooseBatching); the plan records it.
  std::vector<profile::BatchChoice> batching;
};

// Per model of `config`: whether and up to which size baton batches it. The
// config's max_batch with `batching: on`; else, with a profile, the size
// profile::ChooseBatch finds in its batch-size measurements; off without a
// profile (`auto` needs evidence) and for max_batch 1.
std::vector<profile::BatchChoice> ChooseBatching(const std::vector<LoadedModel>& models,
                                                 const profile::Profile* profile);

// The problem for `config` from `profile` (read from `source`). A model may
// only use the PUs of its device. FailedPrecondition when the profile is
// stale or incomplete for this config (saying what changed and to run `baton
// profile` again).
// `device_of` (per model; empty = round-robin, DeviceOfModel) is the device
// each model runs on.
absl::StatusOr<Planning> BuildPlanning(const config::RunConfig& config, const std::vector<LoadedModel>& models,
                                       const PuSet& pus, const profile::Profile& profile, const std::string& source,
                                       const std::vector<DeviceId>& device_of = {});

// The same problem without a profile, from estimates: each atom's cost
// (partition::CostOf, from FLOPs) over the PU's speed (a CPU PU's threads, an
// emulated PU's `speed`), no transfer or dispatch costs. Its numbers only
// rank placements against each other: the high-level policies that do not
// need a profile (plan/high_level_policy.h) plan from it, and no bound or
// prediction is reported from it.
absl::StatusOr<Planning> BuildEstimatedPlanning(const config::RunConfig& config, const std::vector<LoadedModel>& models,
                                                const PuSet& pus, const std::vector<DeviceId>& device_of = {});

// Runs `policy` and writes the result as a plan file (with predictions and bounds).
absl::StatusOr<plan::PlanFile> MakePlan(const Planning& planning, const config::RunConfig& config,
                                        const std::vector<LoadedModel>& models, const PuSet& pus,
                                        plan::HighLevelPolicy policy, const plan::PlanOptions& options,
                                        const std::string& profile_source);

// The runtime's models for `plan`. InvalidArgument/FailedPrecondition saying
// what changed when the plan does not match the models or the PUs (a model
// added, removed or changed; a PU added, removed or with other settings; a
// node that no longer exists).
absl::StatusOr<std::vector<runtime::DeployModel>> DeployFromPlan(const plan::PlanFile& plan, const std::string& source,
                                                                 const config::RunConfig& config,
                                                                 const std::vector<LoadedModel>& models,
                                                                 const PuSet& pus,
                                                                 const std::vector<DeviceId>& device_of = {});

// Per model, the priority of its requests: the plan's (PlanModel::priority)
// where `plan` is given and has one for the model, else the config's.
std::vector<int> RequestPriorities(const plan::PlanFile* plan, const std::vector<LoadedModel>& models);

// The plan's placement over the problem's atoms; nullopt when a partition is
// not a range of atoms (a plan made from a profile with another cut). With
// `widen`, each partition may also run on every other PU of its model's
// device that can run it (what an online low-level policy gets).
std::optional<profile::Placement> PlacementOfPlan(const plan::PlanFile& plan, const Planning& planning,
                                                  const std::vector<LoadedModel>& models, bool widen);

// The atoms [first, last) of model `m` that hold exactly `nodes` (free
// constants, which atoms leave out, are ignored); nullopt when they are not
// such a range.
std::optional<std::pair<int, int>> AtomRangeOf(const Planning& planning, size_t m, std::span<const NodeId> nodes);

// The profile's time of every deployed partition on every PU it may run on,
// as the latency model's prior (measured run times take over from there).
absl::Status SetPriors(const Planning& planning, const runtime::Deployment& deployment,
                       policy::OnlineLatencyModel& latency);

// The profile's costs scaled per PU by what a run measured (the total measured
// run time of every partition on every PU against the profile's time for as
// many runs), and the bounds and the plan's prediction recomputed with them:
// a profile taken while the machine ran faster or slower would otherwise skew
// both.
struct Calibration {
  std::vector<std::pair<std::string, double>> pu_speed;  // per PU: measured / profiled
  profile::Bounds bounds;
  double predicted_rps = 0;  // with a placement
};
absl::StatusOr<Calibration> Calibrate(const Planning& planning, const runtime::Deployment& deployment,
                                      const policy::OnlineLatencyModel& latency,
                                      const std::optional<profile::Placement>& placement);

// Per PU (Problem::pus order): the speed probes' run time over the profile's
// time for as many runs, over every deployed partition that is a range of the
// problem's atoms; a PU without such runs gets the overall factor (1 when
// there are none). What the bound of `baton run` scales the profile by.
absl::StatusOr<std::vector<double>> ProbeSpeeds(const Planning& planning, const runtime::Deployment& deployment,
                                                std::span<const runtime::ProbeRun> runs);

// Loads `path` if it exists, measures what is missing (quick settings unless
// `options` say otherwise) and saves it back. Used by `baton run` without
// --profile: the profile is cached per configuration. With `seed_dir`, the
// models `path` lacks are first looked for in the other profiles there
// (profiler::SeedFromOtherProfiles; the newest kMaxSeedFiles, at most
// kMaxSeedBytes read in all; files that cannot be read are passed over), and
// `seeded` (may be null) is told what was taken (if anything), before measuring.
inline constexpr int kMaxSeedFiles = 128;
inline constexpr uintmax_t kMaxSeedBytes = uintmax_t{64} << 20;
absl::StatusOr<profile::Profile> ProfileInto(const std::string& path, const std::vector<LoadedModel>& models,
                                             const PuSet& pus, const profiler::ProfilerOptions& options,
                                             const profiler::Progress& progress, const std::string& seed_dir = "",
                                             const std::function<void(const std::vector<profiler::Seeded>&)>& seeded = nullptr);

// Where `baton run` caches the automatic profile of a configuration.
std::string AutoProfilePath(const std::string& cache_dir, const std::vector<LoadedModel>& models, const PuSet& pus,
                            const profiler::ProfilerOptions& options);

// Quick settings for the automatic profile of `baton run`.
profiler::ProfilerOptions QuickProfilerOptions(size_t pus);

}  // namespace baton::app
