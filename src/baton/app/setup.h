// What every command that runs a configuration needs: the models loaded (zoo
// models generated into the cache on first use) with sample inputs, and one
// executor per configured PU. Shared by `baton run`, `baton profile` and
// `baton plan`.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "baton/backend/executor.h"
#include "baton/config/run_config.h"
#include "baton/core/ids.h"
#include "baton/core/status.h"
#include "baton/dispatch/messages.h"
#include "baton/graph/model.h"
#include "baton/net/agent_server.h"
#include "baton/profiler/profiler.h"
#include "baton/runtime/deployment.h"

namespace baton::app {

// The folder zoo models are cached in: $BATON_CACHE_DIR, else
// $XDG_CACHE_HOME/baton, else $HOME/.cache/baton, else ./.baton-cache.
std::string DefaultCacheDir();

using Say = std::function<void(const std::string&)>;

// The config at `path`, or the embedded default workload (one CPU PU per
// core) when `path` is empty.
absl::StatusOr<config::RunConfig> LoadConfigOrDefault(const std::string& path);

struct LoadedModel {
  const config::ModelConfig* config = nullptr;  // points into the RunConfig passed to LoadModels
  ModelId id;
  std::string source;
  std::string content_hash;  // profile::HashHex of the serialized model (model->SerializeToString())
  // What baton runs: the model, or with max_batch > 1 its copy with a free
  // leading dimension (graph::WithFreeBatchDim, checked on the samples).
  std::shared_ptr<const graph::Model> model;
  // With batching: the model as loaded, which the baselines run (null otherwise).
  std::shared_ptr<const graph::Model> unbatched;
  const graph::Model& baseline_model() const { return unbatched ? *unbatched : *model; }
  std::vector<dispatch::NamedTensors> samples;
  std::vector<dispatch::NamedTensors> expected;  // whole-model ORT outputs per sample (with_expected)
};

// Loads every configured model with `samples` random input sets (seeded by
// config.run.seed) and, with `with_expected`, whole-model ORT outputs for them.
absl::StatusOr<std::vector<LoadedModel>> LoadModels(const config::RunConfig& config, const std::string& cache_dir,
                                                    int samples, bool with_expected, const Say& say);

// The executor of one configured PU ("cpu" or "emu"), the key of the prepared
// session it may share with other PUs (1-thread CPU PUs share one unless
// its config sets share_session: false; "" = none) and the cores its worker thread pins
// itself to (a CPU PU's first core; ORT pins the pool workers).
struct PuExecutor {
  std::unique_ptr<backend::Executor> executor;
  std::string share_key;
  std::vector<int> pin_cores;
};
PuExecutor MakePuExecutor(const config::PuConfig& pu);

// The one pinning rule: the cores a PU's worker thread pins itself to (a CPU
// PU's first configured core; ORT pins its pool workers to the others; none
// for an emulated PU or an unpinned CPU PU).
std::vector<int> PinCoresOf(const config::PuConfig& pu);
// Whether a PU's worker thread runs under SCHED_BATCH (a CPU PU's
// `scheduling: batch`, the default; never an emulated PU).
bool BatchSchedulingOf(const config::PuConfig& pu);

// An agent's PUs (`baton agent`): one executor per PU of `device`, and what
// the agent serves for each (AgentPu borrows the executor, which
// `executors` owns; keep both together).
struct AgentPus {
  std::vector<std::unique_ptr<backend::Executor>> executors;
  std::vector<net::AgentPu> pus;
};
AgentPus MakeAgentPus(const config::DeviceConfig& device);

// One executor per configured PU; PuIds number the PUs over all devices in
// config order, DeviceIds the devices.
struct PuSet {
  std::vector<std::unique_ptr<backend::Executor>> executors;
  std::vector<runtime::DeployDevice> devices;
  std::vector<profiler::ProfilerPu> profiler_pus;  // by PuId
  std::vector<uint32_t> device_of;                 // by PuId
  bool all_cpu = true;
  int cpu_threads = 0;
  std::vector<int> cpu_cores;
  bool cpu_cores_complete = true;
};
absl::StatusOr<PuSet> MakePus(const config::RunConfig& config);

// The device each model runs on: models go round-robin over the devices.
DeviceId DeviceOfModel(const config::RunConfig& config, size_t model_index);

}  // namespace baton::app
