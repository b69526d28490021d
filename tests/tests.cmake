# Every tests/test_*.c is one executable and one ctest entry (name without the prefix).
# Every tests/test_*.sh is run with bash as: script BINARY SOURCE_DIR WORK_DIR.
file(GLOB XD_TEST_C CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/test_*.c)
foreach(src ${XD_TEST_C})
  get_filename_component(name ${src} NAME_WE)
  string(REGEX REPLACE "^test_" "" short ${name})
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(${name} PRIVATE xdcore)
  add_test(NAME ${short} COMMAND ${name} ${CMAKE_SOURCE_DIR}/tests/fixtures ${CMAKE_BINARY_DIR}/testwork/${short})
  set_tests_properties(${short} PROPERTIES TIMEOUT 600 LABELS unit)
endforeach()

# Tools the shell tests call.
add_executable(ckpt_diff ${CMAKE_SOURCE_DIR}/tests/tools/ckpt_diff.c)
target_link_libraries(ckpt_diff PRIVATE xdcore)

file(GLOB XD_TEST_SH CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/test_*.sh)
foreach(src ${XD_TEST_SH})
  get_filename_component(name ${src} NAME_WE)
  string(REGEX REPLACE "^test_" "" short ${name})
  add_test(NAME ${short} COMMAND bash ${src} $<TARGET_FILE:xray-dp> ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/testwork/${short})
  set_tests_properties(${short} PROPERTIES TIMEOUT 900 ENVIRONMENT "MPIEXEC=${MPIEXEC_EXECUTABLE};CKPT_DIFF=$<TARGET_FILE:ckpt_diff>")
endforeach()

# The fuzz targets' corpus and crash inputs replayed without libFuzzer (tests/fuzz/).
include(${CMAKE_SOURCE_DIR}/tests/fuzz/replay.cmake)
