// The doctest main, compiled once for every test binary (it takes ~4.5 s to compile).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
