# `cmake --install` of the client side of shmalloc: the public headers
# (client/include/shmalloc/), the libraries a client links (shmalloc_client
# and the static libraries it contains: shmalloc_proto, shmalloc_allocators,
# shmalloc_common; the C API's shared libshmalloc_c), the `shmalloc` CLI, a
# CMake package and pkg-config files:
#
#   find_package(shmalloc CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE shmalloc::client)   # C++
#   target_link_libraries(app PRIVATE shmalloc::c)        # C API
#
#   c++ -std=c++20 app.cc $(pkg-config --cflags --libs shmalloc)
#   cc app.c $(pkg-config --cflags --libs shmalloc-c)
#
# shmallocd and its default config are installed by server/CMakeLists.txt.
# Included once from the top-level CMakeLists.txt, after every target exists.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(NOT TARGET shmalloc_client)
  return()
endif()

set(_shmalloc_libs shmalloc_client shmalloc_proto shmalloc_allocators
  shmalloc_common)
set_target_properties(shmalloc_proto PROPERTIES EXPORT_NAME proto)
set_target_properties(shmalloc_allocators PROPERTIES EXPORT_NAME allocators)
set_target_properties(shmalloc_common PROPERTIES EXPORT_NAME common)
install(TARGETS ${_shmalloc_libs} shmalloc_c
  EXPORT shmallocTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/client/include/shmalloc
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
if(TARGET shmalloc)
  install(TARGETS shmalloc RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# CMake package: <libdir>/cmake/shmalloc/.
set(_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/shmalloc)
install(EXPORT shmallocTargets
  NAMESPACE shmalloc::
  FILE shmallocTargets.cmake
  DESTINATION ${_cmake_dir})
configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/install/shmallocConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/shmallocConfig.cmake
  INSTALL_DESTINATION ${_cmake_dir})
write_basic_package_version_file(
  ${CMAKE_CURRENT_BINARY_DIR}/shmallocConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/shmallocConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/shmallocConfigVersion.cmake
  DESTINATION ${_cmake_dir})

# pkg-config: shmalloc.pc (C++ client, static) and shmalloc-c.pc (C API),
# relocatable (cmake --install --prefix decides the prefix at install time).
file(RELATIVE_PATH SHMALLOC_PC_TO_PREFIX
  /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
foreach(_pc shmalloc shmalloc-c)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/install/${_pc}.pc.in
    ${CMAKE_CURRENT_BINARY_DIR}/${_pc}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${_pc}.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
