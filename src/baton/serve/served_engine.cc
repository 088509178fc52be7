#include "baton/serve/served_engine.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/core/process.h"
#include "baton/serve/kserve_json.h"

namespace baton::serve {

namespace {

// How often the reaper looks whether a replaced engine is still held.
constexpr std::chrono::milliseconds kReapEvery{20};

absl::Status ToAbsl(const Status& s) {
  return s.ok() ? absl::OkStatus() : absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

void AddCounts(std::vector<uint64_t>& into, const std::vector<uint64_t>& more) {
  if (into.size() < more.size()) into.resize(more.size(), 0);
  for (size_t i = 0; i < more.size(); ++i) into[i] += more[i];
}

// `more` (a later engine's) added to `into`: counts, sums and histograms add
// up; the latency percentiles (a window of recent requests) and the times of
// the last answer are the later ones.
void AddModel(ModelStats& into, const ModelStats& more) {
  into.submitted += more.submitted;
  into.completed += more.completed;
  into.deadline_exceeded += more.deadline_exceeded;
  into.cancelled += more.cancelled;
  into.rejected += more.rejected;
  into.invalid += more.invalid;
  into.failed += more.failed;
  into.slo_met += more.slo_met;
  into.with_slo += more.with_slo;
  if (more.completed > 0) into.latency = more.latency;
  AddCounts(into.latency_bucket_counts, more.latency_bucket_counts);
  into.latency_sum_s += more.latency_sum_s;
  AddCounts(into.queue_bucket_counts, more.queue_bucket_counts);
  into.queue_sum_s += more.queue_sum_s;
  AddCounts(into.compute_bucket_counts, more.compute_bucket_counts);
  into.compute_sum_s += more.compute_sum_s;
  into.executions += more.executions;
  for (const ModelStats::BatchSize& b : more.batch_sizes) {
    auto it = std::find_if(into.batch_sizes.begin(), into.batch_sizes.end(),
                           [&](const ModelStats::BatchSize& a) { return a.size == b.size; });
    if (it == into.batch_sizes.end()) {
      into.batch_sizes.push_back(b);
    } else {
      it->executions += b.executions;
      it->compute_s += b.compute_s;
    }
  }
  std::sort(into.batch_sizes.begin(), into.batch_sizes.end(),
            [](const ModelStats::BatchSize& a, const ModelStats::BatchSize& b) { return a.size < b.size; });
  into.failed_sum_s += more.failed_sum_s;
  into.last_answer_unix_ms = std::max(into.last_answer_unix_ms, more.last_answer_unix_ms);
}

// `more` added to `into`, model by model, PU by PU and device by device (by
// name); a device's state (reachable, queued, running) is the later one's.
void AddStats(EngineStats& into, const EngineStats& more) {
  for (const ModelStats& m : more.models) {
    auto it = std::find_if(into.models.begin(), into.models.end(), [&](const ModelStats& a) { return a.name == m.name; });
    if (it == into.models.end()) {
      into.models.push_back(m);
    } else {
      AddModel(*it, m);
    }
  }
  for (const PuStatsView& p : more.pus) {
    auto it = std::find_if(into.pus.begin(), into.pus.end(), [&](const PuStatsView& a) { return a.name == p.name; });
    if (it == into.pus.end()) {
      into.pus.push_back(p);
    } else {
      it->runs += p.runs;
      it->busy_s += p.busy_s;
      it->run_cpu_s += p.run_cpu_s;
    }
  }
  for (const DeviceStatsView& d : more.devices) {
    auto it = std::find_if(into.devices.begin(), into.devices.end(),
                           [&](const DeviceStatsView& a) { return a.name == d.name; });
    if (it == into.devices.end()) {
      into.devices.push_back(d);
    } else {
      it->remote = d.remote;
      it->reachable = d.reachable;
      it->queued = d.queued;
      it->running = d.running;
      it->policy_violations += d.policy_violations;
      it->lost += d.lost;
      it->returned += d.returned;
    }
  }
  into.in_flight += more.in_flight;
}

}  // namespace

ServedEngine::ServedEngine(Engine& engine) {
  current_ = std::shared_ptr<Engine>(&engine, [](Engine*) {});  // borrowed
  for (const ModelInfo& m : engine.Models()) configured_.push_back(m.name);
  loaded_ = configured_;
}

absl::StatusOr<std::unique_ptr<ServedEngine>> ServedEngine::Explicit(std::vector<std::string> configured,
                                                                     std::vector<std::string> initial, Opener open) {
  std::unique_ptr<ServedEngine> s(new ServedEngine());
  s->explicit_ = true;
  s->started_ = std::chrono::steady_clock::now();
  s->configured_ = std::move(configured);
  s->open_ = std::move(open);
  for (const std::string& name : initial) {
    if (!s->Configured(name)) {
      return absl::InvalidArgumentError(absl::StrCat("--load-model '", name, "': the config has no such model; its models: [",
                                                     absl::StrJoin(s->configured_, ", "), "]"));
    }
  }
  std::vector<std::string> models;  // the config's order
  for (const std::string& name : s->configured_) {
    if (std::find(initial.begin(), initial.end(), name) != initial.end()) models.push_back(name);
  }
  if (!models.empty()) {
    Result<std::unique_ptr<Engine>> first = s->open_(models);
    if (!first.ok()) return ToAbsl(first.status());
    s->current_ = std::shared_ptr<Engine>(std::move(first).value());
    s->loaded_ = std::move(models);
  }
  ServedEngine* self = s.get();
  s->loader_ = std::thread([self] { self->LoaderLoop(); });
  s->reaper_ = std::thread([self] { self->ReaperLoop(); });
  return s;
}

ServedEngine::~ServedEngine() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (loader_.joinable()) loader_.join();
  {
    std::lock_guard lock(mu_);
    loader_done_ = true;
  }
  cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  std::shared_ptr<Engine> last;
  {
    std::lock_guard lock(mu_);
    last = std::move(current_);
  }
  if (last && explicit_) last->Close();
}

bool ServedEngine::Configured(const std::string& model) const {
  return std::find(configured_.begin(), configured_.end(), model) != configured_.end();
}

bool ServedEngine::Stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

std::vector<std::string> ServedEngine::Loaded() const {
  std::lock_guard lock(mu_);
  return loaded_;
}

std::shared_ptr<Engine> ServedEngine::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

absl::StatusOr<ServedEngine::Model> ServedEngine::Find(const std::string& name, std::string_view version) const {
  std::shared_ptr<Engine> engine = Current();
  if (engine != nullptr && (engine->FindModel(name) != nullptr || !explicit_)) {
    BATON_ASSIGN_OR_RETURN(const ModelInfo* info, ServedModel(*engine, name, version));
    return Model{std::move(engine), info};
  }
  const std::vector<std::string> loaded = Loaded();
  if (Configured(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", name, "' is not loaded; load it first (POST /v2/repository/models/", name,
        "/load, or gRPC RepositoryModelLoad); loaded now: [", absl::StrJoin(loaded, ", "), "]"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown model '", name.substr(0, 128), "'; this server has: [",
                                                 absl::StrJoin(configured_, ", "), "], loaded now: [",
                                                 absl::StrJoin(loaded, ", "), "]"));
}

EngineStats ServedEngine::Stats() const {
  if (!explicit_) return Current()->Stats();
  EngineStats total;
  std::vector<std::shared_ptr<Engine>> live;
  {
    std::lock_guard lock(mu_);
    total = carried_;
    live = retired_;
    if (current_ != nullptr) live.push_back(current_);
  }
  for (const std::shared_ptr<Engine>& e : live) AddStats(total, e->Stats());
  total.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  for (PuStatsView& p : total.pus) p.utilization = total.uptime_s > 0 ? p.busy_s / total.uptime_s : 0;
  const auto rank = [this](const std::string& name) {
    return std::find(configured_.begin(), configured_.end(), name) - configured_.begin();
  };
  std::stable_sort(total.models.begin(), total.models.end(),
                   [&](const ModelStats& a, const ModelStats& b) { return rank(a.name) < rank(b.name); });
  return total;
}

void ServedEngine::Load(const std::string& model, std::function<void(absl::Status)> done) {
  if (!Configured(model)) {
    done(absl::UnimplementedError(absl::StrCat(
        "cannot load model '", model.substr(0, 128), "': baton serve loads the models of its config only; add it "
        "to the config and restart (its models: [", absl::StrJoin(configured_, ", "), "])")));
    return;
  }
  if (!explicit_) {
    done(absl::OkStatus());  // it is loaded
    return;
  }
  Enqueue([this, model, done = std::move(done)] {
    if (Stopping()) {
      done(absl::UnavailableError(absl::StrCat("model '", model, "' was not loaded: the server is stopping")));
      return;
    }
    std::vector<std::string> models;
    const std::vector<std::string> loaded = Loaded();
    for (const std::string& name : configured_) {
      if (name == model || std::find(loaded.begin(), loaded.end(), name) != loaded.end()) models.push_back(name);
    }
    absl::Status s = Change(models);
    if (!s.ok()) s = absl::Status(s.code(), absl::StrCat("loading model '", model, "': ", s.message()));
    done(s);
  });
}

void ServedEngine::Unload(const std::string& model, std::function<void(absl::Status)> done) {
  if (!Configured(model)) {
    done(absl::InvalidArgumentError(absl::StrCat("unknown model '", model.substr(0, 128), "'; this server has: [",
                                                 absl::StrJoin(configured_, ", "), "]")));
    return;
  }
  if (!explicit_) {
    done(absl::UnimplementedError(absl::StrCat(
        "cannot unload model '", model, "': baton serve keeps every model of its config for as long as it runs (its "
        "plan shares the PUs among them); start it with --model-control-mode explicit to load and unload models "
        "while it serves, or leave it out of the config and restart")));
    return;
  }
  Enqueue([this, model, done = std::move(done)] {
    if (Stopping()) {
      done(absl::UnavailableError(absl::StrCat("model '", model, "' was not unloaded: the server is stopping")));
      return;
    }
    std::vector<std::string> models = Loaded();
    if (std::find(models.begin(), models.end(), model) == models.end()) {
      done(absl::OkStatus());  // not loaded: nothing to do
      return;
    }
    std::erase(models, model);
    absl::Status s = Change(models);
    if (!s.ok()) s = absl::Status(s.code(), absl::StrCat("unloading model '", model, "': ", s.message()));
    done(s);
  });
}

absl::Status ServedEngine::LoadAndWait(const std::string& model) {
  std::promise<absl::Status> outcome;
  std::future<absl::Status> f = outcome.get_future();
  Load(model, [&outcome](absl::Status s) { outcome.set_value(std::move(s)); });
  return f.get();
}

absl::Status ServedEngine::UnloadAndWait(const std::string& model) {
  std::promise<absl::Status> outcome;
  std::future<absl::Status> f = outcome.get_future();
  Unload(model, [&outcome](absl::Status s) { outcome.set_value(std::move(s)); });
  return f.get();
}

absl::Status ServedEngine::Change(const std::vector<std::string>& models) {
  if (models.empty()) {
    Install(nullptr, {});
    return absl::OkStatus();
  }
  Result<std::unique_ptr<Engine>> next = open_(models);
  if (!next.ok()) return ToAbsl(next.status());
  Install(std::shared_ptr<Engine>(std::move(next).value()), models);
  return absl::OkStatus();
}

void ServedEngine::Install(std::shared_ptr<Engine> next, std::vector<std::string> models) {
  {
    std::lock_guard lock(mu_);
    std::swap(current_, next);
    loaded_ = std::move(models);
    if (next != nullptr) retired_.push_back(std::move(next));
  }
  cv_.notify_all();
}

void ServedEngine::Enqueue(std::function<void()> job) {
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_all();
}

void ServedEngine::LoaderLoop() {
  NameThisThread("model-loader");
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();  // once stopping, a job only answers that it did not run
    lock.lock();
  }
}

void ServedEngine::ReaperLoop() {
  NameThisThread("engine-reaper");
  std::unique_lock lock(mu_);
  for (;;) {
    if (retired_.empty()) {
      cv_.wait(lock, [this] { return loader_done_ || !retired_.empty(); });
    } else {
      cv_.wait_for(lock, kReapEvery, [this] { return loader_done_; });  // looks again at those still held
    }
    // An engine nobody else holds can take no new request: close it here,
    // and keep what it counted (it stays in retired_, counted by Stats,
    // until its counts are in carried_). Once the loader is done, close
    // them all.
    const auto closable = [this](const std::shared_ptr<Engine>& e) { return loader_done_ || e.use_count() == 1; };
    for (auto it = std::find_if(retired_.begin(), retired_.end(), closable); it != retired_.end();
         it = std::find_if(retired_.begin(), retired_.end(), closable)) {
      std::shared_ptr<Engine> old = *it;
      lock.unlock();
      old->Close();  // at the end: answers what is still held, within its close timeout
      const EngineStats counted = old->Stats();
      lock.lock();
      AddStats(carried_, counted);
      std::erase(retired_, old);
      lock.unlock();
      old.reset();
      // Give the freed sessions back to the system (glibc keeps freed heap
      // memory for later), so that unloading a model frees memory.
      ::malloc_trim(0);
      lock.lock();
    }
    if (loader_done_ && retired_.empty()) return;
  }
}

}  // namespace baton::serve
