# Every external dependency is found here, once, so parts only link imported targets.
# Package names and target spellings follow ../shared/reference/build-notes.md §2.

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 2.1 CONFIG REQUIRED)

# libtorch: Debian's libtorch-dev 1.13 on CPU hosts, pip PyTorch 2.x on GPU machines.
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  message(FATAL_ERROR
    "libtorch not found. On Debian run scripts/setup.sh (installs libtorch-dev); on a GPU machine pass "
    "-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')")
endif()
message(STATUS "libtorch ${Torch_VERSION} (${TORCH_LIBRARIES})")

if(NOT TOOLKIT_GPU_ONLY)
  find_package(CURL REQUIRED)
  find_package(libssh 0.9 CONFIG REQUIRED)   # imported target is the plain name `ssh`
  find_package(yaml-cpp 0.6 CONFIG REQUIRED)
  if(TARGET yaml-cpp::yaml-cpp)
    set(TOOLKIT_YAML_TARGET yaml-cpp::yaml-cpp)
  else()
    set(TOOLKIT_YAML_TARGET yaml-cpp)          # 0.7 exports no namespace
  endif()
  find_package(SQLite3 REQUIRED)
  if(TOOLKIT_BUILD_TESTS)
    find_package(doctest 2.4 CONFIG REQUIRED)
    include(doctest)
  endif()
endif()

# PCRE2 (UTF + UCP) runs the tokenizer's pre-tokenizer regex, so the GPU side needs it too: a cloud
# machine gets it from apt at bootstrap (libpcre2-dev); headers-only copies also work via pkg-config.
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
