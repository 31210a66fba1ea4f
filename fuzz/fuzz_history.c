/*
 * The history reader and both checkers of dvs-kv (examples/kv/history.h,
 * examples/kv/lincheck.h), fed arbitrary history files: dvs-lincheck and
 * `dvs-kv-client verify` read files that a crashed or buggy run may have
 * left half-written.
 *
 * Properties: the reader accepts or refuses with a message naming the
 * line; on an accepted history every key gets exactly one verdict; and the
 * two checkers agree where they overlap: the simple checks of
 * kv_history_check are sound, so when they find a violation the
 * linearizability checker must not call every key linearizable (unless a
 * bound left a key undecided).
 */
#include <errno.h>
#include <string.h>

#include "examples/kv/history.h"
#include "examples/kv/lincheck.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    FILE *f = fmemopen((void *)data, size ? size : 1, "r");
    FUZZ_CHECK(f != NULL);
    if (size == 0) {
        fclose(f);
        return 0;
    }
    struct kv_history *h = NULL;
    char err[256] = "";
    int rv = kv_history_read(f, "fuzz", &h, err, sizeof(err));
    fclose(f);
    FUZZ_CHECK(rv == 0 || rv == -EINVAL);
    if (rv != 0) {
        FUZZ_CHECK(strncmp(err, "fuzz:", 5) == 0);
        return 0;
    }

    struct kv_lincheck_opts opts = {.max_ops = 200, .max_steps = 20000, .max_memory = 4u << 20};
    struct kv_lincheck_summary lin;
    FUZZ_CHECK(kv_lincheck(h, &opts, NULL, &lin) == 0);
    FUZZ_CHECK(lin.linearizable + lin.violations + lin.undecided == lin.keys);
    FUZZ_CHECK(lin.counters_final <= lin.counters);
    FUZZ_CHECK(lin.lost + lin.duplicates <= lin.counters_final);

    struct kv_check_summary simple;
    FUZZ_CHECK(kv_history_check(h, NULL, NULL, NULL, &simple) == 0);
    if (simple.violations > 0 && lin.violations == 0 && lin.undecided == 0) {
        fprintf(stderr, "the simple checks found %zu violations, the linearizability "
                        "checker none\n", simple.violations);
        FUZZ_CHECK(!"checkers disagree");
    }
    kv_history_free(h);
    return 0;
}
