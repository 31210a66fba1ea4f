/*
 * Operation histories: the parser and the post-migration checker (the
 * format and the checks are described in history.h).
 *
 * The checker does no I/O of its own: the service's current values come in
 * through a callback, so the unit tests can feed it any history and any
 * "service" they like.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dvs.h"
#include "examples/kv/history.h"

#define KV_T_NEVER UINT64_MAX /* completion time of an operation that has none */
#define KV_REPORT_MAX 200     /* violations printed in full */

/* ===========================================================================
 * Names and error classes
 */

static const char *const kv_type_names[] = {"invoke", "ok", "fail", "info"};
static const char *const kv_op_names[] = {"put", "get", "delete", "incr"};

const char *kv_hist_type_name(enum kv_hist_type t)
{
    return (unsigned)t < 4 ? kv_type_names[t] : "?";
}

const char *kv_hist_op_name(enum kv_hist_op op)
{
    return (unsigned)op < 4 ? kv_op_names[op] : "?";
}

bool kv_hist_error_is_definite(int err)
{
    switch (err) {
    case DVS_EBADREQUEST: /* the kv handler refused it, changing nothing */
    case DVS_ENOSPACE:    /* the kv handler: arena full, nothing changed */
    case DVS_ETOOBIG:     /* refused before sending, or by the handler */
    case -EINVAL:         /* dvs_call refused its arguments */
        return true;
    default:
        /* Timeouts, lost connections, DVS_EUNKNOWNOUTCOME (executed, reply
         * lost) and anything unexpected: it may have happened. */
        return false;
    }
}

/* ===========================================================================
 * The parsed form
 */

/* One operation: an invocation and its completion. */
struct kv_hop {
    char *key;
    char *in;         /* the invocation's value; NULL for nil */
    char *out;        /* the ok completion's value; NULL for nil or none */
    uint64_t process;
    uint64_t t_inv;
    uint64_t t_done;  /* KV_T_NEVER unless ok or fail */
    size_t line_inv;
    size_t line_done; /* 0 if none */
    uint8_t op;       /* enum kv_hist_op */
    uint8_t result;   /* KV_HIST_OK, KV_HIST_FAIL or KV_HIST_INFO */
};

struct kv_history {
    struct kv_hop *ops;
    size_t n, cap;
    char *endpoint;
    size_t lines;     /* the last line read (or appended) */
    uint64_t t_last;  /* the last time read (or appended) */
    uint64_t next_process; /* above every process seen */
};

/* A process' operation in flight while reading. */
struct kv_pending {
    uint64_t process;
    size_t op;
};

void kv_history_free(struct kv_history *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->ops[i].key);
        free(h->ops[i].in);
        free(h->ops[i].out);
    }
    free(h->ops);
    free(h->endpoint);
    free(h);
}

const char *kv_history_endpoint(const struct kv_history *h)
{
    return h->endpoint;
}

size_t kv_history_ops(const struct kv_history *h)
{
    return h->n;
}

void kv_history_entry(const struct kv_history *h, size_t i, struct kv_hist_entry *ret)
{
    const struct kv_hop *o = &h->ops[i];
    *ret = (struct kv_hist_entry){.key = o->key,
                                  .in = o->in,
                                  .out = o->out,
                                  .process = o->process,
                                  .t_inv = o->t_inv,
                                  .t_done = o->t_done,
                                  .line_inv = o->line_inv,
                                  .line_done = o->line_done,
                                  .op = (enum kv_hist_op)o->op,
                                  .result = (enum kv_hist_type)o->result};
}

/* ===========================================================================
 * Reading
 */

static int kv_parse_u64(const char *s, uint64_t *ret)
{
    if (*s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    *ret = v;
    return 0;
}

int kv_hist_parse_i64(const char *s, int64_t *ret)
{
    if (*s != '-' && (*s < '0' || *s > '9'))
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s)
        return -EINVAL;
    *ret = v;
    return 0;
}

static int kv_lookup_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* "nil" is no value: NULL. Otherwise a copy. */
static int kv_dup_value(const char *s, char **ret)
{
    if (strcmp(s, KV_HISTORY_NIL) == 0) {
        *ret = NULL;
        return 0;
    }
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

/* Take the facts we use from the header line. */
static int kv_read_header(struct kv_history *h, char *line)
{
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\n", &save); tok;
         tok = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(tok, "endpoint=", 9) == 0 && h->endpoint == NULL) {
            h->endpoint = strdup(tok + 9);
            if (h->endpoint == NULL)
                return -ENOMEM;
        }
    }
    return 0;
}

/*
 * Parse one event line into tok[0..6]. Returns the number of fields or -1
 * if there are more than 7.
 */
static int kv_split(char *line, char *tok[7])
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
        if (n == 7)
            return -1;
        tok[n++] = t;
    }
    return n;
}

static int kv_add_op(struct kv_history *h, struct kv_hop **ret)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        struct kv_hop *ops = realloc(h->ops, cap * sizeof(*ops));
        if (ops == NULL)
            return -ENOMEM;
        h->ops = ops;
        h->cap = cap;
    }
    *ret = &h->ops[h->n++];
    memset(*ret, 0, sizeof(**ret));
    return 0;
}

int kv_history_append_read(struct kv_history *h, const char *key, const char *value)
{
    struct kv_hop *o;
    int rv = kv_add_op(h, &o);
    if (rv != 0)
        return rv;
    o->op = KV_HIST_GET;
    o->result = KV_HIST_OK;
    o->process = h->next_process++;
    o->t_inv = ++h->t_last;
    o->t_done = ++h->t_last;
    o->line_inv = ++h->lines;
    o->line_done = ++h->lines;
    o->key = strdup(key);
    o->out = value ? strdup(value) : NULL;
    if (o->key == NULL || (value != NULL && o->out == NULL)) {
        free(o->key);
        free(o->out);
        h->n--;
        return -ENOMEM;
    }
    return 0;
}

#define BAD(...)                                                              \
    do {                                                                      \
        int n_ = snprintf(err, errlen, "%s:%zu: ", name, lineno);             \
        if (n_ >= 0 && (size_t)n_ < errlen)                                   \
            snprintf(err + n_, errlen - (size_t)n_, __VA_ARGS__);             \
        rv = -EINVAL;                                                         \
        goto out;                                                             \
    } while (0)

int kv_history_read(FILE *f, const char *name, struct kv_history **ret_history,
                    char *err, size_t errlen)
{
    struct kv_history *h = calloc(1, sizeof(*h));
    struct kv_pending *pending = NULL;
    size_t npending = 0, pending_cap = 0;
    char *line = malloc(KV_HISTORY_MAX_LINE + 2);
    size_t lineno = 0;
    uint64_t last_t = 0;
    int rv = 0;

    if (h == NULL || line == NULL) {
        rv = -ENOMEM;
        goto out;
    }

    while (fgets(line, KV_HISTORY_MAX_LINE + 2, f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len > KV_HISTORY_MAX_LINE)
            BAD("line longer than %d bytes", KV_HISTORY_MAX_LINE);
        if (line[0] == '#') {
            if (lineno == 1 && strncmp(line, KV_HISTORY_MAGIC, strlen(KV_HISTORY_MAGIC)) == 0) {
                rv = kv_read_header(h, line + strlen(KV_HISTORY_MAGIC));
                if (rv != 0)
                    goto out;
            }
            continue;
        }
        char *tok[7];
        int nt = kv_split(line, tok);
        if (nt == 0)
            continue;
        if (nt < 0)
            BAD("more than 7 fields");
        if (nt < 6)
            BAD("expected \"TYPE PROCESS OP KEY VALUE TIME_NS [ERROR]\", got %d fields", nt);

        int type = kv_lookup_name(tok[0], kv_type_names, 4);
        if (type < 0)
            BAD("unknown event type \"%.32s\" (expected invoke, ok, fail or info)", tok[0]);
        if (nt == 7 && (type == KV_HIST_INVOKE || type == KV_HIST_OK))
            BAD("an error field is allowed on fail and info lines only");
        uint64_t process, t;
        if (kv_parse_u64(tok[1], &process) != 0)
            BAD("bad process \"%.32s\" (expected a non-negative integer)", tok[1]);
        int op = kv_lookup_name(tok[2], kv_op_names, 4);
        if (op < 0)
            BAD("unknown op \"%.32s\" (expected put, get, delete or incr)", tok[2]);
        const char *key = tok[3];
        const char *value = tok[4];
        if (kv_parse_u64(tok[5], &t) != 0)
            BAD("bad time \"%.32s\" (expected nanoseconds)", tok[5]);
        if (t < last_t)
            BAD("time %" PRIu64 " goes back (previous line: %" PRIu64 ")", t, last_t);
        last_t = t;
        if (process >= h->next_process)
            h->next_process = process + 1;

        size_t p;
        for (p = 0; p < npending && pending[p].process != process; p++)
            ;

        if (type == KV_HIST_INVOKE) {
            if (p < npending)
                BAD("process %" PRIu64 " invokes again while its operation from line %zu "
                    "is in flight",
                    process, h->ops[pending[p].op].line_inv);
            int64_t delta;
            if (op == KV_HIST_PUT && strcmp(value, KV_HISTORY_NIL) == 0)
                BAD("put of nil");
            if (op == KV_HIST_INCR && kv_hist_parse_i64(value, &delta) != 0)
                BAD("incr delta \"%.32s\" is not an integer", value);
            if ((op == KV_HIST_GET || op == KV_HIST_DELETE) &&
                strcmp(value, KV_HISTORY_NIL) != 0)
                BAD("%s invocations carry nil", kv_op_names[op]);
            struct kv_hop *o;
            if ((rv = kv_add_op(h, &o)) != 0)
                goto out;
            o->op = (uint8_t)op;
            o->process = process;
            o->t_inv = t;
            o->t_done = KV_T_NEVER;
            o->line_inv = lineno;
            o->result = KV_HIST_INFO; /* until its completion says otherwise */
            o->key = strdup(key);
            if (o->key == NULL || kv_dup_value(value, &o->in) != 0) {
                rv = -ENOMEM;
                goto out;
            }
            if (npending == pending_cap) {
                size_t cap = pending_cap ? pending_cap * 2 : 64;
                struct kv_pending *np = realloc(pending, cap * sizeof(*np));
                if (np == NULL) {
                    rv = -ENOMEM;
                    goto out;
                }
                pending = np;
                pending_cap = cap;
            }
            pending[npending++] = (struct kv_pending){process, h->n - 1};
            continue;
        }

        /* A completion: it must close this process' pending invocation. */
        if (p == npending)
            BAD("%s for process %" PRIu64 ", which has no operation in flight",
                tok[0], process);
        struct kv_hop *o = &h->ops[pending[p].op];
        if (o->op != op || strcmp(o->key, key) != 0)
            BAD("%s %s %.64s does not match the invocation at line %zu (%s %.64s)", tok[0],
                tok[2], key, o->line_inv, kv_op_names[o->op], o->key);
        pending[p] = pending[--npending];
        o->result = (uint8_t)type;
        o->line_done = lineno;
        if (type == KV_HIST_INFO)
            continue; /* it stays pending for ever */
        o->t_done = t;
        if (type == KV_HIST_OK) {
            int64_t v;
            if (op == KV_HIST_INCR && kv_hist_parse_i64(value, &v) != 0)
                BAD("incr result \"%.32s\" is not an integer", value);
            if (op == KV_HIST_PUT && (o->in == NULL || strcmp(o->in, value) != 0))
                BAD("put completion's value differs from its invocation's");
            if (kv_dup_value(value, &o->out) != 0) {
                rv = -ENOMEM;
                goto out;
            }
        }
    }
    if (ferror(f)) {
        rv = -EIO;
        snprintf(err, errlen, "%s: read error", name);
        goto out;
    }
    /* Invocations still pending at the end keep their KV_HIST_INFO. */
    h->lines = lineno;
    h->t_last = last_t;

out:
    free(line);
    free(pending);
    if (rv != 0) {
        if (rv == -ENOMEM)
            snprintf(err, errlen, "%s: out of memory", name);
        kv_history_free(h);
        return rv;
    }
    *ret_history = h;
    return 0;
}

/* ===========================================================================
 * Checking: shared parts
 */

struct kv_checker {
    const struct kv_history *h;
    FILE *report;
    struct kv_check_summary sum;
};

static void kv_violation(struct kv_checker *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void kv_violation(struct kv_checker *c, const char *fmt, ...)
{
    if (c->sum.violations++ >= KV_REPORT_MAX || c->report == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("VIOLATION ", c->report);
    vfprintf(c->report, fmt, ap);
    fputc('\n', c->report);
    va_end(ap);
}

static double kv_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static int kv_strcmp_nil(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL);
    return strcmp(a, b);
}

static const char *kv_show(const char *v)
{
    return v ? v : KV_HISTORY_NIL;
}

/* Order operations by key, then invocation time (then file order). */
static const struct kv_history *kv_sort_h;

static int kv_cmp_key_time(const void *pa, const void *pb)
{
    const struct kv_hop *a = &kv_sort_h->ops[*(const size_t *)pa];
    const struct kv_hop *b = &kv_sort_h->ops[*(const size_t *)pb];
    int c = strcmp(a->key, b->key);
    if (c != 0)
        return c;
    if (a->t_inv != b->t_inv)
        return a->t_inv < b->t_inv ? -1 : 1;
    return a->line_inv < b->line_inv ? -1 : a->line_inv > b->line_inv;
}

/* ===========================================================================
 * Registers
 */

/* A write that may have taken effect (acknowledged or indeterminate), or
 * the key's initial absence (init). */
struct kv_write {
    const struct kv_hop *op; /* NULL for init */
    const char *value;       /* NULL: absent (a delete, or init) */
    uint64_t t_inv, t_done;
    uint64_t sup;            /* when an acknowledged write that began after
                                this one ended had itself ended: from then
                                on nobody may read this write's value */
    bool acked;
};

static int kv_cmp_write_value(const void *pa, const void *pb)
{
    const struct kv_write *a = pa, *b = pb;
    return kv_strcmp_nil(a->value, b->value);
}

static int kv_cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : a > b;
}

/* An acknowledged write seen from the supersession computation. */
struct kv_acked {
    uint64_t t_inv, t_done;
};

static int kv_cmp_acked(const void *pa, const void *pb)
{
    const struct kv_acked *a = pa, *b = pb;
    return a->t_inv < b->t_inv ? -1 : a->t_inv > b->t_inv;
}

/* The writes whose value is v: [*ret_lo, *ret_hi) of ws (sorted by value). */
static void kv_writes_of(const struct kv_write *ws, size_t n, const char *v, size_t *ret_lo,
                         size_t *ret_hi)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kv_strcmp_nil(ws[mid].value, v) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < n && kv_strcmp_nil(ws[end].value, v) == 0)
        end++;
    *ret_lo = lo;
    *ret_hi = end;
}

/* The acknowledged write that finished last, for messages; NULL if none. */
static const struct kv_write *kv_last_acked(const struct kv_write *ws, size_t n)
{
    const struct kv_write *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (ws[i].acked && (best == NULL || ws[i].t_done > best->t_done))
            best = &ws[i];
    return best;
}

static int kv_check_register(struct kv_checker *c, const size_t *idx, size_t n,
                             kv_final_fn final, void *data)
{
    const struct kv_history *h = c->h;
    const char *key = h->ops[idx[0]].key;
    struct kv_write *ws = calloc(n + 1, sizeof(*ws));
    struct kv_acked *acked = calloc(n + 1, sizeof(*acked));
    uint64_t *sufmin = calloc(n + 1, sizeof(*sufmin));
    size_t nw = 0, na = 0, nreal = 0;
    int rv = 0;

    if (ws == NULL || acked == NULL || sufmin == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    c->sum.registers++;

    /* The writes that may have happened; failed ones certainly did not. */
    for (size_t i = 0; i < n; i++) {
        const struct kv_hop *o = &h->ops[idx[i]];
        if ((o->op != KV_HIST_PUT && o->op != KV_HIST_DELETE) || o->result == KV_HIST_FAIL)
            continue;
        bool ok = o->result == KV_HIST_OK;
        ws[nw++] = (struct kv_write){o, o->op == KV_HIST_PUT ? o->in : NULL, o->t_inv,
                                     ok ? o->t_done : KV_T_NEVER, KV_T_NEVER, ok};
        if (ok)
            acked[na++] = (struct kv_acked){o->t_inv, o->t_done};
    }
    nreal = nw;

    /* sup(w) = min t_done over acknowledged w' with t_inv(w') > t_done(w):
     * sort those by invocation and take suffix minima. */
    qsort(acked, na, sizeof(*acked), kv_cmp_acked);
    sufmin[na] = KV_T_NEVER;
    for (size_t i = na; i-- > 0;)
        sufmin[i] = acked[i].t_done < sufmin[i + 1] ? acked[i].t_done : sufmin[i + 1];
    for (size_t i = 0; i < nw; i++) {
        if (ws[i].t_done == KV_T_NEVER)
            continue;
        size_t lo = 0, hi = na;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (acked[mid].t_inv <= ws[i].t_done)
                lo = mid + 1;
            else
                hi = mid;
        }
        ws[i].sup = sufmin[lo];
    }
    /* The key starts absent (load uses fresh keys), until the first
     * acknowledged write has finished. */
    ws[nw++] = (struct kv_write){NULL, NULL, 0, 0, sufmin[0], false};
    qsort(ws, nw, sizeof(*ws), kv_cmp_write_value);

    /* Reads: some write of the value read must have begun before the read
     * ended and must not have been overwritten before the read began. */
    for (size_t i = 0; i < n; i++) {
        const struct kv_hop *g = &h->ops[idx[i]];
        if (g->op != KV_HIST_GET || g->result != KV_HIST_OK)
            continue;
        c->sum.reads++;
        size_t lo, hi;
        kv_writes_of(ws, nw, g->out, &lo, &hi);
        bool fine = false, early = false;
        const struct kv_write *stale = NULL;
        for (size_t k = lo; k < hi && !fine; k++) {
            if (ws[k].t_inv > g->t_done)
                early = true;
            else if (ws[k].sup < g->t_inv)
                stale = &ws[k];
            else
                fine = true;
        }
        if (fine)
            continue;
        if (lo == hi)
            kv_violation(c, "key %s: get (line %zu) read %s, which no put wrote", key,
                         g->line_done, kv_show(g->out));
        else if (stale != NULL)
            kv_violation(c,
                         "key %s: stale read: get (line %zu, began at %.3f ms) read %s, "
                         "but an acknowledged write had replaced it by %.3f ms",
                         key, g->line_done, kv_ms(g->t_inv), kv_show(g->out),
                         kv_ms(stale->sup));
        else if (early)
            kv_violation(c,
                         "key %s: get (line %zu) read %s, written by a put that began "
                         "only after the get had ended",
                         key, g->line_done, kv_show(g->out));
    }

    /* The final value: a write that nothing acknowledged later replaced. */
    if (final != NULL && nreal > 0) {
        char *v = NULL;
        rv = final(data, key, &v);
        if (rv == -ENOENT) {
            v = NULL;
            rv = 0;
        } else if (rv != 0) {
            goto out;
        }
        c->sum.finals++;
        size_t lo, hi;
        kv_writes_of(ws, nw, v, &lo, &hi);
        bool fine = false;
        for (size_t k = lo; k < hi && !fine; k++)
            fine = ws[k].sup == KV_T_NEVER;
        if (!fine) {
            const struct kv_write *last = kv_last_acked(ws, nw);
            if (last != NULL)
                kv_violation(c,
                             "key %s: lost write: the service has %s, but the last "
                             "acknowledged write (line %zu, acknowledged at %.3f ms) "
                             "wrote %s",
                             key, kv_show(v), last->op->line_done, kv_ms(last->t_done),
                             kv_show(last->value));
            else
                kv_violation(c, "key %s: the service has %s, which no put wrote", key,
                             kv_show(v));
        }
        free(v);
    }

out:
    free(ws);
    free(acked);
    free(sufmin);
    return rv;
}

/* ===========================================================================
 * Counters
 */

/* An increment that may have happened, for the read bounds. */
struct kv_inc {
    uint64_t t;
    int64_t delta;
};

static int kv_cmp_inc(const void *pa, const void *pb)
{
    const struct kv_inc *a = pa, *b = pb;
    return a->t < b->t ? -1 : a->t > b->t;
}

/* Sum of deltas of incs (sorted by t, with prefix sums pre[]) with t < bound
 * (strict) or t <= bound. */
static int64_t kv_inc_sum_before(const struct kv_inc *incs, const int64_t *pre, size_t n,
                                 uint64_t bound, bool inclusive)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (incs[mid].t < bound || (inclusive && incs[mid].t == bound))
            lo = mid + 1;
        else
            hi = mid;
    }
    return pre[lo];
}

static int kv_check_counter(struct kv_checker *c, const size_t *idx, size_t n,
                            kv_final_fn final, void *data)
{
    const struct kv_history *h = c->h;
    const char *key = h->ops[idx[0]].key;
    bool positive = true, mixed = false;
    int64_t acked_sum = 0, maybe_sum = 0;
    size_t nacked = 0, ninfo = 0;
    int rv = 0;

    for (size_t i = 0; i < n; i++) {
        const struct kv_hop *o = &h->ops[idx[i]];
        if (o->op == KV_HIST_PUT || o->op == KV_HIST_DELETE) {
            mixed = true;
            continue;
        }
        if (o->op != KV_HIST_INCR)
            continue;
        int64_t d = strtoll(o->in, NULL, 10); /* checked by the reader */
        if (d <= 0)
            positive = false;
        if (o->result == KV_HIST_OK) {
            acked_sum += d;
            nacked++;
        } else if (o->result == KV_HIST_INFO) {
            maybe_sum += d;
            ninfo++;
        }
    }
    if (mixed) {
        if (c->report != NULL)
            fprintf(c->report, "note: key %s mixes incr with put or delete: not checked\n",
                    key);
        return 0;
    }
    c->sum.counters++;

    struct kv_inc *done = calloc(n + 1, sizeof(*done)); /* acked, by completion */
    struct kv_inc *sent = calloc(n + 1, sizeof(*sent)); /* maybe, by invocation */
    int64_t *pre_done = calloc(n + 1, sizeof(*pre_done));
    int64_t *pre_sent = calloc(n + 1, sizeof(*pre_sent));
    int64_t *values = calloc(n + 1, sizeof(*values));
    size_t nd = 0, ns = 0, nv = 0;
    if (!done || !sent || !pre_done || !pre_sent || !values) {
        rv = -ENOMEM;
        goto out;
    }

    for (size_t i = 0; i < n; i++) {
        const struct kv_hop *o = &h->ops[idx[i]];
        if (o->op != KV_HIST_INCR || o->result == KV_HIST_FAIL)
            continue;
        int64_t d = strtoll(o->in, NULL, 10);
        sent[ns++] = (struct kv_inc){o->t_inv, d};
        if (o->result == KV_HIST_OK) {
            done[nd++] = (struct kv_inc){o->t_done, d};
            values[nv++] = strtoll(o->out, NULL, 10);
        }
    }

    if (positive) {
        /* A counter only grows, so no two increments see the same result. */
        qsort(values, nv, sizeof(*values), kv_cmp_i64);
        for (size_t i = 1; i < nv; i++)
            if (values[i] == values[i - 1] && (i < 2 || values[i - 1] != values[i - 2]))
                kv_violation(c,
                             "key %s: two acknowledged increments both returned %" PRId64
                             ": one increment was lost or applied twice",
                             key, values[i]);
        if (nv > 0 && values[nv - 1] > acked_sum + maybe_sum)
            kv_violation(c,
                         "key %s: an increment returned %" PRId64 ", but at most %" PRId64
                         " increments were ever sent: some were applied twice",
                         key, values[nv - 1], acked_sum + maybe_sum);

        /* Reads lie between what was acknowledged before they began and what
         * was sent before they ended. */
        qsort(done, nd, sizeof(*done), kv_cmp_inc);
        qsort(sent, ns, sizeof(*sent), kv_cmp_inc);
        for (size_t i = 0; i < nd; i++)
            pre_done[i + 1] = pre_done[i] + done[i].delta;
        for (size_t i = 0; i < ns; i++)
            pre_sent[i + 1] = pre_sent[i] + sent[i].delta;
        for (size_t i = 0; i < n; i++) {
            const struct kv_hop *g = &h->ops[idx[i]];
            if (g->op != KV_HIST_GET || g->result != KV_HIST_OK)
                continue;
            c->sum.reads++;
            int64_t v = 0;
            if (g->out != NULL && kv_hist_parse_i64(g->out, &v) != 0) {
                kv_violation(c, "key %s: get (line %zu) read %s, not a counter", key,
                             g->line_done, g->out);
                continue;
            }
            int64_t lo = kv_inc_sum_before(done, pre_done, nd, g->t_inv, false);
            int64_t hi = kv_inc_sum_before(sent, pre_sent, ns, g->t_done, true);
            if (v < lo)
                kv_violation(c,
                             "key %s: stale read: get (line %zu) read %" PRId64
                             ", but %" PRId64 " had been acknowledged before it began",
                             key, g->line_done, v, lo);
            else if (v > hi)
                kv_violation(c,
                             "key %s: get (line %zu) read %" PRId64 ", but only %" PRId64
                             " had been sent before it ended: increments applied twice",
                             key, g->line_done, v, hi);
        }
    }

    if (final != NULL && (nacked > 0 || ninfo > 0)) {
        char *text = NULL;
        int64_t v = 0;
        rv = final(data, key, &text);
        if (rv == -ENOENT) {
            rv = 0;
        } else if (rv != 0) {
            goto out;
        } else if (kv_hist_parse_i64(text, &v) != 0) {
            kv_violation(c, "key %s: the service has \"%s\", not a counter", key, text);
            free(text);
            goto out;
        }
        free(text);
        c->sum.finals++;
        if (positive || ninfo == 0) {
            int64_t hi = acked_sum + (positive ? maybe_sum : 0);
            if (v < acked_sum)
                kv_violation(c,
                             "key %s: lost increments: the service has %" PRId64
                             ", but %zu increments (sum %" PRId64
                             ") were acknowledged (%zu more of unknown outcome)",
                             key, v, nacked, acked_sum, ninfo);
            else if (v > hi)
                kv_violation(c,
                             "key %s: duplicated increments: the service has %" PRId64
                             ", but at most %" PRId64 " could have been applied (%zu "
                             "acknowledged, %zu of unknown outcome)",
                             key, v, hi, nacked, ninfo);
        }
    }

out:
    free(done);
    free(sent);
    free(pre_done);
    free(pre_sent);
    free(values);
    return rv;
}

/* ===========================================================================
 * The whole check
 */

int kv_history_check(const struct kv_history *h, kv_final_fn final, void *data,
                     FILE *report, struct kv_check_summary *ret_summary)
{
    struct kv_checker c = {.h = h, .report = report};
    int rv = 0;
    size_t *idx = malloc((h->n ? h->n : 1) * sizeof(*idx));
    if (idx == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < h->n; i++)
        idx[i] = i;
    /* qsort has no context argument; the checker is not reentrant on one
     * history anyway, and it runs on one thread. */
    kv_sort_h = h;
    qsort(idx, h->n, sizeof(*idx), kv_cmp_key_time);
    kv_sort_h = NULL;

    for (size_t i = 0; i < h->n;) {
        size_t j = i + 1;
        while (j < h->n && strcmp(h->ops[idx[j]].key, h->ops[idx[i]].key) == 0)
            j++;
        bool counter = false;
        for (size_t k = i; k < j; k++)
            counter |= h->ops[idx[k]].op == KV_HIST_INCR;
        c.sum.keys++;
        rv = counter ? kv_check_counter(&c, idx + i, j - i, final, data)
                     : kv_check_register(&c, idx + i, j - i, final, data);
        if (rv != 0)
            break;
        i = j;
    }
    free(idx);
    if (c.sum.violations > KV_REPORT_MAX && report != NULL)
        fprintf(report, "... and %zu more violations\n", c.sum.violations - KV_REPORT_MAX);
    *ret_summary = c.sum;
    return rv;
}
