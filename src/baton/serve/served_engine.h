// The models `baton serve` serves, over an engine that may be replaced while
// it serves.
//
// Fixed (Triton's model control mode "none", the default): one engine, opened
// before the server, serves every model of the config for as long as the
// server runs. Loading a served model is OK (it is loaded); unloading is
// refused, saying how to allow it.
//
// Explicit (`baton serve --model-control-mode explicit`): the server starts
// with the models named by --load-model (none by default, as Triton) and
// loads and unloads models of its config while it serves (the repository
// extension's load and unload). Each change opens a new engine on the models
// then loaded, so that its plan shares the PUs among exactly those, while the
// old engine goes on serving; then new requests go to the new engine, and the
// old one is closed once no request holds it, on a thread of its own (never
// on one of its own workers). A failed open changes nothing. Loading a loaded
// model opens it again (re-reading its file), as Triton reloads. Changes run
// one at a time, in order, on the loader's thread.
//
// A request takes the current engine with Find and holds it (Model::engine)
// until it is answered.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "baton/baton.h"
#include "baton/core/status.h"

namespace baton::serve {

class ServedEngine {
 public:
  // Opens an engine on `models` (names of the config's models, in its order;
  // never empty).
  using Opener = std::function<Result<std::unique_ptr<Engine>>(const std::vector<std::string>& models)>;

  // Fixed: serves `engine` (borrowed; it must outlive this).
  explicit ServedEngine(Engine& engine);
  // Explicit: `configured` are the config's models in its order; `initial`
  // (a subset, any order) are opened now, through `open`, unless empty.
  // InvalidArgument for a name the config lacks; the open's error otherwise.
  static absl::StatusOr<std::unique_ptr<ServedEngine>> Explicit(std::vector<std::string> configured,
                                                                std::vector<std::string> initial, Opener open);
  // Finishes the changes asked for, then closes every engine it opened
  // (waiting for the requests that hold them).
  ~ServedEngine();
  ServedEngine(const ServedEngine&) = delete;
  ServedEngine& operator=(const ServedEngine&) = delete;

  bool explicit_control() const { return explicit_; }
  // The config's models, in its order; whether `model` is one of them.
  const std::vector<std::string>& configured() const { return configured_; }
  bool Configured(const std::string& model) const;
  // The models served now, in the config's order.
  std::vector<std::string> Loaded() const;
  // The engine serving now (null when no model is loaded).
  std::shared_ptr<Engine> Current() const;

  struct Model {
    std::shared_ptr<Engine> engine;  // hold it until the request is answered
    const ModelInfo* info = nullptr;  // the engine's
  };
  // The model `name` at `version` ("" or "1"). InvalidArgument naming the
  // models served when the server has no such model, or, for a model of the
  // config that is not loaded, saying so and how to load it.
  absl::StatusOr<Model> Find(const std::string& name, std::string_view version = "") const;
  // The served models' stats. Fixed: the engine's. Explicit: added up over
  // every engine since the start (model by model, PU by PU), so that counters
  // never go back when the loaded models change: a model unloaded keeps its
  // counts; latency percentiles are those of the engine that served it last.
  EngineStats Stats() const;

  // The repository extension's load and unload of `model`. `done` gets the
  // outcome once, on the loader's thread (explicit) or here (fixed, or a
  // request refused at once). Unknown models are InvalidArgument; unloading
  // a model that is not loaded is OK; in fixed mode, Load of a served model
  // is OK and Unload is Unimplemented (saying to start with
  // --model-control-mode explicit).
  void Load(const std::string& model, std::function<void(absl::Status)> done);
  void Unload(const std::string& model, std::function<void(absl::Status)> done);
  // The same, waiting for the outcome.
  absl::Status LoadAndWait(const std::string& model);
  absl::Status UnloadAndWait(const std::string& model);

 private:
  ServedEngine() = default;
  bool Stopping() const;
  // On the loader's thread: opens the engine for `models` and installs it.
  absl::Status Change(const std::vector<std::string>& models);
  void Install(std::shared_ptr<Engine> next, std::vector<std::string> models);
  void Enqueue(std::function<void()> job);
  void LoaderLoop();
  void ReaperLoop();

  bool explicit_ = false;
  std::chrono::steady_clock::time_point started_;
  std::vector<std::string> configured_;
  Opener open_;

  mutable std::mutex mu_;
  std::shared_ptr<Engine> current_;      // guarded by mu_
  std::vector<std::string> loaded_;      // guarded by mu_; config order
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  std::vector<std::shared_ptr<Engine>> retired_;  // guarded by mu_; closed by the reaper
  EngineStats carried_;                  // guarded by mu_; what the closed engines counted
  bool stopping_ = false;                // guarded by mu_; changes still asked for are refused
  bool loader_done_ = false;             // guarded by mu_; the reaper then closes what is left
  std::condition_variable cv_;
  std::thread loader_;
  std::thread reaper_;
};

}  // namespace baton::serve
