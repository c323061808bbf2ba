# Build helpers shared by every module.

# Adds `dir` when it has a CMakeLists.txt (modules land one at a time) and it is not listed in
# LOOM_SKIP_DIRS (a ;-list, for building around a module that is mid-change).
set(LOOM_SKIP_DIRS "" CACHE STRING "Module directories to leave out of the build")
function(loom_optional_subdirectory dir)
  if(dir IN_LIST LOOM_SKIP_DIRS)
    return()
  endif()
  if(EXISTS ${PROJECT_SOURCE_DIR}/${dir}/CMakeLists.txt)
    add_subdirectory(${PROJECT_SOURCE_DIR}/${dir} ${PROJECT_BINARY_DIR}/${dir})
  endif()
endfunction()

# loom_test(NAME name SOURCES a.cc ... LIBS lib ... LABELS unit|model|e2e|gpu [TIMEOUT s])
# A GoogleTest binary registered with CTest under `name`, run from the source root so that tests
# find tests/data/ and models/ by relative path.
function(loom_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main loom_common)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT})
endfunction()
