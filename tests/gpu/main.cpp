// doctest's main for the GPU tests (the host tests' main lives in tests/support, which needs libssh).
#include <ATen/ATen.h>

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

int main(int argc, char ** argv) {
    doctest::Context context(argc, argv);
    return context.run();
}
