# Tests of the provider API emulators (tests/emulators/, Python) through the C++ launcher
# (tests/support/emulator.h). Included from tests/broker/CMakeLists.txt; owned by the emulator work
# so the broker's own test list and this one never conflict.
toolkit_add_tests(emulator_tests SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/emulator_test.cpp)
