# Every fuzz target's seed corpus and crash regressions (tests/fuzz/corpus/<t>, tests/fuzz/regress/<t>)
# replayed through the same harness code without libFuzzer, in every ctest build (ASan+UBSan included).
foreach(t image model dataset checkpoint)
  add_executable(replay_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${t}.c ${CMAKE_SOURCE_DIR}/tests/fuzz/replay_main.c)
  target_link_libraries(replay_${t} PRIVATE xdcore)
  add_test(NAME fuzz_replay_${t} COMMAND replay_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${t}
           ${CMAKE_SOURCE_DIR}/tests/fuzz/regress/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 300 LABELS unit)
endforeach()

# Writes the image and model seed corpora (tests/fuzz/make_corpus.sh).
add_executable(fuzz_make_corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/make_corpus.c)
target_include_directories(fuzz_make_corpus PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(fuzz_make_corpus PRIVATE xdcore)
