// ServedEngine: the models `baton serve` serves, loaded and unloaded while it
// serves (--model-control-mode explicit), over real engines of two small zoo
// models on one CPU PU.
#include "baton/serve/served_engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "baton/zoo/zoo.h"
#include "wait_until.h"

namespace baton::serve {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::WaitUntil;

class ServedEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("baton_served_engine_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    for (const char* name : {"squeezenet", "mobilenetv2"}) {
      absl::StatusOr<std::string> bytes = zoo::Generate(name, /*small=*/true);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      std::ofstream(*dir_ / (std::string(name) + ".onnx"), std::ios::binary) << *bytes;
    }
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  static constexpr const char* kConfig =
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\n"
      "models:\n  - {name: cam, path: squeezenet.onnx}\n  - {name: det, path: mobilenetv2.onnx}\n"
      "policy: {high_level: whole}\n";

  // Opens kConfig's `models`; fails (without opening) while fail_ is set.
  ServedEngine::Opener Opener() {
    return [this](const std::vector<std::string>& models) -> Result<std::unique_ptr<Engine>> {
      ++opened_;
      if (fail_) return Status(StatusCode::kInternal, "refused by the test");
      EngineOptions options;
      options.no_profile = true;
      options.cache_dir = (*dir_ / "cache").string();
      options.models = models;
      return Engine::OpenText(kConfig, dir_->string(), options);
    };
  }

  static std::unique_ptr<ServedEngine> Explicit(ServedEngine::Opener open, std::vector<std::string> initial) {
    absl::StatusOr<std::unique_ptr<ServedEngine>> s =
        ServedEngine::Explicit({"cam", "det"}, std::move(initial), std::move(open));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  // One request for `model` through `served`, as a front-end sends it.
  static absl::Status Infer(const ServedEngine& served, const std::string& model) {
    absl::StatusOr<ServedEngine::Model> m = served.Find(model);
    if (!m.ok()) return m.status();
    Tensors x;
    x.emplace(m->info->inputs[0].name, Tensor(m->info->inputs[0].elem_type, m->info->inputs[0].shape));
    Result<Tensors> out = m->engine->Infer(model, std::move(x));
    return out.ok() ? absl::OkStatus() : absl::InternalError(out.status().message());
  }

  static fs::path* dir_;
  std::atomic<int> opened_{0};
  std::atomic<bool> fail_{false};
};

fs::path* ServedEngineTest::dir_ = nullptr;

TEST_F(ServedEngineTest, ModelsAreLoadedAndUnloadedWhileRequestsHoldTheEngineTheyStartedOn) {
  std::unique_ptr<ServedEngine> served = Explicit(Opener(), {});
  ASSERT_NE(served, nullptr);
  EXPECT_TRUE(served->explicit_control());
  EXPECT_EQ(opened_, 0);  // nothing to open at start
  EXPECT_EQ(served->Current(), nullptr);
  EXPECT_TRUE(served->Loaded().empty());
  EXPECT_TRUE(served->Stats().models.empty());  // nothing served yet
  absl::StatusOr<ServedEngine::Model> none = served->Find("cam");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(none.status().message(), HasSubstr("model 'cam' is not loaded; load it first"));
  EXPECT_THAT(served->Find("zzz").status().message(), HasSubstr("unknown model 'zzz'; this server has: [cam, det]"));

  ASSERT_TRUE(served->LoadAndWait("cam").ok());
  EXPECT_THAT(served->Loaded(), ElementsAre("cam"));
  EXPECT_TRUE(Infer(*served, "cam").ok());
  EXPECT_THAT(served->Find("det").status().message(), HasSubstr("not loaded"));

  // A request that took the engine before a change keeps it; the old engine
  // is closed only once nothing holds it.
  absl::StatusOr<ServedEngine::Model> held = served->Find("cam");
  ASSERT_TRUE(held.ok());
  std::weak_ptr<Engine> first = held->engine;
  ASSERT_TRUE(served->LoadAndWait("det").ok());
  EXPECT_THAT(served->Loaded(), ElementsAre("cam", "det"));  // the config's order
  EXPECT_NE(served->Current(), held->engine);
  Tensors x;
  x.emplace(held->info->inputs[0].name, Tensor(held->info->inputs[0].elem_type, held->info->inputs[0].shape));
  EXPECT_TRUE(held->engine->Infer("cam", std::move(x)).ok());  // answered by the old engine
  EXPECT_FALSE(first.expired());
  held = absl::InternalError("released");
  EXPECT_TRUE(WaitUntil([&] { return first.expired(); }));
  EXPECT_TRUE(Infer(*served, "cam").ok());
  EXPECT_TRUE(Infer(*served, "det").ok());

  // Unloading: the model is refused by name; again, nothing happens; the last
  // one leaves no engine.
  ASSERT_TRUE(served->UnloadAndWait("cam").ok());
  EXPECT_THAT(served->Loaded(), ElementsAre("det"));
  EXPECT_THAT(Infer(*served, "cam").message(), HasSubstr("model 'cam' is not loaded"));
  EXPECT_TRUE(Infer(*served, "det").ok());
  const int opens = opened_;
  EXPECT_TRUE(served->UnloadAndWait("cam").ok());
  EXPECT_EQ(opened_, opens);
  EXPECT_EQ(served->UnloadAndWait("zzz").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(served->LoadAndWait("zzz").code(), absl::StatusCode::kUnimplemented);
  ASSERT_TRUE(served->UnloadAndWait("det").ok());
  EXPECT_EQ(served->Current(), nullptr);
  EXPECT_TRUE(served->Loaded().empty());

  // A failed open changes nothing: what was served is served.
  ASSERT_TRUE(served->LoadAndWait("det").ok());
  fail_ = true;
  const absl::Status failed = served->LoadAndWait("cam");
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(failed.message(), HasSubstr("loading model 'cam': refused by the test"));
  EXPECT_THAT(served->Loaded(), ElementsAre("det"));
  EXPECT_TRUE(Infer(*served, "det").ok());
  fail_ = false;
  // Loading a loaded model opens it again (Triton's reload).
  const int before_reload = opened_;
  std::weak_ptr<Engine> before = served->Current();
  ASSERT_TRUE(served->LoadAndWait("det").ok());
  EXPECT_EQ(opened_, before_reload + 1);
  EXPECT_TRUE(WaitUntil([&] { return before.expired(); }));
  EXPECT_TRUE(Infer(*served, "det").ok());
}

// Statistics add up over the engines: nothing goes back when the loaded
// models change, and an unloaded model keeps its counts.
TEST_F(ServedEngineTest, StatisticsAddUpOverChanges) {
  std::unique_ptr<ServedEngine> served = Explicit(Opener(), {"cam"});
  ASSERT_NE(served, nullptr);
  auto model = [&](const std::string& name) {
    const EngineStats s = served->Stats();
    for (const ModelStats& m : s.models) {
      if (m.name == name) return m;
    }
    return ModelStats{};
  };
  auto pu_runs = [&] {
    const EngineStats s = served->Stats();
    return s.pus.empty() ? uint64_t{0} : s.pus[0].runs;
  };
  ASSERT_TRUE(Infer(*served, "cam").ok());
  ASSERT_TRUE(Infer(*served, "cam").ok());
  EXPECT_EQ(model("cam").completed, 2u);
  const uint64_t runs_before = pu_runs();
  EXPECT_GE(runs_before, 2u);
  ASSERT_TRUE(served->LoadAndWait("det").ok());
  EXPECT_EQ(model("cam").completed, 2u);  // the replaced engine's, whether it is closed yet or not
  ASSERT_TRUE(Infer(*served, "cam").ok());
  ASSERT_TRUE(Infer(*served, "det").ok());
  ASSERT_TRUE(served->UnloadAndWait("cam").ok());
  const ModelStats cam = model("cam");
  EXPECT_EQ(cam.completed, 3u);
  EXPECT_EQ(cam.submitted, 3u);
  ASSERT_FALSE(cam.latency_bucket_counts.empty());
  EXPECT_EQ(cam.latency_bucket_counts.back(), 3u);  // the histogram adds up too
  EXPECT_GT(cam.latency.p50_ms, 0);
  EXPECT_EQ(model("det").completed, 1u);
  EXPECT_GE(pu_runs(), runs_before + 2);
  const EngineStats all = served->Stats();
  ASSERT_EQ(all.models.size(), 2u);
  EXPECT_EQ(all.models[0].name, "cam");  // the config's order
  EXPECT_EQ(all.pus.size(), 1u);
  // Once the replaced engines are closed, their counts are kept all the same.
  ASSERT_TRUE(served->UnloadAndWait("det").ok());
  EXPECT_TRUE(WaitUntil([&] { return served->Stats().in_flight == 0; }));
  EXPECT_EQ(model("cam").completed, 3u);
  EXPECT_EQ(model("det").completed, 1u);
}

TEST_F(ServedEngineTest, TheStartModelsAreCheckedAndOpenedInTheConfigsOrder) {
  absl::StatusOr<std::unique_ptr<ServedEngine>> bad = ServedEngine::Explicit({"cam", "det"}, {"zzz"}, Opener());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--load-model 'zzz': the config has no such model; its models: [cam, det]"));
  std::vector<std::string> asked;
  auto recording = [&, open = Opener()](const std::vector<std::string>& models) {
    asked = models;
    return open(models);
  };
  std::unique_ptr<ServedEngine> served = Explicit(recording, {"det", "cam"});
  ASSERT_NE(served, nullptr);
  EXPECT_THAT(asked, ElementsAre("cam", "det"));
  EXPECT_TRUE(Infer(*served, "cam").ok());
  fail_ = true;
  EXPECT_FALSE(ServedEngine::Explicit({"cam", "det"}, {"cam"}, Opener()).ok());  // the open's error
}

TEST_F(ServedEngineTest, AFixedEngineServesEveryModelAndRefusesToUnload) {
  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (*dir_ / "cache").string();
  Result<std::unique_ptr<Engine>> engine = Engine::OpenText(kConfig, dir_->string(), options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  {
    ServedEngine served(**engine);
    EXPECT_FALSE(served.explicit_control());
    EXPECT_THAT(served.Loaded(), ElementsAre("cam", "det"));
    EXPECT_TRUE(served.LoadAndWait("cam").ok());
    const absl::Status unload = served.UnloadAndWait("cam");
    EXPECT_EQ(unload.code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(unload.message(), HasSubstr("--model-control-mode explicit"));
    EXPECT_THAT(served.Find("zzz").status().message(), HasSubstr("unknown model 'zzz'; this server has: [cam, det]"));
    EXPECT_TRUE(Infer(served, "det").ok());
  }
  EXPECT_TRUE((*engine)->Infer("cam", [&] {
    Tensors x;
    const ModelInfo* m = (*engine)->FindModel("cam");
    x.emplace(m->inputs[0].name, Tensor(m->inputs[0].elem_type, m->inputs[0].shape));
    return x;
  }()).ok());  // borrowed: still open
}

// Requests from several threads while models come and go: each is answered,
// or refused by name while its model is not loaded; nothing else (TSan).
TEST_F(ServedEngineTest, RequestsDuringChangesAreAnsweredOrRefusedByName) {
  std::unique_ptr<ServedEngine> served = Explicit(Opener(), {"cam", "det"});
  ASSERT_NE(served, nullptr);
  std::atomic<bool> done{false};
  std::atomic<int> answered{0}, refused{0}, other{0};
  std::vector<std::thread> clients;
  for (const char* model : {"cam", "det"}) {
    clients.emplace_back([&, model] {
      while (!done) {
        const absl::Status s = Infer(*served, model);
        if (s.ok()) {
          ++answered;
        } else if (absl::StrContains(s.message(), "is not loaded")) {
          ++refused;
        } else {
          ++other;
          ADD_FAILURE() << s;
        }
      }
    });
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(served->UnloadAndWait("cam").ok());
    EXPECT_TRUE(served->LoadAndWait("cam").ok());
  }
  // Changes asked for and not waited for are all answered, by the time the
  // served models go away at the latest.
  std::atomic<int> outcomes{0};
  served->Unload("det", [&](absl::Status) { ++outcomes; });
  served->Load("det", [&](absl::Status) { ++outcomes; });
  EXPECT_TRUE(WaitUntil([&] { return answered > 20; }));
  done = true;
  for (std::thread& t : clients) t.join();
  served.reset();
  EXPECT_EQ(outcomes, 2);
  EXPECT_EQ(other, 0);
  EXPECT_GT(answered, 0);
}

}  // namespace
}  // namespace baton::serve
