# Every external dependency of vitcuda, found in one place (included by the top-level
# CMakeLists.txt).
#
# Each one comes from the system when its package is installed (Debian 12: tools/setup.sh; the
# normal path, here and in CI), otherwise from VITCUDA_THIRD_PARTY_DIR, which
# tools/gpu/offline_deps.sh fills on a Debian 12 machine and a GPU session carries to the lent
# machine (no Debian -dev packages, no network there; tools/gpu/README.md):
#
#   OpenBLAS, zlib   imported targets over the Debian shared libraries unpacked from
#                    third_party/sysroot.tar.xz into <build>/third_party/sysroot (or a
#                    third_party/sysroot folder, when there is one); each library carries an
#                    $ORIGIN runpath, so binaries find libopenblas.so.0 through their rpath and
#                    libopenblas finds libgfortran/libquadmath beside itself
#   nlohmann_json, CLI11, stb   header-only: interface targets / include folders (nlohmann_json
#                    and CLI11 also on every target's include path, as /usr/include is)
#   GoogleTest, Google Benchmark   add_subdirectory of their sources (EXCLUDE_FROM_ALL: only
#                    what the project links is built, as static libraries; their tests off)
#   OpenMP, Threads, CUDA   from the compiler and the toolkit, as always
#
# One STATUS line per dependency says where it came from. The subdirectories keep their own
# find_package() calls: for a dependency taken from third_party, a <name>-config.cmake written to
# CMAKE_FIND_PACKAGE_REDIRECTS_DIR answers them with the targets made here. That folder is CMake's
# own place for such redirections (3.24 and newer: find_package() looks there first; FetchContent
# writes the same files), not a package installed anywhere: it lives in the build folder.
#
# The CUDA toolkit's headers that the emulation build compiles with g++ (cuda_bf16.h, ...) are
# found by the top-level CMakeLists.txt (VITCUDA_CUDA_INCLUDE_DIR): the toolkit's, else
# third_party/cuda/include, which tools/setup.sh fills from NVIDIA's CUDA 13.0 wheels on machines
# without a toolkit (tools/test.sh then passes it as VITCUDA_CUDA_INCLUDE_DIR).

set(VITCUDA_THIRD_PARTY_DIR "${PROJECT_SOURCE_DIR}/third_party" CACHE PATH
  "Dependencies fetched by tools/gpu/offline_deps.sh, used for those the system lacks")
set(_vitcuda_tp "${VITCUDA_THIRD_PARTY_DIR}")
if(NOT CMAKE_FIND_PACKAGE_REDIRECTS_DIR)
  message(FATAL_ERROR "vitcuda: CMake ${CMAKE_VERSION} has no CMAKE_FIND_PACKAGE_REDIRECTS_DIR: 3.24 or newer needed")
endif()
set(_vitcuda_redirected GTest benchmark CLI11 nlohmann_json ZLIB)

# A redirect left by an earlier configure would shadow a package installed since.
foreach(_vitcuda_pkg IN LISTS _vitcuda_redirected)
  string(TOLOWER "${_vitcuda_pkg}" _vitcuda_lower)
  file(REMOVE "${CMAKE_FIND_PACKAGE_REDIRECTS_DIR}/${_vitcuda_lower}-config.cmake"
              "${CMAKE_FIND_PACKAGE_REDIRECTS_DIR}/${_vitcuda_lower}-config-version.cmake")
endforeach()

function(_vitcuda_dep_missing name debian_package)
  message(FATAL_ERROR
    "vitcuda: ${name} not found: neither installed nor in VITCUDA_THIRD_PARTY_DIR "
    "(${VITCUDA_THIRD_PARTY_DIR}).\n"
    "  On Debian 12: bash tools/setup.sh (installs ${debian_package} and the rest).\n"
    "  Without Debian packages (the lent GPU machine): run bash tools/gpu/offline_deps.sh on a Debian 12 "
    "machine with apt and PyPI reachable, then bring third_party/ along (the run tool's carry "
    "[\"third_party\"]) or point -DVITCUDA_THIRD_PARTY_DIR= at it. See tools/gpu/README.md.")
endfunction()

# find_package(<pkg>) anywhere in the project now finds the targets made here.
function(_vitcuda_redirect pkg version)
  string(TOLOWER "${pkg}" lower)
  file(WRITE "${CMAKE_FIND_PACKAGE_REDIRECTS_DIR}/${lower}-config.cmake"
    "# Written by vitcuda's cmake/Dependencies.cmake: ${pkg} ${version} from ${VITCUDA_THIRD_PARTY_DIR};\n"
    "# its targets exist already.\nset(${pkg}_FOUND TRUE)\n")
  file(WRITE "${CMAKE_FIND_PACKAGE_REDIRECTS_DIR}/${lower}-config-version.cmake"
    "set(PACKAGE_VERSION \"${version}\")\n"
    "if(PACKAGE_FIND_VERSION AND PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)\n"
    "  set(PACKAGE_VERSION_COMPATIBLE FALSE)\n"
    "else()\n"
    "  set(PACKAGE_VERSION_COMPATIBLE TRUE)\n"
    "  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)\n"
    "    set(PACKAGE_VERSION_EXACT TRUE)\n"
    "  endif()\n"
    "endif()\n")
endfunction()

# The Debian shared libraries of third_party (OpenBLAS, libgfortran, libquadmath, zlib): the
# folder third_party/sysroot, or the archive third_party/sysroot.tar.xz unpacked into the build
# directory (again whenever the archive changes). Sets VITCUDA_SYSROOT ("" when neither exists).
function(_vitcuda_sysroot)
  set(VITCUDA_SYSROOT "" PARENT_SCOPE)
  if(IS_DIRECTORY "${VITCUDA_THIRD_PARTY_DIR}/sysroot")
    set(VITCUDA_SYSROOT "${VITCUDA_THIRD_PARTY_DIR}/sysroot" PARENT_SCOPE)
  elseif(EXISTS "${VITCUDA_THIRD_PARTY_DIR}/sysroot.tar.xz")
    set(dest "${PROJECT_BINARY_DIR}/third_party")
    file(SHA256 "${VITCUDA_THIRD_PARTY_DIR}/sysroot.tar.xz" hash)
    set(stamp "")
    if(EXISTS "${dest}/sysroot.sha256")
      file(READ "${dest}/sysroot.sha256" stamp)
    endif()
    if(NOT stamp STREQUAL hash OR NOT IS_DIRECTORY "${dest}/sysroot")
      message(STATUS "vitcuda: unpacking ${VITCUDA_THIRD_PARTY_DIR}/sysroot.tar.xz into ${dest}")
      file(REMOVE_RECURSE "${dest}/sysroot")
      file(ARCHIVE_EXTRACT INPUT "${VITCUDA_THIRD_PARTY_DIR}/sysroot.tar.xz" DESTINATION "${dest}")
      file(WRITE "${dest}/sysroot.sha256" "${hash}")
    endif()
    set(VITCUDA_SYSROOT "${dest}/sysroot" PARENT_SCOPE)
  endif()
endfunction()
set(_vitcuda_multiarch x86_64-linux-gnu)
if(CMAKE_LIBRARY_ARCHITECTURE)
  set(_vitcuda_multiarch "${CMAKE_LIBRARY_ARCHITECTURE}")
endif()

# ---- OpenBLAS (CPU GEMM) -> target vitcuda_deps::openblas -----------------------------
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(OPENBLAS QUIET IMPORTED_TARGET openblas)
endif()
add_library(vitcuda_deps::openblas INTERFACE IMPORTED GLOBAL)
if(OPENBLAS_FOUND)
  target_link_libraries(vitcuda_deps::openblas INTERFACE PkgConfig::OPENBLAS)
  message(STATUS "vitcuda: OpenBLAS ${OPENBLAS_VERSION}: system (pkg-config openblas: ${OPENBLAS_LINK_LIBRARIES})")
else()
  _vitcuda_sysroot()
  set(_vitcuda_lib "${VITCUDA_SYSROOT}/usr/lib/${_vitcuda_multiarch}")
  set(_vitcuda_openblas "")
  # Debian's layout: the real files under openblas-pthread/ (or openblas-openmp/), the unversioned
  # names in the parent folder being update-alternatives links that no .deb ships.
  foreach(_vitcuda_variant openblas-pthread openblas-openmp)
    if(VITCUDA_SYSROOT AND EXISTS "${_vitcuda_lib}/${_vitcuda_variant}/libopenblas.so.0"
       AND EXISTS "${VITCUDA_SYSROOT}/usr/include/${_vitcuda_multiarch}/${_vitcuda_variant}/cblas.h")
      set(_vitcuda_openblas "${_vitcuda_variant}")
      break()
    endif()
  endforeach()
  if(NOT _vitcuda_openblas)
    _vitcuda_dep_missing("OpenBLAS (pkg-config openblas)" libopenblas-dev)
  endif()
  add_library(vitcuda_deps::openblas_sysroot SHARED IMPORTED GLOBAL)
  set_target_properties(vitcuda_deps::openblas_sysroot PROPERTIES
    IMPORTED_LOCATION "${_vitcuda_lib}/${_vitcuda_openblas}/libopenblas.so.0"
    IMPORTED_SONAME "libopenblas.so.0"
    INTERFACE_INCLUDE_DIRECTORIES "${VITCUDA_SYSROOT}/usr/include/${_vitcuda_multiarch}/${_vitcuda_openblas}"
    # The linker, too, must find libopenblas' own dependencies (libgfortran.so.5).
    INTERFACE_LINK_OPTIONS "LINKER:-rpath-link,${_vitcuda_lib}")
  target_link_libraries(vitcuda_deps::openblas INTERFACE vitcuda_deps::openblas_sysroot)
  # The build tree's rpath comes with the imported location; an installed libvitcuda finds it too.
  list(APPEND CMAKE_INSTALL_RPATH "${_vitcuda_lib}/${_vitcuda_openblas}")
  message(STATUS "vitcuda: OpenBLAS: third_party (${_vitcuda_lib}/${_vitcuda_openblas}/libopenblas.so.0, "
    "Debian binary, rpath)")
endif()

# ---- zlib (gzip-compressed IDX files) -> ZLIB::ZLIB ------------------------------------------
find_package(ZLIB QUIET)
if(ZLIB_FOUND)
  message(STATUS "vitcuda: zlib ${ZLIB_VERSION_STRING}: system (${ZLIB_LIBRARIES})")
else()
  _vitcuda_sysroot()
  if(NOT VITCUDA_SYSROOT OR NOT EXISTS "${VITCUDA_SYSROOT}/usr/include/zlib.h")
    _vitcuda_dep_missing("zlib (zlib.h)" zlib1g-dev)
  endif()
  # The header from third_party; the library the system has (libz.so.1 is everywhere, only the
  # -dev files are missing), else the one from third_party.
  find_library(VITCUDA_ZLIB_RUNTIME NAMES libz.so.1 PATHS /usr/lib/${_vitcuda_multiarch} /lib/${_vitcuda_multiarch})
  set(_vitcuda_zlib "${VITCUDA_ZLIB_RUNTIME}")
  if(NOT _vitcuda_zlib)
    set(_vitcuda_zlib "${VITCUDA_SYSROOT}/usr/lib/${_vitcuda_multiarch}/libz.so.1")
  endif()
  add_library(ZLIB::ZLIB SHARED IMPORTED GLOBAL)
  set_target_properties(ZLIB::ZLIB PROPERTIES
    IMPORTED_LOCATION "${_vitcuda_zlib}"
    IMPORTED_SONAME "libz.so.1"
    INTERFACE_INCLUDE_DIRECTORIES "${VITCUDA_SYSROOT}/usr/include")
  set(ZLIB_FOUND TRUE)
  file(STRINGS "${VITCUDA_SYSROOT}/usr/include/zlib.h" _vitcuda_v REGEX "#define ZLIB_VERSION ")
  string(REGEX REPLACE ".*\"([0-9.]+).*" "\\1" _vitcuda_v "${_vitcuda_v}")
  _vitcuda_redirect(ZLIB "${_vitcuda_v}")
  message(STATUS "vitcuda: zlib ${_vitcuda_v}: third_party (zlib.h from Debian's zlib1g-dev, library ${_vitcuda_zlib})")
endif()

# ---- OpenMP, Threads: the compiler's --------------------------------------------------------
find_package(OpenMP REQUIRED COMPONENTS CXX)
message(STATUS "vitcuda: OpenMP ${OpenMP_CXX_VERSION}: the compiler's (${OpenMP_CXX_FLAGS})")
find_package(Threads REQUIRED)

# ---- header-only: nlohmann_json, CLI11 ---------------------------------------------------------
# _vitcuda_header_only(PKG MIN_VERSION TARGET DIR HEADER VERSION_HEADER VERSION_MACROS DEBIAN_PACKAGE):
# the system's package, else an interface target over third_party/DIR/include, whose version is
# read from the MAJOR/MINOR/PATCH defines of VERSION_HEADER.
function(_vitcuda_header_only pkg min_version target dir header version_header version_macros debian_package)
  if(min_version)
    find_package(${pkg} ${min_version} QUIET)
  else()
    find_package(${pkg} QUIET)
  endif()
  if(${pkg}_FOUND)
    message(STATUS "vitcuda: ${pkg} ${${pkg}_VERSION}: system (${${pkg}_DIR})")
    return()
  endif()
  set(inc "${VITCUDA_THIRD_PARTY_DIR}/${dir}/include")
  if(NOT EXISTS "${inc}/${header}")
    _vitcuda_dep_missing("${pkg} (${header})" ${debian_package})
  endif()
  set(v "")
  if(EXISTS "${inc}/${version_header}")
    file(STRINGS "${inc}/${version_header}" lines REGEX "#define ${version_macros} +[0-9]+")
    foreach(line IN LISTS lines)
      if(line MATCHES "#define [A-Z0-9_]+ +([0-9]+)")
        list(APPEND v "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    list(JOIN v "." v)
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${inc}")
  # Installed, the headers are in /usr/include, where every target sees them whether it links
  # the target or not (tools/vit_train.cpp includes nlohmann/json.hpp but links only vitcuda
  # and CLI11): the same here, so that what builds with the Debian packages builds with
  # third_party.
  include_directories(SYSTEM "${inc}")
  _vitcuda_redirect(${pkg} "${v}")
  message(STATUS "vitcuda: ${pkg} ${v}: third_party (${inc})")
endfunction()
_vitcuda_header_only(nlohmann_json 3 nlohmann_json::nlohmann_json nlohmann_json nlohmann/json.hpp
  nlohmann/detail/abi_macros.hpp "NLOHMANN_JSON_VERSION_(MAJOR|MINOR|PATCH)" nlohmann-json3-dev)
if(VITCUDA_BUILD_TOOLS)
  _vitcuda_header_only(CLI11 "" CLI11::CLI11 cli11 CLI/CLI.hpp CLI/Version.hpp
    "CLI11_VERSION_(MAJOR|MINOR|PATCH)" libcli11-dev)
endif()

# ---- stb_image (optional: PNG/JPEG for image-folder datasets) -> VITCUDA_STB_INCLUDE_DIR ---------
# Debian: libstb-dev. Header only here (host/data_formats.cpp compiles it). Without it,
# load_image_folder throws.
if(PKG_CONFIG_FOUND)
  pkg_check_modules(STB QUIET stb)
endif()
find_path(VITCUDA_STB_INCLUDE_DIR stb_image.h HINTS ${STB_INCLUDE_DIRS} PATH_SUFFIXES stb)
if(NOT VITCUDA_STB_INCLUDE_DIR AND EXISTS "${_vitcuda_tp}/stb/include/stb/stb_image.h")
  set(VITCUDA_STB_INCLUDE_DIR "${_vitcuda_tp}/stb/include/stb" CACHE PATH "stb_image.h folder" FORCE)
endif()
if(NOT VITCUDA_STB_INCLUDE_DIR)
  message(WARNING "stb_image.h not found (install libstb-dev, or run tools/gpu/offline_deps.sh): "
                  "image-folder datasets are disabled")
elseif(VITCUDA_STB_INCLUDE_DIR MATCHES "^${_vitcuda_tp}/")
  message(STATUS "vitcuda: stb: third_party (${VITCUDA_STB_INCLUDE_DIR})")
else()
  message(STATUS "vitcuda: stb: system (${VITCUDA_STB_INCLUDE_DIR})")
endif()

# ---- GoogleTest (tests/: the library tests and the kernel tests) -> GTest::gtest, GTest::gtest_main
if(VITCUDA_BUILD_TESTS)
  find_package(GTest QUIET)
  if(GTest_FOUND)
    message(STATUS "vitcuda: GoogleTest ${GTest_VERSION}: system (${GTest_DIR}${GTEST_LIBRARY})")
  elseif(EXISTS "${_vitcuda_tp}/googletest/CMakeLists.txt")
    # Static, without gmock and without installing; options set as variables (CMP0077).
    set(CMAKE_POLICY_DEFAULT_CMP0077 NEW)
    set(BUILD_SHARED_LIBS OFF)
    set(BUILD_GMOCK OFF)
    set(INSTALL_GTEST OFF)
    add_subdirectory("${_vitcuda_tp}/googletest" "${PROJECT_BINARY_DIR}/_deps/googletest" EXCLUDE_FROM_ALL)
    unset(BUILD_SHARED_LIBS)  # the cache option again
    unset(CMAKE_POLICY_DEFAULT_CMP0077)
    get_directory_property(_vitcuda_v DIRECTORY "${_vitcuda_tp}/googletest" DEFINITION GOOGLETEST_VERSION)
    _vitcuda_redirect(GTest "${_vitcuda_v}")
    message(STATUS "vitcuda: GoogleTest ${_vitcuda_v}: third_party (sources, ${_vitcuda_tp}/googletest)")
  else()
    _vitcuda_dep_missing("GoogleTest (find_package(GTest))" libgtest-dev)
  endif()
endif()

# ---- Google Benchmark -> benchmark::benchmark ------------------------------------------------------
if(VITCUDA_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(benchmark_FOUND)
    message(STATUS "vitcuda: Google Benchmark ${benchmark_VERSION}: system (${benchmark_DIR})")
  elseif(EXISTS "${_vitcuda_tp}/benchmark/CMakeLists.txt")
    set(BUILD_SHARED_LIBS OFF)
    set(BENCHMARK_ENABLE_TESTING OFF)
    set(BENCHMARK_ENABLE_GTEST_TESTS OFF)
    set(BENCHMARK_ENABLE_INSTALL OFF)
    set(BENCHMARK_INSTALL_DOCS OFF)
    set(BENCHMARK_ENABLE_WERROR OFF)
    set(BENCHMARK_ENABLE_LTO OFF)
    set(BENCHMARK_ENABLE_LIBPFM OFF)
    set(BENCHMARK_USE_BUNDLED_GTEST OFF)
    set(GIT_VERSION 0.0.0)  # Debian's patch 0001 reads no git tags: "0.0.0" = project()'s version
    add_subdirectory("${_vitcuda_tp}/benchmark" "${PROJECT_BINARY_DIR}/_deps/benchmark" EXCLUDE_FROM_ALL)
    unset(BUILD_SHARED_LIBS)
    unset(GIT_VERSION)
    get_directory_property(_vitcuda_v DIRECTORY "${_vitcuda_tp}/benchmark" DEFINITION VERSION)
    _vitcuda_redirect(benchmark "${_vitcuda_v}")
    message(STATUS "vitcuda: Google Benchmark ${_vitcuda_v}: third_party (sources, ${_vitcuda_tp}/benchmark)")
  else()
    _vitcuda_dep_missing("Google Benchmark (find_package(benchmark))" libbenchmark-dev)
  endif()
endif()
