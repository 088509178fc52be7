#include "baton/runtime/speed_probe.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "baton/core/process.h"
#include "baton/runtime/device_shell.h"

namespace baton::runtime {

struct SpeedProbe::Item {
  ModelId model;
  PartitionId partition;
  std::string label;  // "<model>.p<i>"
  const backend::PreparedPartition* runner = nullptr;
  dispatch::NamedTensors inputs;
};

struct SpeedProbe::PuWork {
  ProbePu pu;
  std::vector<Item> items;
};

SpeedProbe::~SpeedProbe() = default;

absl::StatusOr<std::unique_ptr<SpeedProbe>> SpeedProbe::Create(const Deployment& deployment, std::vector<ProbePu> pus,
                                                               const std::vector<dispatch::NamedTensors>& samples) {
  if (samples.size() != deployment.models().size()) {
    return absl::InvalidArgumentError(absl::StrCat("speed probe: ", samples.size(), " input sets for ",
                                                   deployment.models().size(), " models; give one per model"));
  }
  std::unique_ptr<SpeedProbe> probe(new SpeedProbe);
  for (ProbePu& pu : pus) probe->work_.push_back(PuWork{std::move(pu), {}});
  for (size_t i = 0; i < deployment.models().size(); ++i) {
    const DeployedModel& dm = deployment.models()[i];
    // Every tensor one request produces, from the model inputs on.
    std::map<std::string, const Tensor*> values;
    for (const auto& [name, tensor] : samples[i]) values[name] = &tensor;
    std::vector<dispatch::NamedTensors> produced;
    produced.reserve(dm.plan.partitions.size());
    for (size_t p = 0; p < dm.plan.partitions.size(); ++p) {
      const partition::Partition& part = dm.plan.partitions[p];
      dispatch::NamedTensors inputs;
      for (const std::string& name : part.interface.inputs) {
        auto it = values.find(name);
        if (it == values.end()) {
          return absl::InvalidArgumentError(absl::StrCat("speed probe: partition ", part.name, " reads '", name,
                                                         "', which no sample input or earlier partition gives"));
        }
        inputs.emplace_back(name, it->second->Clone());
      }
      // Produce the outputs on the first PU that has the partition.
      const backend::PreparedPartition* first = nullptr;
      for (PuId u : dm.capable_pus[p]) {
        if ((first = deployment.runners().Find(dm.id, part.id, u)) != nullptr) break;
      }
      if (first == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("speed probe: partition ", part.name, " is prepared on no PU"));
      }
      std::vector<std::pair<std::string, const Tensor*>> feeds;
      for (const auto& [name, tensor] : inputs) feeds.emplace_back(name, &tensor);
      absl::StatusOr<backend::RunResult> result = first->Run(feeds);
      if (!result.ok()) {
        return absl::Status(result.status().code(),
                            absl::StrCat("speed probe: partition ", part.name, ": ", result.status().message()));
      }
      produced.push_back(std::move(result->outputs));
      for (const auto& [name, tensor] : produced.back()) values[name] = &tensor;
      for (PuWork& w : probe->work_) {
        if (std::find(dm.capable_pus[p].begin(), dm.capable_pus[p].end(), w.pu.id) == dm.capable_pus[p].end()) {
          continue;
        }
        const backend::PreparedPartition* runner = deployment.runners().Find(dm.id, part.id, w.pu.id);
        if (runner == nullptr) continue;
        dispatch::NamedTensors copy;
        for (const auto& [name, tensor] : inputs) copy.emplace_back(name, tensor.Clone());
        w.items.push_back(Item{dm.id, part.id, part.name, runner, std::move(copy)});
      }
    }
  }
  std::erase_if(probe->work_, [](const PuWork& w) { return w.items.empty(); });
  return probe;
}

// Runs of a partition per visit, back to back: the first warms the caches
// and is not counted, so the rest run under the conditions the profiler
// measured in (the same partition again and again).
constexpr size_t kRunsPerVisit = 3;

absl::StatusOr<std::vector<ProbeRun>> SpeedProbe::Run(int rounds, Duration max_time) const {
  if (rounds < 1 || max_time <= Duration::zero()) {
    return absl::InvalidArgumentError(absl::StrCat("speed probe: rounds ", rounds, " and max_time ",
                                                   max_time.count(), " ns; give rounds >= 1 and max_time > 0"));
  }
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + max_time;
  std::atomic<size_t> done{0};  // PUs that finished `rounds` cycles
  std::atomic<bool> stop{false};
  std::vector<std::vector<ProbeRun>> per_pu(work_.size());
  std::vector<absl::Status> errors(work_.size());
  {
    std::vector<std::jthread> threads;
    for (size_t w = 0; w < work_.size(); ++w) {
      threads.emplace_back([&, w] {
        NameThisThread("speed-probe");
        const PuWork& work = work_[w];
        if (!work.pu.pin_cores.empty()) {
          cpu_set_t set;
          CPU_ZERO(&set);
          for (int c : work.pu.pin_cores) {
            if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &set);
          }
          pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort, as the runtime
        }
        std::vector<ProbeRun>& out = per_pu[w];
        for (const Item& item : work.items) out.push_back(ProbeRun{item.model, item.partition, work.pu.id, 0, {}});
        std::vector<std::vector<std::pair<std::string, const Tensor*>>> feeds(work.items.size());
        for (size_t k = 0; k < work.items.size(); ++k) {
          for (const auto& [name, tensor] : work.items[k].inputs) feeds[k].emplace_back(name, &tensor);
        }
        // Keep cycling until every PU has done its rounds, so that the last
        // runs are contended too.
        for (int round = 0; !stop.load(std::memory_order_relaxed); ++round) {
          if (round == rounds) done.fetch_add(1);
          // Each partition visited in turn, kRunsPerVisit runs per visit.
          for (size_t step = 0; step < work.items.size() * kRunsPerVisit; ++step) {
            const size_t k = step / kRunsPerVisit;
            const size_t rep = step % kRunsPerVisit;
            if (stop.load(std::memory_order_relaxed)) break;
            const Clock::time_point start = Clock::now();
            absl::StatusOr<backend::RunResult> r = work.items[k].runner->Run(feeds[k]);
            Duration wall = Clock::now() - start;
            // An emulated accelerator charges more than the call took: hold
            // the PU asleep until then, as the runtime does, rather than
            // loop and take the CPU PUs' cores.
            if (r.ok() && r->busy > wall) {
              SleepUntilPrecisely(start + std::chrono::duration_cast<Clock::duration>(r->busy));
              wall = Clock::now() - start;
            }
            if (!r.ok()) {
              errors[w] = absl::Status(r.status().code(), absl::StrCat("speed probe: partition ", work.items[k].label,
                                                                        " on ", work.pu.name, ": ",
                                                                        r.status().message()));
              stop.store(true);
              break;
            }
            if (rep == 0) continue;  // the visit's first run warms its caches, as the profiler's warm-up does
            ++out[k].runs;
            out[k].total += std::max(wall, r->busy);
          }
          if (done.load() >= work_.size() || Clock::now() >= deadline) stop.store(true);
        }
      });
    }
  }  // joins
  for (const absl::Status& e : errors) BATON_RETURN_IF_ERROR(e);
  std::vector<ProbeRun> all;
  for (std::vector<ProbeRun>& runs : per_pu) {
    for (ProbeRun& r : runs) {
      if (r.runs > 0) all.push_back(r);
    }
  }
  return all;
}

}  // namespace baton::runtime
