#include "baton/plan/whole_assignment.h"

#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace baton::plan {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(WholeAssignmentTest, EmptyInputs) {
  EXPECT_TRUE(BestWholeAssignment({}).empty());
  EXPECT_EQ(BestWholeAssignment({{}, {}}), (std::vector<size_t>{0, 0}));
}

TEST(WholeAssignmentTest, TiesGoToTheSmallerTotal) {
  EXPECT_EQ(BestWholeAssignment({{10, 20}, {10, 20}}), (std::vector<size_t>{0, 0}));
}

TEST(WholeAssignmentTest, BalancesTheBusiestPu) {
  // Four equal models on two equal PUs: two each.
  const std::vector<size_t> a = BestWholeAssignment({{5, 5}, {5, 5}, {5, 5}, {5, 5}});
  size_t on0 = 0;
  for (size_t u : a) on0 += u == 0 ? 1 : 0;
  EXPECT_EQ(on0, 2u);
  // A slow model alone on one PU, the small ones together on the other.
  const std::vector<size_t> b = BestWholeAssignment({{30, 30}, {10, 10}, {10, 10}});
  EXPECT_EQ(b[1], b[2]);
  EXPECT_NE(b[0], b[1]);
}

TEST(WholeAssignmentTest, NeverPicksAPuThatCannotRunTheModel) {
  EXPECT_EQ(BestWholeAssignment({{kInf, 50}, {1, 1}}), (std::vector<size_t>{1, 0}));
  EXPECT_EQ(BestWholeAssignment({{1e300, 50}, {1, 1e300}}), (std::vector<size_t>{1, 0}));
}

TEST(WholeAssignmentTest, GreedyBeyondTheExhaustiveLimit) {
  // 3^12 = 531,441 assignments: the greedy path. Twelve equal models on three
  // equal PUs: four each.
  const std::vector<size_t> a = BestWholeAssignment(std::vector<std::vector<double>>(12, {1, 1, 1}));
  ASSERT_EQ(a.size(), 12u);
  std::vector<int> count(3, 0);
  for (size_t u : a) ++count[u];
  EXPECT_EQ(count, (std::vector<int>{4, 4, 4}));
  // One PU cannot run anything: the others share the work.
  std::vector<std::vector<double>> rows(12, {kInf, 2, 2});
  for (size_t u : BestWholeAssignment(rows)) EXPECT_NE(u, 0u);
}

}  // namespace
}  // namespace baton::plan
