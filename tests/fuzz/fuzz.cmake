# The libFuzzer targets, built only with -DXD_FUZZ=ON by a clang configured for it (tests/fuzz/run.sh:
# CC=clang, -fsanitize=fuzzer-no-link,address,undefined on everything, -fsanitize=fuzzer on the link).
foreach(t image model dataset checkpoint)
  add_executable(fuzz_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${t}.c)
  target_link_libraries(fuzz_${t} PRIVATE xdcore)
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
endforeach()
