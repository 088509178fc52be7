// Dense prediction: a U-Net segmenter and a YOLO-style detector.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/zoo/models.h"

namespace baton::zoo::internal {
namespace {

// Conv (no bias) + BatchNorm + activation, the unit both models are made of.
// The activation's output is named `name`.
Val ConvBnRelu(Net& net, const std::string& name, const Val& x, int64_t channels, int64_t kernel, int64_t stride = 1) {
  const Val c = net.Conv(name + ".conv", x, channels, kernel, stride, 1, false);
  return net.Relu(name, net.BatchNorm(name + ".bn", c));
}

Val ConvBnLeaky(Net& net, const std::string& name, const Val& x, int64_t channels, int64_t kernel, int64_t stride = 1,
                float bn_gamma = 1.0f) {
  const Val c = net.Conv(name + ".conv", x, channels, kernel, stride, 1, false);
  return net.LeakyRelu(name, net.BatchNorm(name + ".bn", c, bn_gamma), 0.1f);
}

}  // namespace

// U-Net (Ronneberger et al. 2015) with batch norm: four 2x-downsampling
// encoder levels of two 3x3 conv blocks, a bottleneck, and four decoder levels
// that upsample (ConvTranspose 2x2/2 at levels 4 and 2, Resize-nearest + 1x1
// conv at levels 3 and 1), concatenate the encoder's skip tensor of the same
// scale and apply two 3x3 conv blocks; a 1x1 conv gives per-pixel class scores.
void BuildUNet(Net& net, bool small) {
  const int64_t res = small ? 32 : 256;
  const int64_t base = small ? 4 : 16;
  const int64_t classes = 2;
  auto double_conv = [&net](const std::string& name, const Val& x, int64_t channels) {
    return ConvBnRelu(net, name + ".b", ConvBnRelu(net, name + ".a", x, channels, 3), channels, 3);
  };

  Val x = net.Input("input", dtype::kFloat, {1, 3, res, res});
  std::vector<Val> skips;
  for (int level = 1; level <= 4; ++level) {
    const std::string p = absl::StrCat("down", level);
    x = double_conv(p, x, base << (level - 1));
    skips.push_back(x);
    x = net.MaxPool(p + ".pool", x, 2, 2);
  }
  x = double_conv("bottleneck", x, base << 4);
  for (int level = 4; level >= 1; --level) {
    const std::string p = absl::StrCat("up", level);
    const int64_t channels = base << (level - 1);
    Val up = level % 2 == 0 ? net.ConvTranspose(p + ".upconv", x, channels, 2)
                            : net.Conv(p + ".reduce", net.Upsample2x(p + ".resize", x), channels, 1, 1, 1, true, 1.0f);
    x = double_conv(p, net.Concat(p + ".concat", {skips[level - 1], up}, 1), channels);
  }
  net.Output(net.Conv("mask", x, classes, 1, 1, 1, true, 1.0f));
}

// YOLO-style detector (Darknet-53-like backbone at reduced depth, YOLOv3 FPN
// neck): conv-BN-LeakyReLU units, residual blocks, stride-2 convs down to
// stride 32; the neck upsamples (Resize) and concatenates the stride-16 and
// stride-8 features; three heads predict 3 anchors x (4 box + 1 objectness +
// classes) per cell, reshaped and transposed to [1, 3, H, W, 5 + classes].
void BuildYolo(Net& net, bool small) {
  const int64_t res = small ? 64 : 416;
  const int64_t div = small ? 4 : 1;
  const int64_t classes = small ? 3 : 80;
  const int64_t anchors = 3;
  const int64_t per_anchor = 5 + classes;

  auto residual = [&net](const std::string& name, const Val& x) {
    const int64_t c = x.dim(1);
    const Val a = ConvBnLeaky(net, name + ".reduce", x, c / 2, 1);
    const Val b = ConvBnLeaky(net, name + ".expand", a, c, 3, 1, /*bn_gamma=*/0.5f);
    return net.Add(name + ".add", x, b);
  };
  auto head = [&](const std::string& name, const Val& x) {
    const Val raw = net.Conv(name + ".conv", x, anchors * per_anchor, 1, 1, 1, true, 1.0f);
    const int64_t h = raw.dim(2), w = raw.dim(3);
    const Val grid = net.Reshape(name + ".reshape", raw, {1, anchors, per_anchor, h, w});
    const Val out = net.Transpose(name, grid, {0, 1, 3, 4, 2});
    net.Output(out);
  };

  Val x = net.Input("input", dtype::kFloat, {1, 3, res, res});
  x = ConvBnLeaky(net, "stem", x, 16 / div, 3);
  // (width, residual blocks) per stride-2 stage: strides 2, 4, 8, 16, 32.
  const std::vector<std::pair<int64_t, int>> stages = {{32, 1}, {64, 1}, {128, 2}, {256, 2}, {512, 1}};
  std::vector<Val> features;  // outputs of stride 8, 16, 32
  for (size_t s = 0; s < stages.size(); ++s) {
    const std::string p = absl::StrCat("backbone.stage", s + 1);
    x = ConvBnLeaky(net, p + ".down", x, stages[s].first / div, 3, 2);
    for (int r = 0; r < stages[s].second; ++r) x = residual(absl::StrCat(p + ".res", r), x);
    if (s >= 2) features.push_back(x);
  }
  // Stride 32.
  const Val h5 = ConvBnLeaky(net, "neck.p5.lateral", features[2], 256 / div, 1);
  head("boxes_s32", ConvBnLeaky(net, "neck.p5.out", h5, 512 / div, 3));
  // Stride 16.
  Val u = net.Upsample2x("neck.p4.up", ConvBnLeaky(net, "neck.p4.reduce", h5, 128 / div, 1));
  const Val h4 = ConvBnLeaky(net, "neck.p4.lateral", net.Concat("neck.p4.concat", {u, features[1]}, 1), 128 / div, 1);
  head("boxes_s16", ConvBnLeaky(net, "neck.p4.out", h4, 256 / div, 3));
  // Stride 8.
  u = net.Upsample2x("neck.p3.up", ConvBnLeaky(net, "neck.p3.reduce", h4, 64 / div, 1));
  const Val h3 = ConvBnLeaky(net, "neck.p3.lateral", net.Concat("neck.p3.concat", {u, features[0]}, 1), 64 / div, 1);
  head("boxes_s8", ConvBnLeaky(net, "neck.p3.out", h3, 128 / div, 3));
}

}  // namespace baton::zoo::internal
