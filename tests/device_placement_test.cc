// plan::PlaceModelsOnDevices (transfer_aware): pure, so checked on hand-made
// models, devices and links.
#include "baton/plan/device_placement.h"

#include <vector>

#include "gtest/gtest.h"

namespace baton::plan {
namespace {

PlacementModel Model(const std::string& name, double ms, double bytes, std::vector<bool> can) {
  return PlacementModel{name, ms, bytes, std::move(can)};
}

TEST(DevicePlacementTest, ASlowLinkKeepsASmallModelLocal) {
  // 12 KB over 8 Mbit/s = 12 ms each way of bytes + 2 x 1 ms latency = 14 ms > a 1 ms model.
  const std::vector<PlacementDevice> devices = {{"local", 1, std::nullopt}, {"edge", 4, PlacementLink{1, 8}}};
  const std::vector<PlacementModel> models = {Model("small", 1, 12000, {true, true})};
  const DevicePlacement p = PlaceModelsOnDevices(models, devices);
  EXPECT_EQ(p.device_of[0], DeviceId(0));
  EXPECT_DOUBLE_EQ(p.transfer_ms[0], 0);
  EXPECT_EQ(p.explain[0], "small -> local (compute 1.00 ms, transfer 0.00 ms)");
}

TEST(DevicePlacementTest, HeavyModelsGoWhereComputeIsAndLoadsBalance) {
  // Two 40 ms models, a 1-thread local device and a 4-thread remote one on a fast link:
  // the first goes remote (10 ms), the second too (20 ms < 40 ms locally).
  const std::vector<PlacementDevice> devices = {{"local", 1, std::nullopt}, {"edge", 4, PlacementLink{0.1, 1000}}};
  const std::vector<PlacementModel> models = {Model("a", 40, 1000, {true, true}), Model("b", 40, 1000, {true, true}),
                                              Model("c", 5, 1000, {true, true})};
  const DevicePlacement p = PlaceModelsOnDevices(models, devices);
  EXPECT_EQ(p.device_of[0], DeviceId(1));
  EXPECT_EQ(p.device_of[1], DeviceId(1));
  EXPECT_EQ(p.device_of[2], DeviceId(0)) << "the edge device is at 20 ms; local is free";
  EXPECT_DOUBLE_EQ(p.compute_ms[0], 10);
}

TEST(DevicePlacementTest, ADeviceThatCannotRunTheModelIsNeverChosen) {
  const std::vector<PlacementDevice> devices = {{"local", 1, std::nullopt}, {"edge", 100, std::nullopt}};
  const std::vector<PlacementModel> models = {Model("m", 50, 0, {true, false})};
  EXPECT_EQ(PlaceModelsOnDevices(models, devices).device_of[0], DeviceId(0));
  // A device without PUs (capacity 0) neither.
  const std::vector<PlacementDevice> empty_edge = {{"local", 1, std::nullopt}, {"edge", 0, std::nullopt}};
  EXPECT_EQ(PlaceModelsOnDevices(std::vector<PlacementModel>{Model("m", 50, 0, {true, true})}, empty_edge).device_of[0],
            DeviceId(0));
}

TEST(DevicePlacementTest, AModelNoDeviceCanRunGoesRoundRobinAndSaysSo) {
  const std::vector<PlacementDevice> devices = {{"a", 1, std::nullopt}, {"b", 1, std::nullopt}};
  const std::vector<PlacementModel> models = {Model("x", 1, 0, {false, false}), Model("y", 1, 0, {false, false})};
  const DevicePlacement p = PlaceModelsOnDevices(models, devices);
  EXPECT_EQ(p.device_of[0], DeviceId(0));
  EXPECT_EQ(p.device_of[1], DeviceId(1));
  EXPECT_NE(p.explain[1].find("no device can run every node"), std::string::npos);
}

TEST(DevicePlacementTest, NoModelsOrNoDevices) {
  EXPECT_TRUE(PlaceModelsOnDevices({}, std::vector<PlacementDevice>{{"a", 1, std::nullopt}}).device_of.empty());
  const DevicePlacement p = PlaceModelsOnDevices(std::vector<PlacementModel>{Model("m", 1, 0, {})}, {});
  ASSERT_EQ(p.device_of.size(), 1u);
}

}  // namespace
}  // namespace baton::plan
