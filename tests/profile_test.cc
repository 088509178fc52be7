// Profiles: the store (JSON round trip, atomic save, malformed input, stale
// detection), the profiler (candidate budget, resuming, real measurements on
// CPU and emulated PUs), and plan files (round trip, errors).
#include "baton/graph/batch.h"
#include "baton/profile/profile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "baton/backend/emu/emu_executor.h"
#include "baton/backend/ort/cpu_executor.h"
#include "baton/plan/plan_file.h"
#include "baton/profiler/profiler.h"
#include "baton/zoo/zoo.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

profile::Profile SampleProfile() {
  profile::Profile p;
  p.budget = 6;
  p.min_atoms = 2;
  p.warmup_runs = 1;
  p.min_runs = 3;
  p.min_time_ms = 5;
  p.pu_kinds["cpu/threads=1"] = "cpu0";
  p.pu_kinds["emu/speed=4"] = "npu0";
  p.same_device = {0.01, 0};
  p.cross_device = {0.5, 8};
  p.partition_overhead_ms = 0.02;
  profile::ProfiledModel m;
  m.name = "cls";
  m.content_hash = "00000000000000aa";
  m.atoms_key = "00000000000000bb";
  m.atoms = 2;
  m.unit_of_atom = {0, 1};
  m.cut_bytes = {4096};
  m.edges = {{0, 1, 4096}};
  profile::ProfiledRange r0{0, 1, "k0", "conv", "relu", {{"cpu/threads=1", {1.5, 2, 3, 7}}}};
  profile::ProfiledRange r1{1, 2, "k1", "fc", "fc", {{"cpu/threads=1", {0.5, 0.6, 0.7, 9}}, {"emu/speed=4", {0.1, 0.1, 0.2, 9}}}};
  profile::ProfiledRange r2{0, 2, "k2", "conv", "fc", {{"cpu/threads=1", {1.9, 2.1, 2.5, 5}}}};
  m.ranges = {r0, r1, r2};
  m.batched[1]["cpu/threads=1"] = {1.9, 2.1, 2.5, 5};
  m.batched[4]["cpu/threads=1"] = {6.0, 6.2, 6.5, 5};
  p.models.push_back(m);
  return p;
}

fs::path TempDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / (name + "_" + std::to_string(getpid()));
  fs::create_directories(d);
  return d;
}

TEST(ProfileStoreTest, JsonRoundTripIsExact) {
  const profile::Profile p = SampleProfile();
  absl::StatusOr<profile::Profile> back = profile::Profile::Parse(p.ToJson(), "mem");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, p);
}

TEST(ProfileStoreTest, SaveIsAtomicAndLoadReadsItBack) {
  const fs::path dir = TempDir("baton_profile_store");
  const std::string path = (dir / "p.json").string();
  ASSERT_TRUE(SampleProfile().Save(path).ok());
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "p.json");  // no temp left
  absl::StatusOr<profile::Profile> back = profile::Profile::Load(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, SampleProfile());
  EXPECT_EQ(profile::Profile::Load((dir / "missing.json").string()).status().code(), absl::StatusCode::kNotFound);
  fs::remove_all(dir);
}

TEST(ProfileStoreTest, MalformedInputNamesTheField) {
  EXPECT_THAT(profile::Profile::Parse("{", "x.json").status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(profile::Profile::Parse("{\"format\": \"other\"}", "x.json").status().message(),
              HasSubstr("not a baton profile"));
  std::string text = SampleProfile().ToJson();
  text.replace(text.find("\"median_ms\": 1.5"), 16, "\"median_ms\": \"a\"");
  absl::Status s = profile::Profile::Parse(text, "x.json").status();
  EXPECT_THAT(s.message(), HasSubstr("models[0].ranges[0].latency.cpu/threads=1.median_ms"));
  EXPECT_THAT(s.message(), HasSubstr("x.json"));
}

// ---- Whether dynamic batching pays ------------------------------------------

profile::ProfiledModel Batched(std::map<int, std::map<std::string, double>> ms) {
  profile::ProfiledModel m;
  m.name = "cls";
  for (const auto& [batch, kinds] : ms) {
    for (const auto& [kind, median] : kinds) m.batched[batch][kind] = {median, median, median, 5};
  }
  return m;
}

TEST(ChooseBatchTest, TheSizeWithTheLeastTimePerRequestWinsWhenItSavesAtLeastFivePercent) {
  // 10 ms alone, 16 ms for 2 (8 each), 28 ms for 4 (7 each): batch 4.
  const profile::BatchChoice c = profile::ChooseBatch(Batched({{1, {{"gpu", 10}}}, {2, {{"gpu", 16}}}, {4, {{"gpu", 28}}}}), 4);
  EXPECT_EQ(c.batch, 4);
  EXPECT_NEAR(c.per_request_ratio, 0.7, 1e-9);
  EXPECT_THAT(c.reason, HasSubstr("batch 4 takes 0.70x"));
  EXPECT_THAT(c.reason, HasSubstr(": on"));
  // A lower max_batch ignores the larger sizes measured.
  EXPECT_EQ(profile::ChooseBatch(Batched({{1, {{"gpu", 10}}}, {2, {{"gpu", 16}}}, {4, {{"gpu", 28}}}}), 2).batch, 2);
}

TEST(ChooseBatchTest, NoGainOrNoMeasurementMeansOff) {
  // A CPU that is as efficient per request at batch 1: 4 x 10 ms = 41 ms.
  profile::BatchChoice c = profile::ChooseBatch(Batched({{1, {{"cpu", 10}}}, {4, {{"cpu", 41}}}}), 4);
  EXPECT_EQ(c.batch, 1);
  EXPECT_NEAR(c.per_request_ratio, 1.025, 1e-9);
  EXPECT_THAT(c.reason, HasSubstr("batch 4 takes 1.02x"));
  EXPECT_THAT(c.reason, HasSubstr("off"));
  // 3 % is not enough.
  EXPECT_EQ(profile::ChooseBatch(Batched({{1, {{"cpu", 10}}}, {4, {{"cpu", 38.8}}}}), 4).batch, 1);
  // Summed over the kinds measured at every size: 0.6x on one, 1.1x on the other = 0.85x.
  EXPECT_EQ(profile::ChooseBatch(Batched({{1, {{"a", 10}, {"b", 10}}}, {4, {{"a", 24}, {"b", 44}}}}), 4).batch, 4);
  c = profile::ChooseBatch(Batched({}), 4);
  EXPECT_EQ(c.batch, 1);
  EXPECT_THAT(c.reason, HasSubstr("not profiled"));
  EXPECT_EQ(profile::ChooseBatch(Batched({{1, {{"gpu", 10}}}, {4, {{"gpu", 20}}}}), 1).batch, 1);
}

TEST(ChooseBatchTest, TheSizesMeasuredArePowersOfTwoAndMaxBatch) {
  EXPECT_EQ(profile::BatchSizesToMeasure(1), (std::vector<int>{1}));
  EXPECT_EQ(profile::BatchSizesToMeasure(4), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(profile::BatchSizesToMeasure(6), (std::vector<int>{1, 2, 4, 6}));
  EXPECT_EQ(profile::BatchSizesToMeasure(1024), (std::vector<int>{1, 2, 4, 8, 16, 1024}));
}

TEST(ProfileStoreTest, StatsAreNearestRank) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);
  profile::LatencyStats s = profile::StatsOf(samples);
  EXPECT_EQ(s.median_ms, 50);
  EXPECT_EQ(s.p90_ms, 90);
  EXPECT_EQ(s.p99_ms, 99);
  EXPECT_EQ(s.runs, 100);
  EXPECT_EQ(profile::StatsOf({}).runs, 0);
}

TEST(ProfileStoreTest, StaleProfilesAreDetectedWithWhatChanged) {
  const profile::Profile p = SampleProfile();
  profile::ExpectedModel e{"cls", "00000000000000aa", "00000000000000bb", {{"cpu/threads=1", "cpu0"}}};
  EXPECT_TRUE(profile::CheckFresh(p, "p.json", {e}).ok());

  profile::ExpectedModel changed = e;
  changed.content_hash = "00000000000000cc";
  absl::Status s = profile::CheckFresh(p, "p.json", {changed});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("model 'cls' changed since it was profiled"));
  EXPECT_THAT(s.message(), HasSubstr("baton profile"));

  profile::ExpectedModel recut = e;
  recut.atoms_key = "x";
  EXPECT_THAT(profile::CheckFresh(p, "p.json", {recut}).message(), HasSubstr("cut differently"));

  profile::ExpectedModel new_pu = e;
  new_pu.pu_kinds["cpu/threads=2"] = "big";
  EXPECT_THAT(profile::CheckFresh(p, "p.json", {new_pu}).message(), HasSubstr("no measurements for PU 'big'"));

  profile::ExpectedModel other{"det", "1", "2", {}};
  EXPECT_THAT(profile::CheckFresh(p, "p.json", {other}).message(), HasSubstr("no model 'det'"));
}

// ---- The profiler, on a small zoo model ------------------------------------

class ProfilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> bytes = zoo::Generate("squeezenet", /*small=*/true);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<std::shared_ptr<const graph::Model>> m = graph::Model::LoadBytes(*bytes, "squeezenet");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = profiler::ProfilerModel{"cls", *m, profile::HashHex(*bytes)};
    cpu_ = std::make_unique<backend::CpuExecutor>(backend::CpuPuSpec{"cpu0", 1, {}});
    cpu2_ = std::make_unique<backend::CpuExecutor>(backend::CpuPuSpec{"cpu1", 1, {}});
    backend::EmuPuSpec spec;
    spec.name = "npu0";
    spec.speed = 4;
    spec.unsupported_ops = {"Softmax", "Flatten", "GlobalAveragePool"};
    spec.compute = false;
    emu_ = std::make_unique<backend::EmuExecutor>(spec);
    pus_ = {profiler::ProfilerPu{"cpu0", profiler::CpuKindKey(1), cpu_.get(), {}, true},
            profiler::ProfilerPu{"cpu1", profiler::CpuKindKey(1), cpu2_.get(), {}, true},
            profiler::ProfilerPu{"npu0", profiler::EmuKindKey(4, {}, spec.unsupported_ops, false), emu_.get(), {}, false}};
    options_.budget = 9;
    options_.min_atoms = 4;
    options_.warmup_runs = 1;
    options_.min_runs = 2;
    options_.max_runs = 3;
    options_.min_time_ms = 0;
  }

  profiler::ProfilerModel model_;
  std::unique_ptr<backend::Executor> cpu_, cpu2_, emu_;
  std::vector<profiler::ProfilerPu> pus_;
  profiler::ProfilerOptions options_;
};

TEST_F(ProfilerTest, MeasuresEveryCandidateOnEveryCapableKindWithinTheBudget) {
  profile::Profile p;
  int checkpoints = 0;
  int last_done = 0, last_total = 0;
  absl::Status s = profiler::ProfileModels(
      {model_}, pus_, options_, p, [&](const profile::Profile&) { ++checkpoints; return absl::OkStatus(); },
      [&](int done, int total, const std::string&) {
        last_done = done;
        last_total = total;
      });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(p.models.size(), 1u);
  const profile::ProfiledModel& m = p.models[0];
  EXPECT_LE(m.ranges.size(), 9u);
  EXPECT_GE(m.atoms, 4);
  EXPECT_EQ(p.pu_kinds.size(), 2u);  // two CPUs share one kind
  EXPECT_EQ(checkpoints, 2);         // one per model x kind
  EXPECT_EQ(last_done, last_total);
  EXPECT_GT(p.partition_overhead_ms, 0);
  EXPECT_GT(p.same_device.fixed_ms, 0);
  bool some_emu = false;
  for (const profile::ProfiledRange& r : m.ranges) {
    ASSERT_TRUE(r.latency.contains(profiler::CpuKindKey(1))) << r.first << ".." << r.last;  // the CPU runs everything
    EXPECT_GT(r.latency.at(profiler::CpuKindKey(1)).median_ms, 0);
    EXPECT_GE(r.latency.at(profiler::CpuKindKey(1)).runs, 2);
    some_emu = some_emu || r.latency.size() == 2;
  }
  EXPECT_TRUE(some_emu);
  // The emulator cannot run the classifier head: the last atom has only the CPU.
  EXPECT_EQ(m.Find(m.atoms - 1, m.atoms)->latency.size(), 1u);
}

TEST_F(ProfilerTest, ABatchingModelIsMeasuredWholeAtEachBatchSizeOnTheCpus) {
  absl::StatusOr<std::shared_ptr<const graph::Model>> free = graph::WithFreeBatchDim(*model_.model);
  ASSERT_TRUE(free.ok()) << free.status();
  profiler::ProfilerModel batching{"cls", *free, "00000000000000cc", 4};
  const std::vector<profiler::ProfilerPu> cpus = {pus_[0], pus_[1]};
  profile::Profile p;
  ASSERT_TRUE(profiler::ProfileModels({batching}, cpus, options_, p, nullptr).ok());
  const profile::ProfiledModel& m = p.models[0];
  ASSERT_EQ(m.batched.size(), 3u);
  for (int batch : {1, 2, 4}) {
    SCOPED_TRACE(batch);
    ASSERT_TRUE(m.batched.contains(batch));
    ASSERT_EQ(m.batched.at(batch).size(), 1u);  // one CPU kind
    EXPECT_GT(m.batched.at(batch).at(profiler::CpuKindKey(1)).median_ms, 0);
    EXPECT_GE(m.batched.at(batch).at(profiler::CpuKindKey(1)).runs, 2);
  }
  // Kept when resumed; a model that does not batch gets none.
  profile::Profile again = p;
  ASSERT_TRUE(profiler::ProfileModels({batching}, cpus, options_, again, nullptr).ok());
  EXPECT_EQ(again.models[0].batched, m.batched);
  profile::Profile plain;
  ASSERT_TRUE(profiler::ProfileModels({model_}, cpus, options_, plain, nullptr).ok());
  EXPECT_TRUE(plain.models[0].batched.empty());
}

TEST_F(ProfilerTest, ResumingMeasuresOnlyWhatIsMissing) {
  profile::Profile p;
  ASSERT_TRUE(profiler::ProfileModels({model_}, pus_, options_, p, nullptr).ok());
  profile::Profile again = p;
  int measured = 0;
  ASSERT_TRUE(profiler::ProfileModels({model_}, pus_, options_, again, nullptr,
                                      [&](int, int, const std::string& what) {
                                        measured += what.find("already profiled") == std::string::npos;
                                      })
                  .ok());
  EXPECT_EQ(measured, 0);
  for (size_t i = 0; i < p.models[0].ranges.size(); ++i) {
    EXPECT_EQ(again.models[0].ranges[i].latency, p.models[0].ranges[i].latency);  // kept, not re-measured
  }
  // Drop one measurement: only that one is taken again.
  again.models[0].ranges[0].latency.erase(profiler::CpuKindKey(1));
  std::vector<std::string> whats;
  ASSERT_TRUE(profiler::ProfileModels({model_}, pus_, options_, again, nullptr,
                                      [&](int, int, const std::string& what) { whats.push_back(what); })
                  .ok());
  EXPECT_TRUE(again.models[0].ranges[0].latency.contains(profiler::CpuKindKey(1)));
  EXPECT_EQ(again.models[0].ranges[1].latency, p.models[0].ranges[1].latency);
  // A changed model is measured afresh.
  profiler::ProfilerModel changed = model_;
  changed.content_hash = "ffffffffffffffff";
  profile::Profile third = p;
  third.models[0].ranges[0].latency[profiler::CpuKindKey(1)].median_ms = 12345;
  ASSERT_TRUE(profiler::ProfileModels({changed}, pus_, options_, third, nullptr).ok());
  EXPECT_EQ(third.models[0].content_hash, "ffffffffffffffff");
  EXPECT_NE(third.models[0].ranges[0].latency[profiler::CpuKindKey(1)].median_ms, 12345);
}

TEST_F(ProfilerTest, AModelMeasuredForAnotherProfileIsTakenFromItNotMeasuredAgain) {
  profile::Profile first;
  ASSERT_TRUE(profiler::ProfileModels({model_}, pus_, options_, first, nullptr).ok());
  // Another configuration: the same model under another name, beside a model
  // of its own (another hash).
  profiler::ProfilerModel renamed = model_;
  renamed.name = "renamed";
  profiler::ProfilerModel other = model_;
  other.name = "other";
  other.content_hash = "ffffffffffffffff";
  profile::Profile second;
  const std::vector<profiler::Seeded> seeded =
      profiler::SeedFromOtherProfiles(second, {renamed, other}, pus_, options_, {{"first.json", &first}});
  ASSERT_EQ(seeded.size(), 1u);
  EXPECT_EQ(seeded[0].model, "renamed");
  EXPECT_EQ(seeded[0].as, "cls");
  EXPECT_EQ(seeded[0].from, "first.json");
  int in_first = 0;
  for (const profile::ProfiledRange& r : first.models[0].ranges) in_first += static_cast<int>(r.latency.size());
  EXPECT_EQ(seeded[0].measurements, in_first);
  std::vector<std::string> whats;
  ASSERT_TRUE(profiler::ProfileModels({renamed, other}, pus_, options_, second, nullptr,
                                      [&](int, int, const std::string& what) { whats.push_back(what); })
                  .ok());
  const profile::ProfiledModel* taken = second.FindModel("renamed");
  ASSERT_NE(taken, nullptr);
  ASSERT_EQ(taken->ranges.size(), first.models[0].ranges.size());
  for (size_t i = 0; i < taken->ranges.size(); ++i) {
    EXPECT_EQ(taken->ranges[i].latency, first.models[0].ranges[i].latency) << i;  // taken, not re-measured
  }
  EXPECT_THAT(whats, Contains("renamed: already profiled"));
  EXPECT_THAT(whats, Not(Contains("other: already profiled")));
  ASSERT_NE(second.FindModel("other"), nullptr);
  EXPECT_FALSE(second.FindModel("other")->ranges.empty());

  // Only this machine's PU kinds are taken: without the emulator, its
  // measurements stay behind.
  profile::Profile cpus_only;
  const std::vector<profiler::ProfilerPu> cpus = {pus_[0], pus_[1]};
  const std::vector<profiler::Seeded> cpu_seeded =
      profiler::SeedFromOtherProfiles(cpus_only, {renamed}, cpus, options_, {{"first.json", &first}});
  ASSERT_EQ(cpu_seeded.size(), 1u);
  EXPECT_LT(cpu_seeded[0].measurements, in_first);
  for (const profile::ProfiledRange& r : cpus_only.models[0].ranges) {
    for (const auto& [kind, stats] : r.latency) EXPECT_EQ(kind, profiler::CpuKindKey(1));
  }

  // Nothing is taken from a profile cut otherwise, for a model the profile
  // has already, or of a model no profile has measured.
  profiler::ProfilerOptions finer = options_;
  finer.budget = options_.budget + 1;
  profile::Profile third;
  EXPECT_TRUE(profiler::SeedFromOtherProfiles(third, {renamed}, pus_, finer, {{"first.json", &first}}).empty());
  EXPECT_TRUE(third.models.empty());
  EXPECT_TRUE(profiler::SeedFromOtherProfiles(second, {renamed}, pus_, options_, {{"first.json", &first}}).empty());
  EXPECT_TRUE(profiler::SeedFromOtherProfiles(third, {other}, pus_, options_, {{"first.json", &first}}).empty());

  // Of two profiles with the model, the one with more of it measured wins.
  profile::Profile partial = first;
  partial.models[0].ranges[0].latency.clear();
  profile::Profile fourth;
  const std::vector<profiler::Seeded> best = profiler::SeedFromOtherProfiles(
      fourth, {renamed}, pus_, options_, {{"partial.json", &partial}, {"first.json", &first}});
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].from, "first.json");
}

TEST_F(ProfilerTest, UnitsBeyondTheBudgetAreMergedWhereTheyShareAPu) {
  // An accelerator without Relu: Conv and Relu alternate, 50+ capability
  // units. They share the CPU, so they merge down to the budget.
  backend::EmuPuSpec spec;
  spec.name = "npu1";
  spec.unsupported_ops = {"Relu"};
  spec.compute = false;
  backend::EmuExecutor no_relu(spec);
  std::vector<profiler::ProfilerPu> pus = {pus_[0], {"npu1", "emu/norelu", &no_relu, {}, false}};
  absl::StatusOr<profiler::ModelCut> cut = profiler::CutModel(*model_.model, pus, options_);
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_LE(cut->atoms.atoms.size(), 9u);
  EXPECT_LE(cut->candidates.size(), 9u);
}

TEST_F(ProfilerTest, UnitsThatShareNoPuBeyondTheBudgetAreAClearError) {
  // Two accelerators with disjoint gaps and no CPU: the convolutions run only
  // on one, the classifier head only on the other, so two units share no PU
  // and a budget of one candidate cannot hold them.
  backend::EmuPuSpec a;
  a.name = "a";
  a.unsupported_ops = {"Flatten", "GlobalAveragePool"};
  a.compute = false;
  backend::EmuPuSpec b;
  b.name = "b";
  b.unsupported_ops = {"Conv"};
  b.compute = false;
  backend::EmuExecutor ea(a), eb(b);
  std::vector<profiler::ProfilerPu> pus = {{"a", "emu/a", &ea, {}, false}, {"b", "emu/b", &eb, {}, false}};
  options_.budget = 1;
  options_.min_atoms = 1;
  profile::Profile p;
  absl::Status s = profiler::ProfileModels({model_}, pus, options_, p, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("model 'cls'"));
  EXPECT_THAT(s.message(), HasSubstr("raise the budget"));
}

// ---- Plan files --------------------------------------------------------------

plan::PlanFile SamplePlan() {
  plan::PlanFile f;
  f.policy = "search";
  f.objective = "throughput";
  f.profile = "p.json";
  f.predicted_throughput_rps = 123.5;
  f.bound_throughput_rps = 130.25;
  f.pus = {plan::PlanPu{"cpu0", "cpu/threads=1", "local", 0.9, {"cls.p0", "det.p1"}},
           plan::PlanPu{"npu0", "emu/speed=4", "local", 0.5, {"det.p0"}}};
  f.models = {plan::PlanModel{"cls", "aa", {plan::PlanPartition{{"conv", "relu"}, {"cpu0"}, 1.5}}, 60, 1.5, 1.2},
              plan::PlanModel{"det",
                              "bb",
                              {plan::PlanPartition{{"a", "b"}, {"npu0", "cpu0"}, 0.5, {0.75, 0.25}},
                               plan::PlanPartition{{"c"}, {"cpu0"}, 0.25}},
                              63.5,
                              0.8,
                              0.7,
                              1,
                              4}};
  return f;
}

TEST(PlanFileTest, RoundTripIsExactAndReadable) {
  const plan::PlanFile f = SamplePlan();
  const std::string text = f.ToJson();
  EXPECT_THAT(text, HasSubstr("\"nodes\": [\"a\",\"b\"]"));  // one partition per line
  absl::StatusOr<plan::PlanFile> back = plan::PlanFile::Parse(text, "plan.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, f);
  const fs::path dir = TempDir("baton_plan_file");
  ASSERT_TRUE(f.Save((dir / "plan.json").string()).ok());
  absl::StatusOr<plan::PlanFile> loaded = plan::PlanFile::Load((dir / "plan.json").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded, f);
  fs::remove_all(dir);
}

TEST(PlanFileTest, MalformedPlansNameTheField) {
  std::string text = SamplePlan().ToJson();
  text.replace(text.find("\"pus\": [\"npu0\",\"cpu0\"]"), 22, "\"pus\": []");
  absl::Status s = plan::PlanFile::Parse(text, "plan.json").status();
  EXPECT_THAT(s.message(), HasSubstr("models[1].partitions[0]"));
  EXPECT_THAT(s.message(), HasSubstr("baton plan"));
  EXPECT_THAT(plan::PlanFile::Parse("[]", "plan.json").status().message(), HasSubstr("not a baton plan"));
}

TEST(PlanFileTest, SharesAreOptionalAndChecked) {
  const std::string text = SamplePlan().ToJson();
  EXPECT_THAT(text, HasSubstr("\"shares\": [0.75,0.25]"));
  // A plan without shares (written before they existed) reads with none.
  std::string old = text;
  const std::string shares = ", \"shares\": [0.75,0.25]";
  old.replace(old.find(shares), shares.size(), "");
  absl::StatusOr<plan::PlanFile> back = plan::PlanFile::Parse(old, "plan.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->models[1].partitions[0].shares.empty());
  // One share per PU, each in [0, 1], not all 0.
  for (const char* bad : {"[0.75]", "[0.5,\"x\"]", "[1.5,0]", "[0,0]"}) {
    std::string broken = text;
    broken.replace(broken.find("[0.75,0.25]"), 11, bad);
    absl::Status s = plan::PlanFile::Parse(broken, "plan.json").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("models[1].partitions[0].shares")) << bad;
  }
}

TEST(PlanFileTest, PriorityIsOptionalAndChecked) {
  const std::string text = SamplePlan().ToJson();
  EXPECT_THAT(text, HasSubstr("\"priority\": 1"));
  // Absent (plans written before it existed, and cls here): none; the run then uses the config's.
  absl::StatusOr<plan::PlanFile> back = plan::PlanFile::Parse(text, "plan.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->models[0].priority, std::nullopt);
  EXPECT_EQ(back->models[1].priority, 1);
  for (const char* bad : {"1.5", "\"high\"", "99999999999"}) {
    std::string broken = text;
    broken.replace(broken.find("\"priority\": 1") + 12, 1, bad);
    absl::Status s = plan::PlanFile::Parse(broken, "plan.json").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("models[1].priority")) << bad;
  }
}

TEST(PlanFileTest, MaxBatchIsOptionalAndChecked) {
  const std::string text = SamplePlan().ToJson();
  EXPECT_THAT(text, HasSubstr("\"max_batch\": 4"));
  absl::StatusOr<plan::PlanFile> back = plan::PlanFile::Parse(text, "plan.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->models[0].max_batch, std::nullopt);  // absent: decided at run time
  EXPECT_EQ(back->models[1].max_batch, 4);
  for (const char* bad : {"0", "2000", "\"on\""}) {
    std::string broken = text;
    broken.replace(broken.find("\"max_batch\": 4") + 13, 1, bad);
    absl::Status s = plan::PlanFile::Parse(broken, "plan.json").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("models[1].max_batch")) << bad;
  }
}

}  // namespace
}  // namespace baton
