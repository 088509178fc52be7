// `baton run`, run as a user runs it: results, JSON fields, trace, --verify,
// the emulated-accelerator baseline, and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>

#include "spin_model.h"
#include "cli_test_util.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

using Result = baton::testing::CliResult;
using baton::testing::Baton;

class CliRunTest : public baton::testing::ZooDirTest<CliRunTest> {
 public:
  static constexpr const char* kDir = "baton_cli_run_test_";
};

TEST_F(CliRunTest, RunsTwoModelsOnCpuPusAgainstEveryOrtBaseline) {
  const std::string config = Write("cpu.yaml", R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu, threads: 1}
      - {name: cpu1, kind: cpu, threads: 1}
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 2, think_ms: 5}}
  - {name: seq, path: )" + Zoo("lstm") + R"(, arrival: {mode: periodic, fps: 50}, deadline_ms: 500, priority: 1,
     slo_ms: 400}
policy: {high_level: balanced, low_level: sel, stages: 2}
run: {duration_s: 0.6, warmup_s: 0.1, slices: 2}
)");
  const std::string json = (dir_ / "cpu.json").string();
  const std::string trace = (dir_ / "cpu.trace.json").string();
  Result r = Baton("run " + config + " --verify --json " + json + " --trace " + trace);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("ort_sequential"));
  EXPECT_THAT(r.output, HasSubstr("ort_concurrent"));
  EXPECT_THAT(r.output, HasSubstr("PU utilisation"));
  EXPECT_THAT(r.output, HasSubstr("0 mismatches"));

  nlohmann::json j = ReadJson(Path("cpu.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_GT(j["throughput_rps"].get<double>(), 0);
  ASSERT_EQ(j["models"].size(), 2u);
  for (const auto& m : j["models"]) {
    EXPECT_GT(m["completed"].get<int>(), 0) << m;
    for (const char* p : {"p50", "p95", "p99"}) {
      EXPECT_GT(m["latency_ms"][p].get<double>(), 0) << p;
    }
    EXPECT_LE(m["latency_ms"]["p50"].get<double>(), m["latency_ms"]["p99"].get<double>());
    // `stages: 2` is an upper bound: the planner cuts a model only where its
    // measured profile says a cut pays, so 1 is a valid answer too.
    EXPECT_GE(m["partitions"].get<int>(), 1);
    EXPECT_LE(m["partitions"].get<int>(), 2);
  }
  // Every baseline ran, with the same fields as baton's, labelled.
  const std::vector<std::string> baselines = {"ort_tuned", "ort_pinned", "ort_global_pool", "ort_sequential",
                                              "ort_concurrent"};
  ASSERT_EQ(j["baselines"].size(), baselines.size()) << j["baselines"].dump(2);
  std::string best;
  double best_rps = -1;
  for (const std::string& name : baselines) {
    SCOPED_TRACE(name);
    const nlohmann::json& b = j["baselines"][name];
    EXPECT_GT(b["throughput_rps"].get<double>(), 0);
    EXPECT_EQ(b["label"], name == "ort_sequential" || name == "ort_concurrent" ? "ORT defaults" : "tuned");
    EXPECT_TRUE(b["bound_ratio"].is_number()) << b["bound_ratio"];
    EXPECT_GE(b["goodput_rps"].get<double>(), 0);
    EXPECT_LE(b["goodput_rps"].get<double>(), b["throughput_rps"].get<double>() + 1e-9);
    EXPECT_GE(b["slo_attainment"].get<double>(), 0);
    EXPECT_LE(b["slo_attainment"].get<double>(), 1);
    ASSERT_EQ(b["models"].size(), 2u);
    if (b["throughput_rps"].get<double>() > best_rps) {
      best_rps = b["throughput_rps"].get<double>();
      best = name;
    }
  }
  EXPECT_THAT(j["baselines"]["ort_pinned"]["note"].get<std::string>(), HasSubstr("cls->"));
  EXPECT_EQ(j["best_baseline"], best);
  EXPECT_DOUBLE_EQ(j["speedup_vs_best_baseline"].get<double>(), j["throughput_rps"].get<double>() / best_rps);
  EXPECT_TRUE(j["goodput_speedup_vs_best_baseline"].is_number());
  // SLOs: `seq` has one, `cls` is best effort (every answer counts).
  EXPECT_EQ(j["models"][0]["slo_ms"], nullptr);
  EXPECT_EQ(j["models"][1]["slo_ms"].get<double>(), 400);
  EXPECT_DOUBLE_EQ(j["models"][0]["goodput_rps"].get<double>(), j["models"][0]["throughput_rps"].get<double>());
  // The bound: from the profile and probes, checked against every mode.
  ASSERT_TRUE(j["bound"].is_object());
  EXPECT_GT(j["bound"]["probes"].get<int>(), 0);
  EXPECT_THAT(j["bound"]["method"].get<std::string>(), HasSubstr("probe"));
  ASSERT_TRUE(j["bound_violated"].is_array());
  for (const auto& v : j["bound_violated"]) {
    EXPECT_GT(v["throughput_rps"].get<double>(), v["bound_rps"].get<double>()) << v;
  }
  EXPECT_GT(j["peak_rss_mb"].get<double>(), 0);
  EXPECT_EQ(j["interrupted"], false);
  ASSERT_EQ(j["devices"].size(), 1u);
  EXPECT_EQ(j["devices"][0]["policy_violations"], 0) << "the built-in low-level policies keep the contract";
  EXPECT_THAT(r.output, Not(HasSubstr("POLICY CONTRACT VIOLATED")));
  EXPECT_THAT(r.output, HasSubstr("goodput/s"));
  EXPECT_THAT(r.output, HasSubstr("ORT defaults"));
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  EXPECT_EQ(j["verify"]["mismatches"].get<int>(), 0);
  ASSERT_EQ(j["pus"].size(), 2u);
  double runs_cpu_s = 0;
  for (const auto& pu : j["pus"]) {
    EXPECT_GE(pu["utilization"].get<double>(), 0);
    EXPECT_LE(pu["utilization"].get<double>(), 1.05);
    // A run's thread cannot use more CPU than the run's time (one thread per
    // PU here); both are cut at the same window edges.
    EXPECT_GT(pu["run_cpu_s"].get<double>(), 0) << pu;
    EXPECT_LE(pu["run_cpu_s"].get<double>(), pu["busy_s"].get<double>() * 1.05 + 0.01) << pu;
    runs_cpu_s += pu["run_cpu_s"].get<double>();
  }
  // The whole process's CPU over the same windows includes the PUs' runs.
  EXPECT_GT(j["process_cpu_s"].get<double>(), 0);
  EXPECT_GE(j["process_cpu_s"].get<double>(), runs_cpu_s * 0.9) << j["pus"];
  EXPECT_DOUBLE_EQ(j["process_cpu_ms_per_request"].get<double>(),
                   1000 * j["process_cpu_s"].get<double>() / j["completed"].get<double>());

  // The trace (from the dispatcher's events): a lane per PU with a slice per
  // partition run, a queue lane per device with enqueue instants and a depth
  // counter, a lane of request arrivals, and the mode lane.
  std::ifstream in(trace);
  nlohmann::json t = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(t.is_discarded());
  std::set<std::string> lanes;
  std::set<std::string> modes;  // the "mode" lane: which mode had the PUs when
  int slices = 0, enqueues = 0, arrivals = 0, counters = 0;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name") lanes.insert(e["args"]["name"].get<std::string>());
    if (e["ph"] == "i") {
      const std::string name = e["name"].get<std::string>();
      enqueues += name.rfind("enqueue ", 0) == 0;
      arrivals += name.rfind("arrive ", 0) == 0;
      EXPECT_TRUE(e["args"].contains("request"));
    }
    if (e["ph"] == "C") {
      ++counters;
      EXPECT_GE(e["args"]["queued"].get<double>(), 0);
    }
    if (e["ph"] == "X" && e["args"].contains("slice")) {
      modes.insert(e["name"].get<std::string>());
    } else if (e["ph"] == "X") {
      ++slices;
      EXPECT_TRUE(e["args"].contains("request"));
      EXPECT_TRUE(e["args"].contains("model"));
      EXPECT_GE(e["dur"].get<double>(), 0);
    }
  }
  EXPECT_EQ(lanes, (std::set<std::string>{"cpu0 (cpu)", "cpu1 (cpu)", "queue", "arrivals and failed answers", "mode"}));
  EXPECT_GT(slices, 0);
  EXPECT_GE(enqueues, slices) << "every run was enqueued first";
  EXPECT_GT(arrivals, 0);
  EXPECT_GT(counters, 0);
  EXPECT_EQ(modes, (std::set<std::string>{"baton", "ort_tuned", "ort_pinned", "ort_global_pool", "ort_sequential",
                                          "ort_concurrent"}));
}

// SIGINT while the run sets up (here: profiling the default workload into a
// fresh cache) ends the set-up within one measurement: exit 128 + SIGINT, no
// report, and what was measured is kept for the next run.
TEST_F(CliRunTest, SigintDuringSetUpStopsItAtItsNextStep) {
  const baton::testing::SignalledRun r = baton::testing::SignalWhenPrinted(
      {"run", "--cache-dir", Path("setup_cache"), "--json", Path("setup.json")}, "profiling into", SIGINT);
  const std::string& printed = r.output;
  ASSERT_TRUE(r.signalled) << printed;
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << printed;
  EXPECT_THAT(printed, HasSubstr("SIGINT: finishing the current slice (or set-up step)"));
  EXPECT_THAT(printed, HasSubstr("baton run: profiling into " + Path("setup_cache/profiles/")));
  EXPECT_THAT(printed, HasSubstr("stopped: interrupted after"));
  EXPECT_THAT(printed, Not(HasSubstr("INTERRUPTED by a signal after")));
  EXPECT_FALSE(std::filesystem::exists(Path("setup.json")));
}

TEST_F(CliRunTest, SigintFinishesTheSliceAndWritesWhatRan) {
  // 40 slices of 0.25 s per mode: interrupted once the first slice is done,
  // the run must stop long before its 20 s, print the report, write the JSON
  // (interrupted: true) and exit 128 + SIGINT.
  const std::string config = Write("long.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 1}}]
run: {duration_s: 10, warmup_s: 0.1, slices: 40, baselines: [ort_tuned]}
policy: {high_level: whole}
)");
  // SIGINT once it reports its first slice.
  const baton::testing::SignalledRun r = baton::testing::SignalWhenPrinted(
      {"run", config, "--no-profile", "--json", Path("long.json")}, "slice 1/", SIGINT);
  const std::string& printed = r.output;
  ASSERT_TRUE(r.signalled) << printed;
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << printed;
  EXPECT_THAT(printed, HasSubstr("INTERRUPTED by a signal after"));
  EXPECT_THAT(printed, HasSubstr("finishing the current slice"));
  nlohmann::json j = ReadJson(Path("long.json"));
  ASSERT_FALSE(j.is_discarded()) << printed;
  EXPECT_EQ(j["interrupted"], true);
  EXPECT_GE(j["slices_run"].get<int>(), 1);
  EXPECT_LT(j["slices_run"].get<int>(), 40);
  EXPECT_GT(j["completed"].get<int>(), 0);
}

TEST_F(CliRunTest, ClosedLoopsBackOffAfterFailedRequests) {
  // max_in_flight 1 with 8 closed-loop streams: 7 of every 8 requests are
  // rejected at once. Without a backoff the streams resubmit immediately
  // (about 27,000 rejections in 0.5 s on the CI machine); with it, each
  // stream waits up to 100 ms, so a few hundred.
  const std::string config = Write("reject.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 8}}]
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1, max_in_flight: 1, baselines: false}
)");
  Result r = Baton("run " + config + " --json " + Path("reject.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("reject.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  const nlohmann::json& m = j["models"][0];
  EXPECT_GT(m["completed"].get<int>(), 0);
  EXPECT_GT(m["rejected"].get<int>(), 0);
  EXPECT_LT(m["rejected"].get<int>(), 5000) << "closed loops resubmit rejected requests without waiting";
}

TEST_F(CliRunTest, AnArrivalRateTheGeneratorCannotIssueIsReportedAsMissedArrivals) {
  // 1e6 requests/s: far more than one process can send. Before, the generator
  // tried to send every one, so a slice never ended; now arrivals more than
  // 10 ms late are counted `arrivals_missed` and the run ends on time.
  const std::string config = Write("overload.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: poisson, rate: 1000000}}]
policy: {high_level: whole}
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1, baselines: false}
)");
  Result r = Baton("run " + config + " --no-profile --json " + Path("overload.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("the arrival generator missed"));
  nlohmann::json j = ReadJson(Path("overload.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  const nlohmann::json& m = j["models"][0];
  EXPECT_GT(m["arrivals_missed"].get<int64_t>(), 0);
  EXPECT_GT(m["rejected"].get<int64_t>(), 0) << "a full queue answers at once";
}

TEST_F(CliRunTest, ARunThatNeverEndsIsStoppedAtItsExecutionTimeoutAndTheRunEnds) {
  // A Loop of 2^40 iterations: before, `baton run` waited for it for good.
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  ASSERT_TRUE(spin.ok()) << spin.status();
  std::ofstream(Path("spin.onnx"), std::ios::binary) << *spin;
  const std::string config = Write("spin.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models:
  - {name: spin, path: )" + Path("spin.onnx") + R"(, execution_timeout_ms: 100}
  - {name: cam, path: )" + Zoo("squeezenet") + R"(}
policy: {high_level: whole}
run: {duration_s: 0.6, warmup_s: 0.1, slices: 1, baselines: false}
)");
  Result r = Baton("run " + config + " --no-profile --json " + Path("spin.json"));
  ASSERT_EQ(r.exit_code, 1) << "exit 1: requests failed\n" << r.output;
  EXPECT_THAT(r.output, HasSubstr("ran past its execution timeout of 100 ms"));
  nlohmann::json j = ReadJson(Path("spin.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  const nlohmann::json& spin_model = j["models"][0];
  EXPECT_EQ(spin_model["completed"].get<int>(), 0);
  EXPECT_GT(spin_model["failed"].get<int>() + spin_model["unfinished"].get<int>(), 0);
  EXPECT_GT(j["models"][1]["completed"].get<int>(), 0) << "the other model shares the PU between timeouts";
  EXPECT_EQ(j["answered_twice"].get<int>(), 0);
  EXPECT_TRUE(j.contains("abandoned"));
}

TEST_F(CliRunTest, TheOrtBaselinesStopARunThatNeverEndsToo) {
  // Before, the baseline's serving thread ran the Loop for good and the run
  // waited for it until a second Ctrl-C.
  absl::StatusOr<std::string> spin = baton::testing::SpinModelBytes();
  ASSERT_TRUE(spin.ok()) << spin.status();
  std::ofstream(Path("spin_b.onnx"), std::ios::binary) << *spin;
  const std::string config = Write("spin_b.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models:
  - {name: spin, path: )" + Path("spin_b.onnx") + R"(, execution_timeout_ms: 100}
  - {name: cam, path: )" + Zoo("squeezenet") + R"(}
policy: {high_level: whole}
run: {duration_s: 0.6, warmup_s: 0.1, slices: 1}
)");
  Result r = Baton("run " + config + " --no-profile --no-baton --baselines ort_tuned --json " + Path("spin_b.json"));
  // Exit 1 is for baton's own failed requests; a baseline's are reported, not an exit status.
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("spin_b.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  const nlohmann::json& tuned = j["baselines"]["ort_tuned"];
  ASSERT_TRUE(tuned.is_object()) << j.dump(2);
  EXPECT_GT(tuned["models"][0]["failed"].get<int>(), 0) << tuned.dump(2);
  EXPECT_THAT(tuned["models"][0]["first_error"].get<std::string>(),
              HasSubstr("model 'spin': a run took longer than its execution timeout of 100 ms"));
  EXPECT_GT(tuned["models"][1]["completed"].get<int>(), 0);
  EXPECT_THAT(r.output, HasSubstr("ort_tuned: spin: "));
  EXPECT_THAT(r.output, HasSubstr(" requests failed; first error: model 'spin': a run took longer"));
}

TEST_F(CliRunTest, BaselinesPicksASubsetAndNoBatonRunsThemAlone) {
  const std::string config = Write("alone.yaml", R"(
devices: [{name: local, pus: [{name: cpu0, kind: cpu}, {name: cpu1, kind: cpu}]}]
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 2}, slo_ms: 1000}
run: {duration_s: 0.4, warmup_s: 0.1, slices: 1}
)");
  Result r = Baton("run " + config + " --no-baton --baselines ort_tuned --json " + Path("alone.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("alone.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j["baton_ran"], false);
  EXPECT_FALSE(j.contains("throughput_rps"));
  EXPECT_EQ(j["sessions"], 0);
  ASSERT_EQ(j["baselines"].size(), 1u) << j["baselines"].dump(2);
  EXPECT_GT(j["baselines"]["ort_tuned"]["throughput_rps"].get<double>(), 0);
  EXPECT_EQ(j["best_baseline"], "ort_tuned");
  EXPECT_EQ(j["speedup_vs_best_baseline"], nullptr);
  EXPECT_GT(j["peak_rss_mb"].get<double>(), 0);
  EXPECT_THAT(r.output, Not(HasSubstr("\nbaton:\n")));

  Result two = Baton("run " + config + " --baselines ort_pinned,ort_global_pool --json " + Path("two.json"));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  nlohmann::json k = ReadJson(Path("two.json"));
  EXPECT_EQ(k["baton_ran"], true);
  ASSERT_EQ(k["baselines"].size(), 2u) << k["baselines"].dump(2);
  EXPECT_TRUE(k["baselines"].contains("ort_pinned"));
  EXPECT_TRUE(k["baselines"].contains("ort_global_pool"));
}

TEST_F(CliRunTest, BaselineChoiceErrorsExitTwo) {
  const std::string config = Write("errs.yaml", R"(
devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: cls, path: )" + Zoo("squeezenet") + R"(}]
run: {duration_s: 0.2, warmup_s: 0, slices: 1}
)");
  Result unknown = Baton("run " + config + " --baselines ort_tuned,ort_fast");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_THAT(unknown.output, HasSubstr("unknown baseline 'ort_fast'"));
  Result mixed = Baton("run " + config + " --baselines none,ort_tuned");  // 'none' silently won
  EXPECT_EQ(mixed.exit_code, 2) << mixed.output;
  EXPECT_THAT(mixed.output, HasSubstr("'all' and 'none' stand alone"));
  Result nothing = Baton("run " + config + " --no-baton --baselines none");
  EXPECT_EQ(nothing.exit_code, 2) << nothing.output;
  EXPECT_THAT(nothing.output, HasSubstr("nothing to run"));
  Result trace = Baton("run " + config + " --no-baton --trace " + Path("t.json"));
  EXPECT_EQ(trace.exit_code, 2) << trace.output;
  EXPECT_THAT(trace.output, HasSubstr("--trace"));
}

TEST_F(CliRunTest, DynamicBatchingAnswersEveryRequestWithItsOwnRows) {
  // Four requests in flight, batches of up to 4 within 5 ms; --verify checks
  // every answer against the whole model run on that request alone.
  const std::string config = Write("batching.yaml", R"(
devices: [{name: local, pus: [{name: cpu0, kind: cpu}, {name: cpu1, kind: cpu}]}]
models:
  - {name: cls, path: )" + Zoo("mobilenetv2") + R"(, arrival: {mode: closed, concurrency: 4}, max_batch: 4,
     max_queue_delay_ms: 5, batching: on}
  - {name: seq, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 1, think_ms: 5}}
policy: {high_level: whole, low_level: sel}
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1}
)");
  Result r = Baton("run " + config + " --verify --baselines ort_tuned --json " + Path("batching.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("batching.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j["verify"]["mismatches"], 0);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  EXPECT_GT(j["models"][0]["completed"].get<int>(), 0);
  const nlohmann::json& b = j["models"][0]["batching"];
  ASSERT_TRUE(b.is_object()) << j["models"][0].dump(2);
  EXPECT_EQ(b["max_batch"], 4);
  EXPECT_EQ(b["mode"], "on");
  EXPECT_EQ(b["batch"], 4);
  EXPECT_GT(b["batches"].get<int>(), 0);
  EXPECT_GE(b["mean_batch"].get<double>(), 1.0);
  EXPECT_LE(b["mean_batch"].get<double>(), 4.0);
  EXPECT_FALSE(j["models"][1].contains("batching"));
  EXPECT_GT(j["baselines"]["ort_tuned"]["models"][0]["completed"].get<int>(), 0);  // the model as loaded
}

TEST_F(CliRunTest, WithBatchingAutoTheProfileDecidesAndTheReportSaysWhy) {
  // `batching: auto` (the default): the profile measures the whole model at
  // batch 1, 2 and 4, and baton batches only if that saves time per request.
  // Which way it goes depends on the machine; the report must agree with
  // its own numbers.
  const std::string config = Write("auto.yaml", R"(
devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 2}, max_batch: 4}
policy: {high_level: whole}
run: {duration_s: 0.3, warmup_s: 0, slices: 1}
)");
  Result r = Baton("run " + config + " --no-baselines --json " + Path("auto.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("model 'cls': dynamic batching: batch"));
  nlohmann::json j = ReadJson(Path("auto.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  const nlohmann::json& b = j["models"][0]["batching"];
  ASSERT_TRUE(b.is_object()) << j["models"][0].dump(2);
  EXPECT_EQ(b["mode"], "auto");
  const double ratio = b["per_request_ratio"].get<double>();
  EXPECT_GT(ratio, 0);
  if (ratio <= 0.95) {
    EXPECT_GT(b["batch"].get<int>(), 1) << b.dump();
    EXPECT_GT(b["batches"].get<int>(), 0);
  } else {
    EXPECT_EQ(b["batch"], 1) << b.dump();
    EXPECT_EQ(b["batches"], 0);  // no batcher: requests went straight to the runtime
    EXPECT_THAT(r.output, HasSubstr("batching off"));
  }
  EXPECT_GT(j["models"][0]["completed"].get<int>(), 0);
  // The profile it decided from has the batch sizes.
  nlohmann::json profile = ReadJson(j["bound"]["profile"].get<std::string>());
  ASSERT_FALSE(profile.is_discarded());
  ASSERT_TRUE(profile["models"][0].contains("batched")) << profile["models"][0].dump().substr(0, 500);
  EXPECT_EQ(profile["models"][0]["batched"].size(), 3u);
}

TEST_F(CliRunTest, BatchesRunOnEmulatedAcceleratorsToo) {
  // An emulated PU calibrates a batching model at one row and charges each
  // row; with compute on, --verify checks every batched answer.
  const std::string config = Write("emu_batching.yaml", R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu}
      - {name: npu0, kind: emu, speed: 4, op_speed: {Conv: 12}, compute: true}
models:
  - {name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 4}, max_batch: 4,
     batching: on}
run: {duration_s: 0.4, warmup_s: 0.1, slices: 1, baselines: false}
)");
  Result r = Baton("run " + config + " --verify --json " + Path("emu_batching.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("emu_batching.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j["verify"]["mismatches"], 0);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  EXPECT_GT(j["models"][0]["batching"]["batches"].get<int>(), 0);
  int64_t npu_runs = 0;
  for (const nlohmann::json& p : j["models"][0]["placement"]) {
    for (size_t k = 0; k < p["pus"].size(); ++k) {
      if (p["pus"][k] == "npu0" && p.contains("runs")) npu_runs += p["runs"][k].get<int64_t>();
    }
  }
  EXPECT_GT(npu_runs, 0) << j["models"][0]["placement"].dump();
}

TEST_F(CliRunTest, AModelThatCannotBeBatchedIsRefusedBeforeTheRun) {
  // The LSTM model reshapes with its batch size built in: stacked requests fail.
  const std::string config = Write("nobatch.yaml", R"(
devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: seq, path: )" + Zoo("lstm") + R"(, arrival: {mode: closed, concurrency: 2}, max_batch: 2,
          max_queue_delay_ms: 1}]
run: {duration_s: 0.2, warmup_s: 0, slices: 1}
)");
  Result r = Baton("run " + config + " --no-baselines");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("model 'seq': max_batch 2"));
  EXPECT_THAT(r.output, HasSubstr("leave max_batch at 1"));
}

TEST_F(CliRunTest, AModeAboveTheBoundIsReportedAsAViolation) {
  // A profile that says every run takes 1000 times longer than it does: the
  // bound computed from it is far below what ort_tuned does. Without baton
  // there are no speed probes to correct it, so the run must report the
  // violation, naming the mode and both numbers.
  const std::string config = Write("violate.yaml", R"(
devices: [{name: local, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: cls, path: )" + Zoo("squeezenet") + R"(, arrival: {mode: closed, concurrency: 1}}]
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1}
)");
  Result profiled = Baton("profile " + config + " --quiet --budget 2 --min-runs 2 --min-time-ms 1 -o " +
                          Path("violate.profile.json"));
  ASSERT_EQ(profiled.exit_code, 0) << profiled.output;
  nlohmann::json p = ReadJson(Path("violate.profile.json"));
  ASSERT_FALSE(p.is_discarded());
  int scaled = 0;
  std::function<void(nlohmann::json&)> slow_down = [&](nlohmann::json& v) {
    if (v.is_object()) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (it.key().size() > 3 && it.key().substr(it.key().size() - 3) == "_ms" && it.value().is_number() &&
            it.key() != "min_time_ms") {
          it.value() = it.value().get<double>() * 1000;
          ++scaled;
        } else {
          slow_down(it.value());
        }
      }
    } else if (v.is_array()) {
      for (auto& e : v) slow_down(e);
    }
  };
  slow_down(p);
  ASSERT_GT(scaled, 0);
  std::ofstream(Path("violate.profile.json")) << p.dump();

  Result r = Baton("run " + config + " --no-baton --baselines ort_tuned --profile " + Path("violate.profile.json") +
                   " --json " + Path("violate.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("violate.json"));
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j["bound"]["probes"], 0);
  ASSERT_EQ(j["bound_violated"].size(), 1u) << j.dump(2);
  EXPECT_EQ(j["bound_violated"][0]["mode"], "ort_tuned");
  EXPECT_GT(j["bound_violated"][0]["throughput_rps"].get<double>(), j["bound_violated"][0]["bound_rps"].get<double>());
  EXPECT_DOUBLE_EQ(j["bound_violated"][0]["bound_rps"].get<double>(), j["bound"]["throughput_rps"].get<double>());
  EXPECT_THAT(r.output, HasSubstr("BOUND VIOLATED: ort_tuned"));
}

TEST_F(CliRunTest, EmulatedAcceleratorGetsTheWholeOnOnePuBaseline) {
  const std::string config = Write("emu.yaml", R"(
devices:
  - name: local
    pus:
      - {name: cpu0, kind: cpu}
      - {name: npu0, kind: emu, speed: 6, unsupported_ops: [Relu, Softmax], compute: true}
models:
  - {name: a, path: )" + Zoo("squeezenet") + R"(}
  - {name: b, path: )" + Zoo("vgg") + R"(}
policy: {high_level: capability, low_level: heft}
run: {duration_s: 0.5, warmup_s: 0.1, slices: 1}
)");
  Result r = Baton("run " + config + " --verify --json " + (dir_ / "emu.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = ReadJson(Path("emu.json"));
  ASSERT_TRUE(j["baselines"].contains("whole_on_one_pu")) << j.dump(2);
  EXPECT_THAT(j["baselines"]["whole_on_one_pu"]["note"].get<std::string>(), HasSubstr("->"));
  EXPECT_TRUE(j.contains("speedup_vs_whole_on_one_pu"));
  EXPECT_EQ(j["verify"]["mismatches"].get<int>(), 0);
  EXPECT_GT(j["verify"]["checked"].get<int>(), 0);
  for (const auto& m : j["models"]) EXPECT_GT(m["partitions"].get<int>(), 1) << "Relu forces cuts";
}

TEST_F(CliRunTest, VerifyRefusesEmulatorsWithoutOutputs) {
  const std::string config = Write("nocompute.yaml", R"(
devices: [{name: d, pus: [{name: npu0, kind: emu, compute: false}, {name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + Zoo("squeezenet") + R"(}]
)");
  Result r = Baton("run " + config + " --verify --duration 0.1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("npu0"));
  EXPECT_THAT(r.output, HasSubstr("compute: true"));
}

TEST_F(CliRunTest, ConfigErrorsNameTheKeyAndExitTwo) {
  const std::string bad = Write("bad.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: zoo:resnet, arrival: {mode: periodic, fsp: 3}}]
)");
  Result r = Baton("run " + bad);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("fsp"));
  EXPECT_THAT(r.output, HasSubstr("models[0].arrival"));

  Result missing = Baton("run " + (dir_ / "nope.yaml").string());
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("nope.yaml"));

  const std::string bad_model = Write("badmodel.yaml", R"(
devices: [{name: d, pus: [{name: cpu0, kind: cpu}]}]
models: [{name: a, path: )" + (dir_ / "missing.onnx").string() + R"(}]
)");
  Result m = Baton("run " + bad_model + " --duration 0.1");
  EXPECT_EQ(m.exit_code, 2) << m.output;
  EXPECT_THAT(m.output, HasSubstr("model 'a'"));

  Result policy = Baton("run --print-config --low-level nonsense");
  EXPECT_EQ(policy.exit_code, 2) << policy.output;
  EXPECT_THAT(policy.output, HasSubstr("nonsense"));
}

TEST_F(CliRunTest, PrintsTheEmbeddedDefaultConfig) {
  Result r = Baton("run --print-config");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("devices:"));
  EXPECT_THAT(r.output, HasSubstr("zoo:"));
  Result help = Baton("run --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.output, HasSubstr("ort_concurrent"));
}

}  // namespace
