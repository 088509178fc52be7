// trace::TraceObserver: runs become slices on their PU's lane, the queue lane
// gets enqueue/drop instants and a depth counter, failed answers are marked,
// many threads may report at once, and memory stays bounded.
#include "baton/trace/trace_observer.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace baton::trace {
namespace {

using dispatch::TraceEvent;
using dispatch::TraceKind;
using std::chrono::milliseconds;

TraceNames Names() {
  TraceNames n;
  n.devices = {"local", "edge"};
  n.pus = {{DeviceId(0), "cpu0 (cpu)"}, {DeviceId(1), "edge/cpu0 (cpu)"}};
  n.models = {"cam"};
  return n;
}

TraceEvent Event(TraceKind kind, int ms, uint32_t request, std::optional<uint32_t> pu = std::nullopt,
                 uint32_t device = 0, absl::StatusCode code = absl::StatusCode::kOk) {
  TraceEvent e;
  e.kind = kind;
  e.time = Time(milliseconds(ms));
  e.request = RequestId(request);
  e.model = ModelId(0);
  e.partition = PartitionId(1);
  e.device = DeviceId(device);
  if (pu) e.pu = PuId(*pu);
  e.code = code;
  return e;
}

nlohmann::json Json(const TraceObserver& obs) {
  ChromeTrace trace;
  obs.WriteTo(trace);
  return nlohmann::json::parse(trace.ToJson());
}

TEST(TraceObserverTest, RunsQueuesAndFailedAnswers) {
  TraceObserver obs(Names());
  obs.OnEvent(Event(TraceKind::kRequestArrived, 0, 1));
  obs.OnEvent(Event(TraceKind::kEnqueued, 1, 1));
  obs.OnEvent(Event(TraceKind::kEnqueued, 1, 2));
  obs.OnEvent(Event(TraceKind::kStarted, 2, 1, 0));
  TraceEvent done = Event(TraceKind::kFinished, 7, 1, 0);
  done.started = Time(milliseconds(2));
  obs.OnEvent(done);
  obs.OnEvent(Event(TraceKind::kDropped, 8, 2, std::nullopt, 0, absl::StatusCode::kDeadlineExceeded));
  obs.OnEvent(Event(TraceKind::kRequestFinished, 8, 2, std::nullopt, 0, absl::StatusCode::kDeadlineExceeded));
  // A remote device's run, reported from its completion.
  TraceEvent remote = Event(TraceKind::kFinished, 9, 3, 1, 1);
  remote.started = Time(milliseconds(4));
  obs.OnEvent(remote);
  EXPECT_EQ(obs.runs(), 2u);

  const nlohmann::json j = Json(obs);
  int slices = 0, drops = 0, failed = 0;
  std::vector<double> depth;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] == "X") {
      ++slices;
      EXPECT_EQ(e["name"], "cam.p1");
      if (e["pid"] == 0) {
        EXPECT_EQ(e["tid"], 0);
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 2000);
        EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 5000);
      } else {
        EXPECT_EQ(e["pid"], 1);
        EXPECT_EQ(e["tid"], 1);
      }
    }
    if (e["ph"] == "i" && e["name"] == "drop cam") {
      ++drops;
      EXPECT_EQ(e["args"]["reason"], "DEADLINE_EXCEEDED");
    }
    if (e["ph"] == "i" && e["name"] == "DEADLINE_EXCEEDED cam") ++failed;
    if (e["ph"] == "C") depth.push_back(e["args"]["queued"].get<double>());
  }
  EXPECT_EQ(slices, 2);
  EXPECT_EQ(drops, 1);
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(depth, (std::vector<double>{1, 2, 1, 0}));
  EXPECT_FALSE(j.contains("metadata"));
}

TEST(TraceObserverTest, ManyThreadsAndABoundOnMemory) {
  TraceObserver obs(Names(), /*max_events=*/1000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&obs, t] {
      for (int i = 0; i < 500; ++i) {
        TraceEvent e = Event(TraceKind::kFinished, i + 1, static_cast<uint32_t>(t * 1000 + i), 0);
        e.started = Time(milliseconds(i));
        obs.OnEvent(e);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(obs.runs(), 1000u);
  EXPECT_EQ(obs.dropped_events(), 1000u);
  const nlohmann::json j = Json(obs);
  EXPECT_EQ(j["metadata"]["dropped_events"], "1000");
}

}  // namespace
}  // namespace baton::trace
