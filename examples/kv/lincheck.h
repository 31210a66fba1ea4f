/*
 * A linearizability checker for dvs-kv histories (history.h), and the
 * duplicate-execution check on counters.
 *
 * Every key is an independent object (linearizability is compositional,
 * Herlihy & Wing 1990), so each key is checked alone: a register (put, get,
 * delete) or, when the key sees any incr, a counter (incr is a
 * read-modify-write that returns the new value; get reads it; put sets it;
 * delete makes it absent, and incr of an absent key starts from 0).
 *
 * The search is Wing & Gong's, with Lowe's memoization of the configurations
 * already explored (the set of operations linearized so far, and the
 * object's state after them): see lincheck.c. An operation of unknown
 * outcome (`info`, or still pending at the end) may take effect at any point
 * after its invocation, or never; a failed one never did. The search is
 * bounded per key (operations, steps, memory); when a bound is hit the key's
 * result is UNDECIDED, which is not a pass.
 *
 * No I/O but the report; no global state; one call may run per history at a
 * time on any thread.
 */
#ifndef DVS_EXAMPLES_KV_LINCHECK_H
#define DVS_EXAMPLES_KV_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "examples/kv/history.h"

/* Defaults of the bounds (struct kv_lincheck_opts, 0 = default). */
#define KV_LIN_DEFAULT_MAX_OPS 10000            /* operations of one key */
#define KV_LIN_DEFAULT_MAX_STEPS 20000000u      /* search steps of one key */
#define KV_LIN_DEFAULT_MAX_MEMORY (256u << 20)  /* bytes of memo of one key */

struct kv_lincheck_opts {
    size_t max_ops;      /* more operations on one key: UNDECIDED */
    uint64_t max_steps;  /* more search steps on one key: UNDECIDED */
    size_t max_memory;   /* more memo bytes on one key: UNDECIDED */
    bool report_all;     /* a line for every key, not only the ones that fail */
};

enum kv_lin_result {
    KV_LIN_OK,        /* linearizable */
    KV_LIN_VIOLATION, /* no linearization exists */
    KV_LIN_UNDECIDED, /* a bound was hit first: nothing is known */
};

const char *kv_lin_result_name(enum kv_lin_result r);

struct kv_lincheck_summary {
    size_t keys;            /* keys checked */
    size_t ops;             /* operations that took part in the search */
    size_t linearizable;    /* keys found linearizable */
    size_t violations;      /* keys found not linearizable */
    size_t undecided;       /* keys left undecided */
    uint64_t steps;         /* search steps, all keys */
    uint64_t max_key_steps; /* the most steps one key took */
    /* The duplicate-execution check (counters with positive increments). */
    size_t counters;        /* counter keys */
    size_t counters_final;  /* ... with a final read to check */
    size_t duplicates;      /* ... whose final value exceeds what was sent */
    size_t lost;            /* ... whose final value misses acknowledged ones */
};

/*
 * Check every key of h. For each key, writes to report (may be NULL) a line
 * if it is not linearizable or undecided (every key with report_all): the
 * result, the operations and steps, and for a violation an explanation: the
 * last operations of the longest linearization found, the state they left,
 * the operation that could not be placed, and the operations still open
 * then.
 *
 * Then, for each counter key whose increments are all positive, the
 * duplicate-execution check on its final value (the last successful get
 * that began after every acknowledged increment of the key had completed;
 * `verify` appends one with kv_history_append_read): it must be at least
 * the sum of the acknowledged increments (none lost) and at most that plus
 * the increments of unknown outcome (none applied twice). A counter without
 * such a read is reported and counted in counters - counters_final.
 *
 * opts may be NULL (all defaults). Fills *ret_summary. Returns 0 (look at
 * the summary), or -ENOMEM.
 */
int kv_lincheck(const struct kv_history *h, const struct kv_lincheck_opts *opts, FILE *report,
                struct kv_lincheck_summary *ret_summary);

#endif
