# ctest -P script: install the build tree into a prefix, then configure, build and run the
# consumer project against it with find_package(vitcuda).
set(prefix "${BINARY_DIR}/consumer-install")
set(work "${BINARY_DIR}/consumer-build")
file(REMOVE_RECURSE "${prefix}" "${work}")
foreach(step
    "${CMAKE_COMMAND};--install;${BINARY_DIR};--prefix;${prefix}"
    "${CMAKE_COMMAND};-S;${SOURCE_DIR}/tests/consumer;-B;${work};-G;Ninja;-DCMAKE_PREFIX_PATH=${prefix};-DCMAKE_BUILD_TYPE=Release"
    "${CMAKE_COMMAND};--build;${work}"
    "${work}/consumer")
  execute_process(COMMAND ${step} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer step failed (${rc}): ${step}")
  endif()
endforeach()
