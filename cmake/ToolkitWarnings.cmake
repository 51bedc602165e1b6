# toolkit_target(<target>): the project's compile settings for one of our own targets.
function(toolkit_target target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(TOOLKIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  target_include_directories(${target} PUBLIC ${TOOLKIT_ROOT})
endfunction()
