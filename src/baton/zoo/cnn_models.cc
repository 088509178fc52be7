// Image classifiers: ResNet-18, MobileNetV2, SqueezeNet 1.1, VGG-11 (half width).
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/zoo/models.h"

namespace baton::zoo::internal {
namespace {

// Global average pool, flatten and a fully connected layer named "logits".
Val ClassifierHead(Net& net, const Val& x, int64_t classes) {
  const Val pooled = net.Flatten("flatten", net.GlobalAveragePool("avgpool", x));
  return net.Gemm("logits", pooled, classes);
}

}  // namespace

// ResNet-18 (He et al. 2016): 7x7 stem, four stages of two basic blocks
// (3x3-3x3 with identity or 1x1-projection shortcut), global pool, FC.
void BuildResNet(Net& net, bool small) {
  const int64_t res = small ? 32 : 224;
  const std::vector<int64_t> widths =
      small ? std::vector<int64_t>{8, 16, 32, 64} : std::vector<int64_t>{64, 128, 256, 512};
  const int64_t classes = small ? 10 : 1000;

  Val x = net.Input("input", dtype::kFloat, {1, 3, res, res});
  x = net.Conv("conv1", x, widths[0], 7, 2, 1, /*bias=*/false);
  x = net.Relu("relu", net.BatchNorm("bn1", x));
  x = net.MaxPool("maxpool", x, 3, 2, 1);
  for (int stage = 0; stage < 4; ++stage) {
    for (int block = 0; block < 2; ++block) {
      const std::string p = absl::StrCat("layer", stage + 1, ".", block, ".");
      const int64_t stride = stage > 0 && block == 0 ? 2 : 1;
      const int64_t width = widths[stage];
      Val y = net.Conv(p + "conv1", x, width, 3, stride, 1, false);
      y = net.Relu(p + "relu1", net.BatchNorm(p + "bn1", y));
      y = net.BatchNorm(p + "bn2", net.Conv(p + "conv2", y, width, 3, 1, 1, false), /*gamma=*/0.5f);
      Val shortcut = x;
      if (stride != 1 || x.dim(1) != width) {
        shortcut = net.Conv(p + "downsample.conv", x, width, 1, stride, 1, false, 1.0f);
        shortcut = net.BatchNorm(p + "downsample.bn", shortcut);
      }
      x = net.Relu(p + "relu2", net.Add(p + "add", y, shortcut));
    }
  }
  net.Output(ClassifierHead(net, x, classes));
}

// MobileNetV2 (Sandler et al. 2018): inverted residual blocks of 1x1
// expansion, 3x3 depthwise (group = channels) and linear 1x1 projection, with
// Relu6 (Clip 0..6) activations and identity shortcuts where shapes allow.
void BuildMobileNetV2(Net& net, bool small) {
  struct Stage {
    int64_t expansion, channels, repeats, stride;
  };
  const std::vector<Stage> stages = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                     {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  const int64_t res = small ? 32 : 224;
  const int64_t classes = small ? 10 : 1000;
  // Small variant: quarter width (multiples of 4), at most two blocks per stage.
  auto width = [small](int64_t c) { return small ? std::max<int64_t>(4, (c / 4 + 3) / 4 * 4) : c; };

  Val x = net.Input("input", dtype::kFloat, {1, 3, res, res});
  x = net.Conv("features.0.conv", x, width(32), 3, 2, 1, false);
  x = net.Relu6("features.0.relu6", net.BatchNorm("features.0.bn", x));
  int block_index = 1;
  for (const Stage& stage : stages) {
    const int64_t repeats = small ? std::min<int64_t>(stage.repeats, 2) : stage.repeats;
    for (int64_t r = 0; r < repeats; ++r, ++block_index) {
      const std::string p = absl::StrCat("features.", block_index, ".");
      const int64_t stride = r == 0 ? stage.stride : 1;
      const int64_t out = width(stage.channels);
      const int64_t hidden = x.dim(1) * stage.expansion;
      const bool residual = stride == 1 && x.dim(1) == out;
      Val y = x;
      if (stage.expansion != 1) {
        y = net.Conv(p + "expand.conv", y, hidden, 1, 1, 1, false);
        y = net.Relu6(p + "expand.relu6", net.BatchNorm(p + "expand.bn", y));
      }
      y = net.Conv(p + "depthwise.conv", y, hidden, 3, stride, /*group=*/hidden, false);
      y = net.Relu6(p + "depthwise.relu6", net.BatchNorm(p + "depthwise.bn", y));
      y = net.Conv(p + "project.conv", y, out, 1, 1, 1, false, /*gain=*/1.0f);
      y = net.BatchNorm(p + "project.bn", y, residual ? 0.5f : 1.0f);
      x = residual ? net.Add(p + "add", x, y) : y;
    }
  }
  const std::string p = absl::StrCat("features.", block_index, ".");
  x = net.Conv(p + "conv", x, small ? 128 : 1280, 1, 1, 1, false);
  x = net.Relu6(p + "relu6", net.BatchNorm(p + "bn", x));
  net.Output(ClassifierHead(net, x, classes));
}

// SqueezeNet 1.1 (Iandola et al. 2016): fire modules (1x1 squeeze, then 1x1
// and 3x3 expand joined by Concat), max pooling, a 1x1 conv classifier.
void BuildSqueezeNet(Net& net, bool small) {
  const int64_t res = small ? 64 : 224;
  const int64_t classes = small ? 10 : 1000;
  const int64_t div = small ? 4 : 1;
  auto fire = [&net, div](const std::string& name, const Val& x, int64_t squeeze, int64_t expand) {
    const Val s = net.Relu(name + ".squeeze.relu", net.Conv(name + ".squeeze", x, squeeze / div, 1));
    const Val e1 = net.Relu(name + ".expand1x1.relu", net.Conv(name + ".expand1x1", s, expand / div, 1));
    const Val e3 = net.Relu(name + ".expand3x3.relu", net.Conv(name + ".expand3x3", s, expand / div, 3));
    return net.Concat(name + ".concat", {e1, e3}, 1);
  };

  Val x = net.Input("input", dtype::kFloat, {1, 3, res, res});
  x = net.Relu("features.0.relu", net.Conv("features.0.conv", x, 64 / div, 3, 2, 1, true, 2.0f, /*pad=*/0));
  x = net.MaxPool("features.2.pool", x, 3, 2);
  x = fire("features.3", x, 16, 64);
  x = fire("features.4", x, 16, 64);
  x = net.MaxPool("features.5.pool", x, 3, 2);
  x = fire("features.6", x, 32, 128);
  x = fire("features.7", x, 32, 128);
  x = net.MaxPool("features.8.pool", x, 3, 2);
  x = fire("features.9", x, 48, 192);
  x = fire("features.10", x, 48, 192);
  x = fire("features.11", x, 64, 256);
  x = fire("features.12", x, 64, 256);
  x = net.Relu("classifier.relu", net.Conv("classifier.conv", x, classes, 1));
  net.Output(net.Flatten("logits", net.GlobalAveragePool("classifier.avgpool", x)));
}

// VGG-11 (Simonyan & Zisserman 2014) with every width halved (weights ~137 MB
// instead of ~530 MB): eight 3x3 conv + ReLU layers, five max pools, three FC.
void BuildVgg(Net& net, bool small) {
  constexpr int64_t kPool = 0;
  const std::vector<int64_t> full = {32, kPool, 64, kPool, 128, 128, kPool, 256, 256, kPool, 256, 256, kPool};
  const std::vector<int64_t> reduced = {8, kPool, 16, kPool, 32, 32, kPool, 64, 64, kPool, 64, 64, kPool};
  const int64_t res = small ? 32 : 224;
  const int64_t hidden = small ? 128 : 2048;
  const int64_t classes = small ? 10 : 1000;

  Val x = net.Input("input", dtype::kFloat, {1, 3, res, res});
  int index = 0;
  for (int64_t c : small ? reduced : full) {
    const std::string p = absl::StrCat("features.", index++);
    x = c == kPool ? net.MaxPool(p + ".pool", x, 2, 2) : net.Relu(p + ".relu", net.Conv(p + ".conv", x, c, 3));
  }
  x = net.Flatten("flatten", x);
  x = net.Relu("classifier.0.relu", net.Gemm("classifier.0", x, hidden, 2.0f));
  x = net.Relu("classifier.1.relu", net.Gemm("classifier.1", x, hidden, 2.0f));
  net.Output(net.Gemm("logits", x, classes));
}

}  // namespace baton::zoo::internal
