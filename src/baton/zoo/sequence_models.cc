// Sequence and control-flow models: a transformer encoder, a recurrent
// classifier and the If/Loop model used by partition tests.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "baton/zoo/models.h"

namespace baton::zoo::internal {

using graph::Attr;

// BERT-style encoder (post-LayerNorm): token embeddings gathered from int64 ids
// plus learned positions, then per layer multi-head self-attention written
// out in MatMul/Reshape/Transpose/Softmax, a GELU MLP, residual adds and
// LayerNormalization; mean pooling and a linear classifier.
// Outputs: "last_hidden" [1, seq, d] and "logits" [1, classes].
void BuildTransformer(Net& net, bool small) {
  const int64_t vocab = small ? 128 : 8192;
  const int64_t seq = small ? 16 : 128;
  const int64_t d = small ? 32 : 256;
  const int64_t heads = small ? 2 : 4;
  const int64_t ffn = small ? 64 : 1024;
  const int layers = small ? 2 : 4;
  const int64_t classes = small ? 4 : 2;
  const int64_t dh = d / heads;

  const Val ids = net.Input("input_ids", dtype::kInt64, {1, seq});
  const Val table = net.Param("embed.tokens", {vocab, d}, std::sqrt(3.0f));  // unit variance
  const Val tokens = net.Node("Gather", "embed.gather", {table.name, ids.name}, {Val{"embed.gather", {1, seq, d}}},
                              {Attr::Int("axis", 0)})[0];
  const Val positions = net.Param("embed.positions", {1, seq, d}, 0.2f);
  Val x = net.LayerNorm("embed.norm", net.Add("embed.add", tokens, positions));
  const Val scale = net.SharedScalar("attn.scale", static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh))));

  for (int l = 0; l < layers; ++l) {
    const std::string p = absl::StrCat("layer", l, ".");
    auto split_heads = [&](const std::string& name, std::vector<int64_t> perm) {
      const Val proj = net.Linear(p + "attn." + name, x, d);
      const Val split = net.Reshape(p + "attn." + name + ".split", proj, {1, seq, heads, dh});
      return net.Transpose(p + "attn." + name + ".heads", split, std::move(perm));
    };
    const Val q = split_heads("q", {0, 2, 1, 3});  // [1, h, seq, dh]
    const Val k = split_heads("k", {0, 2, 3, 1});  // [1, h, dh, seq]
    const Val v = split_heads("v", {0, 2, 1, 3});  // [1, h, seq, dh]
    const Val scores = net.Mul(p + "attn.scaled", net.MatMul(p + "attn.scores", q, k), scale);
    const Val probs = net.Softmax(p + "attn.softmax", scores, -1);
    const Val context = net.MatMul(p + "attn.context", probs, v);
    const Val merged =
        net.Reshape(p + "attn.merge", net.Transpose(p + "attn.merge_heads", context, {0, 2, 1, 3}), {1, seq, d});
    const Val attn = net.Linear(p + "attn.out", merged, d);
    x = net.LayerNorm(p + "attn_norm", net.Add(p + "attn_residual", x, attn));
    const Val hidden = net.Gelu(p + "mlp.gelu", net.Linear(p + "mlp.fc1", x, ffn, 2.0f));
    const Val mlp = net.Linear(p + "mlp.fc2", hidden, d);
    const std::string norm_name = l + 1 == layers ? "last_hidden" : p + "mlp_norm";
    x = net.LayerNorm(norm_name, net.Add(p + "mlp_residual", x, mlp));
  }
  net.Output(x);
  const Val pooled = net.ReduceMean("pool", x, {1}, /*keepdims=*/false);  // [1, d]
  net.Output(net.Gemm("logits", pooled, classes));
}

// Keyword-spotting-style recurrent classifier: a bidirectional LSTM over
// [time, 1, features], its two directions joined per step (Transpose +
// Reshape), a unidirectional GRU whose last hidden state feeds a linear layer.
// Input "features" [time, 1, features]; output "logits" [1, classes].
void BuildLstm(Net& net, bool small) {
  const int64_t steps = small ? 8 : 100;
  const int64_t features = small ? 16 : 80;
  const int64_t hidden = small ? 16 : 256;
  const int64_t classes = small ? 4 : 35;
  // Unit-variance pre-activations (LeCun-uniform on each weight's fan-in) keep
  // the gates in their responsive range, so the hidden state is O(1) rather
  // than the O(0.1) that PyTorch's untrained U(±1/√H) initialisation gives.
  auto bound = [](int64_t fan_in) { return static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in))); };

  const Val x = net.Input("features", dtype::kFloat, {steps, 1, features});
  // LSTM weights: W [dirs, 4H, in], R [dirs, 4H, H], B [dirs, 8H] (gates i, o, f, c).
  const Val w1 = net.Param("lstm.W", {2, 4 * hidden, features}, bound(features));
  const Val r1 = net.Param("lstm.R", {2, 4 * hidden, hidden}, bound(hidden));
  const Val b1 = net.Param("lstm.B", {2, 8 * hidden}, 0.1f);
  const Val y1 = net.Node("LSTM", "lstm", {x.name, w1.name, r1.name, b1.name}, {Val{"lstm", {steps, 2, 1, hidden}}},
                          {Attr::Int("hidden_size", hidden), Attr::String("direction", "bidirectional")})[0];
  net.AddMacs(steps * 2 * 4 * hidden * (features + hidden));
  const Val joined =
      net.Reshape("lstm.join", net.Transpose("lstm.steps_first", y1, {0, 2, 1, 3}), {steps, 1, 2 * hidden});
  // GRU weights: W [1, 3H, in], R [1, 3H, H], B [1, 6H] (gates z, r, h).
  const Val w2 = net.Param("gru.W", {1, 3 * hidden, 2 * hidden}, bound(2 * hidden));
  const Val r2 = net.Param("gru.R", {1, 3 * hidden, hidden}, bound(hidden));
  const Val b2 = net.Param("gru.B", {1, 6 * hidden}, 0.1f);
  const std::vector<Val> gru =
      net.Node("GRU", "gru", {joined.name, w2.name, r2.name, b2.name}, {Val{"", {}}, Val{"gru.last", {1, 1, hidden}}},
               {Attr::Int("hidden_size", hidden), Attr::Int("linear_before_reset", 1)});
  net.AddMacs(steps * 3 * hidden * (2 * hidden + hidden));
  const Val last = net.Reshape("gru.flatten", gru[1], {1, hidden});
  net.Output(net.Gemm("logits", last, classes));
}

// Control flow for partition tests. With d = 16 (small) or 256:
//   pre = x·W + b;  h = Relu(pre);  gate = Sigmoid(pre)
//   cond = ReduceSum(x) > 0                      (data-dependent: feed x > 0 or x < 0)
//   branch = If(cond) then: h·then.weight + h    (reads outer h and an outer initializer)
//                     else: h * gate             (reads outer h and gate)
//   loop = Loop(3 times, state = branch): state = Tanh(state·U + c + h)   (reads outer h)
//   y = Gemm(loop)                               output "y" [1, 4]
void BuildIfLoop(Net& net, bool small) {
  const int64_t d = small ? 16 : 256;
  const int64_t trips = 3;
  const Val x = net.Input("x", dtype::kFloat, {1, d});
  const Val pre = net.Linear("pre", x, d, 2.0f);
  const Val h = net.Relu("h", pre);
  const Val gate = net.Unary("Sigmoid", "gate", pre);
  const Val total = net.Node("ReduceSum", "total", {x.name}, {Val{"total", {}}}, {Attr::Int("keepdims", 0)})[0];
  const Val cond = net.Node("Greater", "cond", {total.name, net.SharedScalar("threshold", 0.0f).name},
                            {Val{"cond", {}, dtype::kBool}})[0];

  const Val then_weight = net.Param("then.weight", {d, d}, static_cast<float>(std::sqrt(3.0 / d)));
  Net then_branch = net.Subgraph("then_branch");
  then_branch.Output(then_branch.Add("then.out", then_branch.MatMul("then.matmul", h, then_weight), h));
  Net else_branch = net.Subgraph("else_branch");
  else_branch.Output(else_branch.Mul("else.out", h, gate));
  const Val branch = net.Node(
      "If", "branch", {cond.name}, {Val{"branch", {1, d}}},
      {Attr::Graph("then_branch", then_branch.builder()), Attr::Graph("else_branch", else_branch.builder())})[0];

  Net body = net.Subgraph("loop_body");
  body.Input("loop.iter", dtype::kInt64, {});
  const Val cond_in = body.Input("loop.cond_in", dtype::kBool, {});
  const Val state = body.Input("loop.state_in", dtype::kFloat, {1, d});
  const Val mixed = body.Add("loop.mix", body.Linear("loop.update", state, d), h);
  body.Output(body.Unary("Identity", "loop.cond_out", cond_in));
  body.Output(body.Unary("Tanh", "loop.state_out", mixed));
  const Val trip_count = net.ConstantI64("loop.trip_count", {}, {trips});
  const Val loop = net.Node("Loop", "loop", {trip_count.name, "", branch.name}, {Val{"loop", {1, d}}},
                            {Attr::Graph("body", body.builder())})[0];
  // ONNX inference leaves Loop-carried outputs unshaped (they could change per
  // iteration); this one does not, and declaring it keeps every shape static.
  net.DeclareShape(loop);
  // The body's MatMul ran once while building; it runs `trips` times.
  net.AddMacs((trips - 1) * d * d);
  net.Output(net.Gemm("y", loop, 4));
}

}  // namespace baton::zoo::internal
