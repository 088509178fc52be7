// The high-level dispatcher core, driven directly (no shell): entering/exiting
// node semantics on a diamond, forwarding with moves and clones, the in-flight
// bound, deadlines, late/duplicate completions, failures, and a randomized
// exactly-once check. Also ModelGraph validation and the plan converter.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "baton/core/dtype.h"
#include "baton/core/tensor.h"
#include "dispatch_test_util.h"
#include "baton/dispatch/from_plan.h"
#include "baton/dispatch/high_level.h"
#include "baton/dispatch/messages.h"
#include "baton/dispatch/model_graph.h"
#include "baton/dispatch/observer.h"
#include "baton/dispatch/workload.h"

namespace baton::dispatch {
namespace {

using testing::Ms;
using testing::Scalar;
using testing::ValueOf;

NamedTensors Named(std::vector<std::pair<std::string, int64_t>> values) {
  NamedTensors out;
  for (auto& [name, v] : values) out.emplace_back(name, Scalar(v));
  return out;
}

// p0: x -> a (dev 0); p1: a -> b (dev 0); p2: a -> c (dev 1); p3: b, c -> y (dev 1).
// Model outputs {y, b}: b is forwarded to p3 and is also a model output.
ModelGraph Diamond() {
  ModelGraph g;
  g.name = "diamond";
  g.inputs = {"x"};
  g.outputs = {"y", "b"};
  g.partitions = {
      {PartitionId(0), "diamond.p0", {"x"}, {"a"}, DeviceId(0), std::nullopt},
      {PartitionId(1), "diamond.p1", {"a"}, {"b"}, DeviceId(0), PuId(1)},
      {PartitionId(2), "diamond.p2", {"a"}, {"c"}, DeviceId(1), std::nullopt},
      {PartitionId(3), "diamond.p3", {"b", "c"}, {"y"}, DeviceId(1), std::nullopt},
  };
  return g;
}

// A Completion answering `a` with OK and `outputs`.
Completion Ok(const Assignment& a, NamedTensors outputs, Time end = kTimeZero) {
  Completion c;
  c.id = a.id;
  c.request = a.request;
  c.model = a.model;
  c.partition = a.partition;
  c.status = absl::OkStatus();
  c.outputs = std::move(outputs);
  c.pu = PuId(0);
  c.start = end;
  c.end = end;
  return c;
}

Completion Failed(const Assignment& a, absl::Status status) {
  Completion c = Ok(a, {});
  c.status = std::move(status);
  return c;
}

class HighLevelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(hl_.AddModel(kDiamond, Diamond(), {.max_in_flight = 2}).ok());
    hl_.set_observer(&trace_);
  }
  // Sends request `id` with x = `x`; returns the assignment it produces (p0).
  Assignment Start(uint64_t id, int64_t x, RequestOptions options = {}, Time now = kTimeZero) {
    HighLevelActions out = hl_.OnRequest(RequestId(id), kDiamond, Named({{"x", x}}), options, now);
    EXPECT_TRUE(out.finished.empty());
    EXPECT_EQ(out.assignments.size(), 1u);
    if (out.assignments.empty()) return {};
    EXPECT_EQ(out.assignments[0].device, DeviceId(0));
    return std::move(out.assignments[0].assignment);
  }

  static constexpr ModelId kDiamond{7};
  HighLevelCore hl_;
  TraceRecorder trace_;
};

TEST_F(HighLevelTest, AbortAllAnswersEveryRequestInFlightOnceAndIgnoresLaterCompletions) {
  Assignment a = Start(1, 5, {.deadline = Ms(50)});
  Start(2, 6);
  HighLevelActions out = hl_.AbortAll(absl::UnavailableError("stopping"), Ms(1));
  ASSERT_EQ(out.finished.size(), 2u);
  EXPECT_EQ(out.finished[0].request, RequestId(1));
  EXPECT_EQ(out.finished[1].request, RequestId(2));
  for (const FinishRequest& f : out.finished) EXPECT_EQ(f.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(hl_.in_flight(), 0u);
  EXPECT_EQ(hl_.NextExpiry(), std::nullopt) << "no expiry left for an answered request";
  EXPECT_EQ(hl_.stats().failed, 2u);
  out = hl_.OnCompletion(Ok(a, Named({{"a", 6}})), Ms(2));
  EXPECT_TRUE(out.finished.empty());
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_EQ(hl_.stats().completions_ignored, 1u);
  EXPECT_TRUE(hl_.AbortAll(absl::UnavailableError("again"), Ms(3)).finished.empty());
}

TEST_F(HighLevelTest, DiamondRunsInDataflowOrderAndFinishesWithAllOutputs) {
  Assignment p0 = Start(1, 5);
  EXPECT_EQ(p0.partition, PartitionId(0));
  ASSERT_EQ(p0.inputs.size(), 1u);
  EXPECT_EQ(p0.inputs[0].first, "x");
  EXPECT_EQ(ValueOf(p0.inputs[0].second), 5);

  // Exiting node of p0: `a` goes to both p1 (device 0, fixed PU 1) and p2 (device 1).
  HighLevelActions out = hl_.OnCompletion(Ok(p0, Named({{"a", 6}})), Ms(1));
  ASSERT_EQ(out.assignments.size(), 2u);
  EXPECT_TRUE(out.finished.empty());
  Assignment p1 = std::move(out.assignments[0].assignment);
  Assignment p2 = std::move(out.assignments[1].assignment);
  EXPECT_EQ(out.assignments[0].device, DeviceId(0));
  EXPECT_EQ(out.assignments[1].device, DeviceId(1));
  EXPECT_EQ(p1.partition, PartitionId(1));
  EXPECT_EQ(p1.fixed_pu, PuId(1));
  EXPECT_EQ(p2.partition, PartitionId(2));
  EXPECT_EQ(p2.fixed_pu, std::nullopt);
  EXPECT_EQ(ValueOf(*FindTensor(p1.inputs, "a")), 6);
  EXPECT_EQ(ValueOf(*FindTensor(p2.inputs, "a")), 6);

  // Entering node of p3 waits for both b and c.
  out = hl_.OnCompletion(Ok(p2, Named({{"c", 8}})), Ms(2));
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_TRUE(out.finished.empty());
  out = hl_.OnCompletion(Ok(p1, Named({{"b", 7}})), Ms(3));
  ASSERT_EQ(out.assignments.size(), 1u);
  EXPECT_TRUE(out.finished.empty());  // y is still missing
  Assignment p3 = std::move(out.assignments[0].assignment);
  EXPECT_EQ(p3.partition, PartitionId(3));
  ASSERT_EQ(p3.inputs.size(), 2u);  // in p3's input order
  EXPECT_EQ(p3.inputs[0].first, "b");
  EXPECT_EQ(ValueOf(p3.inputs[0].second), 7);
  EXPECT_EQ(p3.inputs[1].first, "c");
  EXPECT_EQ(ValueOf(p3.inputs[1].second), 8);

  out = hl_.OnCompletion(Ok(p3, Named({{"y", 15}})), Ms(4));
  EXPECT_TRUE(out.assignments.empty());
  ASSERT_EQ(out.finished.size(), 1u);
  const FinishRequest& f = out.finished[0];
  EXPECT_EQ(f.request, RequestId(1));
  EXPECT_EQ(f.model, kDiamond);
  EXPECT_TRUE(f.status.ok()) << f.status;
  ASSERT_EQ(f.outputs.size(), 2u);  // model output order: y, b
  EXPECT_EQ(f.outputs[0].first, "y");
  EXPECT_EQ(ValueOf(f.outputs[0].second), 15);
  EXPECT_EQ(f.outputs[1].first, "b");
  EXPECT_EQ(ValueOf(f.outputs[1].second), 7);
  EXPECT_EQ(f.arrived, kTimeZero);
  EXPECT_EQ(f.finished, Ms(4));
  EXPECT_EQ(hl_.in_flight(), 0u);
  EXPECT_EQ(hl_.outstanding_assignments(), 0u);
  EXPECT_EQ(hl_.stats().answered_ok, 1u);
  EXPECT_EQ(hl_.stats().assignments_sent, 4u);
  EXPECT_TRUE(out.cancels.empty()) << "nothing is left to withdraw after a success";
  EXPECT_EQ(hl_.stats().withdrawn, 0u);
}

// A deadline that passes withdraws everything its request has out; AbortAll
// withdraws everything in flight, grouped by device.
TEST_F(HighLevelTest, AnExpiredOrAbortedRequestWithdrawsWhatItHasOut) {
  Assignment a = Start(1, 5, {.deadline = Ms(10)});
  HighLevelActions out = hl_.OnTick(ExpiryTime(Ms(10)));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_EQ(out.cancels.size(), 1u);
  EXPECT_EQ(out.cancels[0].device, DeviceId(0));
  EXPECT_EQ(out.cancels[0].ids, std::vector<AssignmentId>{a.id});

  Assignment b = Start(2, 1, {}, Ms(20));
  Assignment c = Start(3, 2, {}, Ms(20));
  out = hl_.AbortAll(absl::UnavailableError("stopping"), Ms(21));
  ASSERT_EQ(out.finished.size(), 2u);
  ASSERT_EQ(out.cancels.size(), 1u);
  EXPECT_EQ(out.cancels[0].device, DeviceId(0));
  EXPECT_EQ(out.cancels[0].ids, (std::vector<AssignmentId>{b.id, c.id}));
  EXPECT_EQ(hl_.stats().withdrawn, 3u);
}

// A cancelled request is answered Cancelled at once and withdraws what it
// has out; cancelling it again, or an unknown request, does nothing; its
// late completion is ignored; other requests go on.
TEST_F(HighLevelTest, ACancelledRequestIsAnsweredAndWithdrawsWhatItHasOut) {
  Assignment a = Start(1, 5, {.deadline = Ms(50)});
  Assignment b = Start(2, 6);
  HighLevelActions out = hl_.OnCancel(RequestId(1), absl::CancelledError("gone"), Ms(1));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].request, RequestId(1));
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kCancelled);
  ASSERT_EQ(out.cancels.size(), 1u);
  EXPECT_EQ(out.cancels[0].ids, std::vector<AssignmentId>{a.id});
  EXPECT_EQ(hl_.NextExpiry(), std::nullopt) << "no expiry left for an answered request";
  EXPECT_EQ(hl_.stats().cancelled, 1u);
  EXPECT_TRUE(hl_.OnCancel(RequestId(1), absl::CancelledError("again"), Ms(2)).finished.empty());
  EXPECT_TRUE(hl_.OnCancel(RequestId(99), absl::CancelledError("unknown"), Ms(2)).finished.empty());
  EXPECT_EQ(hl_.stats().cancelled, 1u);
  out = hl_.OnCompletion(Ok(a, Named({{"a", 6}})), Ms(3));
  EXPECT_TRUE(out.finished.empty());
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_EQ(hl_.stats().completions_ignored, 1u);
  EXPECT_EQ(hl_.in_flight(), 1u);
  out = hl_.OnCompletion(Ok(b, Named({{"a", 7}})), Ms(3));
  EXPECT_FALSE(out.assignments.empty()) << "the other request goes on";
}

// Device loss (a remote agent): ready partitions avoid an unavailable device
// and go to their first available fallback, without the primary's fixed PU;
// assignments the lost device hands back are sent again with the same id;
// with no device left the request fails with Unavailable.
TEST(HighLevelFailoverTest, UnavailableDevicesAreAvoidedAndReturnedWorkIsReissued) {
  ModelGraph g = Diamond();
  for (PartitionNode& p : g.partitions) p.fallback_devices = {p.device == DeviceId(0) ? DeviceId(1) : DeviceId(0)};
  HighLevelCore hl;
  ASSERT_TRUE(hl.AddModel(ModelId(7), g).ok());

  HighLevelActions out = hl.OnRequest(RequestId(1), ModelId(7), Named({{"x", 5}}), {}, kTimeZero);
  ASSERT_EQ(out.assignments.size(), 1u);
  Assignment p0 = std::move(out.assignments[0].assignment);
  // Device 0 is lost while p0 runs there: it hands p0 back.
  hl.SetDeviceAvailable(DeviceId(0), false);
  EXPECT_FALSE(hl.device_available(DeviceId(0)));
  const AssignmentId p0_id = p0.id;
  std::vector<Assignment> back;
  back.push_back(std::move(p0));
  out = hl.OnReturned(std::move(back), DeviceId(0), Ms(1));
  ASSERT_EQ(out.assignments.size(), 1u);
  EXPECT_EQ(out.assignments[0].device, DeviceId(1));
  EXPECT_EQ(out.assignments[0].assignment.id, p0_id);  // same id: a late answer is a duplicate
  EXPECT_EQ(hl.stats().reissued, 1u);

  // p1 (primary device 0, fixed PU 1) now goes to device 1 without its fixed PU.
  out = hl.OnCompletion(Ok(out.assignments[0].assignment, Named({{"a", 6}})), Ms(2));
  ASSERT_EQ(out.assignments.size(), 2u);
  for (const SendAssignment& send : out.assignments) {
    EXPECT_EQ(send.device, DeviceId(1));
    EXPECT_EQ(send.assignment.fixed_pu, std::nullopt);
  }
  EXPECT_EQ(hl.stats().rerouted, 1u);
  // A late answer for p0 from the lost device is ignored.
  Assignment ghost;
  ghost.id = p0_id;
  ghost.request = RequestId(1);
  ghost.model = ModelId(7);
  ghost.partition = PartitionId(0);
  const uint64_t ignored = hl.stats().completions_ignored;
  (void)hl.OnCompletion(Ok(ghost, Named({{"a", 6}})), Ms(3));
  EXPECT_EQ(hl.stats().completions_ignored, ignored + 1);

  // Device 1 is lost too: what it hands back has nowhere to go.
  hl.SetDeviceAvailable(DeviceId(1), false);
  std::vector<Assignment> both;
  for (SendAssignment& send : out.assignments) both.push_back(std::move(send.assignment));
  out = hl.OnReturned(std::move(both), DeviceId(1), Ms(4));
  EXPECT_TRUE(out.assignments.empty());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(hl.in_flight(), 0u);

  // Back again: new requests run on device 0.
  hl.SetDeviceAvailable(DeviceId(0), true);
  hl.SetDeviceAvailable(DeviceId(1), true);
  out = hl.OnRequest(RequestId(2), ModelId(7), Named({{"x", 1}}), {}, Ms(5));
  ASSERT_EQ(out.assignments.size(), 1u);
  EXPECT_EQ(out.assignments[0].device, DeviceId(0));
  // No device at all for a new request: Unavailable at once.
  hl.SetDeviceAvailable(DeviceId(0), false);
  hl.SetDeviceAvailable(DeviceId(1), false);
  out = hl.OnRequest(RequestId(3), ModelId(7), Named({{"x", 1}}), {}, Ms(6));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(out.finished[0].status.message().find("diamond.p0"), std::string::npos);
}

TEST_F(HighLevelTest, RequestIdsBeyond32BitsTravelWhole) {
  // Request ids are 64-bit: a long-lived server hands out more than 2^32.
  const uint64_t big = (uint64_t{1} << 32) + 5;
  Assignment p0 = Start(big, 1);
  EXPECT_EQ(p0.request, RequestId(big));
  EXPECT_EQ(p0.request.value, big);
  static_assert(sizeof(RequestId::Value) == 8 && sizeof(AssignmentId::Value) == 8);
}

TEST_F(HighLevelTest, TensorsMoveAndAreClonedOnlyForExtraReaders) {
  Tensor x = Scalar(1);
  const std::byte* x_buffer = x.bytes().data();
  NamedTensors inputs;
  inputs.emplace_back("x", std::move(x));
  HighLevelActions out = hl_.OnRequest(RequestId(1), kDiamond, std::move(inputs), {}, kTimeZero);
  ASSERT_EQ(out.assignments.size(), 1u);
  Assignment p0 = std::move(out.assignments[0].assignment);
  EXPECT_EQ(p0.inputs[0].second.bytes().data(), x_buffer);  // one reader: moved

  Tensor a = Scalar(2);
  const std::byte* a_buffer = a.bytes().data();
  NamedTensors outputs;
  outputs.emplace_back("a", std::move(a));
  out = hl_.OnCompletion(Ok(p0, std::move(outputs)), Ms(1));
  ASSERT_EQ(out.assignments.size(), 2u);
  const std::byte* in_p1 = out.assignments[0].assignment.inputs[0].second.bytes().data();
  const std::byte* in_p2 = out.assignments[1].assignment.inputs[0].second.bytes().data();
  // Two readers: one clone, and the original moves into the last reader.
  EXPECT_NE(in_p1, in_p2);
  EXPECT_EQ(in_p2, a_buffer);
}

TEST_F(HighLevelTest, ModelOutputThatIsAlsoForwardedKeepsItsValueInBothPlaces) {
  Assignment p0 = Start(1, 0);
  HighLevelActions out = hl_.OnCompletion(Ok(p0, Named({{"a", 1}})), Ms(1));
  ASSERT_EQ(out.assignments.size(), 2u);
  Assignment p1 = std::move(out.assignments[0].assignment);
  Assignment p2 = std::move(out.assignments[1].assignment);
  Tensor b = Scalar(42);
  const std::byte* b_buffer = b.bytes().data();
  NamedTensors outputs;
  outputs.emplace_back("b", std::move(b));
  hl_.OnCompletion(Ok(p1, std::move(outputs)), Ms(2));
  out = hl_.OnCompletion(Ok(p2, Named({{"c", 1}})), Ms(3));
  ASSERT_EQ(out.assignments.size(), 1u);
  Assignment p3 = std::move(out.assignments[0].assignment);
  const std::byte* b_in_p3 = FindTensor(p3.inputs, "b")->bytes().data();
  out = hl_.OnCompletion(Ok(p3, Named({{"y", 9}})), Ms(4));
  ASSERT_EQ(out.finished.size(), 1u);
  const Tensor* b_out = FindTensor(out.finished[0].outputs, "b");
  ASSERT_NE(b_out, nullptr);
  EXPECT_EQ(ValueOf(*b_out), 42);
  EXPECT_EQ(ValueOf(*FindTensor(p3.inputs, "b")), 42);
  EXPECT_NE(b_out->bytes().data(), b_in_p3);   // two copies...
  EXPECT_EQ(b_out->bytes().data(), b_buffer);  // ...and the model output got the original
}

TEST_F(HighLevelTest, RejectsBadRequestsAtOnceWithOneAnswerEach) {
  struct Case {
    ModelId model;
    NamedTensors inputs;
    absl::StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back({ModelId(99), Named({{"x", 1}}), absl::StatusCode::kNotFound});
  cases.push_back({kDiamond, Named({}), absl::StatusCode::kInvalidArgument});
  cases.push_back({kDiamond, Named({{"x", 1}, {"x", 2}}), absl::StatusCode::kInvalidArgument});
  cases.push_back({kDiamond, Named({{"x", 1}, {"z", 2}}), absl::StatusCode::kInvalidArgument});
  uint32_t id = 1;
  for (auto& c : cases) {
    HighLevelActions out = hl_.OnRequest(RequestId(id), c.model, std::move(c.inputs), {}, kTimeZero);
    EXPECT_TRUE(out.assignments.empty());
    ASSERT_EQ(out.finished.size(), 1u);
    EXPECT_EQ(out.finished[0].request, RequestId(id));
    EXPECT_EQ(out.finished[0].status.code(), c.code) << out.finished[0].status;
    ++id;
  }
  // A request id that is in flight is refused; the first request is unaffected.
  Start(10, 1);
  HighLevelActions out = hl_.OnRequest(RequestId(10), kDiamond, Named({{"x", 1}}), {}, kTimeZero);
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(hl_.in_flight(), 1u);
}

TEST_F(HighLevelTest, MaxInFlightRejectsWithResourceExhaustedUntilASlotFrees) {
  Assignment a1 = Start(1, 1);
  Start(2, 2);
  HighLevelActions out = hl_.OnRequest(RequestId(3), kDiamond, Named({{"x", 3}}), {}, kTimeZero);
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_EQ(hl_.in_flight(kDiamond), 2u);
  EXPECT_EQ(hl_.stats().rejected, 1u);
  // Request 1 fails; its slot is free again.
  out = hl_.OnCompletion(Failed(a1, absl::InternalError("boom")), Ms(1));
  ASSERT_EQ(out.finished.size(), 1u);
  Start(4, 4, {}, Ms(1));
  EXPECT_EQ(hl_.in_flight(kDiamond), 2u);
}

TEST_F(HighLevelTest, DeadlinePassesOnTickAndLateCompletionsAreIgnored) {
  Assignment p0 = Start(1, 1, {.deadline = Ms(10)});
  EXPECT_EQ(hl_.NextExpiry(), ExpiryTime(Ms(10)));
  EXPECT_TRUE(hl_.OnTick(Ms(10)).finished.empty());  // finishing at the deadline is on time
  HighLevelActions out = hl_.OnTick(ExpiryTime(Ms(10)));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(out.finished[0].finished, ExpiryTime(Ms(10)));
  EXPECT_EQ(hl_.NextExpiry(), std::nullopt);
  EXPECT_EQ(hl_.outstanding_assignments(), 0u);

  out = hl_.OnCompletion(Ok(p0, Named({{"a", 1}})), Ms(11));
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_TRUE(out.finished.empty());
  EXPECT_EQ(hl_.stats().completions_ignored, 1u);
  EXPECT_EQ(trace_.events().back().kind, TraceKind::kCompletionIgnored);
}

TEST_F(HighLevelTest, DeadlineIsCheckedOnCompletionAndOnArrival) {
  Assignment p0 = Start(1, 1, {.deadline = Ms(5)});
  // The completion arrives late: the request is answered DeadlineExceeded by this
  // event and the completion itself is ignored.
  HighLevelActions out = hl_.OnCompletion(Ok(p0, Named({{"a", 1}})), Ms(6));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_EQ(hl_.stats().completions_ignored, 1u);

  out = hl_.OnRequest(RequestId(2), kDiamond, Named({{"x", 1}}), {.deadline = Ms(5)}, Ms(6));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(out.assignments.empty());
}

TEST_F(HighLevelTest, DuplicateAndMismatchedCompletionsAreIgnored) {
  Assignment p0 = Start(1, 1);
  Completion wrong = Ok(p0, Named({{"a", 1}}));
  wrong.partition = PartitionId(3);  // not what this assignment was
  HighLevelActions out = hl_.OnCompletion(std::move(wrong), Ms(1));
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_EQ(hl_.stats().completions_ignored, 1u);

  out = hl_.OnCompletion(Ok(p0, Named({{"a", 1}})), Ms(1));
  EXPECT_EQ(out.assignments.size(), 2u);
  out = hl_.OnCompletion(Ok(p0, Named({{"a", 1}})), Ms(2));  // the same answer again
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_TRUE(out.finished.empty());
  EXPECT_EQ(hl_.stats().completions_ignored, 2u);
  EXPECT_EQ(hl_.in_flight(), 1u);
}

// When one partition fails, its request is answered at once, and the sibling
// still out on another device is withdrawn; its late answer is ignored.
TEST_F(HighLevelTest, FailedPartitionFailsTheRequestAndWithdrawsItsSiblings) {
  Assignment p0 = Start(1, 1);
  HighLevelActions out = hl_.OnCompletion(Ok(p0, Named({{"a", 1}})), Ms(1));
  ASSERT_EQ(out.assignments.size(), 2u);
  Assignment p1 = std::move(out.assignments[0].assignment);
  Assignment p2 = std::move(out.assignments[1].assignment);
  out = hl_.OnCompletion(Failed(p2, absl::UnavailableError("PU fell over")), Ms(2));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(out.finished[0].status.message().find("diamond.p2"), std::string::npos);
  EXPECT_NE(out.finished[0].status.message().find("PU fell over"), std::string::npos);
  EXPECT_TRUE(out.finished[0].outputs.empty());
  ASSERT_EQ(out.cancels.size(), 1u);
  EXPECT_EQ(out.cancels[0].device, DeviceId(0));  // p1's device
  EXPECT_EQ(out.cancels[0].ids, std::vector<AssignmentId>{p1.id});
  EXPECT_EQ(hl_.stats().withdrawn, 1u);
  EXPECT_EQ(hl_.outstanding_assignments(), 0u);
  out = hl_.OnCompletion(Failed(p1, absl::CancelledError("withdrawn")), Ms(3));  // its answer, ignored
  EXPECT_TRUE(out.finished.empty());
  EXPECT_TRUE(out.assignments.empty());
  EXPECT_TRUE(out.cancels.empty());
  EXPECT_EQ(hl_.stats().failed, 1u);
  EXPECT_EQ(hl_.stats().completions_ignored, 1u);
}

TEST_F(HighLevelTest, CompletionWithoutADeclaredOutputFailsTheRequest) {
  Assignment p0 = Start(1, 1);
  HighLevelActions out = hl_.OnCompletion(Ok(p0, Named({{"not_a", 1}})), Ms(1));
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(out.finished[0].status.message().find("'a'"), std::string::npos);
  EXPECT_TRUE(out.assignments.empty());
}

TEST(HighLevelCoreTest, PassThroughOutputsAndInputlessPartitions) {
  HighLevelCore hl;
  // Model output `x` is a model input; `k` comes from a partition without inputs.
  ModelGraph g;
  g.name = "pass";
  g.inputs = {"x", "unused"};
  g.outputs = {"x", "k"};
  g.partitions = {{PartitionId(0), "pass.p0", {}, {"k"}, DeviceId(0), std::nullopt}};
  ASSERT_TRUE(hl.AddModel(ModelId(1), g).ok());
  HighLevelActions out = hl.OnRequest(RequestId(1), ModelId(1), Named({{"unused", 0}, {"x", 3}}), {}, kTimeZero);
  ASSERT_EQ(out.assignments.size(), 1u);
  EXPECT_TRUE(out.assignments[0].assignment.inputs.empty());
  out = hl.OnCompletion(Ok(out.assignments[0].assignment, Named({{"k", 4}})), Ms(1));
  ASSERT_EQ(out.finished.size(), 1u);
  ASSERT_TRUE(out.finished[0].status.ok());
  EXPECT_EQ(ValueOf(*FindTensor(out.finished[0].outputs, "x")), 3);
  EXPECT_EQ(ValueOf(*FindTensor(out.finished[0].outputs, "k")), 4);

  // Only pass-through outputs: answered at once, nothing is sent.
  ModelGraph id;
  id.name = "identity";
  id.inputs = {"x"};
  id.outputs = {"x"};
  ASSERT_TRUE(hl.AddModel(ModelId(2), id).ok());
  out = hl.OnRequest(RequestId(2), ModelId(2), Named({{"x", 5}}), {}, kTimeZero);
  EXPECT_TRUE(out.assignments.empty());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(ValueOf(out.finished[0].outputs[0].second), 5);
}

TEST(HighLevelCoreTest, AddModelRejectsBadGraphsAndIds) {
  HighLevelCore hl;
  ASSERT_TRUE(hl.AddModel(ModelId(1), Diamond()).ok());
  EXPECT_EQ(hl.AddModel(ModelId(1), Diamond()).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(hl.AddModel(ModelId(2), Diamond(), {.max_in_flight = 0}).code(), absl::StatusCode::kInvalidArgument);

  auto expect_invalid = [](ModelGraph g, const std::string& needle) {
    absl::Status s = ValidateModelGraph(g);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s;
  };
  ModelGraph g = Diamond();
  g.partitions[0].inputs = {"y"};  // p0 reads p3's output: a cycle
  expect_invalid(g, "cycle");
  g = Diamond();
  g.partitions[2].outputs = {"b"};
  expect_invalid(g, "one producer");
  g = Diamond();
  g.partitions[3].inputs.push_back("ghost");
  expect_invalid(g, "'ghost'");
  g = Diamond();
  g.outputs.push_back("nowhere");
  expect_invalid(g, "'nowhere'");
  g = Diamond();
  g.partitions[1].id = PartitionId(0);
  expect_invalid(g, "used twice");
  g = Diamond();
  g.partitions[1].outputs.clear();
  expect_invalid(g, "no outputs");
  g = Diamond();
  g.outputs.clear();
  expect_invalid(g, "no outputs");
  g = Diamond();
  g.partitions[0].outputs = {"x"};
  expect_invalid(g, "model input");
}

TEST(FromPlanTest, ConvertsInterfacesAndPlacement) {
  partition::PartitionPlan plan;
  plan.model_name = "m";
  plan.model_inputs = {"x"};
  plan.model_outputs = {"y"};
  partition::Partition p0;
  p0.id = PartitionId(0);
  p0.name = "m.p0";
  p0.interface.inputs = {"x"};
  p0.interface.outputs = {"t"};
  partition::Partition p1;
  p1.id = PartitionId(1);
  p1.name = "m.p1";
  p1.interface.inputs = {"t", "x"};
  p1.interface.outputs = {"y"};
  plan.partitions = {p0, p1};
  std::vector<Placement> placement = {{DeviceId(0), PuId(2)}, {DeviceId(1), std::nullopt}};
  absl::StatusOr<ModelGraph> g = ModelGraphFromPlan(plan, placement);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->name, "m");
  ASSERT_EQ(g->partitions.size(), 2u);
  EXPECT_EQ(g->partitions[1].inputs, (std::vector<std::string>{"t", "x"}));
  EXPECT_EQ(g->partitions[0].fixed_pu, PuId(2));
  EXPECT_EQ(g->partitions[1].device, DeviceId(1));
  absl::StatusOr<ModelGraph> one = ModelGraphFromPlan(plan, DeviceId(3));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->partitions[1].device, DeviceId(3));
  EXPECT_EQ(ModelGraphFromPlan(plan, std::span<const Placement>(placement).first(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Random interleavings of arrivals, completions (OK, failed, duplicated, for
// finished requests), ticks and deadlines: every request is answered exactly
// once, and the core ends with nothing in flight.
TEST(HighLevelCoreTest, EveryRequestIsAnsweredExactlyOnceUnderRandomEvents) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    HighLevelCore hl;
    ASSERT_TRUE(hl.AddModel(ModelId(1), Diamond(), {.max_in_flight = 8}).ok());
    Rng rng(seed);
    std::vector<Assignment> sent;
    std::vector<Completion> delivered;  // for duplicates
    std::map<uint32_t, int> answers;
    uint32_t next_id = 1;
    Time now = kTimeZero;
    auto take = [&](HighLevelActions out) {
      for (auto& s : out.assignments) sent.push_back(std::move(s.assignment));
      for (auto& f : out.finished) ++answers[f.request.value];
    };
    auto answer = [&](Assignment& a) {
      Completion c;
      uint64_t roll = rng.Below(100);
      if (roll < 5) {
        c = Failed(a, absl::InternalError("injected"));
      } else {
        NamedTensors outs;
        for (const auto& out : hl.model(ModelId(1))->partitions[a.partition.value].outputs) {
          outs.emplace_back(out, Scalar(1));
        }
        c = Ok(a, std::move(outs), now);
      }
      Completion copy = Ok(a, {}, now);
      copy.status = c.status;
      delivered.push_back(std::move(copy));
      take(hl.OnCompletion(std::move(c), now));
    };
    for (int step = 0; step < 3000; ++step) {
      now += Duration(static_cast<int64_t>(rng.Below(200'000)));
      uint64_t what = rng.Below(100);
      if (what < 30) {
        RequestOptions o;
        if (rng.Below(2) == 0) o.deadline = now + Duration(static_cast<int64_t>(rng.Below(2'000'000)));
        take(hl.OnRequest(RequestId(next_id++), ModelId(1), Named({{"x", 1}}), o, now));
      } else if (what < 80 && !sent.empty()) {
        size_t i = rng.Below(sent.size());
        std::swap(sent[i], sent.back());
        Assignment a = std::move(sent.back());
        sent.pop_back();
        answer(a);
      } else if (what < 85 && next_id > 1) {
        // A client cancels a request: in flight, answered already, or (rarely) not sent yet.
        take(hl.OnCancel(RequestId(1 + rng.Below(next_id)), absl::CancelledError("cancelled"), now));
      } else if (what < 90 && !delivered.empty()) {
        Completion& d = delivered[rng.Below(delivered.size())];
        Completion dup = Ok(Assignment{d.id, d.request, d.model, d.partition, {}, {}, 0, {}}, {}, now);
        dup.status = absl::InternalError("duplicate");
        take(hl.OnCompletion(std::move(dup), now));
      } else {
        take(hl.OnTick(now));
      }
    }
    // Drain: answer everything still outstanding, then let every deadline pass.
    while (!sent.empty()) {
      Assignment a = std::move(sent.back());
      sent.pop_back();
      answer(a);
    }
    take(hl.OnTick(now + std::chrono::seconds(10)));
    ASSERT_EQ(answers.size(), next_id - 1) << "seed " << seed;
    for (const auto& [id, n] : answers) ASSERT_EQ(n, 1) << "request " << id << " seed " << seed;
    EXPECT_EQ(hl.in_flight(), 0u);
    EXPECT_EQ(hl.outstanding_assignments(), 0u);
    EXPECT_EQ(hl.NextExpiry(), std::nullopt);
    const HighLevelStats& s = hl.stats();
    EXPECT_EQ(s.answered_ok + s.rejected + s.deadline_exceeded + s.cancelled + s.failed, s.requests);
    EXPECT_GT(s.answered_ok, 0u);
    EXPECT_GT(s.cancelled, 0u);
    EXPECT_GT(s.deadline_exceeded, 0u);
    EXPECT_GT(s.completions_ignored, 0u);
  }
}

}  // namespace
}  // namespace baton::dispatch
