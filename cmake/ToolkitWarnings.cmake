# toolkit_target(<target>): the project's compile settings for one of our own targets.
function(toolkit_target target)
  # -Wextra's missing-field-initializers fires on C++20 designated initialisers that leave fields
  # at their defaults ({.timeout = 200ms}), which is exactly how our option structs are meant to be used.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)
  # GCC 12 reports -Wrestrict false positives inside libstdc++'s std::string operator+ at -O2
  # (GCC bug 105651, fixed in 13); they drown real warnings, so silence just that one there.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
  # GCC 13 (the GPU image's compiler) flags every `const json & v = require(obj, "key", ...)` as a
  # possibly dangling reference because a temporary std::string is an argument, though the result
  # refers into obj; the heuristic was narrowed in GCC 14.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 13
     AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 14)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-dangling-reference>)
  endif()
  if(TOOLKIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  target_include_directories(${target} PUBLIC ${TOOLKIT_ROOT})
endfunction()
