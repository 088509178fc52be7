// ReadRegularFile: the checks every user-named file gets (configs, plans,
// profiles): regular files only, a size limit, errors naming the file.
#include "baton/core/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace baton {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("baton_file_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(FileTest, ReadsARegularFileWithinTheLimit) {
  std::ofstream(dir_ / "a.txt") << "hello";
  absl::StatusOr<std::string> text = ReadRegularFile((dir_ / "a.txt").string(), 5, "config file");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "hello");
  std::ofstream(dir_ / "empty.txt");
  EXPECT_EQ(*ReadRegularFile((dir_ / "empty.txt").string(), 5, "plan"), "");
  // Larger than one read chunk.
  std::ofstream(dir_ / "big.txt") << std::string(200000, 'x');
  EXPECT_EQ(ReadRegularFile((dir_ / "big.txt").string(), 200000, "plan")->size(), 200000u);
}

TEST_F(FileTest, RefusesWhatIsNotARegularFileOrTooLarge) {
  std::ofstream(dir_ / "a.txt") << "hello!";
  absl::Status big = ReadRegularFile((dir_ / "a.txt").string(), 5, "plan").status();
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.message(), HasSubstr("6 bytes, more than the limit of 5"));

  absl::Status missing = ReadRegularFile((dir_ / "nope").string(), 5, "profile").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("profile '"));

  EXPECT_THAT(ReadRegularFile(dir_.string(), 5, "plan").status().message(), HasSubstr("is a folder"));

  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  absl::Status pipe = ReadRegularFile(fifo.string(), 5, "config file").status();  // never opened: no hang
  EXPECT_EQ(pipe.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pipe.message(), HasSubstr("not a regular file"));
  EXPECT_THAT(ReadRegularFile("/dev/zero", 1 << 20, "plan").status().message(), HasSubstr("not a regular file"));
}

}  // namespace
}  // namespace baton
