# Generates version.hpp with the project version, git commit, compiler and build type.
#
# Included by the project, it writes the header once at configure time and adds a target that
# runs this file again as a script (cmake -P) on every build, so `nanochat --version` names the
# commit that was built, not the one the build tree was configured at. configure_file leaves the
# header untouched while its text is unchanged, so nothing recompiles until the commit moves.
if(NOT CMAKE_SCRIPT_MODE_FILE)
  find_package(Git QUIET)
  set(_nanochat_version_args
      -DPROJECT_SOURCE_DIR=${PROJECT_SOURCE_DIR}
      -DPROJECT_BINARY_DIR=${PROJECT_BINARY_DIR}
      -DPROJECT_VERSION=${PROJECT_VERSION}
      -DGIT_EXECUTABLE=${GIT_EXECUTABLE}
      "-DNANOCHAT_COMPILER=${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}"
      -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}
      -DNANOCHAT_SANITIZE=${NANOCHAT_SANITIZE}
      -DCMAKE_INSTALL_PREFIX=${CMAKE_INSTALL_PREFIX})
  execute_process(COMMAND ${CMAKE_COMMAND} ${_nanochat_version_args} -P ${CMAKE_CURRENT_LIST_FILE}
                  COMMAND_ERROR_IS_FATAL ANY)
  add_custom_target(nanochat_version
                    COMMAND ${CMAKE_COMMAND} ${_nanochat_version_args} -P ${CMAKE_CURRENT_LIST_FILE}
                    BYPRODUCTS ${PROJECT_BINARY_DIR}/generated/nanochat/version.hpp
                    VERBATIM)
  return()
endif()

set(NANOCHAT_GIT_COMMIT "unknown")
if(GIT_EXECUTABLE AND EXISTS "${PROJECT_SOURCE_DIR}/.git")
  execute_process(COMMAND ${GIT_EXECUTABLE} describe --always --dirty --abbrev=12
                  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                  OUTPUT_VARIABLE NANOCHAT_GIT_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE
                  ERROR_QUIET)
  if(NOT NANOCHAT_GIT_COMMIT)
    set(NANOCHAT_GIT_COMMIT "unknown")
  endif()
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/version.hpp.in
               ${PROJECT_BINARY_DIR}/generated/nanochat/version.hpp @ONLY)
