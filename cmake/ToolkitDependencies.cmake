# Every external dependency is found here, once, so parts only link imported targets.
# Package names and target spellings (libssh's plain `ssh`, yaml-cpp 0.7's un-namespaced target, no CMake
# config for libcurl or PCRE2): docs/build-notes.md, "CMake targets".

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()

find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 2.1 CONFIG REQUIRED)
# libcrypto for SHA-256 (common/sha256.h), in both builds: Debian's libssl-dev; on an offline GPU
# machine bench/gpu_build.sh unpacks it from .debs/ (docs/build-notes.md, "OpenSSL").
find_package(OpenSSL REQUIRED COMPONENTS Crypto)

# libtorch: Debian's libtorch-dev 1.13 on CPU hosts, pip PyTorch 2.x on GPU machines.
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  message(FATAL_ERROR
    "libtorch not found. On Debian run scripts/setup.sh (installs libtorch-dev); on a GPU machine pass "
    "-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')")
endif()
message(STATUS "libtorch ${Torch_VERSION} (${TORCH_LIBRARIES})")

# Fused CUDA kernels (extractor/cuda, analysis/cuda): built when libtorch itself has CUDA and a CUDA
# compiler is present (a GPU machine, or a cloud image with the toolkit); otherwise every op runs its
# ATen path, which is also what CI's CPU build tests. TOOLKIT_CUDA_KERNELS=ON makes a missing nvcc an
# error, OFF skips them. The kernels take raw pointers and include no torch header, so nvcc stays quick.
set(TOOLKIT_CUDA_KERNELS AUTO CACHE STRING "Build the fused CUDA kernels: AUTO, ON or OFF")
set(TOOLKIT_HAS_CUDA_KERNELS OFF)
if(NOT TOOLKIT_CUDA_KERNELS STREQUAL "OFF" AND TARGET torch_cuda)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # The machine that builds is the machine that runs (deploy's bootstrap builds on the rented GPU):
    # compile for its own GPU unless told otherwise.
    # "native" needs a visible GPU; a build box without one gets the datacenter generations.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE toolkit_no_gpu OUTPUT_QUIET ERROR_QUIET)
      if(toolkit_no_gpu EQUAL 0)
        set(CMAKE_CUDA_ARCHITECTURES native)
      else()
        set(CMAKE_CUDA_ARCHITECTURES 80 90)
      endif()
    endif()
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # libtorch loads the shared CUDA runtime; a second, static one in our kernels would be a
    # separate runtime state in the same process.
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(TOOLKIT_HAS_CUDA_KERNELS ON)
  endif()
endif()
if(TOOLKIT_CUDA_KERNELS STREQUAL "ON" AND NOT TOOLKIT_HAS_CUDA_KERNELS)
  message(FATAL_ERROR "TOOLKIT_CUDA_KERNELS=ON but libtorch has no CUDA or no CUDA compiler was found")
endif()
message(STATUS "fused CUDA kernels: ${TOOLKIT_HAS_CUDA_KERNELS}")

# toolkit_cuda_kernels(<target> <sources...>): a static library of .cu kernels for one part.
function(toolkit_cuda_kernels target)
  add_library(${target} STATIC ${ARGN})
  target_include_directories(${target} PUBLIC ${TOOLKIT_ROOT})
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall>)
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(${target} PUBLIC CUDA::cudart)
endfunction()

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
