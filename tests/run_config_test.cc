// Tests of the `baton run` configuration: parsing, validation, errors naming
// the key path, the default workload and the ToYaml round trip.
#include "baton/config/run_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace baton::config {
namespace {

using ::testing::HasSubstr;

// The example from run_config.h (and docs/config.md).
constexpr const char* kExample = R"(
devices:                         # required, at least one
  - name: local                  # required, unique
    pus:                         # required, at least one
      - {name: cpu0, kind: cpu, threads: 1, cores: [0]}
      - {name: npu0, kind: emu, speed: 4.0, op_speed: {Conv: 30},
         unsupported_ops: [Softmax], compute: false}
models:                          # required, at least one
  - {name: det, path: zoo:yolo, arrival: {mode: periodic, fps: 10},
     deadline_ms: 200, priority: 1, partitions: 3}
  - {name: cls, path: models/resnet.onnx, arrival: {mode: closed, concurrency: 2}}
  - {name: vad, path: zoo:lstm, arrival: {mode: poisson, rate: 20}}
policy: {high_level: balanced, low_level: heft, stages: 0}
run: {duration_s: 20, warmup_s: 2, seed: 1, baselines: true, slices: 3,
      max_queue: 256, max_in_flight: 64}
)";

// A minimal valid document with `extra` appended at the top level.
std::string Minimal(const std::string& pu = "{name: cpu0}", const std::string& model = "{name: m, path: zoo:lstm}") {
  return "devices: [{name: d, pus: [" + pu + "]}]\nmodels: [" + model + "]\n";
}

// The error message of parsing `yaml` (fails the test when it parses).
std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<RunConfig> config = ParseRunConfig(yaml, "config.yaml");
  EXPECT_FALSE(config.ok()) << "parsed unexpectedly:\n" << yaml;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

std::string ValidateError(const RunConfig& config) {
  absl::Status status = Validate(config);
  EXPECT_FALSE(status.ok());
  return std::string(status.message());
}

// Builders (designated initializers would leave members without initializers,
// which -Wmissing-field-initializers reports).
PuConfig Cpu(const std::string& name, int threads, std::vector<int> cores = {}) {
  PuConfig pu;
  pu.name = name;
  pu.kind = "cpu";
  pu.threads = threads;
  pu.cores = std::move(cores);
  return pu;
}

PuConfig Emu(const std::string& name, double speed) {
  PuConfig pu;
  pu.name = name;
  pu.kind = "emu";
  pu.speed = speed;
  return pu;
}

ModelConfig Model(const std::string& name, const std::string& path, ArrivalConfig arrival) {
  ModelConfig model;
  model.name = name;
  model.path = path;
  model.arrival = arrival;
  return model;
}

TEST(RunConfigTest, HeaderExampleParsesIntoTheExpectedStructs) {
  absl::StatusOr<RunConfig> parsed = ParseRunConfig(kExample, "example.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const RunConfig& c = *parsed;

  ASSERT_EQ(c.devices.size(), 1u);
  EXPECT_EQ(c.devices[0].name, "local");
  ASSERT_EQ(c.devices[0].pus.size(), 2u);
  const PuConfig& cpu = c.devices[0].pus[0];
  EXPECT_EQ(cpu.name, "cpu0");
  EXPECT_EQ(cpu.kind, "cpu");
  EXPECT_EQ(cpu.threads, 1);
  EXPECT_EQ(cpu.cores, std::vector<int>{0});
  const PuConfig& npu = c.devices[0].pus[1];
  EXPECT_EQ(npu.name, "npu0");
  EXPECT_EQ(npu.kind, "emu");
  EXPECT_EQ(npu.speed, 4.0);
  EXPECT_EQ(npu.op_speed, (std::map<std::string, double>{{"Conv", 30.0}}));
  EXPECT_EQ(npu.unsupported_ops, std::vector<std::string>{"Softmax"});
  EXPECT_FALSE(npu.compute);

  ASSERT_EQ(c.models.size(), 3u);
  EXPECT_EQ(c.models[0].name, "det");
  EXPECT_EQ(c.models[0].path, "zoo:yolo");
  EXPECT_EQ(c.models[0].arrival.mode, ArrivalConfig::Mode::kPeriodic);
  EXPECT_EQ(c.models[0].arrival.fps, 10.0);
  EXPECT_EQ(c.models[0].deadline_ms, 200.0);
  EXPECT_EQ(c.models[0].priority, 1);
  EXPECT_EQ(c.models[0].partitions, 3);
  EXPECT_EQ(c.models[1].name, "cls");
  EXPECT_EQ(c.models[1].path, "models/resnet.onnx");
  EXPECT_EQ(c.models[1].arrival.mode, ArrivalConfig::Mode::kClosed);
  EXPECT_EQ(c.models[1].arrival.concurrency, 2);
  EXPECT_EQ(c.models[1].deadline_ms, std::nullopt);
  EXPECT_EQ(c.models[1].priority, 0);
  EXPECT_EQ(c.models[1].partitions, std::nullopt);
  EXPECT_EQ(c.models[2].arrival.mode, ArrivalConfig::Mode::kPoisson);
  EXPECT_EQ(c.models[2].arrival.rate, 20.0);

  EXPECT_EQ(c.policy.high_level, "balanced");
  EXPECT_EQ(c.policy.low_level, "heft");
  EXPECT_EQ(c.policy.stages, 0);
  EXPECT_EQ(c.run.duration_s, 20.0);
  EXPECT_EQ(c.run.warmup_s, 2.0);
  EXPECT_EQ(c.run.seed, 1u);
  EXPECT_TRUE(c.run.baselines);
  EXPECT_EQ(c.run.slices, 3);
  EXPECT_EQ(c.run.max_queue, 256);
  EXPECT_EQ(c.run.max_in_flight, 64);
  EXPECT_EQ(c.base_dir, "");
}

TEST(RunConfigTest, OmittedKeysTakeTheStructDefaults) {
  absl::StatusOr<RunConfig> parsed = ParseRunConfig(Minimal() + "policy:\nrun: {}\n", "c.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  PuConfig expected_pu;
  expected_pu.name = "cpu0";
  EXPECT_EQ(parsed->devices[0].pus[0], expected_pu);
  EXPECT_EQ(parsed->models[0].arrival, ArrivalConfig{});
  EXPECT_EQ(parsed->policy, PolicyConfig{});
  EXPECT_EQ(parsed->run, RunSettings{});
}

// --- syntax, empty documents, wrong node types -------------------------------

TEST(RunConfigTest, YamlSyntaxErrorNamesSourceLineAndColumn) {
  const std::string message = ErrorOf("devices: [\nmodels: {a: b\n");
  EXPECT_THAT(message, HasSubstr("config.yaml: line "));
  EXPECT_THAT(message, HasSubstr("column"));
  EXPECT_THAT(message, HasSubstr("invalid YAML"));
}

TEST(RunConfigTest, EmptyDocumentSaysDevicesAndModelsAreRequired) {
  for (const char* yaml : {"", "   \n", "# only a comment\n", "~", "---\n"}) {
    const std::string message = ErrorOf(yaml);
    EXPECT_THAT(message, HasSubstr("config.yaml: "));
    EXPECT_THAT(message, HasSubstr("`devices` and `models` are required")) << yaml;
  }
}

TEST(RunConfigTest, MissingTopLevelSections) {
  EXPECT_THAT(ErrorOf("models: [{name: m, path: zoo:lstm}]"), HasSubstr("missing required key 'devices'"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: [{name: cpu0}]}]"), HasSubstr("missing required key 'models'"));
  EXPECT_THAT(ErrorOf("devices: []\nmodels: [{name: m, path: zoo:lstm}]"),
              HasSubstr("devices: at least one device is required"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: [{name: c}]}]\nmodels:\n"),
              HasSubstr("models: at least one model is required"));
}

TEST(RunConfigTest, WrongNodeTypesNameTheKeyPath) {
  EXPECT_THAT(ErrorOf("- devices\n- models\n"), HasSubstr("config.yaml: expected a map"));
  EXPECT_THAT(ErrorOf("just text"), HasSubstr("expected a map"));
  EXPECT_THAT(ErrorOf("devices: {name: d}\nmodels: []"), HasSubstr("config.yaml: devices: expected a list, got a map"));
  EXPECT_THAT(ErrorOf("devices: [[1, 2]]\nmodels: []"), HasSubstr("devices[0]: expected a map"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: cpu0}]\nmodels: []"),
              HasSubstr("devices[0].pus: expected a list, got 'cpu0'"));
  EXPECT_THAT(ErrorOf(Minimal() + "policy: [balanced]\n"), HasSubstr("policy: expected a map"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: 5\n"), HasSubstr("run: expected a map"));
  EXPECT_THAT(ErrorOf(Minimal("{name: [a, b]}")), HasSubstr("devices[0].pus[0].name: expected a string, got a list"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, op_speed: [Conv]}")),
              HasSubstr("devices[0].pus[0].op_speed: expected a map"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, unsupported_ops: Softmax}")),
              HasSubstr("devices[0].pus[0].unsupported_ops: expected a list of strings"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: periodic}")),
              HasSubstr("models[0].arrival: expected a map"));
  EXPECT_THAT(ErrorOf("{[a]: 1}"), HasSubstr("expected a name as key"));
}

TEST(RunConfigTest, TypeErrorsNameKeyAndValue) {
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: two}")),
              HasSubstr("config.yaml: devices[0].pus[0].threads: expected an integer, got 'two'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: 1.5}")), HasSubstr("threads: expected an integer, got '1.5'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: }")), HasSubstr("threads: expected an integer, got nothing"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: 2, cores: [0, x]}")),
              HasSubstr("devices[0].pus[0].cores[1]: expected an integer, got 'x'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, speed: fast}")),
              HasSubstr("devices[0].pus[0].speed: expected a number, got 'fast'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, op_speed: {Conv: x}}")),
              HasSubstr("devices[0].pus[0].op_speed.Conv: expected a number, got 'x'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, compute: maybe}")),
              HasSubstr("devices[0].pus[0].compute: expected true or false, got 'maybe'"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {seed: -1}\n"), HasSubstr("run.seed: expected a non-negative integer"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {baselines: 3}\n"), HasSubstr("run.baselines: expected true or false"));
  EXPECT_THAT(ErrorOf(Minimal() + "policy: {stages: {a: 1}}\n"),
              HasSubstr("policy.stages: expected an integer, got a map"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, deadline_ms: soon}")),
              HasSubstr("models[0].deadline_ms: expected a number, got 'soon'"));
}

TEST(RunConfigTest, HugeAndNegativeNumbers) {
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: 99999999999}")),
              HasSubstr("devices[0].pus[0].threads: 99999999999 is out of range"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: 999999999999999999999999999}")),
              HasSubstr("threads: expected an integer"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: -3}")), HasSubstr("devices[0].pus[0].threads: must be in 1..1024, got -3"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {duration_s: 1e300}\n"), HasSubstr("run.duration_s: must be > 0"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {duration_s: 1e999}\n"), HasSubstr("run.duration_s: expected a number"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {duration_s: nan}\n"), HasSubstr("run.duration_s: must be > 0"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {duration_s: inf}\n"), HasSubstr("got inf"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {seed: 99999999999999999999999}\n"), HasSubstr("run.seed"));
  absl::StatusOr<RunConfig> big_seed = ParseRunConfig(Minimal() + "run: {seed: 18446744073709551615}\n", "c");
  ASSERT_TRUE(big_seed.ok()) << big_seed.status();
  EXPECT_EQ(big_seed->run.seed, 18446744073709551615u);
}

// --- unknown keys at every level --------------------------------------------

TEST(RunConfigTest, UnknownKeysAtEveryLevelListTheKnownKeys) {
  EXPECT_THAT(ErrorOf(Minimal() + "device: []\n"),
              HasSubstr("config.yaml: unknown key 'device'; known keys: devices, models, policy, run"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pu: []}]\nmodels: []"),
              HasSubstr("config.yaml: devices[0]: unknown key 'pu'; known keys: name, pus"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, thread: 2}")),
              HasSubstr("devices[0].pus[0]: unknown key 'thread'; known keys: name, kind, threads, cores, "
                        "share_session, nice, scheduling, speed, op_speed, unsupported_ops, compute"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, prio: 2}")),
              HasSubstr("models[0]: unknown key 'prio'; known keys: name, path, arrival, deadline_ms, priority, "
                        "partitions"));
  const std::string two_models =
      "devices: [{name: d, pus: [{name: c}]}]\nmodels:\n  - {name: a, path: zoo:lstm}\n"
      "  - {name: b, path: zoo:lstm, arrival: {mode: periodic, fsp: 3}}\n";
  EXPECT_THAT(ErrorOf(two_models),
              HasSubstr("config.yaml: models[1].arrival: unknown key 'fsp'; known keys: mode, concurrency, think_ms, fps, rate"));
  EXPECT_THAT(ErrorOf(Minimal() + "policy: {lowlevel: fifo}\n"),
              HasSubstr("policy: unknown key 'lowlevel'; known keys: high_level, low_level, stages"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {duration: 3}\n"),
              HasSubstr("run: unknown key 'duration'; known keys: duration_s, warmup_s, seed, baselines, slices, "
                        "max_queue, max_in_flight"));
}

TEST(RunConfigTest, DuplicateKeysAreErrors) {
  EXPECT_THAT(ErrorOf(Minimal("{name: c, threads: 1, threads: 2}")),
              HasSubstr("devices[0].pus[0]: key 'threads' appears twice"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, op_speed: {Conv: 1, Conv: 2}}")),
              HasSubstr("devices[0].pus[0].op_speed: op 'Conv' appears twice"));
}

TEST(RunConfigTest, MissingRequiredKeys) {
  EXPECT_THAT(ErrorOf("devices: [{pus: [{name: c}]}]\nmodels: []"),
              HasSubstr("devices[0]: missing required key 'name'"));
  EXPECT_THAT(ErrorOf("devices: [{name: d}]\nmodels: []"), HasSubstr("devices[0]: missing required key 'pus'"));
  EXPECT_THAT(ErrorOf(Minimal("{kind: cpu}")), HasSubstr("devices[0].pus[0]: missing required key 'name'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{path: zoo:lstm}")), HasSubstr("models[0]: missing required key 'name'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m}")), HasSubstr("models[0]: missing required key 'path'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {mode: periodic}}")),
              HasSubstr("models[0].arrival: mode periodic needs 'fps'"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {mode: poisson}}")),
              HasSubstr("models[0].arrival: mode poisson needs 'rate'"));
}

// --- keys of another mode or kind -------------------------------------------

TEST(RunConfigTest, KeysOfAnotherModeAreErrorsWithTheFix) {
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {mode: closed, fps: 3}}")),
              HasSubstr("models[0].arrival.fps: 'fps' applies only to mode periodic, but mode is closed; remove fps, "
                        "or set mode: periodic"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {fps: 3}}")),
              HasSubstr("mode is closed (the default)"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {rate: 3, mode: periodic}}")),
              HasSubstr("models[0].arrival.rate: 'rate' applies only to mode poisson"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {mode: periodic, fps: 5, think_ms: 2}}")),
              HasSubstr("models[0].arrival.think_ms: 'think_ms' applies only to mode closed"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {think_ms: -1}}")),
              HasSubstr("models[0].arrival.think_ms: must be between 0"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {mode: poisson, concurrency: 2}}")),
              HasSubstr("models[0].arrival.concurrency: 'concurrency' applies only to mode closed"));
}

TEST(RunConfigTest, KeysOfAnotherKindAreErrorsWithTheFix) {
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: cpu, speed: 2}")),
              HasSubstr("devices[0].pus[0].speed: 'speed' applies only to kind emu, but this PU is kind cpu; remove "
                        "speed, or set kind: emu"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, op_speed: {Conv: 2}}")), HasSubstr("this PU is kind cpu (the default)"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, compute: true}")), HasSubstr("'compute' applies only to kind emu"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, unsupported_ops: [Relu]}")),
              HasSubstr("'unsupported_ops' applies only to kind emu"));
  EXPECT_THAT(ErrorOf(Minimal("{threads: 2, name: c, kind: emu}")),
              HasSubstr("devices[0].pus[0].threads: 'threads' applies only to kind cpu, but this PU is kind emu; "
                        "remove threads, or set kind: cpu"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, cores: [0]}")), HasSubstr("'cores' applies only to kind cpu"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, share_session: false}")),
              HasSubstr("'share_session' applies only to kind cpu"));
}

TEST(RunConfigTest, SlicesQueuesAndDocumentsHaveBounds) {
  EXPECT_THAT(ErrorOf(Minimal() + "run: {slices: 100000000}\n"), HasSubstr("run.slices: must be in 1..1000"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {duration_s: 1, slices: 1000}\n"),
              HasSubstr("would last 1 ms each, too short to measure; use at most 100 slices"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {max_queue: 2000000000}\n"), HasSubstr("run.max_queue: must be in 1..1000000"));
  EXPECT_THAT(ErrorOf(Minimal() + "run: {max_in_flight: 0}\n"), HasSubstr("run.max_in_flight: must be in 1..1000000"));
  EXPECT_THAT(ErrorOf(Minimal() + "---\n" + Minimal()), HasSubstr("holds 2 YAML documents"));
  // A trailing document marker is not a second document.
  EXPECT_TRUE(ParseRunConfig(Minimal() + "---\n", "t").ok());
}

TEST(RunConfigTest, InputsThatHangYamlCppsLoadAllAreClearErrors) {
  // yaml-cpp 0.7's LoadAll loops forever (allocating) on these; found by tests/fuzz/config_fuzz.
  for (const char* text : {", devices: [{name: local, ", ", a", ",[", ", {"}) {
    EXPECT_THAT(ErrorOf(text), HasSubstr("invalid YAML: no document could be read")) << text;
  }
}

// Names and paths go into JSON, which must be UTF-8. Found by
// tests/fuzz/config_fuzz: two names of different invalid bytes printed alike
// (yaml-cpp's emitter replaces them) and became duplicates; and `baton run
// --json` of such a config ended in an uncaught exception after the run.
TEST(RunConfigTest, TextThatIsNotUtf8IsRefusedWhereItIs) {
  EXPECT_THAT(ErrorOf(Minimal("{name: cpu0}", "{name: \"cam\xff\", path: zoo:lstm}")),
              HasSubstr("config.yaml: line 2, column 21: byte 0xFF is not valid UTF-8; save the configuration as "
                        "UTF-8"));
  EXPECT_THAT(ErrorOf("devices: [{name: d\xc0\x80, pus: [{name: cpu0}]}]\n"), HasSubstr("line 1, column 19"))
      << "an overlong NUL";
  const std::string utf8 = "\xe7\x9b\xb8\xe6\x9c\xba-\xc3\xbc-\xf0\x9f\x93\xb7";  // 相机-ü-📷
  absl::StatusOr<RunConfig> ok = ParseRunConfig(Minimal("{name: cpu0}", "{name: " + utf8 + ", path: zoo:lstm}"), "c");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->models[0].name, utf8);
  absl::StatusOr<RunConfig> back = ParseRunConfig(ToYaml(*ok), "round-trip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->models[0].name, utf8);
}

TEST(RunConfigTest, RemoteAddressPortIsInRange) {
  auto remote = [](const std::string& address) {
    return "devices: [{name: d, pus: [{name: cpu0}]}, {name: e, address: '" + address +
           "'}]\nmodels: [{name: m, path: zoo:lstm}]\n";
  };
  EXPECT_THAT(ErrorOf(remote("edge:99999")),
              HasSubstr("devices[1].address: 'edge:99999': port '99999' is not a number in 1..65535"));
  EXPECT_THAT(ErrorOf(remote("edge:0")), HasSubstr("1..65535"));
  EXPECT_THAT(ErrorOf(remote("edge:http")), HasSubstr("port 'http'"));
  EXPECT_THAT(ErrorOf(remote("edge")), HasSubstr("has no port"));
  EXPECT_TRUE(ParseRunConfig(remote("edge:50051"), "c.yaml").ok());
  EXPECT_TRUE(ParseRunConfig(remote("[::1]:50051"), "c.yaml").ok());
}

TEST(RunConfigTest, ShareSessionIsAConfigKey) {
  absl::StatusOr<RunConfig> shared = ParseRunConfig(Minimal(), "c.yaml");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_TRUE(shared->devices[0].pus[0].share_session);
  absl::StatusOr<RunConfig> own = ParseRunConfig(Minimal("{name: c, share_session: false}"), "c.yaml");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_FALSE(own->devices[0].pus[0].share_session);
  absl::StatusOr<RunConfig> back = ParseRunConfig(ToYaml(*own), "round-trip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *own);
  EXPECT_THAT(ErrorOf(Minimal("{name: c, share_session: maybe}")), HasSubstr("share_session"));
}

TEST(RunConfigTest, NiceIsAConfigKeyOfCpuPusIn0To19) {
  absl::StatusOr<RunConfig> plain = ParseRunConfig(Minimal(), "c.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->devices[0].pus[0].nice, 0);
  EXPECT_EQ(ToYaml(*plain).find("nice"), std::string::npos) << "0 is the default and is not written";
  absl::StatusOr<RunConfig> nice = ParseRunConfig(Minimal("{name: c, nice: 5}"), "c.yaml");
  ASSERT_TRUE(nice.ok()) << nice.status();
  EXPECT_EQ(nice->devices[0].pus[0].nice, 5);
  absl::StatusOr<RunConfig> back = ParseRunConfig(ToYaml(*nice), "round-trip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *nice);
  EXPECT_THAT(ErrorOf(Minimal("{name: c, nice: 20}")), HasSubstr("devices[0].pus[0].nice: must be in 0..19, got 20"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, nice: -5}")), HasSubstr("so negative values are not taken"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, nice: high}")), HasSubstr("nice"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, nice: 3}")), HasSubstr("'nice' applies only to kind cpu"));
}

TEST(RunConfigTest, SchedulingIsAConfigKeyOfCpuPusBatchByDefault) {
  absl::StatusOr<RunConfig> plain = ParseRunConfig(Minimal(), "c.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->devices[0].pus[0].scheduling, "batch");
  EXPECT_EQ(ToYaml(*plain).find("scheduling"), std::string::npos) << "the default is not written";
  absl::StatusOr<RunConfig> normal = ParseRunConfig(Minimal("{name: c, scheduling: normal}"), "c.yaml");
  ASSERT_TRUE(normal.ok()) << normal.status();
  EXPECT_EQ(normal->devices[0].pus[0].scheduling, "normal");
  absl::StatusOr<RunConfig> back = ParseRunConfig(ToYaml(*normal), "round-trip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *normal);
  EXPECT_THAT(ErrorOf(Minimal("{name: c, scheduling: fifo}")),
              HasSubstr("devices[0].pus[0].scheduling: unknown scheduling 'fifo'; allowed: batch, normal"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, scheduling: 3}")), HasSubstr("scheduling"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: emu, scheduling: batch}")),
              HasSubstr("'scheduling' applies only to kind cpu"));
}

// --- bad values ---------------------------------------------------------------

TEST(RunConfigTest, BadEnumValuesListTheAllowedValues) {
  EXPECT_THAT(ErrorOf(Minimal("{name: c, kind: gpu}")),
              HasSubstr("devices[0].pus[0].kind: unknown kind 'gpu'; allowed: cpu, emu"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: zoo:lstm, arrival: {mode: burst}}")),
              HasSubstr("models[0].arrival.mode: unknown mode 'burst'; allowed: closed, periodic, poisson"));
  EXPECT_THAT(ErrorOf(Minimal() + "policy: {high_level: greedy}\n"),
              HasSubstr("policy.high_level: unknown high-level policy 'greedy'; allowed: whole, capability, balanced"));
  const std::string message = ErrorOf(Minimal() + "policy: {low_level: magic}\n");
  EXPECT_THAT(message, HasSubstr("config.yaml: policy.low_level: unknown low-level policy 'magic'; allowed: "));
  EXPECT_THAT(message, HasSubstr("heft"));
  EXPECT_THAT(message, HasSubstr("fifo"));
}

TEST(RunConfigTest, OutOfRangeValuesNameKeyValueAndRange) {
  struct Case {
    std::string yaml;
    std::string expected;
  };
  const std::string c = "{name: c}";
  const std::vector<Case> cases = {
      {Minimal("{name: c, threads: 0}"), "devices[0].pus[0].threads: must be in 1..1024, got 0"},
      {Minimal("{name: c, threads: 100000}"), "devices[0].pus[0].threads: must be in 1..1024, got 100000"},
      {Minimal("{name: c, threads: 2, cores: [0]}"),
       "devices[0].pus[0].cores: has 1 entries but threads is 2; list exactly one"},
      {Minimal("{name: c, threads: 1, cores: [-1]}"), "devices[0].pus[0].cores[0]: CPU -1 does not exist; allowed:"},
      {Minimal("{name: c, threads: 1, cores: [100000]}"), "devices[0].pus[0].cores[0]: CPU 100000 does not exist"},
      {Minimal("{name: c, threads: 2, cores: [0, 0]}"), "devices[0].pus[0].cores[1]: CPU 0 is listed twice"},
      {Minimal("{name: c, kind: emu, speed: 0}"), "devices[0].pus[0].speed: must be > 0 and at most 1e+06, got 0"},
      {Minimal("{name: c, kind: emu, speed: -2}"), "devices[0].pus[0].speed: must be > 0"},
      {Minimal("{name: c, kind: emu, op_speed: {Conv: -1}}"), "devices[0].pus[0].op_speed.Conv: must be > 0"},
      {Minimal("{name: c, kind: emu, unsupported_ops: ['']}"),
       "devices[0].pus[0].unsupported_ops[0]: op name is empty"},
      {Minimal(c, "{name: m, path: zoo:lstm, arrival: {mode: periodic, fps: 0}}"),
       "models[0].arrival.fps: must be > 0 and at most 1e+06, got 0"},
      {Minimal(c, "{name: m, path: zoo:lstm, arrival: {mode: poisson, rate: -5}}"),
       "models[0].arrival.rate: must be > 0 and at most 1e+06, got -5"},
      {Minimal(c, "{name: m, path: zoo:lstm, arrival: {concurrency: 0}}"),
       "models[0].arrival.concurrency: must be in 1..4096, got 0"},
      {Minimal(c, "{name: m, path: zoo:lstm, arrival: {concurrency: 1000000000}}"),
       "models[0].arrival.concurrency: must be in 1..4096, got 1000000000"},
      {Minimal(c, "{name: m, path: zoo:lstm, deadline_ms: 0}"), "models[0].deadline_ms: must be > 0"},
      {Minimal(c, "{name: m, path: zoo:lstm, partitions: 0}"), "models[0].partitions: must be in 1..64, got 0"},
      {Minimal(c, "{name: m, path: zoo:lstm, partitions: 65}"), "models[0].partitions: must be in 1..64, got 65"},
      {Minimal() + "policy: {stages: -1}\n", "policy.stages: must be in 0..64, got -1"},
      {Minimal() + "run: {duration_s: 0}\n", "run.duration_s: must be > 0 and at most 1e+06, got 0"},
      {Minimal() + "run: {warmup_s: -1}\n", "run.warmup_s: must be >= 0 and at most 1e+06, got -1"},
      {Minimal() + "run: {slices: 0}\n", "run.slices: must be in 1..1000, got 0"},
      {Minimal() + "run: {max_queue: 0}\n", "run.max_queue: must be in 1..1000000, got 0"},
      {Minimal() + "run: {max_in_flight: -4}\n", "run.max_in_flight: must be in 1..1000000, got -4"},
  };
  for (const Case& test : cases) {
    EXPECT_THAT(ErrorOf(test.yaml), HasSubstr("config.yaml: " + test.expected)) << test.yaml;
  }
}

TEST(RunConfigTest, NamesAndPaths) {
  EXPECT_THAT(ErrorOf(Minimal("{name: ''}")), HasSubstr("devices[0].pus[0].name: must not be empty"));
  EXPECT_THAT(ErrorOf("devices: [{name: '', pus: [{name: c}]}]\nmodels: [{name: m, path: zoo:x}]"),
              HasSubstr("devices[0].name: must not be empty"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: [{name: c}]}, {name: d, pus: [{name: e}]}]\n"
                      "models: [{name: m, path: zoo:x}]"),
              HasSubstr("devices[1].name: duplicate device name 'd' (also devices[0])"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: [{name: c}]}, {name: e, pus: [{name: c}]}]\n"
                      "models: [{name: m, path: zoo:x}]"),
              HasSubstr("devices[1].pus[0].name: duplicate PU name 'c' (also devices[0].pus[0]); PU names must be "
                        "unique across all devices"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: []}]\nmodels: [{name: m, path: zoo:x}]"),
              HasSubstr("devices[0].pus: at least one PU is required"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: '', path: zoo:x}")), HasSubstr("models[0].name: must not be empty"));
  EXPECT_THAT(ErrorOf("devices: [{name: d, pus: [{name: c}]}]\n"
                      "models: [{name: m, path: zoo:x}, {name: m, path: zoo:y}]"),
              HasSubstr("models[1].name: duplicate model name 'm' (also models[0])"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: ''}")), HasSubstr("models[0].path: must not be empty"));
  EXPECT_THAT(ErrorOf(Minimal("{name: c}", "{name: m, path: 'zoo:'}")),
              HasSubstr("models[0].path: 'zoo:' names no model; write zoo:NAME"));
}

TEST(RunConfigTest, ValidateChecksConfigsBuiltInCode) {
  RunConfig config = DefaultRunConfig(1);
  ASSERT_TRUE(Validate(config).ok());
  EXPECT_THAT(ValidateError(RunConfig{}), HasSubstr("devices: at least one device is required"));

  RunConfig bad_threads = config;
  bad_threads.devices[0].pus[0].threads = 0;
  bad_threads.devices[0].pus[0].cores.clear();
  EXPECT_THAT(ValidateError(bad_threads), HasSubstr("devices[0].pus[0].threads: must be in 1..1024, got 0"));

  RunConfig bad_kind = config;
  bad_kind.devices[0].pus[0].kind = "tpu";
  EXPECT_THAT(ValidateError(bad_kind), HasSubstr("devices[0].pus[0].kind: unknown kind 'tpu'"));

  RunConfig bad_mode = config;
  bad_mode.models[0].arrival.mode = static_cast<ArrivalConfig::Mode>(7);
  EXPECT_THAT(ValidateError(bad_mode), HasSubstr("models[0].arrival.mode: unknown mode 7"));

  RunConfig periodic = config;
  periodic.models[2].arrival.mode = ArrivalConfig::Mode::kPeriodic;  // fps left at 0
  EXPECT_THAT(ValidateError(periodic), HasSubstr("models[2].arrival.fps: must be > 0"));

  RunConfig zoo = config;
  zoo.models[3].path = "zoo:";
  EXPECT_THAT(ValidateError(zoo), HasSubstr("models[3].path"));

  // Fields of another kind or mode are ignored for configs built in code.
  RunConfig ignored = config;
  ignored.devices[0].pus[0].speed = -1;
  ignored.models[0].arrival.fps = -1;
  EXPECT_TRUE(Validate(ignored).ok());
}

TEST(RunConfigTest, CoresAreCheckedAgainstThisHost) {
  const unsigned host = std::thread::hardware_concurrency();
  if (host == 0) GTEST_SKIP() << "hardware_concurrency() is unknown here";
  RunConfig config = DefaultRunConfig(1);
  config.devices[0].pus[0].cores = {static_cast<int>(host) - 1};
  EXPECT_TRUE(Validate(config).ok());
  config.devices[0].pus[0].cores = {static_cast<int>(host)};
  EXPECT_THAT(ValidateError(config), HasSubstr("devices[0].pus[0].cores[0]: CPU " + std::to_string(host) +
                                               " does not exist; allowed: 0.." + std::to_string(host - 1)));
}

// --- default config, ZooName ------------------------------------------------

TEST(RunConfigTest, DefaultConfigIsValidForOneTwoAndFourCores) {
  const unsigned host = std::thread::hardware_concurrency();
  for (int cores : {1, 2, 4}) {
    SCOPED_TRACE(cores);
    const RunConfig config = DefaultRunConfig(cores);
    ASSERT_EQ(config.devices.size(), 1u);
    EXPECT_EQ(config.devices[0].name, "local");
    ASSERT_EQ(config.devices[0].pus.size(), static_cast<size_t>(cores));
    for (int i = 0; i < cores; ++i) {
      EXPECT_EQ(config.devices[0].pus[i], Cpu("cpu" + std::to_string(i), 1, {i}));
    }
    ASSERT_EQ(config.models.size(), 4u);
    const std::vector<std::string> names = {"camera", "audio", "text", "batch"};
    const std::vector<std::string> zoo = {"squeezenet", "lstm", "transformer", "mobilenetv2"};
    for (size_t m = 0; m < names.size(); ++m) {
      EXPECT_EQ(config.models[m].name, names[m]);
      EXPECT_EQ(config.models[m].path, "zoo:" + zoo[m]);
      EXPECT_EQ(config.models[m].arrival.mode, ArrivalConfig::Mode::kClosed);
      EXPECT_GE(config.models[m].arrival.concurrency, 1);
    }
    // Three frame-by-frame streams with a pause and an SLO of about a frame
    // period, one best-effort throughput stream.
    EXPECT_EQ(config.models[0].slo_ms, 33.0);
    EXPECT_EQ(config.models[1].slo_ms, 20.0);
    EXPECT_EQ(config.models[2].slo_ms, 100.0);
    EXPECT_EQ(config.models[3].slo_ms, std::nullopt);
    EXPECT_GT(config.models[0].arrival.think_ms, 0);
    EXPECT_EQ(config.models[3].arrival.think_ms, 0);
    EXPECT_EQ(config.models[3].arrival.concurrency, 2);
    EXPECT_EQ(config.policy, (PolicyConfig{.high_level = "search", .low_level = "share", .stages = 0}));
    EXPECT_EQ(config.run.duration_s, 8.0);
    EXPECT_EQ(config.run.warmup_s, 1.0);
    EXPECT_EQ(config.run.slices, RunSettings{}.slices);
    if (host == 0 || static_cast<unsigned>(cores) <= host) {
      EXPECT_TRUE(Validate(config).ok()) << Validate(config);
    } else {
      // The default pins cpuN to core N; a smaller host refuses the missing cores by name.
      EXPECT_THAT(ValidateError(config), HasSubstr(".cores[0]: CPU " + std::to_string(host) + " does not exist"));
    }
  }
}

TEST(RunConfigTest, ZooName) {
  EXPECT_EQ(ZooName("zoo:resnet"), "resnet");
  EXPECT_EQ(ZooName("zoo:"), "");
  EXPECT_EQ(ZooName("models/resnet.onnx"), std::nullopt);
  EXPECT_EQ(ZooName("zo"), std::nullopt);
  EXPECT_EQ(ZooName(""), std::nullopt);
  EXPECT_EQ(ZooName("/abs/zoo:x"), std::nullopt);
}

// --- round trip ---------------------------------------------------------------

void ExpectRoundTrip(const RunConfig& config) {
  const std::string yaml = ToYaml(config);
  absl::StatusOr<RunConfig> parsed = ParseRunConfig(yaml, "roundtrip.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  EXPECT_TRUE(*parsed == config) << yaml;
  EXPECT_EQ(ToYaml(*parsed), yaml);
}

TEST(RunConfigTest, DefaultConfigRoundTrips) {
  for (int cores : {1, 2}) ExpectRoundTrip(DefaultRunConfig(cores));
}

TEST(RunConfigTest, EveryKeyRoundTrips) {
  RunConfig config;
  DeviceConfig& board = config.devices.emplace_back();
  board.name = "board: main #1";  // needs quoting
  board.pus = {Cpu("cpu0", 1, {0}), Cpu("big", 3)};
  DeviceConfig& accel = config.devices.emplace_back();
  accel.name = "123";  // reads back as a string
  PuConfig npu = Emu("npu0", 0.1);
  npu.op_speed = {{"Conv", 30}, {"MatMul", 1.0 / 3.0}, {"Add", 1e-7}};
  npu.unsupported_ops = {"Softmax", "LSTM"};
  npu.compute = true;
  accel.pus = {npu, Emu("true", 123456.789)};
  config.models = {
      Model("det", "zoo:yolo", {.mode = ArrivalConfig::Mode::kPeriodic, .fps = 29.97}),
      Model("cls", "models/res net.onnx", {.concurrency = 5, .think_ms = 12.5}),
      Model("vad", "zoo:lstm", {.mode = ArrivalConfig::Mode::kPoisson, .rate = 0.25}),
  };
  config.models[0].deadline_ms = 33.3;
  config.models[0].priority = -2;
  config.models[0].partitions = 64;
  config.models[2].priority = 7;
  config.models[1].slo_ms = 0.125;
  config.models[1].execution_timeout_ms = 2500;
  config.models[2].max_batch = 8;
  config.models[2].max_queue_delay_ms = 2.5;
  config.models[1].labels = "labels/imagenet #1.txt";  // needs quoting
  config.policy = PolicyConfig{.high_level = "capability", .low_level = "edf", .stages = 5};
  config.run = RunSettings{.duration_s = 0.5,
                           .warmup_s = 0,
                           .seed = 18446744073709551615u,
                           .baselines = false,
                           .baseline_modes = {},
                           .slices = 7,
                           .max_queue = 1,
                           .max_in_flight = 1000};
  ASSERT_TRUE(Validate(config).ok()) << Validate(config);
  ExpectRoundTrip(config);
  config.run.baselines = true;
  config.run.baseline_modes = {"ort_pinned", "whole_on_one_pu"};
  ExpectRoundTrip(config);
  ExpectRoundTrip(*ParseRunConfig(kExample, "example.yaml"));
}

TEST(RunConfigTest, BaselinesIsABoolOrAListOfKnownNames) {
  const std::string head = "devices: [{name: d, pus: [{name: c}]}]\nmodels: [{name: m, path: zoo:lstm}]\n";
  auto parse = [&](const std::string& run) { return ParseRunConfig(head + "run: {baselines: " + run + "}\n", "b.yaml"); };
  absl::StatusOr<RunConfig> list = parse("[ort_tuned, ort_global_pool]");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->run.baselines);
  EXPECT_EQ(list->run.baseline_modes, (std::vector<std::string>{"ort_tuned", "ort_global_pool"}));
  absl::StatusOr<RunConfig> none = parse("[]");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->run.baselines);
  absl::StatusOr<RunConfig> off = parse("false");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->run.baselines);
  EXPECT_TRUE(off->run.baseline_modes.empty());
  absl::StatusOr<RunConfig> unknown = parse("[ort_tuned, ort_fast]");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("run.baselines[1]"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown baseline 'ort_fast'"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("ort_pinned"));
  absl::StatusOr<RunConfig> twice = parse("[ort_tuned, ort_tuned]");
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(twice.status().message(), HasSubstr("listed twice"));
  EXPECT_EQ(BaselineNames().size(), 6u);
}

TEST(RunConfigTest, BatchingKeysAreChecked) {
  const std::string head = "devices: [{name: d, pus: [{name: c}]}]\n";
  auto parse = [&](const std::string& keys) {
    return ParseRunConfig(head + "models: [{name: m, path: zoo:lstm, " + keys + "}]\n", "batch.yaml");
  };
  EXPECT_EQ(parse("max_batch: 4, batching: on")->models[0].batching, "on");
  EXPECT_THAT(parse("max_batch: 4, batching: always").status().message(), HasSubstr("models[0].batching"));
  absl::StatusOr<RunConfig> ok = parse("max_batch: 4, max_queue_delay_ms: 2");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->models[0].max_batch, 4);
  EXPECT_EQ(ok->models[0].max_queue_delay_ms, 2.0);
  EXPECT_EQ(parse("")->models[0].max_batch, 1);
  for (const auto& [keys, where] : std::vector<std::pair<std::string, std::string>>{
           {"max_batch: 0", "models[0].max_batch"},
           {"max_batch: 2000", "models[0].max_batch"},
           {"max_batch: 2, max_queue_delay_ms: -1", "models[0].max_queue_delay_ms"},
           {"max_queue_delay_ms: 3", "models[0].max_queue_delay_ms"}}) {
    SCOPED_TRACE(keys);
    absl::StatusOr<RunConfig> r = parse(keys);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr(where));
  }
  EXPECT_THAT(parse("max_queue_delay_ms: 3").status().message(), HasSubstr("set max_batch > 1"));
}

TEST(RunConfigTest, SloMustBePositive) {
  const std::string head = "devices: [{name: d, pus: [{name: c}]}]\n";
  for (const char* bad : {"0", "-5", "1e12", "nan"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<RunConfig> r =
        ParseRunConfig(head + "models: [{name: m, path: zoo:lstm, slo_ms: " + bad + "}]\n", "slo.yaml");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr("models[0].slo_ms"));
  }
  absl::StatusOr<RunConfig> ok = ParseRunConfig(head + "models: [{name: m, path: zoo:lstm, slo_ms: 12.5}]\n", "s.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->models[0].slo_ms, 12.5);
}

TEST(RunConfigTest, ExecutionTimeoutMustBePositiveAndBounded) {
  const std::string head = "devices: [{name: d, pus: [{name: c}]}]\n";
  for (const char* bad : {"0", "-5", "1e12", "nan", "fast"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<RunConfig> r = ParseRunConfig(
        head + "models: [{name: m, path: zoo:lstm, execution_timeout_ms: " + bad + "}]\n", "t.yaml");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr("models[0].execution_timeout_ms"));
  }
  absl::StatusOr<RunConfig> ok =
      ParseRunConfig(head + "models: [{name: m, path: zoo:lstm, execution_timeout_ms: 250}]\n", "t.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->models[0].execution_timeout_ms, 250.0);
}

// --- files --------------------------------------------------------------------

class LoadRunConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("baton_run_config_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::filesystem::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }
  std::filesystem::path dir_;
};

TEST_F(LoadRunConfigTest, ReadsTheFileAndSetsBaseDir) {
  const std::string path = Write("run.yaml", kExample);
  absl::StatusOr<RunConfig> config = LoadRunConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->base_dir, dir_.string());
  EXPECT_EQ(config->models.size(), 3u);
}

TEST_F(LoadRunConfigTest, ErrorsNameTheFile) {
  const std::string bad = Write("bad.yaml", Minimal("{name: c, threads: two}"));
  absl::StatusOr<RunConfig> config = LoadRunConfig(bad);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr(bad + ": devices[0].pus[0].threads: expected an integer"));
}

TEST_F(LoadRunConfigTest, MissingFileIsNotFound) {
  const std::string path = (dir_ / "nope.yaml").string();
  absl::StatusOr<RunConfig> config = LoadRunConfig(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

TEST_F(LoadRunConfigTest, FolderIsRefused) {
  absl::StatusOr<RunConfig> config = LoadRunConfig(dir_.string());
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("is a folder"));
}

TEST_F(LoadRunConfigTest, FilesOverOneMebibyteAreRefused) {
  const std::string big = Write("big.yaml", Minimal() + "# " + std::string(1 << 20, 'x') + "\n");
  absl::StatusOr<RunConfig> config = LoadRunConfig(big);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("more than the limit of 1048576 bytes"));
  EXPECT_THAT(config.status().message(), HasSubstr(big));
}

// --- robustness -----------------------------------------------------------------

TEST(RunConfigTest, FuzzedInputsNeverCrash) {
  std::mt19937 rng(20240611);
  const std::string seed_doc = kExample;
  const std::string alphabet = "{}[],:-#&*!|>'\"%@`?\n \t0123456789abcxyz.~\\";
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };

  std::vector<std::string> inputs = {
      std::string(5000, '['),
      std::string(5000, '{'),
      "a: &x [*x]",
      "&a a: *a",
      "*unknown",
      "!!binary AAA",
      "devices: !!map {}",
      std::string("\0\0\0", 3),
      "\xff\xfe\x00",
      "%YAML 9.9\n---\n",
      "--- a\n--- b\n",
      "devices: &d [{name: d, pus: [{name: c}]}]\nmodels: *d",
  };
  for (int i = 0; static_cast<int>(inputs.size()) < 200; ++i) {
    std::string text = seed_doc;
    const int edits = 1 + static_cast<int>(pick(8));
    for (int e = 0; e < edits && !text.empty(); ++e) {
      switch (pick(5)) {
        case 0:  // replace a character
          text[pick(text.size())] = alphabet[pick(alphabet.size())];
          break;
        case 1:  // delete a run
          text.erase(pick(text.size()), 1 + pick(10));
          break;
        case 2:  // insert a character
          text.insert(pick(text.size()), 1, alphabet[pick(alphabet.size())]);
          break;
        case 3:  // truncate
          text.resize(pick(text.size()));
          break;
        case 4:  // duplicate a slice somewhere else
        {
          const size_t from = pick(text.size());
          text.insert(pick(text.size()), text.substr(from, 1 + pick(40)));
          break;
        }
      }
    }
    if (i % 10 == 0) {  // now and then pure noise
      text.clear();
      for (size_t n = pick(200); n > 0; --n) text.push_back(static_cast<char>(pick(256)));
    }
    inputs.push_back(text);
  }

  int ok = 0;
  for (const std::string& input : inputs) {
    absl::StatusOr<RunConfig> config = ParseRunConfig(input, "fuzz.yaml");
    if (config.ok()) {
      ++ok;
      EXPECT_TRUE(Validate(*config).ok()) << input;
      absl::StatusOr<RunConfig> again = ParseRunConfig(ToYaml(*config), "again.yaml");
      ASSERT_TRUE(again.ok()) << again.status() << "\n" << input;
      EXPECT_TRUE(*again == *config) << input;
    } else {
      EXPECT_FALSE(config.status().message().empty()) << input;
      EXPECT_THAT(config.status().message(), HasSubstr("fuzz.yaml")) << input;
    }
  }
  EXPECT_EQ(inputs.size(), 200u);
  EXPECT_GT(ok, 0);  // some mutations (e.g. in comments) keep the document valid
}

}  // namespace
}  // namespace baton::config
