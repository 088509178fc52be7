// serve/shared_memory without a server: regions of real POSIX shared memory
// objects are registered, read, written, listed and unregistered; every bad
// registration and access is refused with a message naming it; an object
// that shrinks under the server fails the request instead of killing the
// process (and a SIGBUS anywhere else still does); and the KServe JSON form
// takes inputs from and writes outputs to regions.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "baton/serve/kserve_json.h"
#include "baton/serve/shared_memory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton::serve {
namespace {

using ::testing::HasSubstr;

// A POSIX shared memory object of `size` bytes, mapped here, unlinked at the end.
class ShmObject {
 public:
  explicit ShmObject(size_t size)
      : key_("/baton_shm_test_" + std::to_string(getpid()) + "_" + std::to_string(counter_++)), size_(size) {
    fd_ = shm_open(key_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    EXPECT_EQ(ftruncate(fd_, static_cast<off_t>(size)), 0);
    data_ = static_cast<std::byte*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0));
    EXPECT_NE(data_, MAP_FAILED);
  }
  ~ShmObject() {
    munmap(data_, size_);
    close(fd_);
    shm_unlink(key_.c_str());
  }
  const std::string& key() const { return key_; }
  std::byte* data() { return data_; }
  void Shrink() { EXPECT_EQ(ftruncate(fd_, 0), 0); }
  // Removes the name now (the mapping stays): for a process that may die
  // before the destructor runs.
  void Unlink() { shm_unlink(key_.c_str()); }

 private:
  static inline int counter_ = 0;
  std::string key_;
  size_t size_;
  int fd_ = -1;
  std::byte* data_ = nullptr;
};

TEST(SharedMemoryTest, RegistersReadsWritesListsAndUnregisters) {
  ShmObject obj(3 * 4096);
  for (size_t i = 0; i < 3 * 4096; ++i) obj.data()[i] = static_cast<std::byte>(i % 251);
  SharedMemoryRegistry shm;
  // An offset that is not page-aligned maps from the page below it.
  ASSERT_TRUE(shm.Register("r", obj.key(), 5000, 2000).ok());
  absl::StatusOr<std::string> read = shm.ReadRaw("r", 10, 4, "input 'x'");
  ASSERT_TRUE(read.ok()) << read.status();
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(static_cast<unsigned char>((*read)[i]), (5010 + i) % 251) << i;

  absl::StatusOr<SharedMemoryRegistry::Target> target = shm.OutputTarget("r", 100, 8, "output 'y'");
  ASSERT_TRUE(target.ok()) << target.status();
  const std::vector<std::byte> bytes = {std::byte{1}, std::byte{2}, std::byte{3}};
  ASSERT_TRUE(target->Write(bytes, "output 'y'").ok());
  EXPECT_EQ(obj.data()[5100], std::byte{1});
  EXPECT_EQ(obj.data()[5102], std::byte{3});
  EXPECT_EQ(obj.data()[5103], static_cast<std::byte>(5103 % 251)) << "nothing past the bytes written";

  ASSERT_TRUE(shm.Register("s", obj.key(), 0, 16).ok());
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> all = shm.Status("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "r");
  EXPECT_EQ((*all)[0].key, obj.key());
  EXPECT_EQ((*all)[0].offset, 5000u);
  EXPECT_EQ((*all)[0].byte_size, 2000u);
  EXPECT_EQ(shm.Status("s")->size(), 1u);
  EXPECT_EQ(shm.Status("t").status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(shm.Unregister("r").ok());
  EXPECT_EQ(shm.Unregister("r").code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(shm.ReadRaw("r", 0, 4, "input 'x'").status().message(),
              HasSubstr("input 'x': no shared memory region 'r' is registered"));
  // A target taken before keeps its region mapped.
  ASSERT_TRUE(target->Write(bytes, "output 'y'").ok());
  ASSERT_TRUE(shm.Unregister("").ok());
  EXPECT_EQ(shm.size(), 0u);
}

TEST(SharedMemoryTest, BadRegistrationsAndAccessesAreRefusedAndNamed) {
  ShmObject obj(4096);
  SharedMemoryRegistry shm(/*max_regions=*/2, /*max_read_bytes=*/32);
  auto message = [](const absl::Status& s) { return std::string(s.message()); };
  EXPECT_THAT(message(shm.Register("", obj.key(), 0, 8)), HasSubstr("region name '' must have 1 to 255"));
  EXPECT_THAT(message(shm.Register("r", "/a/b", 0, 8)), HasSubstr("has a '/' after its first character"));
  EXPECT_THAT(message(shm.Register("r", obj.key(), 0, 0)), HasSubstr("is empty or overflows"));
  EXPECT_THAT(message(shm.Register("r", obj.key(), UINT64_MAX, 2)), HasSubstr("is empty or overflows"));
  const absl::Status missing = shm.Register("r", "/baton_no_such_object", 0, 8);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(message(missing), HasSubstr("create it (shm_open with O_CREAT, then ftruncate)"));
  EXPECT_THAT(message(shm.Register("r", obj.key(), 4000, 200)),
              HasSubstr("bytes [4000, 4200) are past the end of object '" + obj.key() + "', which has 4096 bytes"));
  ASSERT_TRUE(shm.Register("r", obj.key(), 0, 64).ok());
  EXPECT_THAT(message(shm.Register("r", obj.key(), 0, 64)), HasSubstr("'r' is already registered"));
  ASSERT_TRUE(shm.Register("s", obj.key(), 0, 64).ok());
  EXPECT_EQ(shm.Register("t", obj.key(), 0, 64).code(), absl::StatusCode::kResourceExhausted);

  EXPECT_THAT(message(shm.ReadRaw("r", 60, 8, "input 'x'").status()),
              HasSubstr("input 'x': bytes [60, 68) are outside shared memory region 'r' of 64 bytes"));
  EXPECT_THAT(message(shm.ReadRaw("r", 65, 0, "input 'x'").status()), HasSubstr("outside"));
  EXPECT_THAT(message(shm.ReadRaw("r", 0, 33, "input 'x'").status()),
              HasSubstr("input 'x': 33 bytes from shared memory region 'r', more than the 32 a request may carry"));
  EXPECT_THAT(message(shm.OutputTarget("r", 0, 65, "output 'y'").status()), HasSubstr("outside"));
  absl::StatusOr<SharedMemoryRegistry::Target> small = shm.OutputTarget("r", 0, 2, "output 'y'");
  ASSERT_TRUE(small.ok());
  const std::vector<std::byte> three(3);
  EXPECT_THAT(message(small->Write(three, "output 'y'")), HasSubstr("has 3 bytes, more than the 2"));
}

TEST(SharedMemoryTest, AnObjectThatShrinksFailsTheRequestAndTheProcessGoesOn) {
  ShmObject obj(2 * 4096);
  SharedMemoryRegistry shm;
  ASSERT_TRUE(shm.Register("r", obj.key(), 0, 2 * 4096).ok());
  absl::StatusOr<SharedMemoryRegistry::Target> target = shm.OutputTarget("r", 0, 8, "output 'y'");
  ASSERT_TRUE(target.ok());
  obj.Shrink();  // what a careless or hostile client can do at any time
  const absl::StatusOr<std::string> read = shm.ReadRaw("r", 0, 4096, "input 'x'");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(), HasSubstr("input 'x': shared memory object '" + obj.key() +
                                                 "' of region 'r' shrank while it was read"));
  const std::vector<std::byte> bytes(8);
  EXPECT_EQ(target->Write(bytes, "output 'y'").code(), absl::StatusCode::kDataLoss);
  // Again: the guard is rearmed after each fault.
  EXPECT_EQ(shm.ReadRaw("r", 4096, 16, "input 'x'").status().code(), absl::StatusCode::kDataLoss);
}

// A descriptor of its own on `key` holding a shared flock, as a client that
// follows the lock convention keeps one; -1 when that fails.
int LockShared(const std::string& key) {
  const int fd = shm_open(key.c_str(), O_RDWR, 0);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_SH) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(SharedMemoryTest, ARegionIsDroppedOnceItsOwnersLockIsGone) {
  ShmObject owned(4096), unowned(4096);
  const int lock = LockShared(owned.key());
  ASSERT_GE(lock, 0) << std::strerror(errno);
  SharedMemoryRegistry shm;
  ASSERT_TRUE(shm.Register("owned", owned.key(), 0, 4096).ok());
  ASSERT_TRUE(shm.Register("unowned", unowned.key(), 0, 4096).ok());
  absl::StatusOr<SharedMemoryRegistry::Target> target = shm.OutputTarget("owned", 0, 8, "output 'y'");
  ASSERT_TRUE(target.ok());
  // While the owner holds its lock, listing keeps both.
  EXPECT_EQ(shm.size(), 2u);
  EXPECT_EQ(shm.reclaimed(), 0u);

  close(lock);  // what the kernel does when the owner's process ends
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> left = shm.Status("");
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].name, "unowned");  // nobody locked it: it stays until unregistered, as in Triton
  EXPECT_EQ(shm.reclaimed(), 1u);
  EXPECT_EQ(shm.ReadRaw("owned", 0, 4, "input 'x'").status().code(), absl::StatusCode::kInvalidArgument);
  // A request that took the region before keeps its mapping.
  const std::vector<std::byte> bytes = {std::byte{7}};
  ASSERT_TRUE(target->Write(bytes, "output 'y'").ok());
  EXPECT_EQ(owned.data()[0], std::byte{7});
  // The name is free again.
  EXPECT_TRUE(shm.Register("owned", owned.key(), 0, 4096).ok());
}

TEST(SharedMemoryTest, RegionsOfClientsThatAreGoneDoNotFillTheRegistry) {
  ShmObject a(4096), b(4096), c(4096);
  SharedMemoryRegistry shm(/*max_regions=*/2);
  const int lock_a = LockShared(a.key()), lock_b = LockShared(b.key());
  ASSERT_GE(lock_a, 0);
  ASSERT_GE(lock_b, 0);
  ASSERT_TRUE(shm.Register("a", a.key(), 0, 4096).ok());
  ASSERT_TRUE(shm.Register("b", b.key(), 0, 4096).ok());
  EXPECT_EQ(shm.Register("c", c.key(), 0, 4096).code(), absl::StatusCode::kResourceExhausted);
  close(lock_a);  // a crashed client
  EXPECT_TRUE(shm.Register("c", c.key(), 0, 4096).ok());
  EXPECT_EQ(shm.reclaimed(), 1u);
  close(lock_b);
}

TEST(SharedMemoryDeathTest, ASigbusOutsideTheGuardStillKillsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  InstallSharedMemoryFaultGuard();
  EXPECT_EXIT(
      {
        ShmObject obj(4096);
        obj.Unlink();  // this process dies below, before the destructor would unlink it
        volatile std::byte* p = obj.data();
        obj.Shrink();
        p[0] = std::byte{1};  // not a guarded copy: the process dies as it would have
      },
      // Killed by SIGBUS, or (under a sanitizer, whose handler was there first) reported and exited non-zero.
      [](int status) { return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0); }, "");
}

ModelInfo Model() {
  ModelInfo m;
  m.name = "cam";
  m.inputs = {TensorInfo{"x", dtype::kFloat, "float32", {-1, 2}, true}};
  m.outputs = {TensorInfo{"y", dtype::kFloat, "float32", {-1, 2}, true}};
  return m;
}

TEST(SharedMemoryJsonTest, InputsComeFromAndOutputsGoToRegions) {
  ShmObject obj(4096);
  const float x[4] = {1.5f, -2.f, 3.f, 4.25f};
  std::memcpy(obj.data() + 64, x, sizeof(x));
  SharedMemoryRegistry shm;
  ASSERT_TRUE(shm.Register("in", obj.key(), 0, 1024).ok());
  ASSERT_TRUE(shm.Register("out", obj.key(), 1024, 1024).ok());
  const std::string body = R"({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters":
      {"shared_memory_region": "in", "shared_memory_byte_size": 16, "shared_memory_offset": 64}}],
      "outputs": [{"name": "y", "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 1024}}]})";
  absl::StatusOr<ParsedRequest> r = ParseInferRequest(body, Model(), 1 << 20, &shm);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs.count("x"), 1u);
  const std::span<const float> got = r->inputs.at("x").data<float>();
  EXPECT_THAT(std::vector<float>(got.begin(), got.end()), ::testing::ElementsAre(1.5f, -2.f, 3.f, 4.25f));
  ASSERT_EQ(r->shm_outputs.count("y"), 1u);

  Tensors outputs;
  outputs.emplace("y", r->inputs.at("x").Clone());
  absl::StatusOr<nlohmann::json> resp = InferResponseJson(Model(), "", outputs, r->outputs, r->shm_outputs);
  ASSERT_TRUE(resp.ok()) << resp.status();
  const nlohmann::json& y = (*resp)["outputs"][0];
  EXPECT_FALSE(y.contains("data"));
  EXPECT_EQ(y["parameters"]["shared_memory_region"], "out");
  EXPECT_EQ(y["parameters"]["shared_memory_byte_size"], 16);
  EXPECT_EQ(std::memcmp(obj.data() + 1024, x, sizeof(x)), 0);

  // Refusals, each naming the tensor.
  auto error = [&](const std::string& b, const SharedMemoryRegistry* registry) {
    return std::string(ParseInferRequest(b, Model(), 1 << 20, registry).status().message());
  };
  const std::string in_x = R"({"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": )";
  EXPECT_THAT(error(R"({"inputs": [)" + in_x + R"({"shared_memory_region": "in", "shared_memory_byte_size": 16}}]})",
                    nullptr),
              HasSubstr("input 'x': names shared memory region 'in', but this server takes no client shared memory"));
  EXPECT_THAT(error(R"({"inputs": [)" + in_x + R"({"shared_memory_region": "in"}}]})", &shm),
              HasSubstr("give both 'shared_memory_region' and 'shared_memory_byte_size'"));
  EXPECT_THAT(error(R"({"inputs": [)" + in_x + R"({"shared_memory_region": "in", "shared_memory_byte_size": 12}}]})",
                    &shm),
              HasSubstr("input 'x'"));  // 12 bytes for a [2, 2] FP32 tensor
  EXPECT_THAT(error(R"({"inputs": [)" + in_x +
                        R"({"shared_memory_region": "in", "shared_memory_byte_size": 16}, "data": [1, 2, 3, 4]}]})",
                    &shm),
              HasSubstr("has 'data' and names shared memory region 'in'; use one"));
  EXPECT_THAT(error(R"({"inputs": [)" + in_x + R"({"shared_memory_region": "nope", "shared_memory_byte_size": 16}}]})",
                    &shm),
              HasSubstr("no shared memory region 'nope' is registered"));
  EXPECT_THAT(error(R"({"inputs": [)" + in_x +
                        R"({"shared_memory_region": "in", "shared_memory_byte_size": -1}}]})",
                    &shm),
              HasSubstr("'shared_memory_byte_size' must be an integer >= 0"));
}

}  // namespace
}  // namespace baton::serve
