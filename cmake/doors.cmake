# Doors (issue 10, ARCHITECTURE.md): a library's include/ folder holds its
# public header and is its only PUBLIC include directory; every other folder
# of the library is PRIVATE. NAME_internal (an INTERFACE target) carries the
# private folders for the tests, benches and fuzzers that test internals; they
# link it with apr_use_internals, which is also what tests/check_includes.sh
# reads to allow their includes (so keep each call on one line).

# apr_doors(TARGET [EXTRA_PRIVATE_DIR...]): the current source folder's
# include/ is TARGET's door; the folder itself and the extra folders (rooms)
# are private, and TARGET_internal exposes them.
function(apr_doors target)
  set(private ${CMAKE_CURRENT_SOURCE_DIR} ${ARGN})
  target_include_directories(${target} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include PRIVATE ${private})
  add_library(${target}_internal INTERFACE)
  target_include_directories(${target}_internal INTERFACE ${private})
  target_link_libraries(${target}_internal INTERFACE ${target})
endfunction()

# apr_use_internals(EXE INTERNAL_TARGET...): EXE (a test, bench or fuzzer)
# includes internal headers of the libraries behind these targets.
function(apr_use_internals exe)
  target_link_libraries(${exe} PRIVATE ${ARGN})
endfunction()
