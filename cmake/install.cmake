# `cmake --install <build> --prefix P` (docs/embedding.md):
#   P/include/baton/baton.h, baton/core/{tensor,dtype}.h   the public API
#   P/lib/libbaton.so*, libonnxruntime.so*                 the engine and ONNX Runtime
#   P/lib/cmake/baton/                                      find_package(baton) -> baton::baton
#   P/lib/pkgconfig/baton.pc                                pkg-config --cflags --libs baton
#   P/bin/baton                                             the CLI
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS baton_engine EXPORT batonTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(FILES "${BATON_SRC_ROOT}/baton/baton.h" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/baton")
install(FILES "${BATON_SRC_ROOT}/baton/core/tensor.h" "${BATON_SRC_ROOT}/baton/core/dtype.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/baton/core")
# ONNX Runtime beside libbaton.so (its RPATH is $ORIGIN); symlinks kept.
get_target_property(baton_ort_location onnxruntime::onnxruntime IMPORTED_LOCATION_RELEASE)
if(NOT baton_ort_location)
  get_target_property(baton_ort_location onnxruntime::onnxruntime IMPORTED_LOCATION)
endif()
get_filename_component(baton_ort_dir "${baton_ort_location}" DIRECTORY)
install(DIRECTORY "${baton_ort_dir}/" DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  FILES_MATCHING PATTERN "libonnxruntime.so*" PATTERN "cmake" EXCLUDE)
set_target_properties(baton PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS baton RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")

install(EXPORT batonTargets NAMESPACE baton:: DESTINATION "${CMAKE_INSTALL_LIBDIR}/cmake/baton")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/batonConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/batonConfig.cmake" INSTALL_DESTINATION "${CMAKE_INSTALL_LIBDIR}/cmake/baton")
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/batonConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/batonConfig.cmake" "${CMAKE_CURRENT_BINARY_DIR}/batonConfigVersion.cmake"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}/cmake/baton")
configure_file("${PROJECT_SOURCE_DIR}/cmake/baton.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/baton.pc" @ONLY)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/baton.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
