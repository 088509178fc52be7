// baton::Engine (baton/baton.h): partitioned answers equal whole-model ONNX
// Runtime's, many threads at once, deadlines, bad inputs refused before any
// work runs, borrowed and adopted input buffers, stats, and Close.
#include "baton/baton.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "baton/app/setup.h"
#include "baton/backend/ort/ort_runner.h"
#include "baton/graph/model.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "spin_model.h"
#include "thread_stat.h"
#include "wait_until.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace baton {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::WaitUntil;  // a gate on the engine's state, not a sleep

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("baton_engine_test_" + std::to_string(::getpid())));
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

  // Two models on two 1-thread CPU PUs; `high_level` cuts them (no profile).
  static std::string Config(const std::string& high_level, const std::string& extra = "") {
    return "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}, {name: cpu1, kind: cpu, threads: 1}]}]\n"
           "models:\n"
           "  - {name: cam, path: squeezenet.onnx" + extra + "}\n"
           "  - {name: det, path: mobilenetv2.onnx}\n"
           "policy: {high_level: " + high_level + ", stages: 2}\n";
  }

  static std::unique_ptr<Engine> Open(const std::string& high_level, const std::string& extra = "") {
    EngineOptions options;
    options.no_profile = true;
    options.cache_dir = (*dir_ / "cache").string();
    Result<std::unique_ptr<Engine>> engine = Engine::OpenText(Config(high_level, extra), dir_->string(), options);
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    return engine.ok() ? std::move(engine).value() : nullptr;
  }

  // One 1-thread CPU PU, plan `whole`, the `models:` entries given (YAML list
  // items), with spin.onnx (tests/spin_model.h) written beside the zoo models.
  static std::unique_ptr<Engine> OpenWithSpin(const std::string& models, std::chrono::milliseconds close_timeout) {
    absl::StatusOr<std::string> spin = testing::SpinModelBytes();
    EXPECT_TRUE(spin.ok()) << spin.status();
    if (!spin.ok()) return nullptr;
    std::ofstream(*dir_ / "spin.onnx", std::ios::binary) << *spin;
    EngineOptions options;
    options.no_profile = true;
    options.cache_dir = (*dir_ / "cache").string();
    options.close_timeout = close_timeout;
    Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
        "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}]\nmodels:\n" + models +
            "policy: {high_level: whole}\n",
        dir_->string(), options);
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    return engine.ok() ? std::move(engine).value() : nullptr;
  }

  // The input of spin.onnx.
  static Tensors SpinInput() {
    Tensors x;
    x.emplace("x", Tensor(dtype::kFloat, {1}));
    return x;
  }
  // The answer of `f` (waited for at most 60 s): CANCELLED.
  static void ExpectCancelled(std::future<Result<Tensors>>& f) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    Result<Tensors> r = f.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  }
  // Infer on a thread of its own while `meanwhile` runs here; its answer.
  static Result<Tensors> InferWhile(Engine& engine, const std::string& model, Tensors inputs,
                                    const InferOptions& options, const std::function<void()>& meanwhile) {
    std::promise<Result<Tensors>> answer;
    std::thread caller([&] { answer.set_value(engine.Infer(model, std::move(inputs), options)); });
    meanwhile();
    caller.join();
    return answer.get_future().get();
  }

  // Random inputs of `model` (seeded) and whole-model ONNX Runtime's outputs for them.
  struct Reference {
    std::vector<std::pair<std::string, Tensor>> inputs;
    std::vector<std::pair<std::string, Tensor>> outputs;
  };
  static Reference MakeReference(const std::string& file, uint64_t seed) {
    Reference ref;
    auto model = graph::Model::LoadFile(*dir_ / file);
    EXPECT_TRUE(model.ok()) << model.status();
    auto inputs = verify::RandomInputs(**model, seed);
    EXPECT_TRUE(inputs.ok()) << inputs.status();
    auto runner = ort::OrtRunner::Create((*model)->SerializeToString(), {}, file);
    EXPECT_TRUE(runner.ok()) << runner.status();
    std::vector<std::pair<std::string, const Tensor*>> feeds;
    for (const auto& [n, t] : *inputs) feeds.emplace_back(n, &t);
    auto outs = (*runner)->Run(feeds);
    EXPECT_TRUE(outs.ok()) << outs.status();
    for (size_t i = 0; i < outs->size(); ++i) ref.outputs.emplace_back((*runner)->outputs()[i].name, std::move((*outs)[i]));
    ref.inputs = std::move(*inputs);
    return ref;
  }

  static Tensors Copy(const std::vector<std::pair<std::string, Tensor>>& in) {
    Tensors t;
    for (const auto& [n, v] : in) t.emplace(n, v.Clone());
    return t;
  }

  static void ExpectEqual(const Tensors& got, const std::vector<std::pair<std::string, Tensor>>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [n, w] : want) {
      auto it = got.find(n);
      ASSERT_NE(it, got.end()) << "output " << n;
      ASSERT_EQ(it->second.shape(), w.shape()) << n;
      std::span<const float> a = it->second.data<float>(), b = w.data<float>();
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4) << n << "[" << i << "]";
    }
  }

  static fs::path* dir_;
};
fs::path* EngineTest::dir_ = nullptr;

// A model's `labels` file: read relative to the config's folder, one label
// per line ("\r\n" too, the last newline optional), in ModelInfo; a file
// whose count fits no output, or that is missing, is an error at open.
TEST_F(EngineTest, ClassLabelsComeFromTheConfigsLabelsFile) {
  std::unique_ptr<Engine> plain = Open("whole");
  ASSERT_NE(plain, nullptr);
  const ModelInfo* cam = plain->FindModel("cam");
  ASSERT_NE(cam, nullptr);
  EXPECT_TRUE(cam->labels.empty());
  const int64_t classes = cam->outputs[0].shape.back();
  ASSERT_GT(classes, 1);
  plain->Close();
  {
    std::ofstream out(*dir_ / "labels.txt", std::ios::binary);
    for (int64_t i = 0; i < classes; ++i) out << "class " << i << (i == 0 ? "\r\n" : "\n");
  }
  std::unique_ptr<Engine> labelled = Open("whole", ", labels: labels.txt");
  ASSERT_NE(labelled, nullptr);
  const std::vector<std::string>& labels = labelled->FindModel("cam")->labels;
  ASSERT_EQ(labels.size(), static_cast<size_t>(classes));
  EXPECT_EQ(labels[0], "class 0");
  EXPECT_EQ(labels.back(), "class " + std::to_string(classes - 1));
  EXPECT_TRUE(labelled->FindModel("det")->labels.empty());
  labelled->Close();

  std::ofstream(*dir_ / "short.txt") << "cat\ndog\n";
  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (*dir_ / "cache").string();
  Result<std::unique_ptr<Engine>> wrong =
      Engine::OpenText(Config("whole", ", labels: short.txt"), dir_->string(), options);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("model 'cam': labels file"));
  EXPECT_THAT(wrong.status().message(), HasSubstr("has 2 labels, but no output has that many classes"));
  Result<std::unique_ptr<Engine>> missing =
      Engine::OpenText(Config("whole", ", labels: nowhere.txt"), dir_->string(), options);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  EXPECT_THAT(missing.status().message(), HasSubstr("nowhere.txt"));
  Result<std::unique_ptr<Engine>> empty = Engine::OpenText(Config("whole", ", labels: ''"), dir_->string(), options);
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("labels"));
}

TEST_F(EngineTest, DescribesItsModels) {
  std::unique_ptr<Engine> engine = Open("whole");
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->Models().size(), 2u);
  const ModelInfo* cam = engine->FindModel("cam");
  ASSERT_NE(cam, nullptr);
  EXPECT_EQ(cam->device, "local");
  EXPECT_EQ(cam->partitions, 1);
  ASSERT_EQ(cam->inputs.size(), 1u);
  EXPECT_EQ(cam->inputs[0].type_name, "float32");
  EXPECT_EQ(cam->inputs[0].shape.size(), 4u);
  EXPECT_FALSE(cam->outputs.empty());
  EXPECT_EQ(engine->FindModel("nope"), nullptr);
}

TEST_F(EngineTest, PartitionedAnswersEqualWholeModelOrt) {
  std::unique_ptr<Engine> engine = Open("balanced");
  ASSERT_NE(engine, nullptr);
  for (const char* name : {"cam", "det"}) {
    EXPECT_GE(engine->FindModel(name)->partitions, 2) << name << " should be cut in two";
  }
  for (uint64_t seed : {1, 2}) {
    Reference cam = MakeReference("squeezenet.onnx", seed);
    Reference det = MakeReference("mobilenetv2.onnx", seed);
    Result<Tensors> a = engine->Infer("cam", Copy(cam.inputs));
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    ExpectEqual(*a, cam.outputs);
    Result<Tensors> b = engine->Infer("det", Copy(det.inputs));
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ExpectEqual(*b, det.outputs);
  }
  const EngineStats stats = engine->Stats();
  ASSERT_EQ(stats.models.size(), 2u);
  EXPECT_EQ(stats.models[0].completed, 2u);
  EXPECT_EQ(stats.models[0].submitted, 2u);
  EXPECT_GT(stats.models[0].latency.p50_ms, 0);
  ASSERT_EQ(stats.pus.size(), 2u);
  uint64_t runs = 0;
  for (const PuStatsView& pu : stats.pus) runs += pu.runs;
  EXPECT_GE(runs, 8u);  // 4 requests x 2 partitions
  for (const PuStatsView& pu : stats.pus) {
    // The threads that ran its partitions used CPU, and no more than the
    // runs took (one ORT thread per PU here).
    if (pu.runs > 0) {
      EXPECT_GT(pu.run_cpu_s, 0) << pu.name;
    }
    EXPECT_LE(pu.run_cpu_s, pu.busy_s * 1.05 + 0.01) << pu.name;
  }
  // The PU workers and the dispatcher are named threads (top -H, perf),
  // named before the engine's Open returns.
  std::set<std::string> threads;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    threads.insert(name);
  }
  for (const PuStatsView& pu : stats.pus) EXPECT_EQ(threads.count("pu:" + pu.name), 1u) << pu.name;
  EXPECT_EQ(threads.count("dispatcher"), 1u);
}

// baton::RunWholeModel, the public reference: what ONNX Runtime answers for
// the whole model, and clear errors.
TEST_F(EngineTest, RunWholeModelAnswersWhatOnnxRuntimeAnswers) {
  const Reference ref = MakeReference("squeezenet.onnx", 11);
  const std::string path = (*dir_ / "squeezenet.onnx").string();
  Result<Tensors> out = RunWholeModel(path, Copy(ref.inputs));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ExpectEqual(*out, ref.outputs);
  Result<Tensors> missing = RunWholeModel(path, {});
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("input 'input' is missing"));
  Result<Tensors> nothing = RunWholeModel((*dir_ / "nothing.onnx").string(), Copy(ref.inputs));
  EXPECT_EQ(nothing.status().code(), StatusCode::kNotFound);
}

TEST_F(EngineTest, ManyThreadsAtOnce) {
  std::unique_ptr<Engine> engine = Open("balanced");
  ASSERT_NE(engine, nullptr);
  const Reference ref = MakeReference("squeezenet.onnx", 7);
  constexpr int kThreads = 8, kEach = 6;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        Result<Tensors> r = engine->Infer("cam", Copy(ref.inputs));
        if (!r.ok()) {
          ADD_FAILURE() << r.status().ToString();
          continue;
        }
        ExpectEqual(*r, ref.outputs);
        ++good;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), kThreads * kEach);
  EXPECT_EQ(engine->Stats().models[0].completed, static_cast<uint64_t>(kThreads * kEach));
}

TEST_F(EngineTest, AsyncFormsGiveTheSameAnswers) {
  std::unique_ptr<Engine> engine = Open("whole");
  ASSERT_NE(engine, nullptr);
  const Reference ref = MakeReference("squeezenet.onnx", 3);
  std::future<Result<Tensors>> future = engine->InferAsync("cam", Copy(ref.inputs));
  std::promise<Result<Tensors>> promise;
  engine->InferAsync("cam", Copy(ref.inputs), {}, [&](Result<Tensors> r) { promise.set_value(std::move(r)); });
  Result<Tensors> a = future.get();
  Result<Tensors> b = promise.get_future().get();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ExpectEqual(*a, ref.outputs);
  ExpectEqual(*b, ref.outputs);
}

// InferOptions::run_here_up_to: a model whose runs are that fast runs on the
// caller of InferAsync when a PU is idle, answered before InferAsync returns;
// slower than the bound, or without the option, the answer comes from
// baton's threads.
TEST_F(EngineTest, InferAsyncRunsAFastEnoughModelOnItsCallerWhenAPuIsIdle) {
  const Reference ref = MakeReference("squeezenet.onnx", 4);
  struct Seen {
    std::thread::id thread;
    bool before_return = false;
    Result<Tensors> answer = Status(StatusCode::kUnknown, "no answer");
  };
  auto send = [&](Engine& engine, std::chrono::nanoseconds up_to) {
    auto seen = std::make_shared<Seen>();
    auto returned = std::make_shared<std::atomic<bool>>(false);
    std::promise<void> done;
    InferOptions options;
    options.run_here_up_to = up_to;
    engine.InferAsync("cam", Copy(ref.inputs), options, [&, seen, returned](Result<Tensors> r) {
      seen->thread = std::this_thread::get_id();
      seen->before_return = !returned->load();
      seen->answer = std::move(r);
      done.set_value();
    });
    returned->store(true);
    done.get_future().wait();
    return seen;
  };
  {
    // No run measured yet: baton's threads answer, whatever the bound.
    std::unique_ptr<Engine> fresh = Open("whole");
    ASSERT_NE(fresh, nullptr);
    std::shared_ptr<Seen> seen = send(*fresh, std::chrono::seconds(10));
    ASSERT_TRUE(seen->answer.ok()) << seen->answer.status().ToString();
    EXPECT_NE(seen->thread, std::this_thread::get_id());
    ExpectEqual(*seen->answer, ref.outputs);
  }
  std::unique_ptr<Engine> engine = Open("whole");
  ASSERT_NE(engine, nullptr);
  // One run measured by Infer on this idle engine: this thread dispatches and
  // runs it, and gives the dispatcher role back before Infer returns, so the
  // next request finds the role free and the PU idle (no PU worker has run).
  Result<Tensors> measured = engine->Infer("cam", Copy(ref.inputs));
  ASSERT_TRUE(measured.ok()) << measured.status().ToString();
  // Within the bound: this thread runs each one, answered before InferAsync
  // returns, and again gives the role back.
  for (int i = 0; i < 3; ++i) {
    std::shared_ptr<Seen> seen = send(*engine, std::chrono::seconds(10));
    ASSERT_TRUE(seen->answer.ok()) << seen->answer.status().ToString();
    EXPECT_EQ(seen->thread, std::this_thread::get_id()) << "request " << i;
    EXPECT_TRUE(seen->before_return) << "request " << i;
    ExpectEqual(*seen->answer, ref.outputs);
  }
  // No option, then a bound below the model's run time: handed over.
  for (std::chrono::nanoseconds up_to : {std::chrono::nanoseconds(0), std::chrono::nanoseconds(1)}) {
    std::shared_ptr<Seen> seen = send(*engine, up_to);
    ASSERT_TRUE(seen->answer.ok()) << seen->answer.status().ToString();
    EXPECT_NE(seen->thread, std::this_thread::get_id()) << up_to.count();
    ExpectEqual(*seen->answer, ref.outputs);
  }
  EXPECT_EQ(engine->Stats().models[0].completed, 6u);
}

TEST_F(EngineTest, BorrowedAndAdoptedInputsAreNotCopiedAndAreReleased) {
  std::unique_ptr<Engine> engine = Open("balanced");
  ASSERT_NE(engine, nullptr);
  const Reference ref = MakeReference("squeezenet.onnx", 5);
  const Tensor& x = ref.inputs[0].second;
  std::vector<float> buffer(x.data<float>().begin(), x.data<float>().end());

  Tensors borrowed;
  borrowed.emplace(ref.inputs[0].first,
                   Tensor::Borrow(x.elem_type(), x.shape(), buffer.data(), buffer.size() * sizeof(float)));
  EXPECT_TRUE(borrowed.begin()->second.external());
  Result<Tensors> a = engine->Infer("cam", std::move(borrowed));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ExpectEqual(*a, ref.outputs);

  auto owned = std::make_shared<std::vector<float>>(buffer);
  std::weak_ptr<std::vector<float>> watch = owned;
  Tensors adopted;
  adopted.emplace(ref.inputs[0].first, Tensor::Adopt(x.elem_type(), x.shape(), owned->data(),
                                                     owned->size() * sizeof(float), owned));
  owned.reset();  // the tensor keeps it alive now
  EXPECT_FALSE(watch.expired());
  Result<Tensors> b = engine->Infer("cam", std::move(adopted));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ExpectEqual(*b, ref.outputs);
  engine->Close();  // everything answered and released
  EXPECT_TRUE(watch.expired());
  EXPECT_EQ(buffer, std::vector<float>(x.data<float>().begin(), x.data<float>().end())) << "inputs are read only";
}

TEST_F(EngineTest, AnInputBufferIsReleasedBeforeADeadlineAnswer) {
  // A slow emulated PU still runs the request when its deadline passes; the
  // answer must wait until the engine holds the caller's buffer no more, or a
  // caller that frees a borrowed buffer on the answer frees it under the PU.
  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (*dir_ / "cache").string();
  Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
      "devices: [{name: local, pus: [{name: slow, kind: emu, speed: 0.02, compute: true}]}]\n"
      "models: [{name: cam, path: squeezenet.onnx}]\n"
      "policy: {high_level: whole}\n",
      dir_->string(), options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const Reference ref = MakeReference("squeezenet.onnx", 5);
  const Tensor& x = ref.inputs[0].second;
  for (int round = 0; round < 3; ++round) {
    auto owned = std::make_shared<std::vector<float>>(x.data<float>().begin(), x.data<float>().end());
    std::weak_ptr<std::vector<float>> watch = owned;
    Tensors in;
    in.emplace(ref.inputs[0].first, Tensor::Adopt(x.elem_type(), x.shape(), owned->data(),
                                                  owned->size() * sizeof(float), owned));
    owned.reset();
    InferOptions o;
    // Well below the run's charged time: the small squeezenet computes in about
    // 0.1 ms, which speed 0.02 charges as about 4-5 ms, so a 5 ms deadline was
    // sometimes met on a fast machine.
    o.deadline = std::chrono::milliseconds(1);
    Result<Tensors> r = (*engine)->Infer("cam", std::move(in), o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
    EXPECT_TRUE(watch.expired()) << "round " << round << ": answered while the engine still held the input";
  }
}

TEST_F(EngineTest, BadInputsAreRefusedBeforeAnyWorkRuns) {
  std::unique_ptr<Engine> engine = Open("balanced");
  ASSERT_NE(engine, nullptr);
  const Reference ref = MakeReference("squeezenet.onnx", 1);
  const std::string input = ref.inputs[0].first;
  const Tensor& x = ref.inputs[0].second;
  auto expect_error = [&](Tensors in, const std::string& model, StatusCode code, std::vector<std::string> words) {
    Result<Tensors> r = engine->Infer(model, std::move(in));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    for (const std::string& w : words) EXPECT_THAT(r.status().message(), HasSubstr(w));
  };
  expect_error(Copy(ref.inputs), "camera", StatusCode::kNotFound, {"camera", "cam", "det"});
  expect_error(Tensors{}, "cam", StatusCode::kInvalidArgument, {input, "missing", "float32"});
  {
    Tensors extra = Copy(ref.inputs);
    extra.emplace("bogus", Tensor(dtype::kFloat, {1}));
    expect_error(std::move(extra), "cam", StatusCode::kInvalidArgument, {"bogus", input});
  }
  {
    Tensors wrong_type;
    wrong_type.emplace(input, Tensor(dtype::kInt64, x.shape()));
    expect_error(std::move(wrong_type), "cam", StatusCode::kInvalidArgument, {input, "int64", "expected float32"});
  }
  {
    std::vector<int64_t> shape = x.shape();
    shape.back() += 1;
    Tensors wrong_shape;
    wrong_shape.emplace(input, Tensor(dtype::kFloat, shape));
    expect_error(std::move(wrong_shape), "cam", StatusCode::kInvalidArgument, {input, "shape", "expected"});
  }
  {
    std::vector<float> small(3);
    Tensors short_buffer;
    short_buffer.emplace(input, Tensor::Borrow(dtype::kFloat, x.shape(), small.data(), small.size() * sizeof(float)));
    expect_error(std::move(short_buffer), "cam", StatusCode::kInvalidArgument, {input, "12 bytes"});
  }
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.models[0].invalid, 5u);
  EXPECT_EQ(stats.models[0].completed, 0u);
  for (const PuStatsView& pu : stats.pus) EXPECT_EQ(pu.runs, 0u) << pu.name << " ran work for a refused request";
}

TEST_F(EngineTest, APassedDeadlineIsAnsweredDeadlineExceeded) {
  std::unique_ptr<Engine> engine = Open("whole");
  ASSERT_NE(engine, nullptr);
  const Reference ref = MakeReference("squeezenet.onnx", 1);
  InferOptions options;
  options.deadline = std::chrono::nanoseconds(0);
  Result<Tensors> r = engine->Infer("cam", Copy(ref.inputs), options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_EQ(engine->Stats().models[0].deadline_exceeded, 1u);
  // A generous deadline, a priority and an SLO are carried out.
  options.deadline = std::chrono::seconds(60);
  options.priority = 3;
  options.slo = std::chrono::seconds(60);
  Result<Tensors> ok = engine->Infer("cam", Copy(ref.inputs), options);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(engine->Stats().models[0].slo_met, 1u);
  EXPECT_EQ(engine->Stats().models[0].with_slo, 1u);
}

TEST(CancelTokenTest, HooksRunOnceAndRemovedOnesNever) {
  CancelToken token;
  int first = 0, second = 0, removed = 0;
  token.OnCancel([&] { ++first; });
  const uint64_t key = token.OnCancel([&] { ++removed; });
  token.OnCancel([&] { ++second; });
  token.Remove(key);
  EXPECT_FALSE(token.cancelled());
  token.Cancel();
  token.Cancel();
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  EXPECT_EQ(removed, 0);
  int late = 0;
  EXPECT_EQ(token.OnCancel([&] { ++late; }), 0u);  // cancelled already: at once, here
  EXPECT_EQ(late, 1);
}

// CancelToken: a request given a cancelled token never runs; cancelling
// requests that wait or run answers them CANCELLED at once, the running one
// is stopped and the waiting one never runs; others go on.
TEST_F(EngineTest, CancelledRequestsAreAnsweredAtOnceAndWhatHadNotStartedNeverRuns) {
  std::unique_ptr<Engine> opened = OpenWithSpin(
      "  - {name: spin, path: spin.onnx, execution_timeout_ms: 300}\n"
      "  - {name: cam, path: squeezenet.onnx}\n",
      std::chrono::seconds(30));
  ASSERT_NE(opened, nullptr);
  Engine& engine = *opened;
  // Cancelled before: refused without work.
  InferOptions before;
  before.cancel = std::make_shared<CancelToken>();
  before.cancel->Cancel();
  Result<Tensors> refused = engine.Infer("spin", SpinInput(), before);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kCancelled) << refused.status().ToString();
  EXPECT_THAT(refused.status().message(), HasSubstr("before it started"));
  EXPECT_EQ(engine.Stats().pus[0].runs, 0u);

  // Two requests that would spin for 300 ms each on the one PU: the first
  // runs, the second waits. Cancelled, both are answered at once.
  InferOptions a, b;
  a.cancel = std::make_shared<CancelToken>();
  b.cancel = std::make_shared<CancelToken>();
  std::future<Result<Tensors>> first = engine.InferAsync("spin", SpinInput(), a);
  std::future<Result<Tensors>> second = engine.InferAsync("spin", SpinInput(), b);
  ASSERT_TRUE(WaitUntil([&] { return engine.Stats().devices[0].running == 1; })) << "the first one never ran";
  // The waiting one first: were the running one stopped first, the PU could
  // come free and take the other before its cancellation arrives.
  b.cancel->Cancel();
  a.cancel->Cancel();
  ExpectCancelled(first);
  ExpectCancelled(second);
  // The PU serves the next request (the cancelled run was stopped, long
  // before its 300 ms); the request that waited was withdrawn, not run.
  const Reference ref = MakeReference("squeezenet.onnx", 5);
  Result<Tensors> ok = engine.Infer("cam", Copy(ref.inputs));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ExpectEqual(*ok, ref.outputs);
  const EngineStats stats = engine.Stats();
  EXPECT_EQ(stats.models[0].cancelled, 3u);
  EXPECT_EQ(stats.models[0].submitted, 3u);
  EXPECT_EQ(stats.models[0].failed, 0u);
  EXPECT_EQ(stats.models[1].completed, 1u);
  EXPECT_EQ(stats.pus[0].runs, 2u) << "the cancelled request that had not started ran";
  // Nothing is left counted as queued or running (a withdrawn assignment, a stopped run).
  EXPECT_EQ(stats.devices[0].queued, 0u);
  EXPECT_EQ(stats.devices[0].running, 0u);

  // Infer waits for a request another thread cancels: answered CANCELLED (not after its run).
  InferOptions c;
  c.cancel = std::make_shared<CancelToken>();
  Result<Tensors> r = InferWhile(engine, "spin", SpinInput(), c, [&] { c.cancel->Cancel(); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().ToString();
  engine.Close();
}

// In an engine where another model batches, a model without batching is
// still cancelled: its request does not wait in the batcher.
TEST_F(EngineTest, ARequestOfAModelWithoutBatchingIsCancelledBesideABatchingOne) {
  std::unique_ptr<Engine> opened = OpenWithSpin(
      "  - {name: spin, path: spin.onnx, execution_timeout_ms: 60000}\n"
      "  - {name: cam, path: squeezenet.onnx, max_batch: 4, max_queue_delay_ms: 1, batching: on}\n",
      std::chrono::seconds(30));
  ASSERT_NE(opened, nullptr);
  InferOptions o;
  o.cancel = std::make_shared<CancelToken>();
  std::future<Result<Tensors>> answer = opened->InferAsync("spin", SpinInput(), o);
  ASSERT_TRUE(WaitUntil([&] { return opened->Stats().devices[0].running == 1; })) << "it never ran";
  o.cancel->Cancel();
  ExpectCancelled(answer);
  // The batching model still answers.
  const Reference ref = MakeReference("squeezenet.onnx", 6);
  Result<Tensors> ok = opened->Infer("cam", Copy(ref.inputs));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ExpectEqual(*ok, ref.outputs);
  opened->Close();
}

// A batched model's request is cancelled too: while it waits for its batch
// it is taken out; a batch in the runtime whose requests are all cancelled is
// withdrawn there. Either way it is answered at once and never runs, and the
// others form their batch without it.
TEST_F(EngineTest, ABatchedRequestIsCancelledWhileItWaitsForItsBatchAndAfter) {
  std::unique_ptr<Engine> opened = OpenWithSpin(
      "  - {name: spin, path: spin.onnx, execution_timeout_ms: 60000}\n"
      "  - {name: cam, path: squeezenet.onnx, max_batch: 3, max_queue_delay_ms: 600000, batching: on}\n",
      std::chrono::seconds(30));
  ASSERT_NE(opened, nullptr);
  Engine& engine = *opened;
  const Reference ref = MakeReference("squeezenet.onnx", 7);
  // The spin model holds the one PU. cam has one batch slot (one PU): its
  // first request leaves at once, alone, and waits in the runtime; the next
  // three wait in the batcher for the slot.
  InferOptions hold, alone, waiting;
  for (InferOptions* o : {&hold, &alone, &waiting}) o->cancel = std::make_shared<CancelToken>();
  std::future<Result<Tensors>> spinning = engine.InferAsync("spin", SpinInput(), hold);
  ASSERT_TRUE(WaitUntil([&] { return engine.Stats().devices[0].running == 1; })) << "spin never ran";
  std::future<Result<Tensors>> sent = engine.InferAsync("cam", Copy(ref.inputs), alone);
  ASSERT_TRUE(WaitUntil([&] { return engine.Stats().devices[0].queued == 1; })) << "cam's first never reached the PU";
  std::future<Result<Tensors>> held = engine.InferAsync("cam", Copy(ref.inputs), waiting);
  std::future<Result<Tensors>> kept1 = engine.InferAsync("cam", Copy(ref.inputs));
  std::future<Result<Tensors>> kept2 = engine.InferAsync("cam", Copy(ref.inputs));
  waiting.cancel->Cancel();
  ExpectCancelled(held);  // at once: the PU is still held
  alone.cancel->Cancel();
  ExpectCancelled(sent);  // its slot goes to the two others, as one batch
  EXPECT_EQ(engine.Stats().devices[0].running, 1u);
  hold.cancel->Cancel();
  ExpectCancelled(spinning);
  for (std::future<Result<Tensors>>* f : {&kept1, &kept2}) {
    ASSERT_EQ(f->wait_for(std::chrono::seconds(60)), std::future_status::ready);
    Result<Tensors> r = f->get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectEqual(*r, ref.outputs);
  }
  const EngineStats stats = engine.Stats();
  const ModelStats& cam = stats.models[1];
  EXPECT_EQ(cam.submitted, 4u);
  EXPECT_EQ(cam.cancelled, 2u);
  EXPECT_EQ(cam.completed, 2u);
  EXPECT_EQ(cam.failed, 0u);
  ASSERT_EQ(cam.batch_sizes.size(), 1u);  // one execution, of the two kept
  EXPECT_EQ(cam.batch_sizes[0].size, 2);
  EXPECT_EQ(cam.batch_sizes[0].executions, 1u);
  EXPECT_EQ(stats.pus[0].runs, 2u) << "a cancelled cam request ran";  // spin's and the batch's
  EXPECT_EQ(stats.devices[0].queued, 0u);
  EXPECT_EQ(stats.devices[0].running, 0u);
  engine.Close();
}

// A run that would never end is stopped at its execution timeout: its request
// fails ABORTED naming the timeout, and the PU serves the next request.
TEST_F(EngineTest, ARunPastItsExecutionTimeoutIsStoppedAndItsPuServesAgain) {
  std::unique_ptr<Engine> opened = OpenWithSpin(
      "  - {name: spin, path: spin.onnx, execution_timeout_ms: 200}\n"
      "  - {name: cam, path: squeezenet.onnx}\n",
      std::chrono::seconds(30));
  ASSERT_NE(opened, nullptr);
  Engine& engine = *opened;
  Result<Tensors> r = engine.Infer("spin", SpinInput());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAborted) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr("execution timeout of 200 ms"));
  EXPECT_EQ(engine.Stats().models[0].failed, 1u);
  // The run was stopped (the one PU would be taken for days otherwise).
  const Reference ref = MakeReference("squeezenet.onnx", 4);
  Result<Tensors> ok = engine.Infer("cam", Copy(ref.inputs));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ExpectEqual(*ok, ref.outputs);
  EXPECT_EQ(engine.Stats().devices[0].running, 0u) << "the stopped run still counts as running";
  engine.Close();
}

// Close waits at most close_timeout: a request still running then is answered
// UNAVAILABLE, and its run is stopped so the engine's threads end.
TEST_F(EngineTest, CloseGivesUpAfterItsTimeoutAndAnswersWhatIsLeft) {
  std::unique_ptr<Engine> opened =
      OpenWithSpin("  - {name: spin, path: spin.onnx, execution_timeout_ms: 600000}\n", std::chrono::milliseconds(100));
  ASSERT_NE(opened, nullptr);
  std::future<Result<Tensors>> answer = opened->InferAsync("spin", SpinInput());
  opened->Close();
  ASSERT_EQ(answer.wait_for(std::chrono::seconds(0)), std::future_status::ready) << "Close returned before an answer";
  Result<Tensors> r = answer.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_THAT(r.status().message(), HasSubstr("drain limit"));
}

// The same when the request runs on the thread inside Infer: Close answers it
// at its limit, stops the run, and returns once that thread is out.
TEST_F(EngineTest, CloseAnswersAnInferWhoseRunIsOnItsCaller) {
  std::unique_ptr<Engine> opened =
      OpenWithSpin("  - {name: spin, path: spin.onnx, execution_timeout_ms: 600000}\n", std::chrono::milliseconds(100));
  ASSERT_NE(opened, nullptr);
  Result<Tensors> r = InferWhile(*opened, "spin", SpinInput(), {}, [&] {
    // Gate: its run has started (a run stopped before ONNX Runtime begins it
    // is stopped all the same: RunCancel::Arm).
    EXPECT_TRUE(WaitUntil([&] { return opened->Stats().devices[0].running == 1; })) << "the run never started";
    opened->Close();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  opened.reset();
}

TEST_F(EngineTest, BatchedModelsAnswerPerRequest) {
  std::unique_ptr<Engine> engine = Open("whole", ", max_batch: 4, max_queue_delay_ms: 1, batching: on");
  ASSERT_NE(engine, nullptr);
  // The model as loaded, not its free-batch copy.
  EXPECT_EQ(engine->FindModel("cam")->inputs[0].shape[0], 1);
  const Reference ref = MakeReference("squeezenet.onnx", 9);
  std::vector<std::future<Result<Tensors>>> futures;
  for (int i = 0; i < 6; ++i) futures.push_back(engine->InferAsync("cam", Copy(ref.inputs)));
  for (auto& f : futures) {
    Result<Tensors> r = f.get();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectEqual(*r, ref.outputs);
  }
  // Executions by batch size (Triton's execution_count and batch_stats):
  // together they hold the six requests, in batches of at most max_batch.
  const EngineStats stats = engine->Stats();
  const ModelStats& cam = stats.models[0];
  EXPECT_EQ(cam.completed, 6u);
  uint64_t executions = 0, requests = 0;
  for (const ModelStats::BatchSize& b : cam.batch_sizes) {
    EXPECT_GE(b.size, 1);
    EXPECT_LE(b.size, 4);
    EXPECT_GT(b.compute_s, 0);
    executions += b.executions;
    requests += b.executions * static_cast<uint64_t>(b.size);
  }
  EXPECT_EQ(cam.executions, executions);
  EXPECT_EQ(requests, 6u);
  EXPECT_EQ(stats.models[1].executions, 0u);  // det: no requests
  EXPECT_TRUE(stats.models[1].batch_sizes.empty());
}

TEST_F(EngineTest, CloseDrainsAndLaterRequestsAreRefused) {
  std::unique_ptr<Engine> engine = Open("balanced");
  ASSERT_NE(engine, nullptr);
  const Reference ref = MakeReference("squeezenet.onnx", 2);
  std::vector<std::future<Result<Tensors>>> futures;
  for (int i = 0; i < 4; ++i) futures.push_back(engine->InferAsync("cam", Copy(ref.inputs)));
  engine->Close();
  for (auto& f : futures) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready) << "Close returned before an answer";
    EXPECT_TRUE(f.get().ok());
  }
  Result<Tensors> late = engine->Infer("cam", Copy(ref.inputs));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(late.status().message(), HasSubstr("closed"));
  engine->Close();  // idempotent
}

// EngineOptions::trace: WriteTrace writes the PU runs so far as a
// Chrome/Perfetto trace, while requests run and after Close; without the
// option, or to a folder that is not there, it says why.
TEST_F(EngineTest, WritesATraceOfItsRuns) {
  std::unique_ptr<Engine> plain = Open("whole");
  ASSERT_NE(plain, nullptr);
  Result<TraceSummary> refused = plain->WriteTrace((*dir_ / "none.json").string());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("EngineOptions::trace"));

  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (*dir_ / "cache").string();
  options.trace = true;
  Result<std::unique_ptr<Engine>> opened = Engine::OpenText(Config("balanced"), dir_->string(), options);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Engine& engine = **opened;
  const Reference ref = MakeReference("squeezenet.onnx", 4);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(engine.Infer("cam", Copy(ref.inputs)).ok());
  const fs::path path = *dir_ / "engine.trace.json";
  Result<TraceSummary> early = engine.WriteTrace(path.string());
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  // `balanced` with two stages: each request is at least one run, two when cut.
  EXPECT_GE(early->runs, 3u);
  EXPECT_EQ(early->dropped_events, 0u);
  engine.Close();
  Result<TraceSummary> late = engine.WriteTrace(path.string());
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->runs, early->runs);
  std::ifstream in(path);
  const nlohmann::json trace = nlohmann::json::parse(in);
  size_t slices = 0;
  std::set<std::string> lanes;
  for (const nlohmann::json& e : trace["traceEvents"]) {
    if (e["ph"] == "X") ++slices;
    if (e["ph"] == "M" && e["name"] == "thread_name") lanes.insert(e["args"]["name"].get<std::string>());
  }
  EXPECT_EQ(slices, late->runs);
  EXPECT_TRUE(lanes.count("cpu0 (cpu)") && lanes.count("cpu1 (cpu)")) << ::testing::PrintToString(lanes);

  Result<TraceSummary> nowhere = engine.WriteTrace((*dir_ / "no_such_folder" / "t.json").string());
  ASSERT_FALSE(nowhere.ok());
  EXPECT_THAT(nowhere.status().message(), HasSubstr("no_such_folder"));

  options.trace_max_events = 0;
  Result<std::unique_ptr<Engine>> zero = Engine::OpenText(Config("whole"), dir_->string(), options);
  ASSERT_FALSE(zero.ok());
  EXPECT_THAT(zero.status().message(), HasSubstr("trace_max_events"));
}

TEST_F(EngineTest, CpuPuWorkersRunUnderSchedBatchUnlessConfiguredNormal) {
  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (*dir_ / "cache").string();
  Result<std::unique_ptr<Engine>> engine = Engine::OpenText(
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu}, {name: cpu1, kind: cpu, scheduling: normal}]}]\n"
      "models:\n  - {name: cam, path: squeezenet.onnx}\npolicy: {high_level: whole}\n",
      dir_->string(), options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  // Open returns with the PU workers started, named and scheduled.
  EXPECT_EQ(testing::ThreadStatField("pu:cpu0", testing::kStatPolicy), SCHED_BATCH) << "the default";
  EXPECT_EQ(testing::ThreadStatField("pu:cpu1", testing::kStatPolicy), sched_getscheduler(0));
  const Reference ref = MakeReference("squeezenet.onnx", 3);
  Result<Tensors> r = (*engine)->Infer("cam", Copy(ref.inputs));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectEqual(*r, ref.outputs);
  config::PuConfig emu;
  emu.kind = "emu";
  EXPECT_FALSE(app::BatchSchedulingOf(emu)) << "an emulated PU's worker mostly sleeps";
}

TEST_F(EngineTest, OneThreadCpuPusShareSessionsUnlessConfiguredNot) {
  config::PuConfig pu;
  pu.name = "cpu0";
  EXPECT_EQ(app::MakePuExecutor(pu).share_key, "cpu:1");
  pu.share_session = false;
  EXPECT_EQ(app::MakePuExecutor(pu).share_key, "");
  pu.share_session = true;
  pu.threads = 2;
  EXPECT_EQ(app::MakePuExecutor(pu).share_key, "") << "a session with a pool is never shared";
}

TEST_F(EngineTest, OpenErrorsSayWhatAndWhere) {
  Result<std::unique_ptr<Engine>> missing = Engine::Open((*dir_ / "nope.yaml").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.yaml"));

  Result<std::unique_ptr<Engine>> bad_key = Engine::OpenText("devices: [{name: d, pus: [{name: c, kind: cpu}]}]\n"
                                                             "models: [{name: a, path: x.onnx, colour: red}]\n");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_EQ(bad_key.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_key.status().message(), HasSubstr("colour"));

  EngineOptions options;
  options.no_profile = true;
  Result<std::unique_ptr<Engine>> bad_model = Engine::OpenText(
      "devices: [{name: d, pus: [{name: c, kind: cpu}]}]\nmodels: [{name: a, path: missing.onnx}]\n", dir_->string(),
      options);
  ASSERT_FALSE(bad_model.ok());
  EXPECT_THAT(bad_model.status().message(), HasSubstr("missing.onnx"));
}

// EngineOptions::stop ends Open at its next step with CANCELLED; profiling
// stops within one measurement and keeps what it measured, and the next Open
// goes on from that profile.
TEST_F(EngineTest, OpenStopsAtItsNextStepWhenAsked) {
  std::atomic<bool> stop{true};
  EngineOptions options;
  options.cache_dir = (*dir_ / "stop_cache").string();
  options.stop = &stop;
  Result<std::unique_ptr<Engine>> before = Engine::OpenText(Config("balanced"), dir_->string(), options);
  ASSERT_FALSE(before.ok());
  EXPECT_EQ(before.status().code(), StatusCode::kCancelled);
  EXPECT_THAT(before.status().message(), HasSubstr("start-up stopped before loading the models"));
  // With a remote device: before connecting to it (no connection is tried,
  // which would wait up to 5 s for an address where nothing listens).
  Result<std::unique_ptr<Engine>> remote = Engine::OpenText(
      "devices:\n  - {name: local, pus: [{name: cpu0, kind: cpu, threads: 1}]}\n"
      "  - {name: edge, address: '127.0.0.1:1'}\nmodels:\n  - {name: cam, path: squeezenet.onnx}\n",
      dir_->string(), options);
  ASSERT_FALSE(remote.ok());
  EXPECT_EQ(remote.status().code(), StatusCode::kCancelled);
  EXPECT_THAT(remote.status().message(), HasSubstr("start-up stopped before connecting to device 'edge'"));

  // Stopped from the profiler's first measurement (on the opening thread).
  stop = false;
  int measured = 0, total = 0;
  options.profile_progress = [&](int done, int all, const std::string&) {
    measured = done;
    total = all;
    stop = true;
  };
  Result<std::unique_ptr<Engine>> profiling = Engine::OpenText(Config("balanced"), dir_->string(), options);
  ASSERT_FALSE(profiling.ok());
  EXPECT_EQ(profiling.status().code(), StatusCode::kCancelled);
  const std::string message = profiling.status().message();
  EXPECT_THAT(message, HasSubstr("profiling into " + (*dir_ / "stop_cache" / "profiles").string()));
  EXPECT_THAT(message, HasSubstr("interrupted after 1 of"));
  EXPECT_THAT(message, HasSubstr("the next start resumes from them"));
  EXPECT_EQ(measured, 1);
  EXPECT_GT(total, 1);
  const size_t from = std::string("profiling into ").size(), to = message.find(" stopped:");
  ASSERT_NE(to, std::string::npos) << message;
  EXPECT_TRUE(fs::is_regular_file(message.substr(from, to - from))) << message;

  // Not stopped: the opening goes on from the saved profile and serves.
  options.stop = nullptr;
  options.profile_progress = nullptr;
  std::unique_ptr<Engine> engine;
  {
    Result<std::unique_ptr<Engine>> opened = Engine::OpenText(Config("balanced"), dir_->string(), options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    engine = std::move(opened).value();
  }
  Tensors x;
  const ModelInfo* cam = engine->FindModel("cam");
  ASSERT_NE(cam, nullptr);
  x.emplace(cam->inputs[0].name, Tensor(cam->inputs[0].elem_type, cam->inputs[0].shape));
  EXPECT_TRUE(engine->Infer("cam", std::move(x)).ok());
}

TEST_F(EngineTest, OpensOnlyTheModelsAsked) {
  EngineOptions options;
  options.no_profile = true;
  options.cache_dir = (*dir_ / "cache").string();
  options.models = {"det"};
  Result<std::unique_ptr<Engine>> det = Engine::OpenText(Config("whole"), dir_->string(), options);
  ASSERT_TRUE(det.ok()) << det.status().ToString();
  ASSERT_EQ((*det)->Models().size(), 1u);
  EXPECT_EQ((*det)->Models()[0].name, "det");
  EXPECT_EQ((*det)->FindModel("cam"), nullptr);
  options.models = {"det", "cam"};  // the config's order is kept
  Result<std::unique_ptr<Engine>> both = Engine::OpenText(Config("whole"), dir_->string(), options);
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  ASSERT_EQ((*both)->Models().size(), 2u);
  EXPECT_EQ((*both)->Models()[0].name, "cam");
  options.models = {"cam", "nope"};
  Result<std::unique_ptr<Engine>> unknown = Engine::OpenText(Config("whole"), dir_->string(), options);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("model 'nope' is not in the config; its models: [cam, det]"));
  options.models = {"cam", "cam"};
  EXPECT_THAT(Engine::OpenText(Config("whole"), dir_->string(), options).status().message(),
              HasSubstr("model 'cam' is named twice"));
}

// The profile is cached per configuration; a model measured for another
// configuration of the same PUs is taken from that one's profile rather than
// measured again, so adding a model to a config measures only the new one.
TEST_F(EngineTest, AConfigChangeMeasuresOnlyTheModelsNotMeasuredBefore) {
  EngineOptions options;
  options.cache_dir = (*dir_ / "seed_cache").string();
  const std::string pus =
      "devices: [{name: local, pus: [{name: cpu0, kind: cpu, threads: 1}, {name: cpu1, kind: cpu, threads: 1}]}]\n"
      "policy: {high_level: balanced}\n";
  {
    Result<std::unique_ptr<Engine>> first =
        Engine::OpenText(pus + "models:\n  - {name: cam, path: squeezenet.onnx}\n", dir_->string(), options);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
  }
  // A file there that is not a profile is passed over.
  const fs::path profiles = *dir_ / "seed_cache" / "profiles";
  std::ofstream(profiles / "junk.json") << "{not a profile";
  fs::create_directories(profiles / "folder.json");
  std::vector<std::string> said, measured;
  options.progress = [&](const std::string& line) { said.push_back(line); };
  options.profile_progress = [&](int, int, const std::string& what) { measured.push_back(what); };
  // The same squeezenet under another name, and a model of its own.
  Result<std::unique_ptr<Engine>> second = Engine::OpenText(
      pus + "models:\n  - {name: front, path: squeezenet.onnx}\n  - {name: det, path: mobilenetv2.onnx}\n",
      dir_->string(), options);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  const auto line = std::find_if(said.begin(), said.end(),
                                 [](const std::string& l) { return l.find("taken from") != std::string::npos; });
  ASSERT_NE(line, said.end()) << absl::StrJoin(said, "\n");
  EXPECT_THAT(*line, HasSubstr(" measurements of front (as cam) taken from " + profiles.string()));
  EXPECT_THAT(*line, Not(HasSubstr("det")));  // never measured before
  EXPECT_EQ(std::count_if(said.begin(), said.end(),
                          [](const std::string& l) { return l.find("taken from") != std::string::npos; }),
            1);
  EXPECT_NE(std::find(measured.begin(), measured.end(), "front: already profiled"), measured.end());
  EXPECT_EQ(std::find(measured.begin(), measured.end(), "det: already profiled"), measured.end());
  size_t files = 0;
  for (const auto& f : fs::directory_iterator(profiles)) files += f.is_regular_file() && f.path().extension() == ".json";
  EXPECT_EQ(files, 3u);  // one per configuration, and the junk

  Tensors x;
  const ModelInfo* front = (*second)->FindModel("front");
  ASSERT_NE(front, nullptr);
  x.emplace(front->inputs[0].name, Tensor(front->inputs[0].elem_type, front->inputs[0].shape));
  EXPECT_TRUE((*second)->Infer("front", std::move(x)).ok());
}

}  // namespace
}  // namespace baton
