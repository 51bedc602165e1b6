// `extract` entry point: everything is in cli.cpp (extract_main), so other programs can embed it.
#include "extractor/cli/cli.h"

int main(int argc, char ** argv) { return extractor::cli::extract_main(argc, argv); }
