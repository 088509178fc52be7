// Dynamic batching: stacking tensors along dimension 0 and cutting them back,
// and the batcher in front of a (fake) runtime: when a batch goes out, what
// each caller gets back, and what is never batched.
#include "baton/runtime/batcher.h"

#include "baton/core/tensor_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <vector>

namespace baton::runtime {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

Tensor Rows(std::vector<float> values, int64_t cols) {
  Tensor t(dtype::kFloat, {static_cast<int64_t>(values.size()) / cols, cols});
  for (size_t i = 0; i < values.size(); ++i) t.data<float>()[i] = values[i];
  return t;
}

std::vector<float> Values(const Tensor& t) { return {t.data<float>().begin(), t.data<float>().end()}; }

TEST(BatchTensors, ConcatThenSplitGivesThePartsBack) {
  const Tensor a = Rows({1, 2}, 2);
  const Tensor b = Rows({3, 4, 5, 6}, 2);
  const Tensor* parts[] = {&a, &b};
  absl::StatusOr<Tensor> whole = ConcatDim0(parts);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Values(*whole), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  const int64_t sizes[] = {1, 2};
  absl::StatusOr<std::vector<Tensor>> pieces = SplitDim0(*whole, sizes);
  ASSERT_TRUE(pieces.ok()) << pieces.status();
  ASSERT_EQ(pieces->size(), 2u);
  EXPECT_EQ(Values((*pieces)[0]), Values(a));
  EXPECT_EQ(Values((*pieces)[1]), Values(b));
  EXPECT_EQ((*pieces)[1].shape(), b.shape());
}

TEST(BatchTensors, MismatchesAreErrorsNamingThePart) {
  const Tensor a = Rows({1, 2}, 2);
  const Tensor c = Rows({1, 2, 3}, 3);
  const Tensor* bad[] = {&a, &c};
  absl::StatusOr<Tensor> r = ConcatDim0(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("part 1 is float32[1,3]"));
  const Tensor scalar(dtype::kFloat, {});
  const Tensor* one[] = {&scalar};
  EXPECT_THAT(ConcatDim0(one).status().message(), HasSubstr("scalar"));
  EXPECT_FALSE(ConcatDim0({}).ok());
  const Tensor s = Tensor::Strings({1}, {"x"});
  const Tensor* strings[] = {&s};
  EXPECT_FALSE(ConcatDim0(strings).ok());
  const int64_t wrong[] = {1, 1};
  EXPECT_THAT(SplitDim0(a, wrong).status().message(), HasSubstr("1+1 = 2 rows"));
  const int64_t negative[] = {-1, 2};
  EXPECT_FALSE(SplitDim0(a, negative).ok());
}

// A fake runtime: records what it was sent; the test answers.
struct FakeRuntime {
  struct Sent {
    ModelId model;
    NamedTensors inputs;
    dispatch::RequestOptions options;
    DoneCallback done;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Sent> sent;
  Batcher::SubmitFn Submit() {
    return [this](ModelId m, NamedTensors in, dispatch::RequestOptions o, DoneCallback done) {
      RequestId id;
      {
        std::lock_guard lock(mu);
        id = RequestId(static_cast<uint32_t>(sent.size()));
        sent.push_back(Sent{m, std::move(in), o, std::move(done)});
      }
      cv.notify_all();
      return id;
    };
  }
  // Records the ids the batcher cancels.
  std::vector<RequestId> cancelled;
  Batcher::CancelFn Cancel() {
    return [this](RequestId id) {
      std::lock_guard lock(mu);
      cancelled.push_back(id);
    };
  }
  // Waits (bounded, not polled) until `n` requests were sent; false on timeout.
  bool WaitForCount(size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 60s, [&] { return sent.size() >= n; });
  }
  size_t count() {
    std::lock_guard lock(mu);
    return sent.size();
  }
  // Answers request k with its own input doubled, as output "y".
  void AnswerDoubled(size_t k, Time finished) {
    Sent s;
    {
      std::lock_guard lock(mu);
      s = std::move(sent[k]);
    }
    Tensor y = s.inputs[0].second.Clone();
    for (float& v : y.data<float>()) v *= 2;
    RequestResult r;
    r.id = RequestId(static_cast<uint32_t>(k));
    r.model = s.model;
    r.outputs.emplace_back("y", std::move(y));
    r.finished = finished;
    s.done(std::move(r));
  }
};

Time At(int ms) { return kTimeZero + std::chrono::milliseconds(ms); }

NamedTensors Input(std::vector<float> row) {
  NamedTensors in;
  in.emplace_back("x", Rows(std::move(row), 2));
  return in;
}

TEST(BatcherTest, AFullBatchGoesAtOnceAndEachCallerGetsItsRows) {
  FakeRuntime rt;
  std::atomic<int> now_ms{0};
  Batcher batcher(rt.Submit(), [&] { return At(now_ms.load()); });
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 3, .max_queue_delay = std::chrono::hours(1)}).ok());
  std::vector<RequestResult> got(3);
  for (int i = 0; i < 3; ++i) {
    now_ms = 10 * i;
    dispatch::RequestOptions o;
    o.priority = i;
    if (i == 1) o.deadline = At(500);
    if (i == 2) o.deadline = At(900);
    batcher.Submit(ModelId(1), Input({float(i), float(i) + 0.5f}), o, [&, i](RequestResult r) { got[i] = std::move(r); });
    EXPECT_EQ(rt.count(), i < 2 ? 0u : 1u);
  }
  ASSERT_EQ(rt.count(), 1u);
  EXPECT_EQ(rt.sent[0].inputs[0].second.shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(rt.sent[0].options.priority, 2);       // the highest
  EXPECT_EQ(rt.sent[0].options.deadline, At(500));  // the earliest
  rt.AnswerDoubled(0, At(70));
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(got[i].status.ok()) << got[i].status;
    ASSERT_EQ(got[i].outputs.size(), 1u);
    EXPECT_EQ(Values(got[i].outputs[0].second), (std::vector<float>{2.0f * i, 2.0f * i + 1}));
    EXPECT_EQ(got[i].submitted, At(10 * i));  // its own submit time
    EXPECT_EQ(got[i].finished, At(70));
  }
  EXPECT_EQ(batcher.stats(ModelId(1)).batches, 1u);
  EXPECT_EQ(batcher.stats(ModelId(1)).requests, 3u);
  ASSERT_EQ(batcher.stats(ModelId(1)).by_size.size(), 1u);
  EXPECT_EQ(batcher.stats(ModelId(1)).by_size.at(3).executions, 1u);  // one execution of three requests
}

TEST(BatcherTest, TheOldestRequestWaitsAtMostTheDelay) {
  // A fake clock and no timer thread: SendDue decides exactly at the delay.
  FakeRuntime rt;
  std::atomic<int> now_ms{0};
  Batcher batcher(rt.Submit(), [&] { return At(now_ms.load()); }, /*own_timer=*/false);
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 8, .max_queue_delay = 20ms}).ok());
  std::vector<RequestResult> got(2);
  batcher.Submit(ModelId(1), Input({1, 2}), {}, [&](RequestResult r) { got[0] = std::move(r); });
  now_ms = 5;
  batcher.Submit(ModelId(1), Input({3, 4}), {}, [&](RequestResult r) { got[1] = std::move(r); });
  now_ms = 19;
  batcher.SendDue();
  EXPECT_EQ(rt.count(), 0u);  // the oldest has waited 19 ms
  now_ms = 20;
  batcher.SendDue();
  ASSERT_EQ(rt.count(), 1u);  // both, as one batch
  EXPECT_EQ(rt.sent[0].inputs[0].second.shape()[0], 2);
  rt.AnswerDoubled(0, At(30));
  EXPECT_EQ(Values(got[0].outputs[0].second), (std::vector<float>{2, 4}));
  EXPECT_EQ(Values(got[1].outputs[0].second), (std::vector<float>{6, 8}));
  EXPECT_EQ(got[1].submitted, At(5));
  EXPECT_EQ(batcher.waiting(), 0u);
}

TEST(BatcherTest, ItsTimerThreadSendsAWaitingBatch) {
  // The real clock and the batcher's own timer: a lone request is sent once
  // its 1 ms delay is over (waited for on a condition variable, bounded).
  FakeRuntime rt;
  const auto start = std::chrono::steady_clock::now();
  Batcher batcher(rt.Submit(), [&] { return kTimeZero + (std::chrono::steady_clock::now() - start); });
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 8, .max_queue_delay = 1ms}).ok());
  batcher.Submit(ModelId(1), Input({1, 2}), {}, [](RequestResult) {});
  ASSERT_TRUE(rt.WaitForCount(1));
  EXPECT_EQ(batcher.waiting(), 0u);
  EXPECT_EQ(batcher.stats(ModelId(1)).batches, 1u);
}

TEST(BatcherTest, UnstackableRequestsGoOneByOneAndFailuresReachEveryMember) {
  FakeRuntime rt;
  Batcher batcher(rt.Submit(), [] { return kTimeZero; });
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 2, .max_queue_delay = std::chrono::hours(1)}).ok());
  NamedTensors wide;
  wide.emplace_back("x", Rows({1, 2, 3}, 3));
  batcher.Submit(ModelId(1), Input({1, 2}), {}, [](RequestResult) {});
  batcher.Submit(ModelId(1), std::move(wide), {}, [](RequestResult) {});
  ASSERT_EQ(rt.count(), 2u);  // another shape: sent separately
  EXPECT_EQ(rt.sent[0].inputs[0].second.shape()[0], 1);
  EXPECT_EQ(rt.sent[1].inputs[0].second.shape()[1], 3);

  std::vector<absl::Status> statuses;
  for (int i = 0; i < 2; ++i) {
    batcher.Submit(ModelId(1), Input({1, 2}), {}, [&](RequestResult r) { statuses.push_back(r.status); });
  }
  ASSERT_EQ(rt.count(), 3u);
  RequestResult failed;
  failed.status = absl::ResourceExhaustedError("queue full");
  rt.sent[2].done(std::move(failed));
  ASSERT_EQ(statuses.size(), 2u);
  for (const absl::Status& s : statuses) EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);

  // Executions by size: the two sent one by one ran alone (size 1 each, with
  // their PU time); the failed batch of two is not counted.
  for (size_t k = 0; k < 2; ++k) {
    RequestResult ok;
    ok.compute = std::chrono::milliseconds(3 + static_cast<int>(k));
    rt.sent[k].done(std::move(ok));
  }
  const BatcherStats stats = batcher.stats(ModelId(1));
  ASSERT_EQ(stats.by_size.size(), 1u);
  EXPECT_EQ(stats.by_size.at(1).executions, 2u);
  EXPECT_EQ(stats.by_size.at(1).compute, std::chrono::milliseconds(7));
}

TEST(BatcherTest, UnbatchedModelsPassThroughAndFlushAndStopSendWhatWaits) {
  FakeRuntime rt;
  Batcher batcher(rt.Submit(), [] { return kTimeZero; });
  batcher.Submit(ModelId(7), Input({1, 2}), {}, [](RequestResult) {});
  EXPECT_EQ(rt.count(), 1u);  // no SetModel: straight through
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 4, .max_queue_delay = std::chrono::hours(1)}).ok());
  batcher.Submit(ModelId(1), Input({1, 2}), {}, [](RequestResult) {});
  EXPECT_EQ(batcher.waiting(), 1u);
  batcher.Flush();
  EXPECT_EQ(rt.count(), 2u);
  batcher.Submit(ModelId(1), Input({1, 2}), {}, [](RequestResult) {});
  batcher.Stop();
  EXPECT_EQ(rt.count(), 3u);
  EXPECT_EQ(batcher.waiting(), 0u);
  batcher.Submit(ModelId(1), Input({1, 2}), {}, [](RequestResult) {});  // after Stop: straight through
  EXPECT_EQ(rt.count(), 4u);
}

TEST(BatcherTest, AClosedLoopOfFourOnTwoSlotsRunsAsTwoBatchesOfTwo) {
  // max_in_flight 2 (two PUs): a batch of four would keep one PU busy four
  // times as long while the other has none of this model's work; three and
  // one would do half of that. Each answer here submits the next request.
  FakeRuntime rt;
  Batcher batcher(rt.Submit(), [] { return kTimeZero; }, /*own_timer=*/false);
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 4, .max_queue_delay = std::chrono::hours(1),
                                            .max_in_flight = 2}).ok());
  std::function<void(RequestResult)> again = [&](RequestResult r) {
    ASSERT_TRUE(r.status.ok()) << r.status;
    batcher.Submit(ModelId(1), Input({1, 0}), {}, again);
  };
  for (int i = 0; i < 4; ++i) batcher.Submit(ModelId(1), Input({float(i), 0}), {}, again);
  ASSERT_EQ(rt.count(), 2u);  // the first two alone, at once: the model was idle
  EXPECT_EQ(batcher.waiting(), 2u);
  for (size_t k = 0; k < 8; ++k) {
    rt.AnswerDoubled(k, At(10 * static_cast<int>(k)));
    ASSERT_EQ(rt.count(), k + 3);
    EXPECT_EQ(rt.sent[k + 2].inputs[0].second.shape()[0], 2) << "batch " << k + 2;
  }
  EXPECT_EQ(batcher.waiting(), 0u);
}

TEST(BatcherTest, WhenEverySlotIsTakenRequestsWaitPastTheDelayAndLeaveWithTheNextAnswer) {
  FakeRuntime rt;
  std::atomic<int> now_ms{0};
  Batcher batcher(rt.Submit(), [&] { return At(now_ms.load()); }, /*own_timer=*/false);
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 4, .max_queue_delay = 0ms, .max_in_flight = 1}).ok());
  int answered = 0;
  auto count = [&](RequestResult r) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ++answered;
  };
  batcher.Submit(ModelId(1), Input({1, 0}), {}, count);
  ASSERT_EQ(rt.count(), 1u);  // no delay and a free slot: alone, at once
  for (int i = 0; i < 5; ++i) batcher.Submit(ModelId(1), Input({2, 0}), {}, count);
  now_ms = 50;
  batcher.SendDue();
  EXPECT_EQ(rt.count(), 1u);  // the slot is taken: all five wait, whatever their age
  EXPECT_EQ(batcher.waiting(), 5u);
  rt.AnswerDoubled(0, At(50));
  ASSERT_EQ(rt.count(), 2u);  // the answer freed the slot: the next batch, max_batch of the five
  EXPECT_EQ(rt.sent[1].inputs[0].second.shape()[0], 4);
  EXPECT_EQ(batcher.waiting(), 1u);
  rt.AnswerDoubled(1, At(60));
  ASSERT_EQ(rt.count(), 3u);
  EXPECT_EQ(rt.sent[2].inputs[0].second.shape()[0], 1);
  rt.AnswerDoubled(2, At(70));
  EXPECT_EQ(answered, 6);
  EXPECT_EQ(batcher.waiting(), 0u);
}

// While its batches are out, a model's requests wait; at most max_waiting
// of them: one more is answered RESOURCE_EXHAUSTED at once, naming the
// model, and is never sent. Once a batch leaves, there is room again.
TEST(BatcherTest, RequestsOverMaxWaitingAreRejectedAtOnce) {
  FakeRuntime rt;
  Batcher batcher(rt.Submit(), [] { return kTimeZero; }, /*own_timer=*/false);
  ASSERT_TRUE(batcher
                  .SetModel(ModelId(1), {.max_batch = 2, .max_queue_delay = 0ms, .max_in_flight = 1,
                                         .max_waiting = 3, .name = "cam"})
                  .ok());
  int ok = 0;
  std::vector<absl::Status> refused;
  auto answer = [&](RequestResult r) {
    if (r.status.ok()) {
      ++ok;
    } else {
      refused.push_back(r.status);
    }
  };
  batcher.Submit(ModelId(1), Input({1, 0}), {}, answer);  // sent at once: the slot was free
  for (int i = 0; i < 3; ++i) batcher.Submit(ModelId(1), Input({2, 0}), {}, answer);
  EXPECT_EQ(batcher.waiting(), 3u);
  EXPECT_TRUE(refused.empty());
  batcher.Submit(ModelId(1), Input({3, 0}), {}, answer);  // the fourth waiting: refused before Submit returns
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused[0].message(), HasSubstr("model 'cam' already has 3 requests waiting"));
  EXPECT_EQ(batcher.waiting(), 3u);
  EXPECT_EQ(batcher.stats(ModelId(1)).rejected, 1u);
  rt.AnswerDoubled(0, At(1));  // a batch of two leaves: room for two more
  EXPECT_EQ(batcher.waiting(), 1u);
  batcher.Submit(ModelId(1), Input({4, 0}), {}, answer);
  batcher.Submit(ModelId(1), Input({5, 0}), {}, answer);
  EXPECT_EQ(refused.size(), 1u);
  rt.AnswerDoubled(1, At(2));
  rt.AnswerDoubled(2, At(3));
  rt.AnswerDoubled(3, At(4));
  EXPECT_EQ(ok, 6);
  EXPECT_EQ(rt.count(), 4u);  // 1, then batches of 2, 2 and 1: the refused one was never sent
  EXPECT_EQ(batcher.waiting(), 0u);
}

// Withdraw takes a request out while it waits: it is never sent nor answered
// by the batcher, and the others form their batch without it. Once its batch
// has left, Withdraw is false and the batch's answer still reaches it; when
// every request of a batch in the runtime is withdrawn, the batch is
// cancelled there.
TEST(BatcherTest, AWaitingRequestIsWithdrawnAndABatchWhollyWithdrawnIsCancelled) {
  FakeRuntime rt;
  Batcher batcher(rt.Submit(), [] { return kTimeZero; }, /*own_timer=*/false, rt.Cancel());
  ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 2, .max_queue_delay = std::chrono::hours(1)}).ok());
  std::vector<int> answered;
  auto answer = [&](int who) { return [&, who](RequestResult) { answered.push_back(who); }; };
  const uint64_t first = batcher.Submit(ModelId(1), Input({1, 1}), {}, answer(1));
  const uint64_t second = batcher.Submit(ModelId(1), Input({2, 2}), {}, answer(2));
  EXPECT_NE(first, 0u);
  EXPECT_NE(first, second);
  ASSERT_EQ(rt.count(), 1u);  // the two, as one batch
  EXPECT_FALSE(batcher.Withdraw(ModelId(1), first));  // it left with its batch
  EXPECT_TRUE(rt.cancelled.empty());                  // which still serves the second
  EXPECT_FALSE(batcher.Withdraw(ModelId(1), second));
  EXPECT_EQ(rt.cancelled, (std::vector<RequestId>{RequestId(0)}));  // nobody wants it any more
  EXPECT_FALSE(batcher.Withdraw(ModelId(1), second));               // once
  EXPECT_EQ(rt.cancelled.size(), 1u);
  rt.AnswerDoubled(0, At(1));
  EXPECT_EQ(answered, (std::vector<int>{1, 2}));  // their callers decide what to do with it

  const uint64_t third = batcher.Submit(ModelId(1), Input({3, 3}), {}, answer(3));
  EXPECT_EQ(batcher.waiting(), 1u);
  EXPECT_FALSE(batcher.Withdraw(ModelId(2), third));  // another model's queue
  EXPECT_TRUE(batcher.Withdraw(ModelId(1), third));
  EXPECT_FALSE(batcher.Withdraw(ModelId(1), third));  // once
  EXPECT_EQ(batcher.waiting(), 0u);
  batcher.Submit(ModelId(1), Input({4, 4}), {}, answer(4));
  batcher.Submit(ModelId(1), Input({5, 5}), {}, answer(5));
  ASSERT_EQ(rt.count(), 2u);  // 4 and 5 together: 3 is not in it
  EXPECT_EQ(Values(rt.sent[1].inputs[0].second), (std::vector<float>{4, 4, 5, 5}));
  rt.AnswerDoubled(1, At(2));
  EXPECT_EQ(answered, (std::vector<int>{1, 2, 4, 5}));  // 3 only by whoever withdrew it
  const uint64_t through = batcher.Submit(ModelId(7), Input({6, 6}), {}, answer(6));
  EXPECT_FALSE(batcher.Withdraw(ModelId(7), through));  // no batching: it went straight on
  EXPECT_EQ(rt.count(), 3u);
  EXPECT_EQ(rt.cancelled.size(), 1u);
}

TEST(BatcherTest, AnswersAfterTheBatcherIsGoneStillReachTheirCallers) {
  FakeRuntime rt;
  bool answered = false;
  {
    Batcher batcher(rt.Submit(), [] { return kTimeZero; });
    ASSERT_TRUE(batcher.SetModel(ModelId(1), {.max_batch = 2, .max_queue_delay = 0ms, .max_in_flight = 1}).ok());
    batcher.Submit(ModelId(1), Input({1, 2}), {}, [&](RequestResult r) { answered = r.status.ok(); });
  }
  ASSERT_EQ(rt.count(), 1u);
  rt.AnswerDoubled(0, At(1));  // its slot's batcher is gone: only the caller is reached
  EXPECT_TRUE(answered);
}

TEST(BatcherTest, SetModelChecksItsOptions) {
  FakeRuntime rt;
  Batcher batcher(rt.Submit(), [] { return kTimeZero; });
  EXPECT_THAT(batcher.SetModel(ModelId(1), {.max_batch = 0}).message(), HasSubstr("1..1024"));
  EXPECT_THAT(batcher.SetModel(ModelId(1), {.max_batch = kMaxBatch + 1}).message(), HasSubstr("max_batch"));
  EXPECT_THAT(batcher.SetModel(ModelId(1), {.max_batch = 2, .max_queue_delay = -1ms}).message(), HasSubstr(">= 0"));
  EXPECT_THAT(batcher.SetModel(ModelId(1), {.max_batch = 2, .max_in_flight = -1}).message(),
              HasSubstr("max_in_flight"));
  EXPECT_THAT(batcher.SetModel(ModelId(1), {.max_batch = 2, .max_waiting = -1}).message(), HasSubstr("max_waiting"));
  batcher.Stop();
  EXPECT_EQ(batcher.SetModel(ModelId(1), {.max_batch = 2}).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace baton::runtime
