// Internal to the zoo: one builder per model. Each adds the whole model
// (inputs, nodes, initializers, outputs) to `net`; `small` selects the reduced
// variant. See zoo.cc for the registry and the one-line descriptions.
#pragma once

#include "baton/zoo/net.h"

namespace baton::zoo::internal {

// cnn_models.cc
void BuildResNet(Net& net, bool small);
void BuildMobileNetV2(Net& net, bool small);
void BuildSqueezeNet(Net& net, bool small);
void BuildVgg(Net& net, bool small);
// dense_models.cc
void BuildUNet(Net& net, bool small);
void BuildYolo(Net& net, bool small);
// sequence_models.cc
void BuildTransformer(Net& net, bool small);
void BuildLstm(Net& net, bool small);
void BuildIfLoop(Net& net, bool small);

}  // namespace baton::zoo::internal
