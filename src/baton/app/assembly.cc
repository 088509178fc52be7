#include "baton/app/assembly.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/process.h"
#include "baton/plan/policies.h"
#include "baton/policy/policy.h"

namespace baton::app {

namespace fs = std::filesystem;

namespace {

// Cancelled once `stop` is set: start-up ends before `step`.
absl::Status StopBefore(const std::atomic<bool>* stop, const char* step) {
  if (stop == nullptr || !stop->load()) return absl::OkStatus();
  return absl::CancelledError(absl::StrCat("start-up stopped before ", step));
}

}  // namespace

absl::StatusOr<RuntimeBundle> MakeRuntime(const config::RunConfig& config, const runtime::Deployment& deployment,
                                          const std::string& low_level, bool fixed,
                                          dispatch::DispatchObserver* observer, const Remotes* remotes) {
  RuntimeBundle b;
  BATON_ASSIGN_OR_RETURN(b.latency, policy::OnlineLatencyModel::Create({}));
  // The plan's split of each partition's runs between PUs (for `share`).
  auto split = std::make_shared<policy::PlanSplit>();
  for (const runtime::DeployedModel& m : deployment.models()) {
    for (size_t p = 0; p < m.shares.size(); ++p) {
      if (!m.shares[p].empty()) BATON_RETURN_IF_ERROR(split->Set(m.id, m.graph.partitions[p].id, m.shares[p]));
    }
  }
  policy::PolicyOptions policy_options;
  policy_options.split = std::move(split);
  std::vector<runtime::DeviceSetup> devices;
  uint32_t pu_id = 0;
  for (size_t d = 0; d < config.devices.size(); ++d) {
    runtime::DeviceSetup dev;
    dev.id = DeviceId(static_cast<uint32_t>(d));
    dev.name = config.devices[d].name;
    dev.max_queue = static_cast<size_t>(config.run.max_queue);
    BATON_ASSIGN_OR_RETURN(dev.policy, policy::MakeLowLevelPolicy(low_level, policy_options));
    for (const config::PuConfig& pu : config.devices[d].pus) {
      runtime::PuSetup s{PuId(pu_id++), pu.name, pu.kind, PinCoresOf(pu), pu.nice,
                           BatchSchedulingOf(pu)};
      dev.pus.push_back(std::move(s));
    }
    if (remotes != nullptr && remotes->by_device[d]) {
      remotes->by_device[d]->Bind(dev.id, dev.pus, &deployment.runners());
      dev.remote = remotes->by_device[d];
    }
    devices.push_back(std::move(dev));
  }
  BATON_ASSIGN_OR_RETURN(b.rt, runtime::Runtime::Create(std::move(devices), b.latency.get(), &deployment.runners(),
                                                        {.observer = observer}));
  for (const runtime::DeployedModel& m : deployment.models()) {
    dispatch::ModelGraph graph = m.graph;
    if (!fixed) {
      for (auto& p : graph.partitions) p.fixed_pu.reset();
    }
    dispatch::ModelOptions model_options{.max_in_flight = config.run.max_in_flight};
    for (const config::ModelConfig& mc : config.models) {
      if (mc.name == m.name && mc.execution_timeout_ms) {
        model_options.exec_timeout = std::chrono::duration_cast<Duration>(
            std::chrono::duration<double, std::milli>(*mc.execution_timeout_ms));
      }
    }
    BATON_RETURN_IF_ERROR(b.rt->AddModel(m.id, std::move(graph), model_options));
  }
  BATON_RETURN_IF_ERROR(b.rt->Start());
  return b;
}

absl::StatusOr<Assembly> Assemble(const config::RunConfig& config, Remotes* remotes, const AssembleOptions& options) {
  auto say = [&](const std::string& line) {
    if (options.say) options.say(line);
  };
  // Models, inputs and (for --verify) the whole-model reference outputs.
  const std::string cache_dir = options.cache_dir.empty() ? DefaultCacheDir() : options.cache_dir;
  Assembly a;
  BATON_RETURN_IF_ERROR(StopBefore(options.stop, "loading the models"));
  BATON_ASSIGN_OR_RETURN(a.models, LoadModels(config, cache_dir, options.samples, options.with_expected, say));
  std::vector<LoadedModel>& models = a.models;

  // Executors, one per PU.
  BATON_ASSIGN_OR_RETURN(a.pus, MakePus(config));
  PuSet& pu_set = a.pus;
  if (remotes != nullptr) AttachRemoteExecutors(pu_set, *remotes);

  // The profile: for the bounds, and for every high-level policy but `whole`.
  std::optional<Planning>& planning = a.planning;
  std::string& profile_source = a.profile_source;
  profile_source = options.profile_path;
  std::optional<plan::PlanFile>& plan_file = a.plan;
  if (!options.plan_path.empty()) {
    BATON_ASSIGN_OR_RETURN(plan::PlanFile loaded, plan::PlanFile::Load(options.plan_path));
    std::error_code ec;  // a profile the plan names but that cannot be read is not used
    if (profile_source.empty() && !loaded.profile.empty() && fs::exists(loaded.profile, ec)) {
      profile_source = loaded.profile;
    }
    plan_file = std::move(loaded);
  }
  if (!options.no_profile) {
    profile::Profile prof;
    if (!profile_source.empty()) {
      BATON_ASSIGN_OR_RETURN(prof, profile::Profile::Load(profile_source));
    } else {
      profiler::ProfilerOptions quick = QuickProfilerOptions(pu_set.profiler_pus.size());
      profile_source = AutoProfilePath(cache_dir, models, pu_set, quick);
      quick.stop = options.stop;  // the profiler stops before its next measurement, keeping what it measured
      BATON_RETURN_IF_ERROR(StopBefore(options.stop, "profiling"));
      say(absl::StrCat("profiling into ", profile_source, " (kept for the next run of this config)"));
      // A model measured for another configuration on the same kinds of PU
      // (the other profiles of this cache) is not measured again.
      const auto seeded = [&](const std::vector<profiler::Seeded>& taken) {
        std::vector<std::string> files;  // one line per profile taken from
        for (const profiler::Seeded& s : taken) {
          if (std::find(files.begin(), files.end(), s.from) == files.end()) files.push_back(s.from);
        }
        for (const std::string& file : files) {
          std::vector<std::string> names;
          int measurements = 0;
          for (const profiler::Seeded& s : taken) {
            if (s.from != file) continue;
            names.push_back(s.as == s.model ? s.model : absl::StrCat(s.model, " (as ", s.as, ")"));
            measurements += s.measurements;
          }
          say(absl::StrCat("profile: ", measurements, " measurements of ", absl::StrJoin(names, ", "), " taken from ",
                           file, " (the same models on the same kinds of PU); only what they lack is measured"));
        }
      };
      BATON_ASSIGN_OR_RETURN(prof, ProfileInto(profile_source, models, pu_set, quick, options.profile_progress,
                                               fs::path(profile_source).parent_path().string(), seeded));
    }
    BATON_ASSIGN_OR_RETURN(Planning built, BuildPlanning(config, models, pu_set, prof, profile_source));
    planning = std::move(built);
  }

  // Which device each model runs on: round-robin, or transfer_aware.
  std::vector<DeviceId> round_robin(models.size());
  for (size_t i = 0; i < models.size(); ++i) round_robin[i] = DeviceOfModel(config, i);
  std::vector<DeviceId>& device_of = a.device_of;
  device_of = round_robin;
  const bool transfer_aware = config.policy.device_placement == "transfer_aware" ||
                              (config.policy.device_placement == "auto" && remotes != nullptr);
  if (transfer_aware && config.devices.size() > 1 && !plan_file) {
    const std::vector<std::optional<Remotes::Link>> no_links;
    BATON_ASSIGN_OR_RETURN(plan::DevicePlacement placed,
                           PlaceModelsOnDevices(config, models, pu_set, remotes != nullptr ? remotes->links : no_links));
    device_of = placed.device_of;
    for (const std::string& line : placed.explain) say(absl::StrCat("device placement: ", line));
  }
  if (planning && device_of != round_robin) {
    // The profile's problem was built for round-robin devices: rebuild it for these.
    BATON_ASSIGN_OR_RETURN(profile::Profile prof, profile::Profile::Load(profile_source));
    BATON_ASSIGN_OR_RETURN(Planning built, BuildPlanning(config, models, pu_set, prof, profile_source, device_of));
    planning = std::move(built);
  }

  // baton's own deployment: the given plan, or one made now by the configured
  // high-level policy (plan::MakePlacement, the one implementation of each
  // name) from the profile, or from estimated costs when there is none.
  std::vector<runtime::DeployModel>& deploy = a.deploy;
  std::optional<profile::Placement>& planned_placement = a.planned_placement;
  BATON_RETURN_IF_ERROR(StopBefore(options.stop, "planning"));
  if (!plan_file) {
    BATON_ASSIGN_OR_RETURN(const plan::HighLevelPolicy policy, plan::ParseHighLevelPolicy(config.policy.high_level));
    std::optional<Planning> estimate;
    if (!planning) {
      if (plan::InfoOf(policy).needs_profile) {
        return absl::InvalidArgumentError(absl::StrCat("high-level policy '", config.policy.high_level,
                                                       "' needs a profile; drop --no-profile, or use whole, "
                                                       "capability or balanced"));
      }
      BATON_ASSIGN_OR_RETURN(Planning built, BuildEstimatedPlanning(config, models, pu_set, device_of));
      estimate = std::move(built);
      a.estimated = true;
    }
    plan::PlanOptions plan_options;
    plan_options.max_stages = config.policy.stages;
    for (const LoadedModel& lm : models) plan_options.model_stages.push_back(lm.config->partitions.value_or(0));
    plan_options.seed = config.run.seed;
    say(absl::StrCat("planning (", config.policy.high_level, ") from ",
                     planning ? "the profile" : "estimated costs (no profile)"));
    BATON_ASSIGN_OR_RETURN(plan::PlanFile made, MakePlan(planning ? *planning : *estimate, config, models, pu_set,
                                                         policy, plan_options,
                                                         planning ? profile_source : std::string()));
    plan_file = std::move(made);
  }
  // Dynamic batching: the planner's choice (Planning::batching, which a plan
  // made now records). A given plan's recorded choice applies instead, up to
  // the config's max_batch, unless the config says `batching: on`.
  a.batching = planning ? planning->batching : ChooseBatching(models, nullptr);
  for (size_t i = 0; i < models.size(); ++i) {
    const config::ModelConfig& mc = *models[i].config;
    if (mc.max_batch <= 1) continue;
    if (!options.plan_path.empty() && mc.batching != "on") {
      for (const plan::PlanModel& pm : plan_file->models) {
        if (pm.name != mc.name || !pm.max_batch) continue;
        const int batch = std::min(*pm.max_batch, mc.max_batch);
        a.batching[i].batch = batch;
        a.batching[i].reason =
            absl::StrCat("the plan's choice: ", batch > 1 ? absl::StrCat("batch ", batch) : std::string("off"),
                         *pm.max_batch > mc.max_batch ? absl::StrCat(" (it says ", *pm.max_batch, "; max_batch caps it)")
                                                      : std::string());
      }
    }
    say(absl::StrCat("model '", mc.name, "': dynamic batching: ", a.batching[i].reason));
  }
  BATON_ASSIGN_OR_RETURN(deploy, DeployFromPlan(*plan_file, options.plan_path.empty() ? "(made for this run)"
                                                                                        : options.plan_path,
                                                config, models, pu_set, device_of));
  // With an online low-level policy the plan is a starting point: its
  // partitions are kept, and each may run on any PU that supports it.
  const bool widen = config.policy.low_level != "fixed";
  for (runtime::DeployModel& dm : deploy) {
    dm.other_pus = widen;
    if (remotes != nullptr) {
      // Every other device is a fallback for the model's partitions.
      for (size_t d = 0; d < config.devices.size(); ++d) {
        if (DeviceId(static_cast<uint32_t>(d)) != dm.device) dm.fallback_devices.push_back(DeviceId(static_cast<uint32_t>(d)));
      }
    }
  }
  if (!a.estimated) {
    a.profile_predicted_rps = plan_file->predicted_throughput_rps;
    if (planning) {
      planned_placement = PlacementOfPlan(*plan_file, *planning, models, widen);
      if (planned_placement) {
        BATON_ASSIGN_OR_RETURN(profile::Prediction prediction, profile::Predict(planning->problem, *planned_placement));
        a.profile_predicted_rps = prediction.throughput_rps;
      }
    }
  }
  // Request priorities: the plan's where it gives one (plan::PlannedPriorities),
  // else the config's.
  a.configured_priorities = RequestPriorities(nullptr, models);
  a.priorities = RequestPriorities(plan_file ? &*plan_file : nullptr, models);
  if (!options.deploy) return a;
  BATON_RETURN_IF_ERROR(StopBefore(options.stop, "creating sessions"));
  say(absl::StrCat("creating sessions (plan ", plan_file->policy, ")"));
  BATON_ASSIGN_OR_RETURN(a.deployment, runtime::Deployment::Build(pu_set.devices, deploy));
  for (const std::string& w : a.deployment->warnings()) std::fprintf(stderr, "baton: warning: %s\n", w.c_str());
  BATON_RETURN_IF_ERROR(StopBefore(options.stop, "starting the runtime"));
  BATON_ASSIGN_OR_RETURN(a.runtime, MakeRuntime(config, *a.deployment, config.policy.low_level,
                                                /*fixed=*/config.policy.low_level == "fixed", options.observer,
                                                remotes));
  if (planning) BATON_RETURN_IF_ERROR(SetPriors(*planning, *a.deployment, *a.runtime.latency));
  // Parsing, profiling and extracting partitions freed much more than the
  // sessions keep; hand it back rather than carry it for the whole run.
  ReleaseFreedMemory();
  return a;
}

absl::StatusOr<std::unique_ptr<runtime::Batcher>> MakeBatcher(runtime::Runtime* rt,
                                                              const std::vector<LoadedModel>& models,
                                                              const std::vector<profile::BatchChoice>& batching,
                                                              const runtime::Deployment* deployment,
                                                              int max_waiting) {
  std::unique_ptr<runtime::Batcher> batcher;
  for (size_t i = 0; i < models.size(); ++i) {
    const LoadedModel& m = models[i];
    const int max_batch = i < batching.size() ? batching[i].batch : 1;
    if (max_batch <= 1) continue;
    // One batch in flight per PU the model's partitions were prepared on:
    // batching then never leaves a PU without this model's work that
    // unbatched requests would have given it.
    int max_in_flight = 0;
    if (deployment != nullptr) {
      for (const runtime::DeployedModel& dm : deployment->models()) {
        if (dm.id != m.id) continue;
        std::set<uint32_t> pus;
        for (const std::vector<PuId>& capable : dm.capable_pus) {
          for (PuId pu : capable) pus.insert(pu.value);
        }
        max_in_flight = static_cast<int>(pus.size());
      }
    }
    if (!batcher) {
      batcher = std::make_unique<runtime::Batcher>(
          [rt](ModelId id, dispatch::NamedTensors in, dispatch::RequestOptions o, runtime::DoneCallback done) {
            return rt->Submit(id, std::move(in), o, std::move(done));
          },
          [rt] { return rt->Now(); }, /*own_timer=*/true, [rt](RequestId id) { rt->Cancel(id); });
    }
    BATON_RETURN_IF_ERROR(batcher->SetModel(
        m.id, runtime::BatchingOptions{max_batch, FromMillis(m.config->max_queue_delay_ms), max_in_flight,
                                       max_waiting, m.config->name}));
  }
  return batcher;
}

absl::StatusOr<std::unique_ptr<Remotes>> ConnectRemoteDevices(const config::RunConfig& config,
                                                              const AssembleOptions& options) {
  if (!HasRemoteDevices(config)) return nullptr;
  if (!options.plan_path.empty() || !options.profile_path.empty()) {
    return absl::InvalidArgumentError(
        "--plan and --profile are not supported with remote devices yet (profiles measure local PUs only); "
        "drop them, or run the plan on local devices");
  }
  auto say = [&](const std::string& line) {
    if (options.say) options.say(line);
  };
  BATON_ASSIGN_OR_RETURN(Remotes remotes, ConnectRemotes(config, say, options.stop));
  const plan::HighLevelPolicyInfo* info = plan::FindHighLevelPolicy(config.policy.high_level);
  if (info != nullptr && info->needs_profile) {
    // Profiles measure local PUs only; without one, plan from estimated costs.
    say(absl::StrCat("high-level policy '", config.policy.high_level,
                     "' needs a profile, which remote devices do not have yet; using balanced"));
    remotes.resolved.policy.high_level = "balanced";
  }
  return std::make_unique<Remotes>(std::move(remotes));
}

trace::TraceNames TraceNamesOf(const config::RunConfig& config) {
  trace::TraceNames names;
  for (size_t d = 0; d < config.devices.size(); ++d) {
    names.devices.push_back(config.devices[d].name);
    for (const config::PuConfig& pu : config.devices[d].pus) {
      names.pus.push_back({DeviceId(static_cast<uint32_t>(d)), absl::StrCat(pu.name, " (", pu.kind, ")")});
    }
  }
  for (const config::ModelConfig& m : config.models) names.models.push_back(m.name);
  return names;
}

}  // namespace baton::app
