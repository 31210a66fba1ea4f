/*
 * The linearizability checker (lincheck.h): Wing & Gong's search with
 * Lowe's memoization, one key at a time, and the duplicate-execution check
 * on counters.
 *
 * The search (Wing & Gong, "Testing and verifying concurrent objects",
 * 1993; Lowe, "Testing for linearizability", 2017). A key's operations
 * become events, an invocation and (for acknowledged operations) a
 * completion each, in a doubly linked list in file order, which is time
 * order. Walking the list from its head, the search tries to linearize an
 * invoked operation: apply it to the object's state; if the model accepts
 * it (a get must read the state, an incr must return the new value), the
 * operation and its completion are lifted out of the list and the walk
 * starts again from the head. Reaching a completion means the operation
 * it completes should have been linearized by now, so the search
 * backtracks: it puts the last operation linearized back and tries the
 * next candidate after it. The list running out of completions means
 * every acknowledged operation has a place: linearizable. Backtracking
 * out of the first operation means there is none.
 *
 * Lowe's memoization: the state after a set of operations does not depend
 * on the order they were linearized in if the search reaches the same
 * (set, state) twice, so a configuration seen before is not explored
 * again. The set is a bitset; its hash is kept incrementally as the XOR of
 * one random word per operation (Zobrist hashing).
 *
 * Operations of unknown outcome get an invocation and no completion: the
 * search may linearize them anywhere after their invocation, and the walk
 * may pass them by for ever, which is "never took effect".
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "examples/kv/lincheck.h"

#define LIN_EXPLAIN_LAST 4   /* linearized operations shown before the impasse */
#define LIN_EXPLAIN_OPEN 8   /* open operations shown at the impasse */
#define LIN_COUNTER_ABSENT INT64_MIN
#define LIN_REGISTER_ABSENT 0

const char *kv_lin_result_name(enum kv_lin_result r)
{
    switch (r) {
    case KV_LIN_OK:
        return "linearizable";
    case KV_LIN_VIOLATION:
        return "NOT LINEARIZABLE";
    case KV_LIN_UNDECIDED:
        return "UNDECIDED";
    }
    return "?";
}

/* ===========================================================================
 * One key's operations and the model
 */

struct lin_op {
    size_t hist;      /* index in the history */
    int64_t arg;      /* put: the value (register: its id); incr: the delta */
    int64_t ret;      /* get: the value read; incr: the new value */
    enum kv_hist_op kind;
    bool acked;       /* has a completion: must be linearized */
    bool ret_valid;   /* get: ret is a value the object can hold */
    uint32_t twin;    /* unknown outcome: the previous such operation with the
                         same kind and argument, + 1; 0 if none */
};

struct lin_node {
    struct lin_node *prev, *next;
    struct lin_node *match; /* an invocation's completion; NULL if none */
    size_t line;
    uint32_t op;
    bool call;
};

struct lin_key {
    const struct kv_history *h;
    const struct kv_lincheck_opts *opts;
    const char *key;
    bool counter;
    int64_t absent;          /* the state of an absent key */
    struct lin_op *ops;
    size_t n;
    const char **values;     /* registers: value id - 1 -> text, sorted */
    size_t nvalues;
    const char *why;         /* UNDECIDED or VIOLATION found before the search */
};

/* Apply o to state s. Returns whether the model accepts it, and the new
 * state in *ret. */
static bool lin_step(const struct lin_key *k, int64_t s, const struct lin_op *o, int64_t *ret)
{
    switch (o->kind) {
    case KV_HIST_PUT:
        *ret = o->arg;
        return true;
    case KV_HIST_DELETE:
        *ret = k->absent;
        return true;
    case KV_HIST_GET:
        *ret = s;
        return o->ret_valid && o->ret == s;
    case KV_HIST_INCR: {
        int64_t base = s == LIN_COUNTER_ABSENT ? 0 : s, next;
        if (__builtin_add_overflow(base, o->arg, &next) || next == LIN_COUNTER_ABSENT)
            return false;
        if (o->acked && next != o->ret)
            return false;
        *ret = next;
        return true;
    }
    }
    return false;
}

static int lin_cmp_str(const void *pa, const void *pb)
{
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* A register value's id (1-based), or 0 if no put wrote it. */
static int64_t lin_value_id(const struct lin_key *k, const char *v)
{
    const char **p = bsearch(&v, k->values, k->nvalues, sizeof(*k->values), lin_cmp_str);
    return p ? (int64_t)(p - k->values) + 1 : 0;
}

static bool lin_parse_i64(const char *s, int64_t *ret)
{
    /* The history's own reader (history.h), so that both checkers agree on
     * what is a number; INT64_MIN stands for "absent" here. */
    int64_t v;
    if (s == NULL || kv_hist_parse_i64(s, &v) != 0 || v == LIN_COUNTER_ABSENT)
        return false;
    *ret = v;
    return true;
}

/* Order operations of unknown outcome by kind, argument, then invocation.
 * qsort has no context argument; the checker runs on one thread per call,
 * and this is set only around the sort. */
static _Thread_local const struct lin_op *lin_twin_ops;

static int lin_cmp_twin(const void *pa, const void *pb)
{
    uint32_t ia = *(const uint32_t *)pa, ib = *(const uint32_t *)pb;
    const struct lin_op *a = &lin_twin_ops[ia], *b = &lin_twin_ops[ib];
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->arg != b->arg)
        return a->arg < b->arg ? -1 : 1;
    return ia < ib ? -1 : ia > ib;
}

/* Build k->ops from the history's operations idx[0..n) (all on one key).
 * Returns 0 or -ENOMEM; sets k->why when the key cannot be searched. */
static int lin_key_build(struct lin_key *k, const size_t *idx, size_t n)
{
    struct kv_hist_entry e;
    k->ops = calloc(n ? n : 1, sizeof(*k->ops));
    k->values = calloc(n ? n : 1, sizeof(*k->values));
    if (k->ops == NULL || k->values == NULL)
        return -ENOMEM;

    for (size_t i = 0; i < n; i++) {
        kv_history_entry(k->h, idx[i], &e);
        k->counter |= e.op == KV_HIST_INCR;
        if (e.op == KV_HIST_PUT && e.result != KV_HIST_FAIL)
            k->values[k->nvalues++] = e.in;
    }
    k->absent = k->counter ? LIN_COUNTER_ABSENT : LIN_REGISTER_ABSENT;
    if (!k->counter && k->nvalues > 0) {
        qsort(k->values, k->nvalues, sizeof(*k->values), lin_cmp_str);
        size_t u = 1;
        for (size_t i = 1; i < k->nvalues; i++)
            if (strcmp(k->values[i], k->values[u - 1]) != 0)
                k->values[u++] = k->values[i];
        k->nvalues = u;
    }

    for (size_t i = 0; i < n; i++) {
        kv_history_entry(k->h, idx[i], &e);
        /* A failed operation did nothing; a read of unknown outcome
         * constrains nothing. */
        if (e.result == KV_HIST_FAIL || (e.op == KV_HIST_GET && e.result != KV_HIST_OK))
            continue;
        struct lin_op *o = &k->ops[k->n++];
        *o = (struct lin_op){.hist = idx[i], .kind = e.op, .acked = e.result == KV_HIST_OK};
        switch (e.op) {
        case KV_HIST_PUT:
            if (!k->counter)
                o->arg = lin_value_id(k, e.in);
            else if (!lin_parse_i64(e.in, &o->arg))
                k->why = "a put of a non-number on a counter key is not modelled";
            break;
        case KV_HIST_GET:
            if (e.out == NULL) {
                o->ret = k->absent;
                o->ret_valid = true;
            } else if (k->counter) {
                o->ret_valid = lin_parse_i64(e.out, &o->ret);
            } else {
                o->ret = lin_value_id(k, e.out);
                o->ret_valid = o->ret != 0;
            }
            break;
        case KV_HIST_INCR:
            /* The reader checked both are integers. */
            if (!lin_parse_i64(e.in, &o->arg) || (o->acked && !lin_parse_i64(e.out, &o->ret)))
                k->why = "an incr whose delta or result is out of range is not modelled";
            break;
        case KV_HIST_DELETE:
            break;
        }
    }

    /* Twins: operations of unknown outcome that do the same thing (incr 1,
     * delete) are interchangeable once both are invoked, so the search
     * only ever linearizes the earliest one left (see lin_search). k->ops
     * is in invocation order. */
    uint32_t *order = calloc(k->n ? k->n : 1, sizeof(*order));
    if (order == NULL)
        return -ENOMEM;
    size_t nu = 0;
    for (size_t i = 0; i < k->n; i++)
        if (!k->ops[i].acked)
            order[nu++] = (uint32_t)i;
    lin_twin_ops = k->ops;
    qsort(order, nu, sizeof(*order), lin_cmp_twin);
    lin_twin_ops = NULL;
    for (size_t i = 1; i < nu; i++) {
        const struct lin_op *a = &k->ops[order[i - 1]], *b = &k->ops[order[i]];
        if (a->kind == b->kind && a->arg == b->arg)
            k->ops[order[i]].twin = order[i - 1] + 1;
    }
    free(order);
    return 0;
}

/* ===========================================================================
 * The memo: a set of (bitset of linearized operations, state)
 */

struct lin_memo {
    size_t words;       /* per bitset */
    uint64_t *pool;     /* entries of words + 1 (state first) */
    size_t used, cap;   /* entries */
    uint32_t *slots;    /* open addressing: entry + 1, 0 = empty */
    uint64_t *hashes;   /* per slot */
    size_t nslots;
    size_t max_memory;
};

static size_t lin_memo_bytes(const struct lin_memo *m)
{
    return m->cap * (m->words + 1) * sizeof(uint64_t) +
           m->nslots * (sizeof(*m->slots) + sizeof(*m->hashes));
}

static void lin_memo_free(struct lin_memo *m)
{
    free(m->pool);
    free(m->slots);
    free(m->hashes);
}

static int lin_memo_rehash(struct lin_memo *m, size_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof(*slots));
    uint64_t *hashes = calloc(nslots, sizeof(*hashes));
    if (slots == NULL || hashes == NULL) {
        free(slots);
        free(hashes);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->nslots; i++) {
        if (m->slots[i] == 0)
            continue;
        size_t j = m->hashes[i] & (nslots - 1);
        while (slots[j] != 0)
            j = (j + 1) & (nslots - 1);
        slots[j] = m->slots[i];
        hashes[j] = m->hashes[i];
    }
    free(m->slots);
    free(m->hashes);
    m->slots = slots;
    m->hashes = hashes;
    m->nslots = nslots;
    return 0;
}

/*
 * Add (bits, state) with hash hash. Returns 1 if it is new, 0 if it was
 * there, -ENOSPC if the memo would outgrow its bound, -ENOMEM.
 */
static int lin_memo_add(struct lin_memo *m, const uint64_t *bits, int64_t state, uint64_t hash)
{
    size_t stride = m->words + 1;
    if (m->nslots == 0 || (m->used + 1) * 2 > m->nslots) {
        size_t nslots = m->nslots ? m->nslots * 2 : 1024;
        if (nslots > UINT32_MAX)
            return -ENOSPC;
        size_t grow = (nslots - m->nslots) * (sizeof(*m->slots) + sizeof(*m->hashes));
        if (lin_memo_bytes(m) + grow > m->max_memory)
            return -ENOSPC;
        if (lin_memo_rehash(m, nslots) != 0)
            return -ENOMEM;
    }
    size_t j = hash & (m->nslots - 1);
    for (; m->slots[j] != 0; j = (j + 1) & (m->nslots - 1)) {
        if (m->hashes[j] != hash)
            continue;
        const uint64_t *e = &m->pool[(size_t)(m->slots[j] - 1) * stride];
        if ((int64_t)e[0] == state && memcmp(e + 1, bits, m->words * sizeof(*bits)) == 0)
            return 0;
    }
    if (m->used == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        if (lin_memo_bytes(m) + (cap - m->cap) * stride * sizeof(uint64_t) > m->max_memory)
            return -ENOSPC;
        uint64_t *pool = realloc(m->pool, cap * stride * sizeof(uint64_t));
        if (pool == NULL)
            return -ENOMEM;
        m->pool = pool;
        m->cap = cap;
    }
    uint64_t *e = &m->pool[m->used * stride];
    e[0] = (uint64_t)state;
    memcpy(e + 1, bits, m->words * sizeof(*bits));
    m->slots[j] = (uint32_t)++m->used;
    m->hashes[j] = hash;
    return 1;
}

static uint64_t lin_mix(uint64_t z)
{
    z += UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* ===========================================================================
 * The search
 */

/* What the deepest impasse looked like, for the explanation. */
struct lin_impasse {
    size_t depth;                    /* operations linearized */
    int64_t state;
    uint32_t blocked;                /* the operation whose completion stopped it */
    uint32_t last[LIN_EXPLAIN_LAST]; /* the last linearized, oldest first */
    size_t nlast;
    uint32_t open[LIN_EXPLAIN_OPEN]; /* invoked, not linearized, in order */
    size_t nopen;
    bool set;
};

struct lin_frame {
    struct lin_node *node;
    int64_t state;
};

static int lin_cmp_node(const void *pa, const void *pb)
{
    const struct lin_node *a = pa, *b = pb;
    return a->line < b->line ? -1 : a->line > b->line;
}

static void lin_lift(struct lin_node *call)
{
    call->prev->next = call->next;
    if (call->next)
        call->next->prev = call->prev;
    struct lin_node *ret = call->match;
    if (ret != NULL) {
        ret->prev->next = ret->next;
        if (ret->next)
            ret->next->prev = ret->prev;
    }
}

/* The inverse of lin_lift, relinking in the reverse order (dancing links). */
static void lin_unlift(struct lin_node *call)
{
    struct lin_node *ret = call->match;
    if (ret != NULL) {
        ret->prev->next = ret;
        if (ret->next)
            ret->next->prev = ret;
    }
    call->prev->next = call;
    if (call->next)
        call->next->prev = call;
}

static void lin_note_impasse(struct lin_impasse *imp, const struct lin_node *head,
                             const struct lin_node *ret, const struct lin_frame *stack,
                             size_t depth, int64_t state)
{
    if (imp->set && depth <= imp->depth)
        return;
    imp->set = true;
    imp->depth = depth;
    imp->state = state;
    imp->blocked = ret->op;
    imp->nlast = 0;
    for (size_t i = depth > LIN_EXPLAIN_LAST ? depth - LIN_EXPLAIN_LAST : 0; i < depth; i++)
        imp->last[imp->nlast++] = stack[i].node->op;
    imp->nopen = 0;
    for (const struct lin_node *x = head->next; x != ret && imp->nopen < LIN_EXPLAIN_OPEN;
         x = x->next)
        if (x->call && x->op != ret->op)
            imp->open[imp->nopen++] = x->op;
}

/*
 * Search for a linearization of k's operations. Returns 0 and the result
 * in *ret_result (with *ret_steps, and *imp filled on a violation), or
 * -ENOMEM.
 */
static int lin_search(const struct lin_key *k, enum kv_lin_result *ret_result,
                      uint64_t *ret_steps, struct lin_impasse *imp, const char **ret_why)
{
    size_t n = k->n, nnodes = 0;
    struct lin_node *nodes = calloc(2 * n + 1, sizeof(*nodes));
    struct lin_node **by_op = calloc(n + 1, sizeof(*by_op));
    struct lin_frame *stack = calloc(n + 1, sizeof(*stack));
    uint64_t *zobrist = calloc(n + 1, sizeof(*zobrist));
    struct lin_memo memo = {.words = (n + 63) / 64, .max_memory = k->opts->max_memory};
    uint64_t *bits = calloc(memo.words + 1, sizeof(*bits));
    int rv = 0;

    if (!nodes || !by_op || !stack || !zobrist || !bits) {
        rv = -ENOMEM;
        goto out;
    }

    /* Events in line order; then each invocation learns its completion. */
    for (size_t i = 0; i < n; i++) {
        struct kv_hist_entry e;
        kv_history_entry(k->h, k->ops[i].hist, &e);
        nodes[nnodes++] = (struct lin_node){.line = e.line_inv, .op = (uint32_t)i, .call = true};
        if (k->ops[i].acked)
            nodes[nnodes++] = (struct lin_node){.line = e.line_done, .op = (uint32_t)i};
        zobrist[i] = lin_mix(i * UINT64_C(0x2545f4914f6cdd1d) + 1);
    }
    qsort(nodes, nnodes, sizeof(*nodes), lin_cmp_node);
    struct lin_node head = {.next = nnodes ? &nodes[0] : NULL};
    for (size_t i = 0; i < nnodes; i++) {
        nodes[i].prev = i ? &nodes[i - 1] : &head;
        nodes[i].next = i + 1 < nnodes ? &nodes[i + 1] : NULL;
        if (nodes[i].call)
            by_op[nodes[i].op] = &nodes[i];
        else
            by_op[nodes[i].op]->match = &nodes[i];
    }

    int64_t state = k->absent;
    uint64_t hash = 0, steps = 0;
    size_t depth = 0;
    struct lin_node *entry = head.next;
    enum kv_lin_result result = KV_LIN_OK;

    while (head.next != NULL) {
        if (++steps > k->opts->max_steps) {
            result = KV_LIN_UNDECIDED;
            *ret_why = "search-step budget exhausted";
            break;
        }
        if (entry == NULL)
            break; /* only operations of unknown outcome left: they never happened */
        if (entry->call) {
            int64_t next;
            const struct lin_op *o = &k->ops[entry->op];
            uint32_t tw = o->twin;
            /* A twin invoked earlier and still open would do the same:
             * taking this one instead only multiplies the configurations
             * (symmetry reduction; sound because neither has a completion
             * and both are invoked). */
            bool earlier_twin_open =
                tw != 0 && !(bits[(tw - 1) / 64] & (UINT64_C(1) << ((tw - 1) % 64)));
            if (!earlier_twin_open && lin_step(k, state, o, &next)) {
                uint32_t i = entry->op;
                bits[i / 64] |= UINT64_C(1) << (i % 64);
                uint64_t h2 = hash ^ zobrist[i];
                int added = lin_memo_add(&memo, bits, next, h2 ^ lin_mix((uint64_t)next));
                if (added == -ENOSPC) {
                    result = KV_LIN_UNDECIDED;
                    *ret_why = "memo memory bound reached";
                    break;
                }
                if (added < 0) {
                    rv = added;
                    goto out;
                }
                if (added == 1) {
                    stack[depth++] = (struct lin_frame){entry, state};
                    state = next;
                    hash = h2;
                    lin_lift(entry);
                    entry = head.next;
                    continue;
                }
                bits[i / 64] &= ~(UINT64_C(1) << (i % 64));
            }
            entry = entry->next;
            continue;
        }
        /* A completion of an operation not yet linearized: back up. */
        lin_note_impasse(imp, &head, entry, stack, depth, state);
        if (depth == 0) {
            result = KV_LIN_VIOLATION;
            break;
        }
        struct lin_frame f = stack[--depth];
        uint32_t i = f.node->op;
        bits[i / 64] &= ~(UINT64_C(1) << (i % 64));
        hash ^= zobrist[i];
        state = f.state;
        lin_unlift(f.node);
        entry = f.node->next;
    }
    *ret_result = result;
    *ret_steps = steps;

out:
    lin_memo_free(&memo);
    free(nodes);
    free(by_op);
    free(stack);
    free(zobrist);
    free(bits);
    return rv;
}

/* ===========================================================================
 * Reporting
 */

static void lin_show_state(FILE *f, const struct lin_key *k, int64_t s)
{
    if (s == k->absent)
        fputs("absent", f);
    else if (k->counter)
        fprintf(f, "%" PRId64, s);
    else
        fputs(k->values[s - 1], f);
}

static void lin_show_op(FILE *f, const struct lin_key *k, uint32_t i)
{
    struct kv_hist_entry e;
    kv_history_entry(k->h, k->ops[i].hist, &e);
    fprintf(f, "      line %zu: process %" PRIu64 " %s", e.line_inv, e.process,
            kv_hist_op_name(e.op));
    if (e.op == KV_HIST_PUT || e.op == KV_HIST_INCR)
        fprintf(f, " %s", e.in);
    if (e.result == KV_HIST_OK) {
        if (e.op == KV_HIST_GET || e.op == KV_HIST_INCR)
            fprintf(f, " -> %s", e.out ? e.out : KV_HISTORY_NIL);
        fprintf(f, ", ok at line %zu\n", e.line_done);
    } else {
        fputs(", outcome unknown\n", f);
    }
}

static void lin_explain(FILE *f, const struct lin_key *k, const struct lin_impasse *imp)
{
    if (!imp->set)
        return;
    fprintf(f, "    the longest linearization places %zu of %zu operations", imp->depth, k->n);
    if (imp->nlast > 0)
        fprintf(f, "; its last %zu:\n", imp->nlast);
    else
        fputs(":\n", f);
    for (size_t i = 0; i < imp->nlast; i++)
        lin_show_op(f, k, imp->last[i]);
    fputs("    leaving the key ", f);
    lin_show_state(f, k, imp->state);
    fputs("; then this operation completed but fits nowhere:\n", f);
    lin_show_op(f, k, imp->blocked);
    if (imp->nopen > 0) {
        fputs("    the other operations open then (none of them helps):\n", f);
        for (size_t i = 0; i < imp->nopen; i++)
            lin_show_op(f, k, imp->open[i]);
    }
}

/* ===========================================================================
 * The duplicate-execution check
 */

static void lin_check_counter(const struct kv_history *h, const size_t *idx, size_t n,
                              FILE *report, struct kv_lincheck_summary *sum)
{
    struct kv_hist_entry e;
    const char *key = NULL;
    int64_t acked = 0, unknown = 0;
    size_t nacked = 0, nunknown = 0, last_ack_line = 0;
    bool positive = true, writes = false;

    for (size_t i = 0; i < n; i++) {
        kv_history_entry(h, idx[i], &e);
        key = e.key;
        if (e.result == KV_HIST_FAIL)
            continue;
        if (e.op == KV_HIST_PUT || e.op == KV_HIST_DELETE)
            writes = true;
        if (e.op != KV_HIST_INCR)
            continue;
        int64_t d = 0;
        if (!lin_parse_i64(e.in, &d) || d <= 0)
            positive = false;
        if (e.result == KV_HIST_OK) {
            acked += d;
            nacked++;
            if (e.line_done > last_ack_line)
                last_ack_line = e.line_done;
        } else {
            unknown += d;
            nunknown++;
        }
    }
    if (!positive || writes) {
        if (report)
            fprintf(report, "key %s: duplicate check skipped: %s\n", key,
                    writes ? "the counter is also put or deleted"
                           : "not every increment is positive");
        return;
    }
    sum->counters++;

    /* The final value: the last read that began after the last acknowledged
     * increment completed. */
    const char *final = NULL;
    size_t final_line = 0;
    for (size_t i = 0; i < n; i++) {
        kv_history_entry(h, idx[i], &e);
        if (e.op == KV_HIST_GET && e.result == KV_HIST_OK && e.line_inv > last_ack_line &&
            e.line_inv > final_line) {
            final_line = e.line_inv;
            final = e.out ? e.out : "0";
        }
    }
    if (final_line == 0) {
        if (report)
            fprintf(report,
                    "key %s: duplicate check not possible: no read after the last "
                    "acknowledged increment (verify reads one from the service)\n",
                    key);
        return;
    }
    sum->counters_final++;
    int64_t v;
    if (!lin_parse_i64(final, &v)) {
        sum->lost++;
        if (report)
            fprintf(report, "key %s: LOST counter: the final read (line %zu) has \"%s\"\n", key,
                    final_line, final);
        return;
    }
    if (v < acked) {
        sum->lost++;
        if (report)
            fprintf(report,
                    "key %s: LOST increments: final value %" PRId64 " (line %zu), but %zu "
                    "increments summing to %" PRId64 " were acknowledged\n",
                    key, v, final_line, nacked, acked);
    } else if (v - acked > unknown) {
        sum->duplicates++;
        if (report)
            fprintf(report,
                    "key %s: DUPLICATED increments: final value %" PRId64 " (line %zu), but "
                    "only %zu were acknowledged (sum %" PRId64 ") and %zu of unknown outcome "
                    "(sum %" PRId64 "): at most %" PRId64 "\n",
                    key, v, final_line, nacked, acked, nunknown, unknown, acked + unknown);
    }
}

/* ===========================================================================
 * The whole check
 */

struct lin_sort {
    const struct kv_history *h;
    size_t i;
    const char *key;
    size_t line;
};

static int lin_cmp_key_line(const void *pa, const void *pb)
{
    const struct lin_sort *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c != 0)
        return c;
    return a->line < b->line ? -1 : a->line > b->line;
}

static int lin_check_key(const struct kv_history *h, const struct kv_lincheck_opts *opts,
                         const size_t *idx, size_t n, FILE *report,
                         struct kv_lincheck_summary *sum)
{
    struct lin_key k = {.h = h, .opts = opts};
    struct lin_impasse imp = {0};
    enum kv_lin_result result = KV_LIN_OK;
    uint64_t steps = 0;
    const char *why = NULL;
    struct kv_hist_entry e;
    int rv = 0;

    kv_history_entry(h, idx[0], &e);
    k.key = e.key;
    if ((rv = lin_key_build(&k, idx, n)) != 0)
        goto out;
    sum->keys++;
    sum->ops += k.n;

    /* A register read of a value no put wrote needs no search to condemn,
     * and says so more plainly than an impasse would. */
    const struct lin_op *invented = NULL;
    for (size_t i = 0; i < k.n && invented == NULL; i++)
        if (!k.counter && k.ops[i].kind == KV_HIST_GET && !k.ops[i].ret_valid)
            invented = &k.ops[i];

    if (k.why != NULL) {
        result = KV_LIN_UNDECIDED;
        why = k.why;
    } else if (invented != NULL) {
        result = KV_LIN_VIOLATION;
    } else if (k.n > opts->max_ops) {
        result = KV_LIN_UNDECIDED;
        why = "more operations than the per-key bound";
    } else if ((rv = lin_search(&k, &result, &steps, &imp, &why)) != 0) {
        goto out;
    }
    sum->steps += steps;
    if (steps > sum->max_key_steps)
        sum->max_key_steps = steps;
    switch (result) {
    case KV_LIN_OK:
        sum->linearizable++;
        break;
    case KV_LIN_VIOLATION:
        sum->violations++;
        break;
    case KV_LIN_UNDECIDED:
        sum->undecided++;
        break;
    }

    if (report != NULL && (result != KV_LIN_OK || opts->report_all)) {
        fprintf(report, "key %s: %s (%s, %zu operations, %" PRIu64 " steps)", k.key,
                kv_lin_result_name(result), k.counter ? "counter" : "register", k.n, steps);
        if (why != NULL)
            fprintf(report, ": %s", why);
        fputc('\n', report);
        if (invented != NULL) {
            fputs("    a read returned a value no put wrote:\n", report);
            lin_show_op(report, &k, (uint32_t)(invented - k.ops));
        } else if (result == KV_LIN_VIOLATION) {
            lin_explain(report, &k, &imp);
        }
    }
    if (k.counter)
        lin_check_counter(h, idx, n, report, sum);

out:
    free(k.ops);
    free(k.values);
    return rv;
}

int kv_lincheck(const struct kv_history *h, const struct kv_lincheck_opts *opts_in,
                FILE *report, struct kv_lincheck_summary *ret_summary)
{
    struct kv_lincheck_opts opts = opts_in ? *opts_in : (struct kv_lincheck_opts){0};
    struct kv_lincheck_summary sum = {0};
    size_t n = kv_history_ops(h);
    int rv = 0;

    if (opts.max_ops == 0)
        opts.max_ops = KV_LIN_DEFAULT_MAX_OPS;
    if (opts.max_steps == 0)
        opts.max_steps = KV_LIN_DEFAULT_MAX_STEPS;
    if (opts.max_memory == 0)
        opts.max_memory = KV_LIN_DEFAULT_MAX_MEMORY;

    struct lin_sort *s = calloc(n ? n : 1, sizeof(*s));
    size_t *idx = calloc(n ? n : 1, sizeof(*idx));
    if (s == NULL || idx == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct kv_hist_entry e;
        kv_history_entry(h, i, &e);
        s[i] = (struct lin_sort){h, i, e.key, e.line_inv};
    }
    qsort(s, n, sizeof(*s), lin_cmp_key_line);
    for (size_t i = 0; i < n; i++)
        idx[i] = s[i].i;

    for (size_t i = 0; i < n && rv == 0;) {
        size_t j = i + 1;
        while (j < n && strcmp(s[j].key, s[i].key) == 0)
            j++;
        rv = lin_check_key(h, &opts, idx + i, j - i, report, &sum);
        i = j;
    }

out:
    free(s);
    free(idx);
    *ret_summary = sum;
    return rv;
}
