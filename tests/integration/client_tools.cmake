# Integration tests of the tools built on the client library: the `shmalloc`
# CLI (cli_test) and the C API (c_api_test). Included from
# tests/CMakeLists.txt after tests/integration/, whose DaemonProcess fixture
# they reuse.
set(_dir ${CMAKE_CURRENT_LIST_DIR})

add_library(shmalloc_subprocess STATIC ${_dir}/subprocess.cc)
target_include_directories(shmalloc_subprocess PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(shmalloc_subprocess PUBLIC absl::status absl::statusor
  absl::strings absl::time)

shmalloc_cc_test(NAME cli_test SRCS ${_dir}/cli_test.cc
  DEPS shmalloc_daemon_process shmalloc_subprocess GTest::gtest_main
  LABELS integration TIMEOUT 180)
add_dependencies(cli_test shmallocd shmalloc)
target_compile_definitions(cli_test PRIVATE
  SHMALLOC_CLI_PATH="$<TARGET_FILE:shmalloc>")
