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

# c_api_test is C, linked only against libshmalloc_c; the gtest wrapper
# starts the daemon and runs it.
add_executable(c_api_test ${_dir}/c_api_test.c)
target_link_libraries(c_api_test PRIVATE shmalloc::c)
set_target_properties(c_api_test PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON)
shmalloc_cc_test(NAME c_api_wrapper_test SRCS ${_dir}/c_api_wrapper_test.cc
  DEPS shmalloc_daemon_process shmalloc_subprocess GTest::gtest_main
  LABELS integration TIMEOUT 180)
add_dependencies(c_api_wrapper_test shmallocd c_api_test)
target_compile_definitions(c_api_wrapper_test PRIVATE
  C_API_TEST_PATH="$<TARGET_FILE:c_api_test>")

# GetRegionMap / ListAllocations and `shmalloc map` / `shmalloc leaks`.
shmalloc_cc_test(NAME map_leaks_test SRCS ${_dir}/map_leaks_test.cc
  DEPS shmalloc_daemon_process shmalloc_subprocess GTest::gtest_main
  LABELS integration TIMEOUT 180)
add_dependencies(map_leaks_test shmallocd shmalloc)
target_compile_definitions(map_leaks_test PRIVATE
  SHMALLOC_CLI_PATH="$<TARGET_FILE:shmalloc>")

# `shmalloc profile`: the HTML report after a scripted workload.
shmalloc_cc_test(NAME profile_test SRCS ${_dir}/profile_test.cc
  DEPS shmalloc_daemon_process shmalloc_subprocess GTest::gtest_main
  LABELS integration TIMEOUT 180)
add_dependencies(profile_test shmallocd shmalloc)
target_compile_definitions(profile_test PRIVATE
  SHMALLOC_CLI_PATH="$<TARGET_FILE:shmalloc>")
