// Malformed and hostile ONNX models: graph::Model::LoadFile / LoadBytes must
// reject each one with an error that names the problem (the offending node,
// tensor, file or limit), and must never crash, hang or allocate what a
// header merely claims. A handful of valid-but-odd models must still load.
//
// Every model is built here with the ONNX protobuf API or as raw bytes; file
// cases are written under a per-test temporary directory.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/graph/model.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"

namespace baton::graph {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kIrVersion = 8;
constexpr int64_t kOpset = 17;

// ---- building blocks -----------------------------------------------------------

void SetType(onnx::ValueInfoProto* v, const std::string& name, int32_t elem, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

void AddInput(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
              int32_t elem = onnx::TensorProto::FLOAT) {
  SetType(g->add_input(), name, elem, dims);
}

void AddOutput(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
               int32_t elem = onnx::TensorProto::FLOAT) {
  SetType(g->add_output(), name, elem, dims);
}

onnx::NodeProto* AddNode(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& inputs,
                         const std::vector<std::string>& outputs, const std::string& name) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const auto& i : inputs) n->add_input(i);
  for (const auto& o : outputs) n->add_output(o);
  return n;
}

onnx::TensorProto* AddFloatInit(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims,
                                const std::vector<float>& values) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return t;
}

onnx::ModelProto EmptyModel() {
  onnx::ModelProto m;
  m.set_ir_version(kIrVersion);
  m.set_producer_name("bad_models_test");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(kOpset);
  m.mutable_graph()->set_name("g");
  return m;
}

// x[1,4] -> Add(w) -> Relu -> y[1,4]: the valid starting point of most cases.
onnx::ModelProto ValidModel() {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 4});
  AddFloatInit(g, "w", {4}, {1, 2, 3, 4});
  AddNode(g, "Add", {"x", "w"}, {"t"}, "add0");
  AddNode(g, "Relu", {"t"}, {"y"}, "relu0");
  AddOutput(g, "y", {1, 4});
  return m;
}

// Renames a value everywhere in the top-level graph.
void RenameValue(onnx::ModelProto* m, const std::string& from, const std::string& to) {
  auto* g = m->mutable_graph();
  auto fix = [&](std::string* s) {
    if (*s == from) *s = to;
  };
  for (auto& v : *g->mutable_input()) fix(v.mutable_name());
  for (auto& v : *g->mutable_output()) fix(v.mutable_name());
  for (auto& t : *g->mutable_initializer()) fix(t.mutable_name());
  for (auto& n : *g->mutable_node()) {
    for (auto& s : *n.mutable_input()) fix(&s);
    for (auto& s : *n.mutable_output()) fix(&s);
  }
}

std::string Bytes(const onnx::ModelProto& m) {
  std::string s;
  EXPECT_TRUE(m.SerializeToString(&s));
  return s;
}

absl::Status LoadProto(const onnx::ModelProto& m, const std::string& display_name,
                       const LoadOptions& options = {}) {
  return Model::LoadBytes(Bytes(m), display_name, {}, options).status();
}

// OK when `s` is an error whose message contains every phrase of `names`
// (exactly) and, when `keywords` is non-empty, at least one of them
// (case-insensitively).
::testing::AssertionResult IsErrorNaming(const absl::Status& s, const std::vector<std::string>& names,
                                         const std::vector<std::string>& keywords = {}) {
  if (s.ok()) {
    return ::testing::AssertionFailure() << "loaded OK; expected an error naming " << absl::StrJoin(names, ", ");
  }
  const std::string msg(s.message());
  for (const auto& n : names) {
    if (msg.find(n) == std::string::npos) {
      return ::testing::AssertionFailure() << "error does not name '" << n << "': " << s;
    }
  }
  if (keywords.empty()) return ::testing::AssertionSuccess();
  const std::string lower = absl::AsciiStrToLower(msg);
  for (const auto& k : keywords) {
    if (lower.find(absl::AsciiStrToLower(k)) != std::string::npos) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "error contains none of {" << absl::StrJoin(keywords, ", ")
                                       << "}: " << s;
}

// A fresh, empty directory for one test.
class BadModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("baton_bad_models_", getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path Write(const fs::path& rel, std::string_view bytes) const {
    const fs::path p = dir_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    EXPECT_TRUE(f.good()) << p;
    return p;
  }

  fs::path dir_;
};

// x[4] + w[4] where w lives in an external file.
onnx::ModelProto ExternalDataModel(const std::string& location, std::optional<int64_t> offset = std::nullopt,
                                   std::optional<int64_t> length = std::nullopt) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {4});
  auto* w = g->add_initializer();
  w->set_name("w_ext");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto add_kv = [&](const std::string& k, const std::string& v) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  add_kv("location", location);
  if (offset) add_kv("offset", std::to_string(*offset));
  if (length) add_kv("length", std::to_string(*length));
  AddNode(g, "Add", {"x", "w_ext"}, {"y"}, "add_ext");
  AddOutput(g, "y", {4});
  return m;
}

std::string FourFloats() {
  const float v[4] = {1, 2, 3, 4};
  return std::string(reinterpret_cast<const char*>(v), sizeof(v));
}

const std::vector<std::string> kParseWords = {"pars", "protobuf", "truncat", "corrupt", "invalid", "not an onnx",
                                              "not a valid"};

// ---- control: the starting point is valid ---------------------------------------

TEST_F(BadModelsTest, ValidControlModelLoads) {
  auto model = Model::LoadBytes(Bytes(ValidModel()), "valid.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->nodes().size(), 2u);
  const fs::path p = Write("valid.onnx", Bytes(ValidModel()));
  auto from_file = Model::LoadFile(p);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
}

// ---- bytes that are not a model -----------------------------------------------------

TEST_F(BadModelsTest, EmptyFile) {
  const fs::path p = Write("empty.onnx", "");
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {"empty.onnx"}, {"empty", "0 bytes", "no data"}));
}

TEST_F(BadModelsTest, EmptyBytes) {
  EXPECT_TRUE(IsErrorNaming(Model::LoadBytes("", "nothing.onnx").status(), {"nothing.onnx"},
                            {"empty", "0 bytes", "no data"}));
}

TEST_F(BadModelsTest, TruncatedAtSeveralOffsets) {
  // Large enough that the cuts land inside the initializer, the nodes and the
  // trailing opset_import; every cut must fail (parse error or missing parts).
  onnx::ModelProto m = ValidModel();
  AddFloatInit(m.mutable_graph(), "big", {256}, std::vector<float>(256, 0.5f));
  const std::string full = Bytes(m);
  ASSERT_TRUE(Model::LoadBytes(full, "full.onnx").ok());
  for (size_t cut : {size_t{1}, size_t{2}, size_t{7}, full.size() / 4, full.size() / 2, full.size() * 3 / 4,
                     full.size() - 9, full.size() - 1}) {
    SCOPED_TRACE(absl::StrCat("cut at ", cut, " of ", full.size()));
    const std::string name = absl::StrCat("cut", cut, ".onnx");
    EXPECT_TRUE(IsErrorNaming(Model::LoadBytes(full.substr(0, cut), name).status(), {name},
                              {"pars", "protobuf", "truncat", "corrupt", "invalid", "opset", "graph"}));
    const fs::path p = Write(name, full.substr(0, cut));
    EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {name}));
  }
}

TEST_F(BadModelsTest, RandomGarbage) {
  std::mt19937 rng(1234);
  for (size_t size : {size_t{1}, size_t{16}, size_t{4096}, size_t{1} << 16}) {
    std::string junk(size, '\0');
    for (auto& c : junk) c = static_cast<char>(rng() & 0xff);
    const std::string name = absl::StrCat("junk", size, ".onnx");
    SCOPED_TRACE(name);
    EXPECT_TRUE(IsErrorNaming(Model::LoadBytes(junk, name).status(), {name}));
  }
  // Plain text is not a model either.
  EXPECT_TRUE(IsErrorNaming(Model::LoadBytes("ir_version: 8\ngraph { }\n", "text.onnx").status(), {"text.onnx"}));
}

TEST_F(BadModelsTest, LengthPrefixClaimsGigabytes) {
  // ModelProto.graph (field 7, length-delimited) claiming ~4 GiB of payload.
  const std::string bytes("\x08\x08\x3a\xff\xff\xff\xff\x0f\x0a\x01", 10);
  EXPECT_TRUE(IsErrorNaming(Model::LoadBytes(bytes, "liar.onnx").status(), {"liar.onnx"}, kParseWords));
}

TEST_F(BadModelsTest, DeeplyNestedSubgraphs) {
  // 3,000 If nodes nested through their then_branch attribute, as raw bytes:
  // must be refused (protobuf recursion limit or the loader's own), not blow the stack.
  auto varint = [](uint64_t v) {
    std::string s;
    while (v >= 0x80) {
      s.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    s.push_back(static_cast<char>(v));
    return s;
  };
  auto field = [&](int number, const std::string& payload) {
    return varint((static_cast<uint64_t>(number) << 3) | 2) + varint(payload.size()) + payload;
  };
  std::string graph;  // GraphProto
  for (int i = 0; i < 3000; ++i) {
    const std::string attr = field(1, "then_branch") + varint((20 << 3) | 0) + varint(5) + field(6, graph);
    const std::string node = field(4, "If") + field(5, attr);  // NodeProto.op_type, .attribute
    graph = field(1, node);                                     // GraphProto.node
  }
  const std::string model = varint((1 << 3) | 0) + varint(8) + field(7, graph);
  EXPECT_TRUE(IsErrorNaming(Model::LoadBytes(model, "deep.onnx").status(), {"deep.onnx"}));
}

// ---- file-system level ------------------------------------------------------------

TEST_F(BadModelsTest, FileDoesNotExist) {
  const fs::path p = dir_ / "no_such_model.onnx";
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {"no_such_model.onnx"},
                            {"not found", "no such", "does not exist", "cannot open", "can't open"}));
}

// A path the file system refuses is not "does not exist": it says why.
TEST_F(BadModelsTest, PathTheFileSystemRefuses) {
  const fs::path p = dir_ / std::string(300, 'm') / "model.onnx";
  const absl::Status s = Model::LoadFile(p).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("cannot be read: File name too long"));
}

TEST_F(BadModelsTest, DirectoryInsteadOfFile) {
  fs::create_directories(dir_ / "a_directory.onnx");
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(dir_ / "a_directory.onnx").status(), {"a_directory.onnx"},
                            {"directory", "not a regular file", "not a file"}));
}

// ---- graph structure ------------------------------------------------------------------

TEST_F(BadModelsTest, Cycle) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 4});
  AddNode(g, "Add", {"x", "cyc_tb"}, {"cyc_ta"}, "cyc_a");
  AddNode(g, "Relu", {"cyc_ta"}, {"cyc_tb"}, "cyc_b");
  AddNode(g, "Relu", {"cyc_tb"}, {"y"}, "after");
  AddOutput(g, "y", {1, 4});
  const absl::Status s = LoadProto(m, "cycle.onnx");
  EXPECT_TRUE(IsErrorNaming(s, {}, {"cycle", "cyclic"}));
  EXPECT_TRUE(IsErrorNaming(s, {}, {"cyc_a", "cyc_b"}));
}

TEST_F(BadModelsTest, SelfLoop) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 4});
  AddNode(g, "Add", {"x", "loop_t"}, {"loop_t"}, "self_loop");
  AddNode(g, "Relu", {"loop_t"}, {"y"}, "after");
  AddOutput(g, "y", {1, 4});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "self.onnx"), {"self_loop"}));
}

// Names go into baton's JSON and the KServe protocol, which need UTF-8;
// protobuf does not check ONNX's strings. A name that is not UTF-8 is an
// error naming where it is, not a crash when the first JSON is written.
TEST_F(BadModelsTest, NamesThatAreNotUtf8) {
  onnx::ModelProto node = ValidModel();
  node.mutable_graph()->mutable_node(1)->set_name("relu\xff");
  EXPECT_TRUE(IsErrorNaming(LoadProto(node, "latin.onnx"),
                            {"latin.onnx", "node #1's name", "not valid UTF-8", "byte 4", "after 'relu'"}));
  onnx::ModelProto value = ValidModel();
  RenameValue(&value, "t", "t\xc3");  // a 2-byte sequence cut short
  EXPECT_TRUE(IsErrorNaming(LoadProto(value, "cut.onnx"), {"cut.onnx", "node #0's output name", "not valid UTF-8"}));
  onnx::ModelProto overlong = ValidModel();
  RenameValue(&overlong, "y", "\xc0\xaf");
  EXPECT_TRUE(IsErrorNaming(LoadProto(overlong, "overlong.onnx"), {"not valid UTF-8", "byte 0"}));
  // UTF-8 beyond ASCII is fine.
  onnx::ModelProto accented = ValidModel();
  accented.mutable_graph()->mutable_node(1)->set_name("r\xc3\xa9lu");
  RenameValue(&accented, "t", "\xe5\x80\xbc");
  auto model = Model::LoadBytes(Bytes(accented), "accented.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->nodes()[1].name, "r\xc3\xa9lu");
}

// Sizes from the model feed the FLOP estimates: sums and products that
// overflow int64 saturate (no undefined behaviour; the ASan stage runs this
// under UBSan), and a negative hidden_size counts as none. 4096 MatMuls of
// [2^17, 2^17] by [2^17, 2^17] (each 2^52 FLOPs, within the loader's
// element limit) sum past 2^63.
TEST_F(BadModelsTest, HugeDimensionsSaturateTheFlopEstimates) {
  constexpr int64_t kSide = int64_t{1} << 17;
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "a", {kSide, kSide});
  for (int i = 0; i < 4096; ++i) AddNode(g, "MatMul", {"a", "a"}, {absl::StrCat("c", i)}, absl::StrCat("mm", i));
  AddOutput(g, "c0", {kSide, kSide});
  auto model = Model::LoadBytes(Bytes(m), "huge.onnx");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->nodes()[0].flops, int64_t{1} << 52);
  EXPECT_EQ((*model)->total_flops(), std::numeric_limits<int64_t>::max());

  onnx::ModelProto rnn = EmptyModel();
  g = rnn.mutable_graph();
  AddInput(g, "x", {4, 1, 8});
  AddFloatInit(g, "w", {1, 4, 8}, std::vector<float>(32, 0.5f));
  AddFloatInit(g, "r", {1, 4, 4}, std::vector<float>(16, 0.5f));
  onnx::NodeProto* n = g->add_node();
  n->set_op_type("RNN");
  n->set_name("rnn");
  n->add_input("x");
  n->add_input("w");
  n->add_input("r");
  n->add_output("y");
  onnx::AttributeProto* hidden = n->add_attribute();
  hidden->set_name("hidden_size");
  hidden->set_type(onnx::AttributeProto::INT);
  hidden->set_i(-4);
  AddOutput(g, "y", {4, 1, 1, 4});
  auto negative = Model::LoadBytes(Bytes(rnn), "rnn.onnx");
  ASSERT_TRUE(negative.ok()) << negative.status().ToString();
  EXPECT_EQ((*negative)->nodes()[0].flops, 0);
}

TEST_F(BadModelsTest, DanglingNodeInput) {
  onnx::ModelProto m = ValidModel();
  m.mutable_graph()->mutable_node(1)->set_input(0, "ghost_tensor");
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "dangling.onnx"), {"ghost_tensor"}));
}

TEST_F(BadModelsTest, InitializerReferencedButMissing) {
  // A Conv whose weight initializer was dropped from the file.
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 3, 8, 8});
  AddFloatInit(g, "conv_b", {4}, {0, 0, 0, 0});
  AddNode(g, "Conv", {"x", "conv_w_missing", "conv_b"}, {"y"}, "conv0");
  AddOutput(g, "y", {1, 4, 6, 6});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "noweight.onnx"), {"conv_w_missing"}));
}

TEST_F(BadModelsTest, DuplicateNodeOutput) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 4});
  AddNode(g, "Relu", {"x"}, {"dup_t"}, "first");
  AddNode(g, "Neg", {"x"}, {"dup_t"}, "second");
  AddNode(g, "Relu", {"dup_t"}, {"y"}, "after");
  AddOutput(g, "y", {1, 4});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "dupout.onnx"), {"dup_t"}));
}

TEST_F(BadModelsTest, DuplicateGraphInput) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x_dup", {1, 4});
  AddInput(g, "x_dup", {1, 4});
  AddNode(g, "Relu", {"x_dup"}, {"y"}, "r");
  AddOutput(g, "y", {1, 4});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "dupin.onnx"), {"x_dup"}));
}

TEST_F(BadModelsTest, DuplicateInitializer) {
  onnx::ModelProto m = ValidModel();
  RenameValue(&m, "w", "w_twice");
  AddFloatInit(m.mutable_graph(), "w_twice", {4}, {9, 9, 9, 9});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "dupinit.onnx"), {"w_twice"}));
}

TEST_F(BadModelsTest, NodeOutputShadowsGraphInput) {
  onnx::ModelProto m = ValidModel();
  AddNode(m.mutable_graph(), "Abs", {"w"}, {"x"}, "shadow");
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "shadow.onnx"), {"shadow"}));
}

TEST_F(BadModelsTest, UnknownOpInDefaultDomain) {
  onnx::ModelProto m = ValidModel();
  m.mutable_graph()->mutable_node(1)->set_op_type("FooBarOp");
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "unknownop.onnx"), {"FooBarOp"}));
}

TEST_F(BadModelsTest, MissingOpsetImportForDomain) {
  onnx::ModelProto m = ValidModel();
  m.mutable_graph()->mutable_node(1)->set_domain("com.example.custom");
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "nodomain.onnx"), {"com.example.custom"}));
}

TEST_F(BadModelsTest, EmptyOpType) {
  onnx::ModelProto m = ValidModel();
  m.mutable_graph()->mutable_node(1)->set_name("no_op_node");
  m.mutable_graph()->mutable_node(1)->clear_op_type();
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "noop.onnx"), {"no_op_node"}, {"op_type", "op type", "operator"}));
}

TEST_F(BadModelsTest, NoGraphOutputs) {
  onnx::ModelProto m = ValidModel();
  m.mutable_graph()->clear_output();
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "nooutputs.onnx"), {},
                            {"no output", "no graph output", "without output", "zero output", "0 output"}));
}

TEST_F(BadModelsTest, GraphOutputProducedByNothing) {
  onnx::ModelProto m = ValidModel();
  AddOutput(m.mutable_graph(), "y_orphan", {1, 4});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "orphan.onnx"), {"y_orphan"}));
}

TEST_F(BadModelsTest, IrVersionZero) {
  onnx::ModelProto m = ValidModel();
  m.set_ir_version(0);
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "ir0.onnx"), {}, {"ir_version", "ir version"}));
  m.clear_ir_version();
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "noir.onnx"), {}, {"ir_version", "ir version"}));
}

TEST_F(BadModelsTest, MissingOpsetImport) {
  onnx::ModelProto m = ValidModel();
  m.clear_opset_import();
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "noopset.onnx"), {}, {"opset"}));
}

TEST_F(BadModelsTest, GraphInputWithoutType) {
  onnx::ModelProto m = ValidModel();
  RenameValue(&m, "x", "x_untyped");
  m.mutable_graph()->mutable_input(0)->clear_type();
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "notype.onnx"), {"x_untyped"}));
}

TEST_F(BadModelsTest, IncompatibleBroadcastShapes) {
  // [1,4] + [3] cannot broadcast: shape inference must fail and name the node.
  onnx::ModelProto m = ValidModel();
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->set_dims(0, 3);
  w->set_raw_data(w->raw_data().substr(0, 3 * sizeof(float)));
  m.mutable_graph()->mutable_node(0)->set_name("bad_bcast");
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "bcast.onnx"), {"bad_bcast"}));
}

TEST_F(BadModelsTest, IfSubgraphReadsUndefinedName) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "cond", {}, onnx::TensorProto::BOOL);
  AddInput(g, "x", {4});
  auto* n = AddNode(g, "If", {"cond"}, {"y"}, "if_node");
  auto* then_attr = n->add_attribute();
  then_attr->set_name("then_branch");
  then_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* tb = then_attr->mutable_g();
  tb->set_name("then");
  AddNode(tb, "Identity", {"nowhere_t"}, {"then_out"}, "then_id");
  AddOutput(tb, "then_out", {4});
  auto* else_attr = n->add_attribute();
  else_attr->set_name("else_branch");
  else_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* eb = else_attr->mutable_g();
  eb->set_name("else");
  AddNode(eb, "Neg", {"x"}, {"else_out"}, "else_neg");
  AddOutput(eb, "else_out", {4});
  AddOutput(g, "y", {4});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "ifbad.onnx"), {"nowhere_t"}));
}

// ---- initializers and declared shapes --------------------------------------------------

TEST_F(BadModelsTest, InitializerRawDataSizeMismatch) {
  onnx::ModelProto m = ValidModel();
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name("w_short");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(1000);
  w->set_raw_data(std::string(4, '\0'));
  AddNode(m.mutable_graph(), "Relu", {"w_short"}, {"z"}, "use_short");
  AddOutput(m.mutable_graph(), "z", {1000});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "short.onnx"), {"w_short"}, {"4000", "1000", "bytes", "size", "mismatch"}));
}

TEST_F(BadModelsTest, InitializerFloatDataCountMismatch) {
  onnx::ModelProto m = ValidModel();
  RenameValue(&m, "w", "w_count");
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_raw_data();
  w->add_float_data(1);
  w->add_float_data(2);
  w->add_float_data(3);  // dims say 4
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "count.onnx"), {"w_count"}));
}

TEST_F(BadModelsTest, NegativeDimInInitializer) {
  onnx::ModelProto m = ValidModel();
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name("neg_w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(-3);
  w->add_dims(4);
  AddNode(m.mutable_graph(), "Relu", {"neg_w"}, {"z"}, "use_neg");
  AddOutput(m.mutable_graph(), "z", {3, 4});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "negdim.onnx"), {"neg_w"}));
}

TEST_F(BadModelsTest, NegativeDimInGraphInput) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x_neg", {1, -7});
  AddNode(g, "Relu", {"x_neg"}, {"y"}, "r");
  AddOutput(g, "y", {1, 7});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "neginput.onnx"), {"x_neg"}));
}

// An initializer read by a Relu whose declared dims are absurd and whose data is (almost) absent.
onnx::ModelProto WithInitializerDims(const std::string& name, const std::vector<int64_t>& dims,
                                     int32_t type = onnx::TensorProto::FLOAT) {
  onnx::ModelProto m = ValidModel();
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name(name);
  w->set_data_type(type);
  for (int64_t d : dims) w->add_dims(d);
  if (type == onnx::TensorProto::STRING) {
    w->add_string_data("one string for 2^36 declared");
  } else {
    w->set_raw_data(std::string(4, '\0'));
  }
  AddNode(m.mutable_graph(), "Identity", {name}, {"z"}, "use_" + name);
  SetType(m.mutable_graph()->add_output(), "z", type, {});
  m.mutable_graph()->mutable_output(1)->mutable_type()->mutable_tensor_type()->clear_shape();
  return m;
}

TEST_F(BadModelsTest, AbsurdInitializerShape) {
  // 2^20 * 2^21 = 2^41 elements (8 TiB of float).
  EXPECT_TRUE(IsErrorNaming(LoadProto(WithInitializerDims("huge_w", {int64_t{1} << 20, int64_t{1} << 21}),
                                      "absurd.onnx"),
                            {"huge_w"}));
}

TEST_F(BadModelsTest, InitializerShapeProductOverflowsInt64) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  for (const auto& dims : std::vector<std::vector<int64_t>>{{int64_t{1} << 40, int64_t{1} << 40},
                                                            {big, big},
                                                            {3, big / 2},
                                                            {int64_t{1} << 31, int64_t{1} << 31, int64_t{1} << 2}}) {
    SCOPED_TRACE(absl::StrJoin(dims, ","));
    EXPECT_TRUE(IsErrorNaming(LoadProto(WithInitializerDims("ovf_w", dims), "overflow.onnx"), {"ovf_w"}));
  }
}

TEST_F(BadModelsTest, AbsurdGraphInputShape) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x_huge", {int64_t{1} << 40, int64_t{1} << 40});
  AddNode(g, "Relu", {"x_huge"}, {"y"}, "r");
  AddOutput(g, "y", {int64_t{1} << 40, int64_t{1} << 40});
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "hugeinput.onnx"), {"x_huge"}));
}

TEST_F(BadModelsTest, HugeDeclaredStringInitializer) {
  EXPECT_TRUE(IsErrorNaming(LoadProto(WithInitializerDims("huge_str", {int64_t{1} << 36}, onnx::TensorProto::STRING),
                                      "hugestr.onnx"),
                            {"huge_str"}));
}

TEST_F(BadModelsTest, TensorAboveMaxTensorElements) {
  // Fully backed by data, but above the caller's limit: the limit must be honoured.
  onnx::ModelProto m = ValidModel();
  AddFloatInit(m.mutable_graph(), "w_1000", {1000}, std::vector<float>(1000, 1.0f));
  AddNode(m.mutable_graph(), "Relu", {"w_1000"}, {"z"}, "use_1000");
  AddOutput(m.mutable_graph(), "z", {1000});
  ASSERT_TRUE(LoadProto(m, "ok.onnx").ok());
  LoadOptions options;
  options.max_tensor_elements = 100;
  EXPECT_TRUE(IsErrorNaming(LoadProto(m, "limited.onnx", options), {"w_1000"}));
}

// ---- size limits --------------------------------------------------------------------------

TEST_F(BadModelsTest, ModelBiggerThanMaxModelBytes) {
  onnx::ModelProto m = ValidModel();
  AddFloatInit(m.mutable_graph(), "pad", {512}, std::vector<float>(512, 0.0f));
  const std::string bytes = Bytes(m);
  ASSERT_TRUE(Model::LoadBytes(bytes, "fits.onnx").ok());
  LoadOptions options;
  options.max_model_bytes = 1024;
  const std::vector<std::string> words = {"max_model_bytes", "limit", "too large", "exceed", "larger than"};
  EXPECT_TRUE(IsErrorNaming(Model::LoadBytes(bytes, "big.onnx", {}, options).status(), {"big.onnx"}, words));
  const fs::path p = Write("big.onnx", bytes);
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p, options).status(), {"big.onnx"}, words));
}

TEST_F(BadModelsTest, ExternalDataBiggerThanMaxModelBytes) {
  // The .onnx file is small; its external data pushes the total over the limit.
  onnx::ModelProto m = ExternalDataModel("big.bin");
  m.mutable_graph()->mutable_initializer(0)->set_dims(0, 4096);
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)
      ->set_dim_value(4096);
  m.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)
      ->set_dim_value(4096);
  Write("big.bin", std::string(4096 * sizeof(float), '\0'));
  const fs::path p = Write("small.onnx", Bytes(m));
  ASSERT_TRUE(Model::LoadFile(p).ok()) << Model::LoadFile(p).status();
  LoadOptions options;
  options.max_model_bytes = static_cast<int64_t>(fs::file_size(p)) + 1024;
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p, options).status(), {},
                            {"max_model_bytes", "limit", "too large", "exceed", "larger than"}));
}

// ---- external data ----------------------------------------------------------------------

TEST_F(BadModelsTest, ExternalDataInsideDirectoryLoads) {
  Write("model/weights.bin", FourFloats());
  const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel("weights.bin")));
  auto model = Model::LoadFile(p);
  ASSERT_TRUE(model.ok()) << model.status();
  // External data is inlined into the validated proto.
  const auto& init = (*model)->proto().graph().initializer(0);
  EXPECT_NE(init.data_location(), onnx::TensorProto::EXTERNAL);
  EXPECT_EQ(init.raw_data(), FourFloats());
}

TEST_F(BadModelsTest, ExternalDataDotDot) {
  Write("secret.bin", FourFloats());
  const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel("../secret.bin")));
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {"../secret.bin"}));
  const fs::path q = Write("model/ext2.onnx", Bytes(ExternalDataModel("sub/../../secret.bin")));
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(q).status(), {"sub/../../secret.bin"}));
}

TEST_F(BadModelsTest, ExternalDataAbsolutePath) {
  const fs::path secret = Write("secret.bin", FourFloats());
  const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel(secret.string())));
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {secret.string()}));
}

TEST_F(BadModelsTest, ExternalDataSymlinkOutside) {
  const fs::path secret = Write("outside/secret.bin", FourFloats());
  fs::create_directories(dir_ / "model");
  fs::create_symlink(secret, dir_ / "model" / "linked.bin");
  const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel("linked.bin")));
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {"linked.bin"}));
  // A symlinked directory on the way out counts too.
  fs::create_directory_symlink(dir_ / "outside", dir_ / "model" / "linkdir");
  const fs::path q = Write("model/ext2.onnx", Bytes(ExternalDataModel("linkdir/secret.bin")));
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(q).status(), {"linkdir/secret.bin"}));
}

TEST_F(BadModelsTest, ExternalDataMissingFile) {
  const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel("missing_weights.bin")));
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), {"missing_weights.bin"}));
}

TEST_F(BadModelsTest, ExternalDataBeyondFileEnd) {
  Write("model/short.bin", FourFloats());  // 16 bytes
  struct Case {
    std::optional<int64_t> offset, length;
    std::vector<std::string> names;  // what the error must name
  };
  const int64_t near_max = std::numeric_limits<int64_t>::max() - 4;
  // Ranges past the end of the file name the file; impossible values name the tensor and the value.
  for (const Case& c : {Case{8, 16, {"short.bin"}}, Case{0, 64, {"short.bin"}}, Case{100, std::nullopt, {"short.bin"}},
                        Case{16, 16, {"short.bin"}}, Case{near_max, 16, {"short.bin"}},
                        Case{-8, 16, {"w_ext", "-8"}}, Case{0, -1, {"w_ext", "-1"}}}) {
    SCOPED_TRACE(absl::StrCat("offset ", c.offset.value_or(-1), " length ", c.length.value_or(-1)));
    const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel("short.bin", c.offset, c.length)));
    EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p).status(), c.names));
  }
}

TEST_F(BadModelsTest, ExternalDataFromBytesWithoutBaseDir) {
  Write("weights.bin", FourFloats());
  EXPECT_TRUE(IsErrorNaming(Model::LoadBytes(Bytes(ExternalDataModel("weights.bin")), "mem.onnx").status(),
                            {"weights.bin"}, {"external"}));
}

TEST_F(BadModelsTest, ExternalDataDisallowedByOptions) {
  Write("model/weights.bin", FourFloats());
  const fs::path p = Write("model/ext.onnx", Bytes(ExternalDataModel("weights.bin")));
  LoadOptions options;
  options.allow_external_data = false;
  EXPECT_TRUE(IsErrorNaming(Model::LoadFile(p, options).status(), {"w_ext"}, {"external"}));
}

// ---- valid but odd: these must load ---------------------------------------------------------

TEST_F(BadModelsTest, NodesOutOfTopologicalOrderAreSorted) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 4});
  AddNode(g, "Relu", {"t2"}, {"y"}, "third");
  AddNode(g, "Neg", {"t1"}, {"t2"}, "second");
  AddNode(g, "Abs", {"x"}, {"t1"}, "first");
  AddOutput(g, "y", {1, 4});
  auto model = Model::LoadBytes(Bytes(m), "unsorted.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> order;
  for (NodeId id : (*model)->topo_order()) order.push_back((*model)->node(id).name);
  EXPECT_EQ(order, (std::vector<std::string>{"first", "second", "third"}));
  // The proto handed to ORT is sorted too.
  ASSERT_EQ((*model)->proto().graph().node_size(), 3);
  EXPECT_EQ((*model)->proto().graph().node(0).output(0), "t1");
  EXPECT_EQ((*model)->proto().graph().node(2).output(0), "y");
}

TEST_F(BadModelsTest, EmptyAndDuplicateNodeNamesAreRenamed) {
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "x", {1, 4});
  AddNode(g, "Abs", {"x"}, {"t1"}, "");
  AddNode(g, "Neg", {"t1"}, {"t2"}, "same");
  AddNode(g, "Relu", {"t2"}, {"t3"}, "same");
  AddNode(g, "Abs", {"t3"}, {"y"}, "");
  AddOutput(g, "y", {1, 4});
  auto model = Model::LoadBytes(Bytes(m), "names.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const Node& n : (*model)->nodes()) {
    EXPECT_FALSE(n.name.empty());
    names.push_back(n.name);
    ASSERT_TRUE((*model)->FindNode(n.name).has_value()) << n.name;
    EXPECT_EQ(*(*model)->FindNode(n.name), n.id);
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end()) << absl::StrJoin(names, ",");
  EXPECT_EQ(std::count(names.begin(), names.end(), "same"), 1);
  ASSERT_FALSE((*model)->warnings().empty());
  EXPECT_TRUE(std::any_of((*model)->warnings().begin(), (*model)->warnings().end(),
                          [](const std::string& w) { return w.find("same") != std::string::npos; }))
      << absl::StrJoin((*model)->warnings(), "\n");
}

TEST_F(BadModelsTest, GraphOutputThatIsAlsoGraphInput) {
  onnx::ModelProto m = ValidModel();
  AddOutput(m.mutable_graph(), "x", {1, 4});
  auto model = Model::LoadBytes(Bytes(m), "passthrough.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->outputs(), (std::vector<std::string>{"y", "x"}));
  EXPECT_EQ((*model)->inputs(), (std::vector<std::string>{"x"}));
  const Value* x = (*model)->FindValue("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->kind, ValueKind::kGraphInput);
  EXPECT_TRUE(x->is_graph_output);
  EXPECT_FALSE(x->producer.has_value());
}

TEST_F(BadModelsTest, IfSubgraphReadingOuterScopeLoads) {
  // The valid twin of IfSubgraphReadsUndefinedName: both branches read outer 'x'.
  onnx::ModelProto m = EmptyModel();
  auto* g = m.mutable_graph();
  AddInput(g, "cond", {}, onnx::TensorProto::BOOL);
  AddInput(g, "x", {4});
  auto* n = AddNode(g, "If", {"cond"}, {"y"}, "if_node");
  for (const char* branch : {"then_branch", "else_branch"}) {
    auto* a = n->add_attribute();
    a->set_name(branch);
    a->set_type(onnx::AttributeProto::GRAPH);
    auto* b = a->mutable_g();
    b->set_name(branch);
    AddNode(b, branch[0] == 't' ? "Identity" : "Neg", {"x"}, {std::string(branch) + "_out"}, "");
    AddOutput(b, std::string(branch) + "_out", {4});
  }
  AddOutput(g, "y", {4});
  auto model = Model::LoadBytes(Bytes(m), "ifok.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  auto id = (*model)->FindNode("if_node");
  ASSERT_TRUE(id.has_value());
  const Node& node = (*model)->node(*id);
  EXPECT_TRUE(node.has_subgraphs);
  EXPECT_EQ(node.implicit_inputs, (std::vector<std::string>{"x"}));
  const Value* x = (*model)->FindValue("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->consumers, (std::vector<NodeId>{*id}));
}

}  // namespace
}  // namespace baton::graph
