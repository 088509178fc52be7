// baton's version: the one place it is written. CMakeLists.txt reads it from
// here for project(VERSION), which the installed package and the Python
// module carry; `baton --version`, the KServe server metadata and the
// partitions' producer_version print this constant.
#pragma once

namespace baton {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace baton
