# Warning flags applied to nanochat's own targets (not to dependencies).
function(nanochat_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                           -Wno-sign-conversion)
  if(NANOCHAT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
