#!/usr/bin/env bash
# The README's two commands in either order, repeatedly, on one build folder (the worst case:
# by default they build in separate folders, build/train and build/test). Configures SCRATCH the
# way tools/train_fmnist.sh (command 1) and tools/test.sh (command 2) do (CONFIGURE_ONLY=1:
# no setup, build or run) and checks after each that the folder is what that command needs:
# command 2's lists the test suite, command 1's has vit_train and the tests off, and ctest, as
# tools/test.sh calls it, fails on a folder without tests instead of passing.
#
#   tests/readme_commands.sh SCRATCH      (ctest: readme_commands)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${1:?usage: $0 SCRATCH_BUILD_DIR}"
rm -rf "$scratch"
mkdir -p "$(dirname "$scratch")"
log="$scratch.log"
: > "$log"

fail() {
  echo "readme_commands: FAILED: $*" >&2
  echo "---- last lines of $log" >&2
  tail -30 "$log" >&2
  exit 1
}
configure() {  # configure SCRIPT: that README command's configure, into the scratch folder
  echo "readme_commands: $1 (configure into $scratch)"
  CONFIGURE_ONLY=1 BUILD_DIR="$scratch" bash "$root/tools/$1" >> "$log" 2>&1 || fail "$1's configure"
}
cache() {  # cache VAR: its value in the scratch folder's CMakeCache.txt
  sed -n "s/^$1:[A-Z]*=//p" "$scratch/CMakeCache.txt"
}
count_tests() {
  ctest --test-dir "$scratch" -N 2>>"$log" | sed -n 's/^Total Tests: *//p'
}
check_command2() {
  [[ "$(cache VITCUDA_BUILD_TESTS)" == ON && "$(cache VITCUDA_BUILD_BENCH)" == ON ]] ||
    fail "command 2's folder has VITCUDA_BUILD_TESTS=$(cache VITCUDA_BUILD_TESTS), VITCUDA_BUILD_BENCH=$(cache VITCUDA_BUILD_BENCH)"
  [[ "$(cache VITCUDA_NATIVE)" == ON ]] || fail "command 2's folder has VITCUDA_NATIVE=$(cache VITCUDA_NATIVE)"
  # Before a build ctest lists the tests CMake declares itself (those gtest_discover_tests
  # finds appear once the test binaries are built).
  local listed
  listed="$(ctest --test-dir "$scratch" -N 2>>"$log")"
  local t
  for t in install_and_consume bench_cpu_ops_smoke readme_commands; do
    grep -q ": $t\$" <<< "$listed" || fail "command 2's folder does not list the test $t"
  done
  echo "readme_commands:   ok: $(count_tests) tests declared before the build"
}
check_command1() {
  [[ "$(cache VITCUDA_BUILD_TESTS)" == OFF && "$(cache VITCUDA_BUILD_BENCH)" == OFF ]] ||
    fail "command 1's folder has VITCUDA_BUILD_TESTS=$(cache VITCUDA_BUILD_TESTS), VITCUDA_BUILD_BENCH=$(cache VITCUDA_BUILD_BENCH)"
  cmake --build "$scratch" --target help 2>>"$log" | grep -q 'vit_train' || fail "command 1's folder has no vit_train target"
  echo "readme_commands:   ok: vit_train, tests and benchmarks off"
}
# On a folder that never had tests (command 1's, fresh), tools/test.sh's ctest call fails ("No
# tests were found") instead of passing. (A folder that had them keeps CMake's CTestTestfile.cmake
# files when the tests are switched off, so ctest there lists stale tests: command 1 never runs
# ctest, command 2 configures the tests on again.)
check_no_tests_fails() {
  [[ "$(count_tests)" == 0 ]] || fail "command 1's fresh folder lists $(count_tests) tests"
  if (cd "$scratch" && ctest --no-tests=error >> "$log" 2>&1); then
    fail "ctest --no-tests=error passed on a folder without tests"
  fi
  echo "readme_commands:   ok: no tests there, and ctest --no-tests=error fails"
}
grep -q -- '--no-tests=error' "$root/tools/test.sh" || fail "tools/test.sh runs ctest without --no-tests=error"

configure train_fmnist.sh
check_command1
check_no_tests_fails
configure test.sh
check_command2
configure train_fmnist.sh
check_command1
configure test.sh
check_command2
rm -rf "$scratch" "$log"
echo "readme_commands: both commands, in either order, twice: ok"
