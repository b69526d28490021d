# The libFuzzer targets, built only with -DXD_FUZZ=ON by a clang configured for it (tests/fuzz/run.sh:
# CC=clang, -fsanitize=fuzzer-no-link,address,undefined on everything, -fsanitize=fuzzer on the link).
# The GEMM kernels use a GCC-only builtin; clang_compat.h stands in for it in this build.
set_property(SOURCE ${CMAKE_SOURCE_DIR}/src/gemm_avx512.c ${CMAKE_SOURCE_DIR}/src/gemm_avx2.c
             ${CMAKE_SOURCE_DIR}/src/gemm_base.c ${CMAKE_SOURCE_DIR}/src/layers/conv.c APPEND PROPERTY COMPILE_OPTIONS
             "-include;${CMAKE_SOURCE_DIR}/tests/fuzz/clang_compat.h")
foreach(t image model dataset checkpoint)
  add_executable(fuzz_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${t}.c)
  target_link_libraries(fuzz_${t} PRIVATE xdcore)
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
endforeach()
