# shmalloc_cc_test(NAME name SRCS ... DEPS ... LABELS ... [ARGS ...] [TIMEOUT s])
# One gtest executable per test file, registered with ctest under its tier label.
function(shmalloc_cc_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  add_executable(${T_NAME} ${T_SRCS})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} shmalloc_testing GTest::gmock
    GTest::gtest_main)  # a test with its own main() keeps it: archives only fill gaps
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT})
endfunction()
