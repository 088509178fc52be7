#include "baton/zoo/zoo.h"

#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "baton/zoo/models.h"
#include "baton/zoo/net.h"

namespace baton::zoo {
namespace {

using internal::Net;

struct ModelDef {
  const char* name;
  const char* description;
  void (*build)(Net& net, bool small);
};

constexpr ModelDef kModels[] = {
    {"resnet", "ResNet-18: residual 3x3 blocks with BatchNorm; input [1,3,224,224] (small 32x32) -> logits",
     internal::BuildResNet},
    {"mobilenetv2",
     "MobileNetV2: inverted residuals, depthwise conv (group=C), Relu6 (Clip); input [1,3,224,224] (small 32x32)",
     internal::BuildMobileNetV2},
    {"squeezenet", "SqueezeNet 1.1: fire modules (squeeze, 1x1/3x3 expand, Concat); input [1,3,224,224] (small 64x64)",
     internal::BuildSqueezeNet},
    {"vgg",
     "VGG-11 at half width: 3x3 conv chain, max pools, 3-layer Gemm classifier; input [1,3,224,224] (small 32x32)",
     internal::BuildVgg},
    {"unet",
     "U-Net: 4-level encoder/decoder, ConvTranspose and Resize upsampling, skip Concat; [1,3,256,256] -> mask "
     "(small 32x32)",
     internal::BuildUNet},
    {"yolo",
     "YOLO-style detector: Darknet-like residual backbone, FPN neck with Resize+Concat, heads at strides 8/16/32; "
     "input [1,3,416,416] (small 64x64)",
     internal::BuildYolo},
    {"transformer",
     "Transformer encoder: Gather embeddings of int64 ids, MatMul+Softmax attention, GELU MLP, LayerNormalization; "
     "4 layers d=256 seq 128 (small 2 layers d=32 seq 16)",
     internal::BuildTransformer},
    {"lstm",
     "Recurrent classifier: bidirectional LSTM then GRU over [time,1,features], Gemm head; 100x80 input, hidden 256 "
     "(small 8x16, hidden 16)",
     internal::BuildLstm},
    {"ifloop",
     "Control flow: data-dependent If (ReduceSum(x) > 0) and a 3-trip Loop whose bodies read outer-scope tensors; "
     "input x [1,256] (small [1,16])",
     internal::BuildIfLoop},
};

// FNV-1a: a fixed per-model seed, independent of the registry order.
uint64_t SeedFor(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

absl::StatusOr<const ModelDef*> Find(std::string_view name) {
  for (const ModelDef& def : kModels) {
    if (name == def.name) return &def;
  }
  std::vector<std::string> names;
  for (const ModelDef& def : kModels) names.push_back(def.name);
  return absl::NotFoundError(
      absl::StrCat("zoo has no model '", std::string(name), "'; valid names: ", absl::StrJoin(names, ", ")));
}

}  // namespace

std::vector<ZooEntry> List() {
  std::vector<ZooEntry> entries;
  for (const ModelDef& def : kModels) entries.push_back({def.name, def.description});
  return entries;
}

absl::StatusOr<std::string> Generate(std::string_view name, bool small) {
  BATON_ASSIGN_OR_RETURN(const ModelDef* def, Find(name));
  Net net(small ? absl::StrCat(def->name, "_small") : def->name, SeedFor(def->name), /*materialize=*/true);
  def->build(net, small);
  net.builder().SetDocString(absl::StrCat(def->description, small ? " [small variant]" : ""));
  absl::StatusOr<std::string> bytes = net.builder().Serialize();
  if (!bytes.ok()) {
    // A zoo model that does not build is a bug in the zoo, not a user error.
    return absl::InternalError(absl::StrCat("zoo model '", std::string(name), "': ", bytes.status().message()));
  }
  return bytes;
}

absl::StatusOr<ZooStats> Stats(std::string_view name, bool small) {
  BATON_ASSIGN_OR_RETURN(const ModelDef* def, Find(name));
  Net net(def->name, SeedFor(def->name), /*materialize=*/false);
  def->build(net, small);
  ZooStats stats = net.stats();
  stats.nodes = net.builder().num_nodes();
  return stats;
}

}  // namespace baton::zoo
