#include "baton/app/setup.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "baton/backend/emu/emu_executor.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/profile/profile.h"
#include "baton/graph/batch.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"

namespace baton::app {

namespace fs = std::filesystem;

std::string DefaultCacheDir() {
  if (const char* dir = std::getenv("BATON_CACHE_DIR"); dir && *dir) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return (fs::path(xdg) / "baton").string();
  if (const char* home = std::getenv("HOME"); home && *home) return (fs::path(home) / ".cache" / "baton").string();
  return ".baton-cache";
}

absl::StatusOr<config::RunConfig> LoadConfigOrDefault(const std::string& path) {
  if (path.empty()) return config::DefaultRunConfig(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return config::LoadRunConfig(path);
}

namespace {

// The file a model path names: a zoo model is generated into the cache on first use.
absl::StatusOr<fs::path> ResolveModelPath(const config::ModelConfig& m, const config::RunConfig& config,
                                          const std::string& cache_dir) {
  if (std::optional<std::string> zoo_name = config::ZooName(m.path)) {
    const fs::path file = fs::path(cache_dir) / "zoo" / (*zoo_name + ".onnx");
    std::error_code unreadable;  // an unreadable cache is generated into again, and that write says why it fails
    if (fs::exists(file, unreadable)) return file;
    absl::StatusOr<std::string> bytes = zoo::Generate(*zoo_name, /*small=*/false);
    if (!bytes.ok()) {
      return absl::Status(bytes.status().code(),
                          absl::StrCat("model '", m.name, "' (", m.path, "): ", bytes.status().message()));
    }
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    const fs::path tmp = file.string() + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << *bytes;
      if (!out) {
        return absl::InvalidArgumentError(absl::StrCat("cannot write the zoo model cache '", tmp.string(),
                                                       "'; set BATON_CACHE_DIR to a writable folder"));
      }
    }
    fs::rename(tmp, file, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot move '", tmp.string(), "' to '", file.string(), "'"));
    return file;
  }
  fs::path p(m.path);
  if (p.is_relative() && !config.base_dir.empty()) p = fs::path(config.base_dir) / p;
  return p;
}

}  // namespace

absl::StatusOr<std::vector<LoadedModel>> LoadModels(const config::RunConfig& config, const std::string& cache_dir,
                                                    int samples, bool with_expected, const Say& say) {
  std::vector<LoadedModel> models;
  for (size_t i = 0; i < config.models.size(); ++i) {
    const config::ModelConfig& mc = config.models[i];
    LoadedModel lm;
    lm.config = &mc;
    lm.id = ModelId(static_cast<uint32_t>(i));
    BATON_ASSIGN_OR_RETURN(fs::path file, ResolveModelPath(mc, config, cache_dir));
    lm.source = file.string();
    if (say) say(absl::StrCat("loading model '", mc.name, "' from ", lm.source));
    absl::StatusOr<std::shared_ptr<const graph::Model>> model = graph::Model::LoadFile(file);
    if (!model.ok()) {
      return absl::Status(model.status().code(), absl::StrCat("model '", mc.name, "': ", model.status().message()));
    }
    lm.model = *model;
    // The loaded model, external data inlined: what baton partitions is what
    // the baselines run. Not kept: a second copy of every weight would count
    // in every run's memory; the baselines serialize it again when they need it.
    lm.content_hash = profile::HashHex(lm.model->SerializeToString());
    // Batching is checked on two samples stacked, whatever the caller asked
    // for (`baton plan` and `baton profile` ask for none).
    const int model_samples = mc.max_batch > 1 ? std::max(samples, 2) : samples;
    for (int s = 0; s < model_samples; ++s) {
      absl::StatusOr<dispatch::NamedTensors> in =
          verify::RandomInputs(*lm.model, config.run.seed * 1000 + i * 10 + static_cast<uint64_t>(s));
      if (!in.ok()) {
        return absl::Status(in.status().code(), absl::StrCat("model '", mc.name, "': cannot make inputs: ",
                                                             in.status().message()));
      }
      if (with_expected) {
        absl::StatusOr<dispatch::NamedTensors> out = verify::RunWholeModel(*lm.model, *in);
        if (!out.ok()) {
          return absl::Status(out.status().code(), absl::StrCat("model '", mc.name, "': the whole model fails in ONNX "
                                                                "Runtime: ", out.status().message()));
        }
        lm.expected.push_back(std::move(*out));
      }
      lm.samples.push_back(std::move(*in));
    }
    if (mc.max_batch > 1) {
      // Dynamic batching: a copy with a free leading dimension, used only if
      // it answers every sample, stacked, as it answers each alone.
      absl::StatusOr<std::shared_ptr<const graph::Model>> batched = graph::WithFreeBatchDim(*lm.model);
      if (!batched.ok()) {
        return absl::Status(batched.status().code(), absl::StrCat("model '", mc.name, "': max_batch ", mc.max_batch,
                                                                  ": ", batched.status().message()));
      }
      if (absl::Status s = verify::CheckBatchable(**batched, lm.samples); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("model '", mc.name, "': max_batch ", mc.max_batch, ": ", s.message()));
      }
      lm.unbatched = std::move(lm.model);
      lm.model = *std::move(batched);
      lm.content_hash = profile::HashHex(lm.model->SerializeToString());
    }
    models.push_back(std::move(lm));
  }
  return models;
}

namespace {

// What Hello tells the HL side about a PU (it cuts models for the agent's PUs).
net::AgentPuInfo PuInfoOf(const config::PuConfig& pu) {
  net::AgentPuInfo info;
  info.name = pu.name;
  info.kind = pu.kind;
  if (pu.kind == "cpu") {
    info.threads = pu.threads;
    return info;
  }
  info.speed = pu.speed;
  for (const auto& [op, speed] : pu.op_speed) info.op_speed[op] = speed;
  info.unsupported_ops = pu.unsupported_ops;
  info.compute = pu.compute;
  return info;
}

}  // namespace

AgentPus MakeAgentPus(const config::DeviceConfig& device) {
  AgentPus out;
  for (const config::PuConfig& pu : device.pus) {
    PuExecutor made = MakePuExecutor(pu);
    net::AgentPu agent_pu;
    agent_pu.name = pu.name;
    agent_pu.kind = pu.kind;
    agent_pu.info = PuInfoOf(pu);
    agent_pu.executor = made.executor.get();
    agent_pu.share_key = std::move(made.share_key);
    agent_pu.pin_cores = std::move(made.pin_cores);
    agent_pu.nice = pu.nice;
    agent_pu.batch_scheduling = BatchSchedulingOf(pu);
    out.executors.push_back(std::move(made.executor));
    out.pus.push_back(std::move(agent_pu));
  }
  return out;
}

std::vector<int> PinCoresOf(const config::PuConfig& pu) {
  // The PU's thread runs every session call; ORT pins the pool workers (cores[1..]).
  if (pu.kind == "cpu" && !pu.cores.empty()) return {pu.cores[0]};
  return {};
}

bool BatchSchedulingOf(const config::PuConfig& pu) { return pu.kind == "cpu" && pu.scheduling == "batch"; }

PuExecutor MakePuExecutor(const config::PuConfig& pu) {
  PuExecutor out;
  if (pu.kind == "cpu") {
    out.executor = std::make_unique<backend::CpuExecutor>(backend::CpuPuSpec{pu.name, pu.threads, pu.cores});
    if (pu.threads == 1 && pu.share_session) out.share_key = "cpu:1";
    out.pin_cores = PinCoresOf(pu);
    return out;
  }
  backend::EmuPuSpec spec;
  spec.name = pu.name;
  spec.speed = pu.speed;
  spec.op_speed = pu.op_speed;
  spec.unsupported_ops = pu.unsupported_ops;
  spec.compute = pu.compute;
  out.executor = std::make_unique<backend::EmuExecutor>(spec);
  return out;
}

absl::StatusOr<PuSet> MakePus(const config::RunConfig& config) {
  PuSet set;
  uint32_t pu_id = 0;
  for (size_t d = 0; d < config.devices.size(); ++d) {
    runtime::DeployDevice dev{DeviceId(static_cast<uint32_t>(d)), config.devices[d].name, {}};
    for (const config::PuConfig& pu : config.devices[d].pus) {
      PuExecutor made = MakePuExecutor(pu);
      const std::string share_key = std::move(made.share_key);
      set.executors.push_back(std::move(made.executor));
      profiler::ProfilerPu ppu;
      ppu.name = pu.name;
      ppu.pin_cores = std::move(made.pin_cores);
      if (pu.kind == "cpu") {
        set.cpu_threads += pu.threads;
        set.cpu_cores.insert(set.cpu_cores.end(), pu.cores.begin(), pu.cores.end());
        set.cpu_cores_complete = set.cpu_cores_complete && !pu.cores.empty();
        ppu.kind_key = profiler::CpuKindKey(pu.threads);
        ppu.is_cpu = true;
      } else {
        set.all_cpu = false;
        ppu.kind_key = profiler::EmuKindKey(pu.speed, {pu.op_speed.begin(), pu.op_speed.end()}, pu.unsupported_ops,
                                            pu.compute);
      }
      ppu.executor = set.executors.back().get();
      dev.pus.push_back(runtime::DeployPu{PuId(pu_id++), pu.name, set.executors.back().get(), share_key});
      set.profiler_pus.push_back(std::move(ppu));
      set.device_of.push_back(static_cast<uint32_t>(d));
    }
    set.devices.push_back(std::move(dev));
  }
  return set;
}

DeviceId DeviceOfModel(const config::RunConfig& config, size_t model_index) {
  return DeviceId(static_cast<uint32_t>(model_index % config.devices.size()));
}

}  // namespace baton::app
