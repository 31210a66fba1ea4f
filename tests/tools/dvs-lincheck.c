/*
 * dvs-lincheck: check dvs-kv histories (examples/kv/history.h) for
 * linearizability, key by key, and counters for lost or duplicated
 * increments. The checker is examples/kv/lincheck.c; this is its command
 * line, for the integration tests and for histories kept from a run.
 *
 *   dvs-lincheck [--max-ops N] [--max-steps N] [--max-memory SIZE] [--quiet] FILE...
 *
 * Exit status: 0 every key of every file linearizable and no counter off;
 * 1 a violation; 3 undecided (a bound was hit; not a pass); 2 usage, or a
 * file that cannot be read or parsed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "examples/kv/history.h"
#include "examples/kv/lincheck.h"

#define PROG "dvs-lincheck"

enum { EXIT_PASS = 0, EXIT_VIOLATION = 1, EXIT_USAGE = 2, EXIT_UNDECIDED = 3 };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [options] FILE...\n"
            "Check dvs-kv-client load histories: every key linearizable (a register, or\n"
            "a counter if it is incremented), no increment lost or applied twice.\n"
            "  --max-ops N       operations of one key beyond which it is UNDECIDED (%d)\n"
            "  --max-steps N     search steps of one key before it is UNDECIDED (%u)\n"
            "  --max-memory SIZE memo memory of one key before it is UNDECIDED (%uM)\n"
            "  --quiet           report only the keys that fail, and the summary\n"
            "Exit: 0 pass, 1 violation, 2 usage or unreadable file, 3 undecided.\n",
            KV_LIN_DEFAULT_MAX_OPS, KV_LIN_DEFAULT_MAX_STEPS, KV_LIN_DEFAULT_MAX_MEMORY >> 20);
}

static int check_file(const char *path, const struct kv_lincheck_opts *opts)
{
    char err[512];
    struct kv_history *h = NULL;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, PROG ": cannot open %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    int rv = kv_history_read(f, path, &h, err, sizeof(err));
    if (f != stdin)
        fclose(f);
    if (rv != 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_USAGE;
    }
    struct kv_lincheck_summary s;
    rv = kv_lincheck(h, opts, stdout, &s);
    size_t nops = kv_history_ops(h);
    kv_history_free(h);
    if (rv != 0) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(-rv));
        return EXIT_USAGE;
    }
    bool bad = s.violations > 0 || s.duplicates > 0 || s.lost > 0;
    printf("%s: %s: %zu operations, %zu keys: %zu linearizable, %zu not, %zu undecided; "
           "%" PRIu64 " steps (at most %" PRIu64 " on one key); counters: %zu, %zu with a "
           "final read, %zu lost, %zu duplicated\n",
           path, bad ? "FAILED" : s.undecided ? "UNDECIDED" : "OK", nops, s.keys,
           s.linearizable, s.violations, s.undecided, s.steps, s.max_key_steps, s.counters,
           s.counters_final, s.lost, s.duplicates);
    return bad ? EXIT_VIOLATION : s.undecided ? EXIT_UNDECIDED : EXIT_PASS;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"max-ops", required_argument, NULL, 'o'},
        {"max-steps", required_argument, NULL, 's'},
        {"max-memory", required_argument, NULL, 'm'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kv_lincheck_opts opts = {.report_all = true};
    int c;
    int64_t v;
    uint64_t size;
    while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
        case 's':
            if (parse_int64(optarg, &v) != 0 || v <= 0) {
                fprintf(stderr, PROG ": --%s: expected a positive integer, got \"%s\"\n",
                        c == 'o' ? "max-ops" : "max-steps", optarg);
                return EXIT_USAGE;
            }
            if (c == 'o')
                opts.max_ops = (size_t)v;
            else
                opts.max_steps = (uint64_t)v;
            break;
        case 'm':
            if (parse_size(optarg, &size) != 0 || size == 0 || size > SIZE_MAX) {
                fprintf(stderr, PROG ": --max-memory: expected a size like 256M, got \"%s\"\n",
                        optarg);
                return EXIT_USAGE;
            }
            opts.max_memory = (size_t)size;
            break;
        case 'q':
            opts.report_all = false;
            break;
        case 'h':
            usage(stdout);
            return EXIT_PASS;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind == argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    int status = EXIT_PASS;
    for (int i = optind; i < argc; i++) {
        int s = check_file(argv[i], &opts);
        /* The worst wins: usage > violation > undecided > pass. */
        int rank[] = {[EXIT_PASS] = 0, [EXIT_UNDECIDED] = 1, [EXIT_VIOLATION] = 2,
                      [EXIT_USAGE] = 3};
        if (rank[s] > rank[status])
            status = s;
    }
    if (fflush(stdout) != 0)
        return EXIT_USAGE;
    return status;
}
