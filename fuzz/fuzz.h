/*
 * Shared by the libFuzzer targets in fuzz/ (see fuzz/run.sh and
 * docs/testing.md). A target checks more than "no crash": FUZZ_CHECK states
 * a property of the code under test (a round trip, a contract of its
 * header), and a broken one aborts, which libFuzzer reports as a crash with
 * the input that caused it.
 */
#ifndef DVS_FUZZ_H
#define DVS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
