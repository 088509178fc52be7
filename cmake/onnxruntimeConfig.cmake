# CMake package for the prebuilt ONNX Runtime that scripts/install_deps.sh
# places in .deps/onnxruntime. Provides the imported target onnxruntime::onnxruntime.
get_filename_component(_ort_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET onnxruntime::onnxruntime)
  add_library(onnxruntime::onnxruntime SHARED IMPORTED)
  set_target_properties(onnxruntime::onnxruntime PROPERTIES
    IMPORTED_LOCATION "${_ort_prefix}/lib/libonnxruntime.so.1"
    IMPORTED_SONAME "libonnxruntime.so.1"
    INTERFACE_INCLUDE_DIRECTORIES "${_ort_prefix}/include")
endif()
set(onnxruntime_FOUND TRUE)
unset(_ort_prefix)
