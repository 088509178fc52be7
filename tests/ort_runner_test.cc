// OrtRunner: dtype round trips, error paths that must not crash, concurrency.
// Models are built here with the ONNX protobuf API directly.
#include "baton/backend/ort/ort_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "baton/graph/model.h"
#include "baton/verify/verify.h"
#include "baton/zoo/zoo.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "wait_until.h"

namespace baton::ort {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Sets `type` to a tensor type; a negative dim becomes the symbolic dim "n".
void SetTensorType(onnx::TypeProto* type, ElemType elem, const std::vector<int64_t>& dims) {
  auto* tensor = type->mutable_tensor_type();
  tensor->set_elem_type(elem);
  auto* shape = tensor->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0) {
      dim->set_dim_param("n");
    } else {
      dim->set_dim_value(d);
    }
  }
}

onnx::ModelProto NewModel(int opset = 17) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("ort_runner_test");
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  model.mutable_graph()->set_name("g");
  return model;
}

void AddInput(onnx::ModelProto& m, const std::string& name, ElemType t, const std::vector<int64_t>& dims) {
  auto* v = m.mutable_graph()->add_input();
  v->set_name(name);
  SetTensorType(v->mutable_type(), t, dims);
}

void AddOutput(onnx::ModelProto& m, const std::string& name, ElemType t, const std::vector<int64_t>& dims) {
  auto* v = m.mutable_graph()->add_output();
  v->set_name(name);
  SetTensorType(v->mutable_type(), t, dims);
}

onnx::NodeProto* AddNode(onnx::ModelProto& m, const std::string& op, std::vector<std::string> in,
                         std::vector<std::string> out) {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  n->set_name(op + "_" + std::to_string(m.graph().node_size()));
  for (auto& s : in) n->add_input(s);
  for (auto& s : out) n->add_output(s);
  return n;
}

std::string IdentityModel(ElemType t, const std::vector<int64_t>& dims = {-1}) {
  auto m = NewModel();
  AddInput(m, "x", t, dims);
  AddNode(m, "Identity", {"x"}, {"y"});
  AddOutput(m, "y", t, dims);
  return m.SerializeAsString();
}

// y = x * 2 + 1 over float[n]; also returns z = x (Identity) as a second output.
std::string AffineModel() {
  auto m = NewModel();
  AddInput(m, "x", dtype::kFloat, {-1});
  auto* two = m.mutable_graph()->add_initializer();
  two->set_name("two");
  two->set_data_type(dtype::kFloat);
  two->add_float_data(2.0f);
  auto* one = m.mutable_graph()->add_initializer();
  one->set_name("one");
  one->set_data_type(dtype::kFloat);
  one->add_float_data(1.0f);
  AddNode(m, "Mul", {"x", "two"}, {"t"});
  AddNode(m, "Add", {"t", "one"}, {"y"});
  AddNode(m, "Identity", {"x"}, {"z"});
  AddOutput(m, "y", dtype::kFloat, {-1});
  AddOutput(m, "z", dtype::kFloat, {-1});
  return m.SerializeAsString();
}

template <typename T>
Tensor MakeTensor(ElemType type, std::vector<int64_t> shape, const std::vector<T>& values) {
  Tensor t(type, std::move(shape));
  EXPECT_EQ(t.byte_size(), values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.bytes().data(), values.data(), t.byte_size());
  return t;
}

absl::StatusOr<std::vector<Tensor>> RunOne(const OrtRunner& runner, const std::string& name, const Tensor& x,
                                           std::vector<std::string> outputs = {}) {
  std::pair<std::string, const Tensor*> feeds[] = {{name, &x}};
  return runner.Run(feeds, outputs);
}

std::vector<std::byte> Bytes(const Tensor& t) { return {t.bytes().begin(), t.bytes().end()}; }

// y = x + w over float[256]; w is an initializer of 256 copies of `fill` in raw_data.
std::string AddWeightModel(float fill) {
  auto m = NewModel();
  AddInput(m, "x", dtype::kFloat, {256});
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(dtype::kFloat);
  w->add_dims(256);
  std::vector<float> values(256, fill);
  w->set_raw_data(values.data(), values.size() * sizeof(float));
  AddNode(m, "Add", {"x", "w"}, {"y"});
  AddOutput(m, "y", dtype::kFloat, {256});
  return m.SerializeAsString();
}

TEST(OrtRunnerTest, ASharedInitializerIsUsedInPlaceAndItsOwnerKeptAlive) {
  auto mine = std::make_shared<std::vector<float>>(256, 5.0f);  // the model's own w is 1
  std::weak_ptr<std::vector<float>> watch = mine;
  SessionOptions options;
  options.shared_initializers = {{"w", dtype::kFloat, {256}, mine->data(), mine->size() * sizeof(float)}};
  options.shared_initializers_owner = mine;
  float* data = mine->data();
  mine.reset();
  auto runner = OrtRunner::Create(AddWeightModel(1.0f), options, "add_w");
  ASSERT_TRUE(runner.ok()) << runner.status();
  options.shared_initializers_owner.reset();
  EXPECT_FALSE(watch.expired()) << "the runner holds the weights' owner";

  Tensor x(dtype::kFloat, {256});
  std::pair<std::string, const Tensor*> feeds[] = {{"x", &x}};
  auto out = (*runner)->Run(feeds);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at(0).data<float>()[0], 5.0f) << "ran on the model's w, not the shared one";
  data[0] = 7.0f;  // ONNX Runtime reads the caller's bytes, not a copy of them
  out = (*runner)->Run(feeds);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at(0).data<float>()[0], 7.0f);
  EXPECT_EQ(out->at(0).data<float>()[1], 5.0f);
  runner->reset();
  EXPECT_TRUE(watch.expired());
}

TEST(OrtRunnerTest, ASharedInitializerIsCheckedAgainstItsBufferAndNeverReadPastIt) {
  std::vector<float> mine(128, 5.0f);
  SessionOptions options;
  // A byte count that does not match the shape is refused before ORT sees it.
  options.shared_initializers = {{"w", dtype::kFloat, {256}, mine.data(), mine.size() * sizeof(float)}};
  auto runner = OrtRunner::Create(AddWeightModel(1.0f), options, "add_w");
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(runner.status().message()), AllOf(HasSubstr("add_w"), HasSubstr("'w'"), HasSubstr("512")));
  options.shared_initializers[0].data = nullptr;
  EXPECT_FALSE(OrtRunner::Create(AddWeightModel(1.0f), options, "add_w").ok());

  // ONNX Runtime does not compare a shared initializer's shape with the model's;
  // the kernel that reads it does, at run time, within the buffer's own shape.
  options.shared_initializers = {{"w", dtype::kFloat, {128}, mine.data(), mine.size() * sizeof(float)}};
  runner = OrtRunner::Create(AddWeightModel(1.0f), options, "add_w");
  ASSERT_TRUE(runner.ok()) << runner.status();
  Tensor x(dtype::kFloat, {256});
  std::pair<std::string, const Tensor*> feeds[] = {{"x", &x}};
  EXPECT_FALSE((*runner)->Run(feeds).ok());
}

TEST(OrtRunnerTest, EveryFixedSizeTypeRoundTripsThroughIdentity) {
  struct Case {
    ElemType type;
    std::vector<uint8_t> pattern;  // bytes of 3 elements
  };
  // Bytes chosen so that every element is a valid value of its type (e.g. bool 0/1).
  std::vector<Case> cases = {
      {dtype::kFloat, {0, 0, 128, 63, 0, 0, 0, 192, 0, 0, 192, 127}},  // 1, -2, NaN
      {dtype::kDouble, {0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 240, 127}},
      {dtype::kFloat16, {0, 60, 0, 192, 0, 124}},  // 1, -2, inf
      {dtype::kBfloat16, {128, 63, 0, 192, 128, 127}},
      {dtype::kInt8, {0x80, 0x7f, 0}},
      {dtype::kUint8, {0, 255, 7}},
      {dtype::kInt16, {0, 0x80, 0xff, 0x7f, 1, 0}},
      {dtype::kUint16, {0xff, 0xff, 0, 0, 1, 2}},
      {dtype::kInt32, {0, 0, 0, 0x80, 0xff, 0xff, 0xff, 0x7f, 5, 0, 0, 0}},
      {dtype::kUint32, {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 9, 0, 0, 0}},
      {dtype::kInt64,
       {0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 3, 0, 0, 0, 0, 0, 0, 0}},
      {dtype::kUint64,
       {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0}},
      {dtype::kBool, {1, 0, 1}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(ElemTypeName(c.type)));
    auto runner = OrtRunner::Create(IdentityModel(c.type), {}, "identity");
    ASSERT_TRUE(runner.ok()) << runner.status();
    ASSERT_EQ((*runner)->inputs().size(), 1u);
    EXPECT_EQ((*runner)->inputs()[0].elem_type, c.type);
    EXPECT_EQ((*runner)->inputs()[0].shape, std::vector<int64_t>{-1});
    Tensor x = MakeTensor<uint8_t>(c.type, {3}, c.pattern);
    auto out = RunOne(**runner, "x", x);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(), 1u);
    EXPECT_EQ((*out)[0].elem_type(), c.type);
    EXPECT_EQ((*out)[0].shape(), std::vector<int64_t>{3});
    EXPECT_EQ(Bytes((*out)[0]), Bytes(x));
  }
}

TEST(OrtRunnerTest, StringsRoundTripIncludingEmbeddedNulAndEmpty) {
  auto runner = OrtRunner::Create(IdentityModel(dtype::kString, {-1, 2}), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::vector<std::string> strings = {"hello", "", std::string("a\0b", 3), "\xc3\xa9t\xc3\xa9"};
  Tensor x = Tensor::Strings({2, 2}, strings);
  auto out = RunOne(**runner, "x", x);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].elem_type(), dtype::kString);
  EXPECT_EQ((*out)[0].shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ((*out)[0].strings(), strings);
}

TEST(OrtRunnerTest, EmptyTensorsRoundTrip) {
  auto runner = OrtRunner::Create(IdentityModel(dtype::kFloat, {-1, 3}), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  Tensor x(dtype::kFloat, {0, 3});
  auto out = RunOne(**runner, "x", x);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].shape(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ((*out)[0].byte_size(), 0u);
}

TEST(OrtRunnerTest, CastConvertsValues) {
  auto m = NewModel();
  AddInput(m, "x", dtype::kFloat, {4});
  AddNode(m, "Cast", {"x"}, {"y"})->add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("to");
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(dtype::kInt32);
    return a;
  }());
  AddOutput(m, "y", dtype::kInt32, {4});
  auto runner = OrtRunner::Create(m.SerializeAsString(), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  Tensor x = MakeTensor<float>(dtype::kFloat, {4}, {1.9f, -2.5f, 0.0f, 100.0f});
  auto out = RunOne(**runner, "x", x);
  ASSERT_TRUE(out.ok()) << out.status();
  auto y = (*out)[0].data<int32_t>();
  EXPECT_EQ(std::vector<int32_t>(y.begin(), y.end()), (std::vector<int32_t>{1, -2, 0, 100}));
}

TEST(OrtRunnerTest, SelectsOutputsByNameAndDefaultsToAll) {
  auto runner = OrtRunner::Create(AffineModel(), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  EXPECT_EQ((*runner)->output_names(), (std::vector<std::string>{"y", "z"}));
  Tensor x = MakeTensor<float>(dtype::kFloat, {2}, {1.0f, 2.0f});
  auto all = RunOne(**runner, "x", x);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].data<float>()[1], 5.0f);
  EXPECT_EQ((*all)[1].data<float>()[1], 2.0f);
  auto only_z = RunOne(**runner, "x", x, {"z"});
  ASSERT_TRUE(only_z.ok()) << only_z.status();
  ASSERT_EQ(only_z->size(), 1u);
  EXPECT_EQ((*only_z)[0].data<float>()[0], 1.0f);
  auto unknown = RunOne(**runner, "x", x, {"nope"});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("no output named 'nope'"));
  auto twice = RunOne(**runner, "x", x, {"y", "y"});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OrtRunnerTest, BadModelBytesAreAnErrorNotACrash) {
  for (std::string bytes : {std::string("this is not an onnx model"), std::string(), std::string(1000, '\xff'),
                            AffineModel().substr(0, 40)}) {
    auto runner = OrtRunner::Create(bytes, {}, "junk.onnx");
    ASSERT_FALSE(runner.ok());
    EXPECT_THAT(runner.status().message(), HasSubstr("junk.onnx"));
  }
}

TEST(OrtRunnerTest, UnknownOpIsAnErrorWithOrtMessageAndHint) {
  auto m = NewModel();
  AddInput(m, "x", dtype::kFloat, {1});
  AddNode(m, "NoSuchOp", {"x"}, {"y"});
  AddOutput(m, "y", dtype::kFloat, {1});
  auto runner = OrtRunner::Create(m.SerializeAsString(), {}, "bad_op");
  ASSERT_FALSE(runner.ok());
  EXPECT_THAT(runner.status().message(), HasSubstr("NoSuchOp"));
  EXPECT_THAT(runner.status().message(), HasSubstr("hint:"));
}

TEST(OrtRunnerTest, MismatchedFeedsAreInvalidArgument) {
  auto m = NewModel();
  AddInput(m, "x", dtype::kFloat, {2, 3});
  AddNode(m, "Identity", {"x"}, {"y"});
  AddOutput(m, "y", dtype::kFloat, {2, 3});
  auto runner = OrtRunner::Create(m.SerializeAsString(), {}, "fixed");
  ASSERT_TRUE(runner.ok()) << runner.status();
  EXPECT_EQ((*runner)->inputs()[0].shape, (std::vector<int64_t>{2, 3}));

  Tensor good(dtype::kFloat, {2, 3});
  EXPECT_TRUE(RunOne(**runner, "x", good).ok());

  auto wrong_name = RunOne(**runner, "X", good);
  EXPECT_EQ(wrong_name.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_name.status().message(), HasSubstr("no input named 'X' (inputs: x)"));

  Tensor wrong_type(dtype::kDouble, {2, 3});
  auto t = RunOne(**runner, "x", wrong_type);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("expects float32[2,3] but got float64[2,3]"));

  Tensor wrong_shape(dtype::kFloat, {3, 2});
  auto s = RunOne(**runner, "x", wrong_shape);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("got float32[3,2]"));

  Tensor wrong_rank(dtype::kFloat, {6});
  EXPECT_EQ(RunOne(**runner, "x", wrong_rank).status().code(), absl::StatusCode::kInvalidArgument);

  auto missing = (*runner)->Run({}, {});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("missing input(s) x"));

  std::pair<std::string, const Tensor*> twice[] = {{"x", &good}, {"x", &good}};
  EXPECT_EQ((*runner)->Run(twice, {}).status().code(), absl::StatusCode::kInvalidArgument);
  std::pair<std::string, const Tensor*> null_feed[] = {{"x", nullptr}};
  EXPECT_EQ((*runner)->Run(null_feed, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OrtRunnerTest, StringTensorWithWrongCountIsRejected) {
  auto runner = OrtRunner::Create(IdentityModel(dtype::kString), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  Tensor x = Tensor::Strings({3}, {"a", "b"});
  auto out = RunOne(**runner, "x", x);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("holds 2 strings"));
}

TEST(OrtRunnerTest, KernelFailureAtRunTimeIsAnError) {
  // Gather with an index outside the data: ORT's kernel rejects it at run time.
  auto m = NewModel();
  AddInput(m, "data", dtype::kFloat, {3});
  AddInput(m, "idx", dtype::kInt64, {1});
  AddNode(m, "Gather", {"data", "idx"}, {"y"});
  AddOutput(m, "y", dtype::kFloat, {1});
  auto runner = OrtRunner::Create(m.SerializeAsString(), {}, "gather");
  ASSERT_TRUE(runner.ok()) << runner.status();
  Tensor data(dtype::kFloat, {3});
  Tensor idx = MakeTensor<int64_t>(dtype::kInt64, {1}, {1000});
  std::pair<std::string, const Tensor*> feeds[] = {{"data", &data}, {"idx", &idx}};
  auto out = (*runner)->Run(feeds, {});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("model 'gather': ONNX Runtime failed to run"));
}

TEST(OrtRunnerTest, SequenceInputsAndOutputsAreReportedAndRefused) {
  auto m = NewModel();
  auto* in = m.mutable_graph()->add_input();
  in->set_name("seq");
  SetTensorType(in->mutable_type()->mutable_sequence_type()->mutable_elem_type(), dtype::kFloat, {-1});
  AddNode(m, "SequenceLength", {"seq"}, {"len"});
  AddNode(m, "Identity", {"seq"}, {"seq_out"});
  AddOutput(m, "len", dtype::kInt64, {});
  auto* out = m.mutable_graph()->add_output();
  out->set_name("seq_out");
  out->mutable_type()->CopyFrom(in->type());
  auto runner = OrtRunner::Create(m.SerializeAsString(), {});
  ASSERT_TRUE(runner.ok()) << runner.status();
  EXPECT_FALSE((*runner)->inputs()[0].is_tensor);
  EXPECT_FALSE((*runner)->outputs()[1].is_tensor);
  EXPECT_TRUE((*runner)->outputs()[0].is_tensor);
  Tensor x(dtype::kFloat, {1});
  auto r = RunOne(**runner, "seq", x);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("non-tensor"));
}

TEST(OrtRunnerTest, OptionsAreValidated) {
  const std::string model = IdentityModel(dtype::kFloat);
  SessionOptions zero_threads;
  zero_threads.intra_op_threads = 0;
  EXPECT_EQ(OrtRunner::Create(model, zero_threads).status().code(), absl::StatusCode::kInvalidArgument);
  SessionOptions zero_inter;
  zero_inter.inter_op_threads = 0;
  EXPECT_FALSE(OrtRunner::Create(model, zero_inter).ok());
  SessionOptions pins_mismatch;
  pins_mismatch.intra_op_threads = 2;
  pins_mismatch.pinned_cores = {0};
  EXPECT_THAT(OrtRunner::Create(model, pins_mismatch).status().message(), HasSubstr("pinned_cores"));
  SessionOptions negative_core;
  negative_core.pinned_cores = {-1};
  EXPECT_FALSE(ValidateSessionOptions(negative_core).ok());
  SessionOptions bad_level;
  bad_level.graph_optimization_level = 5;
  EXPECT_FALSE(OrtRunner::Create(model, bad_level).ok());
}

TEST(OrtRunnerTest, NonDefaultOptionsProduceWorkingSessions) {
  // Two intra-op threads with the worker pinned to core 0 (always present),
  // no arena, no spinning, no graph optimisation.
  for (int level : {kGraphOptDisableAll, kGraphOptBasic, kGraphOptExtended, kGraphOptLayout, kGraphOptAll}) {
    SessionOptions options;
    options.intra_op_threads = 2;
    options.pinned_cores = {0, 0};
    options.enable_cpu_mem_arena = false;
    options.allow_spinning = false;
    options.graph_optimization_level = level;
    auto runner = OrtRunner::Create(AffineModel(), options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    Tensor x = MakeTensor<float>(dtype::kFloat, {1}, {3.0f});
    auto out = RunOne(**runner, "x", x, {"y"});
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*out)[0].data<float>()[0], 7.0f);
  }
  SessionOptions one_pinned;
  one_pinned.pinned_cores = {0};
  EXPECT_TRUE(OrtRunner::Create(AffineModel(), one_pinned).ok());
}

// Cpus_allowed_list of every thread of this process (Linux /proc).
std::vector<std::string> ThreadCpuLists() {
  std::vector<std::string> lists;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream status(entry.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0) {
        lists.push_back(line.substr(line.find_first_not_of(" \t", 18)));
      }
    }
  }
  return lists;
}

TEST(OrtRunnerTest, PinnedCoresPinTheWorkerThreads) {
  if (std::thread::hardware_concurrency() < 2 || !std::filesystem::exists("/proc/self/task")) {
    GTEST_SKIP() << "needs Linux and two logical CPUs";
  }
  auto count_pinned_to_1 = [] {
    auto lists = ThreadCpuLists();
    return std::count(lists.begin(), lists.end(), "1");
  };
  const auto before = count_pinned_to_1();
  SessionOptions options;
  options.intra_op_threads = 2;
  options.pinned_cores = {0, 1};  // caller (not pinned here), worker on core 1
  auto runner = OrtRunner::Create(AffineModel(), options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  // The worker pins itself once it starts running, which may be after Create
  // returns: wait for that (bounded), then check.
  EXPECT_TRUE(baton::testing::WaitUntil([&] { return count_pinned_to_1() == before + 1; }, std::chrono::seconds(10)))
      << count_pinned_to_1() << " threads pinned to core 1, expected " << before + 1;
}

TEST(OrtRunnerTest, ConcurrentRunsFromFourThreadsAreIndependent) {
  for (int intra : {1, 2}) {
    SessionOptions options;
    options.intra_op_threads = intra;
    auto runner = OrtRunner::Create(AffineModel(), options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    const OrtRunner& r = **runner;
    constexpr int kThreads = 4;
    constexpr int kIters = 50;
    std::vector<int> failures(kThreads, 0);
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&r, &failures, t] {
          for (int i = 0; i < kIters; ++i) {
            const int n = 1000 + 10 * t + i;
            std::vector<float> values(n);
            for (int k = 0; k < n; ++k) values[k] = static_cast<float>(t * 100000 + i * 100 + k % 100);
            Tensor x(dtype::kFloat, {n});
            std::memcpy(x.bytes().data(), values.data(), x.byte_size());
            std::pair<std::string, const Tensor*> feeds[] = {{"x", &x}};
            auto out = r.Run(feeds, {});
            if (!out.ok() || (*out)[0].shape() != std::vector<int64_t>{n}) {
              ++failures[t];
              continue;
            }
            auto y = (*out)[0].data<float>();
            for (int k = 0; k < n; ++k) {
              if (y[k] != values[k] * 2 + 1) {
                ++failures[t];
                break;
              }
            }
          }
        });
      }
    }
    for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t << ", intra " << intra;
  }
}

TEST(OrtRunnerTest, VersionIsReported) { EXPECT_THAT(OrtVersion(), HasSubstr("1.")); }

TEST(OrtRunnerTest, OrtDefaultThreadingRunsAZooModelLikeOneThread) {
  auto bytes = zoo::Generate("mobilenetv2", /*small=*/true);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, "mobilenetv2_small");
  ASSERT_TRUE(model.ok()) << model.status();
  auto inputs = verify::RandomInputs(**model, /*seed=*/7);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  std::vector<std::pair<std::string, const Tensor*>> feeds;
  for (const auto& [name, tensor] : *inputs) feeds.emplace_back(name, &tensor);

  SessionOptions one_thread;
  SessionOptions ort_default;
  ort_default.ort_default_threading = true;
  ASSERT_TRUE(ValidateSessionOptions(ort_default).ok());
  auto reference = OrtRunner::Create(*bytes, one_thread, "mobilenetv2_small");
  auto defaulted = OrtRunner::Create(*bytes, ort_default, "mobilenetv2_small");
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_TRUE(defaulted.ok()) << defaulted.status();
  auto expected = (*reference)->Run(feeds);
  auto actual = (*defaulted)->Run(feeds);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_EQ(expected->size(), actual->size());
  for (size_t i = 0; i < expected->size(); ++i) {
    verify::Comparison c = verify::Compare((*expected)[i], (*actual)[i]);
    EXPECT_TRUE(c.ok) << "output " << i << ": " << c.message;
  }

  // Default threading has no budget to pin; explicit budgets are still checked.
  SessionOptions pinned_default = ort_default;
  pinned_default.pinned_cores = {0};
  EXPECT_THAT(ValidateSessionOptions(pinned_default).message(), HasSubstr("ort_default_threading"));
  SessionOptions zero_threads;
  zero_threads.intra_op_threads = 0;
  EXPECT_FALSE(ValidateSessionOptions(zero_threads).ok());
  zero_threads.ort_default_threading = true;
  EXPECT_TRUE(ValidateSessionOptions(zero_threads).ok());
}

}  // namespace
}  // namespace baton::ort
