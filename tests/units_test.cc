// Capability units, atoms and candidate ranges (partition/units.h): the worked
// example of the header, greedy grouping of parallel branches, min/max atom
// counts, tensor bytes across cuts, the candidate budget and order, and
// convexity of every atom range on every zoo model.
#include "baton/partition/units.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/graph/builder.h"
#include "baton/graph/extract.h"
#include "baton/graph/model.h"
#include "baton/partition/placed_nodes.h"
#include "baton/partition/plan.h"
#include "baton/zoo/zoo.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton {
namespace {

using partition::Atoms;
using partition::Candidate;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A model of float [1,4] tensors from (name, op, inputs, output) rows;
// `dim0` is the first dimension of every tensor (a symbolic one makes every
// size unknown).
struct Row {
  std::string name, op;
  std::vector<std::string> in;
  std::string out;
};
std::shared_ptr<const graph::Model> Build(const std::vector<Row>& rows, const std::string& output,
                                          graph::DimSpec dim0 = int64_t{1}) {
  graph::GraphBuilder b;
  b.AddInput("x", dtype::kFloat, {dim0, int64_t{4}});
  for (const Row& r : rows) b.AddNode(r.op, r.in, {r.out}, {}, r.name);
  b.AddOutput(output, dtype::kFloat, {dim0, int64_t{4}});
  auto bytes = b.Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, "tiny.onnx");
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// support[node id] from masks given by node name.
std::vector<uint64_t> Masks(const graph::Model& m, const std::map<std::string, uint64_t>& by_name) {
  std::vector<uint64_t> s(m.nodes().size(), 0);
  for (const auto& [name, mask] : by_name) s[m.FindNode(name)->value] = mask;
  return s;
}

std::vector<std::vector<std::string>> AtomNames(const graph::Model& m, const Atoms& atoms) {
  std::vector<std::vector<std::string>> out;
  for (const auto& a : atoms.atoms) {
    out.emplace_back();
    for (NodeId id : a.nodes) out.back().push_back(m.node(id).name);
  }
  return out;
}

using Names = std::vector<std::string>;

// a -> b -> c -> d with masks 11, 11, 01, 11 (the header's worked example).
TEST(MakeAtoms, WorkedExampleOfTheHeader) {
  auto m = Build({{"a", "Relu", {"x"}, "ta"}, {"b", "Sigmoid", {"ta"}, "tb"}, {"c", "Tanh", {"tb"}, "tc"},
                  {"d", "Relu", {"tc"}, "y"}},
                 "y");
  ASSERT_TRUE(m);
  auto support = Masks(*m, {{"a", 3}, {"b", 3}, {"c", 1}, {"d", 3}});

  auto units = partition::MakeAtoms(*m, support, /*min_atoms=*/1, /*max_atoms=*/10);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(units->units, 3);
  EXPECT_THAT(AtomNames(*m, *units), ElementsAre(Names{"a", "b"}, Names{"c"}, Names{"d"}));

  auto atoms = partition::MakeAtoms(*m, support, /*min_atoms=*/4, /*max_atoms=*/10);
  ASSERT_TRUE(atoms.ok()) << atoms.status();
  EXPECT_EQ(atoms->units, 3);
  EXPECT_THAT(AtomNames(*m, *atoms), ElementsAre(Names{"a"}, Names{"b"}, Names{"c"}, Names{"d"}));
  std::vector<int> unit_of;
  std::vector<uint64_t> mask_of;
  for (const auto& a : atoms->atoms) {
    unit_of.push_back(a.unit);
    mask_of.push_back(a.support);
    EXPECT_DOUBLE_EQ(a.cost, partition::CostOf(m->node(a.nodes[0])));
  }
  EXPECT_THAT(unit_of, ElementsAre(0, 0, 1, 2));
  EXPECT_THAT(mask_of, ElementsAre(3, 3, 1, 3));
  // Every tensor is float[1,4] = 16 bytes and crosses exactly one cut.
  EXPECT_THAT(atoms->cut_bytes, ElementsAre(16, 16, 16));
  ASSERT_EQ(atoms->edges.size(), 3u);
  EXPECT_EQ(partition::NodesOf(*atoms, 1, 3), (std::vector<NodeId>{*m->FindNode("b"), *m->FindNode("c")}));

  // Singletons, the unit {a,b} (= atoms [0,2)), the whole model (all share the
  // cpu bit), then the remaining ranges of 2 and 3 atoms.
  auto cands = partition::Candidates(*atoms, 100);
  ASSERT_TRUE(cands.ok()) << cands.status();
  EXPECT_THAT(*cands, ElementsAre(Candidate{0, 1, 3}, Candidate{1, 2, 3}, Candidate{2, 3, 1}, Candidate{3, 4, 3},
                                  Candidate{0, 2, 3}, Candidate{0, 4, 1}, Candidate{1, 3, 1}, Candidate{2, 4, 1},
                                  Candidate{0, 3, 1}, Candidate{1, 4, 1}));
}

// x feeds four parallel branches A (cpu), B (npu), C (cpu), D (npu); E joins
// them. The model's own order alternates masks; the greedy order does not.
TEST(MakeAtoms, ParallelBranchesWithTheSameSupportShareAUnit) {
  auto m = Build({{"A", "Relu", {"x"}, "ta"},
                  {"B", "Sigmoid", {"x"}, "tb"},
                  {"C", "Tanh", {"x"}, "tc"},
                  {"D", "Abs", {"x"}, "td"},
                  {"E", "Sum", {"ta", "tb", "tc", "td"}, "y"}},
                 "y");
  ASSERT_TRUE(m);
  auto support = Masks(*m, {{"A", 1}, {"B", 2}, {"C", 1}, {"D", 2}, {"E", 1}});
  auto atoms = partition::MakeAtoms(*m, support, 1, 10);
  ASSERT_TRUE(atoms.ok()) << atoms.status();
  EXPECT_EQ(atoms->units, 3);
  EXPECT_THAT(AtomNames(*m, *atoms), ElementsAre(Names{"A", "C"}, Names{"B", "D"}, Names{"E"}));
  // The capability cut of the model's own order needs five partitions.
  auto plan = partition::CutForPus(*m, support, 1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->partitions.size(), 5u);
  // Tensors: ta, tc cross the cut after atom 0; all four cross the one after atom 1.
  EXPECT_THAT(atoms->cut_bytes, ElementsAre(32, 64));
}

std::shared_ptr<const graph::Model> Chain(int length) {
  std::vector<Row> rows;
  std::string prev = "x";
  for (int i = 0; i < length; ++i) {
    std::string out = i + 1 == length ? "y" : absl::StrCat("t", i);
    rows.push_back({absl::StrCat("n", i), "Relu", {prev}, out});
    prev = out;
  }
  return Build(rows, "y");
}

TEST(MakeAtoms, MinAtomsSplitsUnitsIntoBalancedPieces) {
  auto m = Chain(12);
  ASSERT_TRUE(m);
  std::vector<uint64_t> one_pu(12, 1);
  for (int min_atoms : {1, 2, 3, 4, 6, 12}) {
    auto atoms = partition::MakeAtoms(*m, one_pu, min_atoms, 100);
    ASSERT_TRUE(atoms.ok()) << atoms.status();
    EXPECT_EQ(atoms->units, 1);
    ASSERT_EQ(atoms->atoms.size(), static_cast<size_t>(min_atoms));
    for (const auto& a : atoms->atoms) EXPECT_EQ(a.nodes.size(), static_cast<size_t>(12 / min_atoms));
  }
  // More atoms than nodes: one node per atom.
  auto atoms = partition::MakeAtoms(*m, one_pu, 50, 100);
  ASSERT_TRUE(atoms.ok()) << atoms.status();
  EXPECT_EQ(atoms->atoms.size(), 12u);

  // Units of 8, 2 and 2 equal nodes: the 3 extra atoms all go to the costliest
  // unit, so that every atom holds 2 nodes.
  std::vector<uint64_t> two_units(12, 1);
  for (int i = 8; i < 10; ++i) two_units[m->FindNode(absl::StrCat("n", i))->value] = 3;
  auto split = partition::MakeAtoms(*m, two_units, 6, 100);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->units, 3);
  std::vector<size_t> sizes;
  std::vector<int> units;
  for (const auto& a : split->atoms) {
    sizes.push_back(a.nodes.size());
    units.push_back(a.unit);
  }
  EXPECT_THAT(sizes, ElementsAre(2, 2, 2, 2, 2, 2));
  EXPECT_THAT(units, ElementsAre(0, 0, 0, 0, 1, 2));
}

TEST(MakeAtoms, ZooModelGetsBalancedAtoms) {
  auto bytes = zoo::Generate("resnet", /*small=*/true);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto m = graph::Model::LoadBytes(*bytes, "resnet.onnx");
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<uint64_t> one_pu((*m)->nodes().size(), 1);
  double max_node = 0, total = 0;
  for (NodeId id : partition::internal::PlacedNodes(**m)) {
    max_node = std::max(max_node, partition::CostOf((*m)->node(id)));
    total += partition::CostOf((*m)->node(id));
  }
  for (int k : {2, 5, 8, 16}) {
    auto atoms = partition::MakeAtoms(**m, one_pu, k, 100);
    ASSERT_TRUE(atoms.ok()) << atoms.status();
    ASSERT_EQ(atoms->atoms.size(), static_cast<size_t>(k));
    double sum = 0;
    for (const auto& a : atoms->atoms) {
      sum += a.cost;
      // The optimal bottleneck is at most the mean plus one node.
      EXPECT_LE(a.cost, total / k + max_node + 1e-6) << "k=" << k;
    }
    EXPECT_NEAR(sum, total, 1e-6 * total);
  }
}

TEST(MakeAtoms, TooManyUnitsForTheBudgetIsAnError) {
  auto m = Chain(4);
  ASSERT_TRUE(m);
  auto support = Masks(*m, {{"n0", 1}, {"n1", 2}, {"n2", 1}, {"n3", 2}});
  auto atoms = partition::MakeAtoms(*m, support, 1, 3);
  ASSERT_FALSE(atoms.ok());
  EXPECT_EQ(atoms.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(atoms.status().message()), HasSubstr("tiny.onnx"));
  EXPECT_THAT(std::string(atoms.status().message()), HasSubstr("4 capability units"));
  EXPECT_THAT(std::string(atoms.status().message()), HasSubstr("raise the budget"));
  EXPECT_TRUE(partition::MakeAtoms(*m, support, 1, 4).ok());
  EXPECT_FALSE(partition::MakeAtoms(*m, support, 0, 4).ok());
  EXPECT_FALSE(partition::MakeAtoms(*m, support, 5, 4).ok());
  EXPECT_FALSE(partition::MakeAtoms(*m, std::vector<uint64_t>(3, 1), 1, 4).ok());
}

TEST(MakeAtoms, NodeNoPuRunsIsAnErrorNamingNodeAndOp) {
  auto m = Chain(3);
  ASSERT_TRUE(m);
  auto support = Masks(*m, {{"n0", 1}, {"n1", 0}, {"n2", 1}});
  auto atoms = partition::MakeAtoms(*m, support, 1, 10);
  ASSERT_FALSE(atoms.ok());
  EXPECT_THAT(std::string(atoms.status().message()), HasSubstr("'n1'"));
  EXPECT_THAT(std::string(atoms.status().message()), HasSubstr("Relu"));
}

// The diamond x -> A -> t1 -> {B (also reads x), D} -> C, one atom per node.
TEST(MakeAtoms, CutBytesAndEdgesMatchAHandCount) {
  std::vector<Row> rows = {{"A", "Relu", {"x"}, "t1"},
                           {"B", "Add", {"t1", "x"}, "t2"},
                           {"D", "Sigmoid", {"t1"}, "t3"},
                           {"C", "Mul", {"t2", "t3"}, "y"}};
  auto m = Build(rows, "y");
  ASSERT_TRUE(m);
  auto atoms = partition::MakeAtoms(*m, std::vector<uint64_t>(4, 1), 4, 4);
  ASSERT_TRUE(atoms.ok()) << atoms.status();
  ASSERT_THAT(AtomNames(*m, *atoms), ElementsAre(Names{"A"}, Names{"B"}, Names{"D"}, Names{"C"}));
  // After A: t1 (x is a model input, never counted). After B: t1 (for D), t2.
  // After D: t2, t3. Each float[1,4] tensor is 16 bytes, counted once per cut.
  EXPECT_THAT(atoms->cut_bytes, ElementsAre(16, 32, 32));
  std::vector<std::vector<int64_t>> edges;
  for (const auto& e : atoms->edges) edges.push_back({e.from, e.to, e.bytes});
  EXPECT_THAT(edges, ElementsAre(std::vector<int64_t>{0, 1, 16}, std::vector<int64_t>{0, 2, 16},
                                 std::vector<int64_t>{1, 3, 16}, std::vector<int64_t>{2, 3, 16}));

  // Unknown sizes count as 0.
  auto dynamic = Build(rows, "y", std::string("batch"));
  ASSERT_TRUE(dynamic);
  auto dyn_atoms = partition::MakeAtoms(*dynamic, std::vector<uint64_t>(4, 1), 4, 4);
  ASSERT_TRUE(dyn_atoms.ok()) << dyn_atoms.status();
  EXPECT_THAT(dyn_atoms->cut_bytes, ElementsAre(0, 0, 0));
  EXPECT_EQ(dyn_atoms->edges.size(), 4u);
}

// --- Zoo models -------------------------------------------------------------

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t HashOf(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

// Support schemes with up to three PUs; bit 0 (a cpu) runs everything. kNpu:
// a second PU runs the common ops (few, long units); kByOp, kByNode: random
// subsets per op type or per node (many short units).
enum class Scheme { kOnePu, kNpu, kByOp, kByNode };
const std::set<std::string> kNpuOps = {"Conv", "Relu", "Add", "MaxPool", "Concat", "MatMul", "Gemm", "Clip"};

std::vector<uint64_t> SupportFor(const graph::Model& m, Scheme scheme) {
  std::vector<uint64_t> s;
  for (const graph::Node& node : m.nodes()) {
    switch (scheme) {
      case Scheme::kOnePu: s.push_back(1); break;
      case Scheme::kNpu: s.push_back(kNpuOps.contains(node.op_type) ? 3 : 1); break;
      case Scheme::kByOp: s.push_back(1 | (HashOf(node.op_type) & 6)); break;
      case Scheme::kByNode: s.push_back(1 | (Mix(node.id.value) & 6)); break;
    }
  }
  return s;
}

std::vector<std::string> ZooNames() {
  std::vector<std::string> names;
  for (const auto& e : zoo::List()) names.push_back(e.name);
  return names;
}

class ZooUnitsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto bytes = zoo::Generate(GetParam(), /*small=*/true);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto model = graph::Model::LoadBytes(*bytes, GetParam() + ".onnx");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *model;
  }
  std::shared_ptr<const graph::Model> model_;
};

// Every atom range is convex, and any split of the atoms into contiguous
// ranges is a valid plan whose cut tensors are what cut_bytes counts.
TEST_P(ZooUnitsTest, EveryContiguousRangeOfAtomsIsConvex) {
  const graph::Model& m = *model_;
  std::vector<NodeId> placed = partition::internal::PlacedNodes(m);
  for (Scheme scheme : {Scheme::kOnePu, Scheme::kNpu, Scheme::kByOp, Scheme::kByNode}) {
    std::vector<uint64_t> support = SupportFor(m, scheme);
    auto atoms = partition::MakeAtoms(m, support, /*min_atoms=*/24, /*max_atoms=*/100000);
    ASSERT_TRUE(atoms.ok()) << atoms.status();
    const int n = static_cast<int>(atoms->atoms.size());
    std::string how = "scheme " + std::to_string(static_cast<int>(scheme)) + ", " + std::to_string(n) + " atoms";
    EXPECT_EQ(n, std::max(atoms->units, std::min<int>(24, static_cast<int>(placed.size())))) << how;
    ASSERT_EQ(atoms->cut_bytes.size(), static_cast<size_t>(n - 1)) << how;

    // Atoms hold every placed node once, with their unit's mask.
    std::vector<NodeId> all = partition::NodesOf(*atoms, 0, n);
    std::vector<NodeId> sorted_all = all, sorted_placed = placed;
    std::sort(sorted_all.begin(), sorted_all.end());
    std::sort(sorted_placed.begin(), sorted_placed.end());
    EXPECT_EQ(sorted_all, sorted_placed) << how;
    int units_seen = 0;
    for (int i = 0; i < n; ++i) {
      const auto& a = atoms->atoms[i];
      ASSERT_FALSE(a.nodes.empty()) << how;
      for (NodeId id : a.nodes) EXPECT_EQ(support[id.value], a.support) << how;
      if (i > 0) {
        EXPECT_GE(a.unit, atoms->atoms[i - 1].unit) << how;
        if (a.unit != atoms->atoms[i - 1].unit) {
          EXPECT_NE(a.support, atoms->atoms[i - 1].support) << how;
        }
      }
      units_seen = a.unit + 1;
    }
    EXPECT_EQ(units_seen, atoms->units) << how;

    for (int first = 0; first < n; ++first) {
      for (int last = first + 1; last <= n; ++last) {
        ASSERT_TRUE(graph::CheckConvex(m, partition::NodesOf(*atoms, first, last)).ok())
            << how << ": atoms [" << first << ", " << last << ")";
      }
    }

    // Two-way splits: the plan's cut tensors are cut_bytes.
    for (int cut = 1; cut < n; ++cut) {
      auto plan = partition::BuildPlan(m, {partition::NodesOf(*atoms, 0, cut), partition::NodesOf(*atoms, cut, n)});
      ASSERT_TRUE(plan.ok()) << how << ": cut " << cut << ": " << plan.status();
      int64_t bytes = 0;
      for (const auto& e : plan->edges) bytes += std::max<int64_t>(e.bytes, 0);
      EXPECT_EQ(bytes, atoms->cut_bytes[cut - 1]) << how << ": cut " << cut;
    }

    // Random splits into contiguous ranges.
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      std::vector<std::vector<NodeId>> groups;
      int first = 0;
      for (int i = 1; i <= n; ++i) {
        if (i == n || Mix(seed * 1000 + i) % 3 == 0) {
          groups.push_back(partition::NodesOf(*atoms, first, i));
          first = i;
        }
      }
      auto plan = partition::BuildPlan(m, groups);
      ASSERT_TRUE(plan.ok()) << how << ", seed " << seed << ": " << plan.status();
    }

    // One group per atom: the plan's edges, summed per atom pair, are `edges`.
    std::vector<std::vector<NodeId>> groups;
    std::map<NodeId, int> atom_of;
    for (int i = 0; i < n; ++i) {
      groups.push_back(atoms->atoms[i].nodes);
      for (NodeId id : atoms->atoms[i].nodes) atom_of[id] = i;
    }
    auto plan = partition::BuildPlan(m, groups);
    ASSERT_TRUE(plan.ok()) << how << ": " << plan.status();
    std::map<std::pair<int, int>, int64_t> expected;
    for (const auto& e : plan->edges) {
      int from = atom_of[plan->partitions[e.from.value].nodes[0]];
      int to = atom_of[plan->partitions[e.to.value].nodes[0]];
      expected[{from, to}] += std::max<int64_t>(e.bytes, 0);
    }
    std::map<std::pair<int, int>, int64_t> got;
    for (const auto& e : atoms->edges) {
      EXPECT_LT(e.from, e.to) << how;
      got[{e.from, e.to}] = e.bytes;
    }
    EXPECT_EQ(got, expected) << how;
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooUnitsTest, ::testing::ValuesIn(ZooNames()),
                         [](const auto& param_info) { return param_info.param; });

// The candidate list for an unlimited budget, written the obvious way.
std::vector<Candidate> AllCandidates(const Atoms& atoms) {
  const int n = static_cast<int>(atoms.atoms.size());
  auto mask = [&](int first, int last) {
    uint64_t s = ~uint64_t{0};
    for (int i = first; i < last; ++i) s &= atoms.atoms[i].support;
    return s;
  };
  std::vector<Candidate> out;
  auto add = [&](int first, int last) {
    Candidate c{first, last, mask(first, last)};
    if (c.support != 0 && std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  };
  for (int i = 0; i < n; ++i) add(i, i + 1);
  for (int u = 0; u < atoms.units; ++u) {
    int first = n, last = 0;
    for (int i = 0; i < n; ++i) {
      if (atoms.atoms[i].unit == u) first = std::min(first, i), last = i + 1;
    }
    add(first, last);
  }
  add(0, n);
  for (int len = 2; len <= n; ++len) {
    for (int first = 0; first + len <= n; ++first) add(first, first + len);
  }
  return out;
}

TEST(Candidates, BudgetIsRespectedExactlyAndOrderIsAsDocumented) {
  auto bytes = zoo::Generate("squeezenet", /*small=*/true);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto model = graph::Model::LoadBytes(*bytes, "squeezenet.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  const graph::Model& m = **model;
  // A cpu runs everything; an npu runs convolutions and activations only.
  std::vector<uint64_t> support;
  for (const graph::Node& node : m.nodes()) {
    support.push_back(node.op_type == "Conv" || node.op_type == "Relu" ? 3 : 1);
  }
  auto atoms = partition::MakeAtoms(m, support, /*min_atoms=*/16, /*max_atoms=*/1000);
  ASSERT_TRUE(atoms.ok()) << atoms.status();
  const int n = static_cast<int>(atoms->atoms.size());
  ASSERT_GE(n, 16);
  ASSERT_LT(n, 40) << "the test wants budgets on both sides of the atom count";
  ASSERT_GT(atoms->units, 2);
  std::vector<Candidate> all = AllCandidates(*atoms);
  ASSERT_EQ(all.size(), static_cast<size_t>(n * (n + 1) / 2)) << "the cpu bit makes every range runnable";

  for (int budget = 1; budget <= 50; ++budget) {
    auto cands = partition::Candidates(*atoms, budget);
    if (budget < n) {
      ASSERT_FALSE(cands.ok()) << budget;
      EXPECT_EQ(cands.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(cands.status().message()), HasSubstr(std::to_string(budget)));
      EXPECT_THAT(std::string(cands.status().message()), HasSubstr(std::to_string(n) + " atoms"));
      EXPECT_THAT(std::string(cands.status().message()), HasSubstr("raise the budget"));
      continue;
    }
    ASSERT_TRUE(cands.ok()) << cands.status();
    ASSERT_EQ(cands->size(), std::min<size_t>(budget, all.size())) << budget;
    EXPECT_TRUE(std::equal(cands->begin(), cands->end(), all.begin())) << budget;
    // Properties, independently of the reference list.
    std::set<std::pair<int, int>> seen;
    bool past_whole = false;
    int last_len = 0;
    for (int i = 0; i < static_cast<int>(cands->size()); ++i) {
      const Candidate& c = (*cands)[i];
      EXPECT_NE(c.support, 0u);
      EXPECT_TRUE(seen.insert({c.first, c.last}).second) << "duplicate";
      if (i < n) {
        EXPECT_EQ(c, (Candidate{i, i + 1, atoms->atoms[i].support})) << "singletons come first";
        continue;
      }
      bool is_unit = atoms->atoms[c.first].unit == atoms->atoms[c.last - 1].unit &&
                     (c.first == 0 || atoms->atoms[c.first - 1].unit != atoms->atoms[c.first].unit) &&
                     (c.last == n || atoms->atoms[c.last].unit != atoms->atoms[c.first].unit);
      if (past_whole) {
        EXPECT_GE(c.last - c.first, last_len) << "ranges come shortest first";
        last_len = c.last - c.first;
      } else if (c.first == 0 && c.last == n) {
        past_whole = true;
      } else {
        EXPECT_TRUE(is_unit) << "units come before the whole model";
      }
    }
  }
  // An unlimited budget lists every runnable range.
  auto everything = partition::Candidates(*atoms, 100000);
  ASSERT_TRUE(everything.ok());
  EXPECT_EQ(*everything, all);
}

TEST(Candidates, RangesNoPuCanRunAreLeftOut) {
  auto m = Chain(4);
  ASSERT_TRUE(m);
  auto atoms = partition::MakeAtoms(*m, Masks(*m, {{"n0", 1}, {"n1", 2}, {"n2", 1}, {"n3", 2}}), 1, 4);
  ASSERT_TRUE(atoms.ok()) << atoms.status();
  auto cands = partition::Candidates(*atoms, 100);
  ASSERT_TRUE(cands.ok()) << cands.status();
  EXPECT_THAT(*cands, ElementsAre(Candidate{0, 1, 1}, Candidate{1, 2, 2}, Candidate{2, 3, 1}, Candidate{3, 4, 2}));
}

}  // namespace
}  // namespace baton
