// baton::FirstInvalidUtf8 (core/utf8.h): RFC 3629's rules.
#include "baton/core/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace baton {
namespace {

TEST(Utf8Test, ValidTextOfEveryLength) {
  EXPECT_EQ(FirstInvalidUtf8(""), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("ascii 0-9"), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8("\xc3\xbc"), std::nullopt);                  // U+00FC
  EXPECT_EQ(FirstInvalidUtf8("\xe7\x9b\xb8\xe6\x9c\xba"), std::nullopt);  // two 3-byte characters
  EXPECT_EQ(FirstInvalidUtf8("\xf0\x9f\x93\xb7"), std::nullopt);          // U+1F4F7
  EXPECT_EQ(FirstInvalidUtf8("\xf4\x8f\xbf\xbf"), std::nullopt);          // U+10FFFF, the last
  EXPECT_EQ(FirstInvalidUtf8("\xef\xbb\xbf" "devices:"), std::nullopt);  // a byte order mark
  EXPECT_EQ(FirstInvalidUtf8(std::string("a\0b", 3)), std::nullopt);
}

TEST(Utf8Test, TheFirstBadByteIsFound) {
  EXPECT_EQ(FirstInvalidUtf8("ab\xff"), 2u);
  EXPECT_EQ(FirstInvalidUtf8("\x80"), 0u) << "a continuation byte alone";
  EXPECT_EQ(FirstInvalidUtf8("\xc0\x80"), 0u) << "an overlong NUL";
  EXPECT_EQ(FirstInvalidUtf8("\xe0\x80\xaf"), 0u) << "an overlong '/'";
  EXPECT_EQ(FirstInvalidUtf8("\xed\xa0\x80"), 0u) << "a surrogate";
  EXPECT_EQ(FirstInvalidUtf8("\xf4\x90\x80\x80"), 0u) << "past U+10FFFF";
  EXPECT_EQ(FirstInvalidUtf8("\xf5\x80\x80\x80"), 0u);
  EXPECT_EQ(FirstInvalidUtf8("x\xe7\x9b"), 1u) << "cut short";
  EXPECT_EQ(FirstInvalidUtf8("\xc3\xbc\xc3("), 2u) << "a second byte that does not continue";
}

}  // namespace
}  // namespace baton
