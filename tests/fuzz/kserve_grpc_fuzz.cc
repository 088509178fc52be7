// Fuzz target: a serialized KServe v2 gRPC ModelInferRequest, checked as
// ModelInfer checks it (serve::CheckSerializedInferRequest): raw and typed
// contents, BYTES in raw form, parameters, requested outputs, inputs and
// outputs in a client shared memory region (fuzz_shm.h).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "baton/serve/grpc_server.h"
#include "fuzz_shm.h"
#include "fuzz_target.h"
#include "inference/grpc_service.pb.h"

namespace baton::fuzz {

namespace {

ModelInfo FuzzModel() {
  ModelInfo m;
  m.name = "fz";
  m.inputs = {{"x", dtype::kFloat, "float32", {1, -1}, true},
              {"ids", dtype::kInt64, "int64", {-1}, true},
              {"s", dtype::kString, "string", {2}, true}};
  m.outputs = {{"y", dtype::kFloat, "float32", {1, -1}, true}};
  return m;
}

inference::ModelInferRequest::InferInputTensor* Input(inference::ModelInferRequest& r, const char* name,
                                                      const char* datatype, std::vector<int64_t> shape) {
  auto* in = r.add_inputs();
  in->set_name(name);
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  return in;
}

}  // namespace

std::vector<std::string> Seeds() {
  std::vector<std::string> seeds;
  {
    inference::ModelInferRequest r;  // raw contents
    r.set_model_name("fz");
    r.set_id("1");
    (*r.mutable_parameters())["priority"].set_int64_param(3);
    (*r.mutable_parameters())["timeout"].set_int64_param(1000);
    Input(r, "x", "FP32", {1, 2});
    Input(r, "ids", "INT64", {1});
    Input(r, "s", "BYTES", {2});
    const float x[2] = {1.0f, -2.5f};
    const int64_t ids[1] = {42};
    r.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x), sizeof(x)));
    r.add_raw_input_contents(std::string(reinterpret_cast<const char*>(ids), sizeof(ids)));
    r.add_raw_input_contents(std::string("\x01\x00\x00\x00" "a" "\x02\x00\x00\x00" "bc", 11));
    r.add_outputs()->set_name("y");
    seeds.push_back(r.SerializeAsString());
  }
  {
    inference::ModelInferRequest r;  // typed contents
    r.set_model_name("fz");
    Input(r, "x", "FP32", {1, 3})->mutable_contents()->mutable_fp32_contents()->Add(1.0f);
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(2.0f);
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(3.0f);
    Input(r, "ids", "INT64", {2})->mutable_contents()->add_int64_contents(-1);
    r.mutable_inputs(1)->mutable_contents()->add_int64_contents(INT64_MAX);
    auto* s = Input(r, "s", "BYTES", {2})->mutable_contents();
    s->add_bytes_contents("hello");
    s->add_bytes_contents(std::string("\0\xff", 2));
    seeds.push_back(r.SerializeAsString());
  }
  {
    inference::ModelInferRequest r;  // x and y in shared memory, the others raw (one per input not in it)
    r.set_model_name("fz");
    auto shm = [](google::protobuf::Map<std::string, inference::InferParameter>& p, int64_t offset, int64_t size) {
      p["shared_memory_region"].set_string_param("r");
      p["shared_memory_offset"].set_int64_param(offset);
      p["shared_memory_byte_size"].set_int64_param(size);
    };
    shm(*Input(r, "x", "FP32", {1, 4})->mutable_parameters(), 64, 16);
    Input(r, "ids", "INT64", {1});
    Input(r, "s", "BYTES", {2});
    const int64_t ids[1] = {7};
    r.add_raw_input_contents(std::string(reinterpret_cast<const char*>(ids), sizeof(ids)));
    r.add_raw_input_contents(std::string("\x01\x00\x00\x00" "a" "\x00\x00\x00\x00", 9));
    auto* y = r.add_outputs();
    y->set_name("y");
    shm(*y->mutable_parameters(), 1024, 64);
    seeds.push_back(r.SerializeAsString());
  }
  return seeds;
}

}  // namespace baton::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const baton::ModelInfo model = baton::fuzz::FuzzModel();
  (void)baton::serve::CheckSerializedInferRequest(std::string_view(reinterpret_cast<const char*>(data), size), model,
                                                  baton::fuzz::FuzzShm());
  return 0;
}
