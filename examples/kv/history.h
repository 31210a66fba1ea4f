/*
 * Operation histories: what `dvs-kv-client load` writes and `verify` reads.
 *
 * The format is meant for linearizability checkers (Knossos/Porcupine
 * style): every operation is an invocation and, later, a completion by the
 * same process, and each key is an independent register (or counter). One
 * event per line, fields separated by one space, in the order the events
 * happened:
 *
 *   TYPE PROCESS OP KEY VALUE TIME_NS [ERROR]
 *
 *   TYPE     invoke   the operation is about to be sent
 *            ok       it completed, with this result
 *            fail     it definitely did not take effect
 *            info     its outcome is unknown: it may take effect at any
 *                     time after its invoke (or never). A checker must keep
 *                     it pending for ever, so the process never issues
 *                     another operation (see PROCESS)
 *   PROCESS  a non-negative integer; at most one operation per process is
 *            in flight. A load thread whose operation ended in `info`
 *            carries on as a new process (thread + threads * k), as Jepsen
 *            does
 *   OP       put | get | delete | incr
 *   KEY      the key (no whitespace)
 *   VALUE    put:    the value written (invoke and completion alike)
 *            get:    `nil` on invoke; on ok the value read, `nil` if the
 *                    key was absent
 *            delete: `nil`
 *            incr:   the delta on invoke, fail and info; on ok the
 *                    counter's new value
 *   TIME_NS  nanoseconds since the start of the run (monotonic clock),
 *            non-decreasing down the file. Taken when the line is written,
 *            so [invoke, completion] always contains the real operation
 *   ERROR    on fail and info only: the error's name (dvs_err_name, or
 *            KV_NOTNUMBER for an incr the service refused)
 *
 * Lines starting with '#' are comments. The first line is a header with
 * key=value facts about the run ("# dvs-kv history v1 endpoint=kv ...");
 * verify takes the endpoint from it.
 *
 * Keys and values written by load never contain whitespace and values are
 * never `nil`, so every field is one token.
 */
#ifndef DVS_EXAMPLES_KV_HISTORY_H
#define DVS_EXAMPLES_KV_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KV_HISTORY_MAGIC "# dvs-kv history v1"
#define KV_HISTORY_NIL "nil"
/* The longest line read: a key and a value at the protocol's bounds would
 * not fit, but load writes short tokens; longer lines are an error. */
#define KV_HISTORY_MAX_LINE 8192

enum kv_hist_type { KV_HIST_INVOKE, KV_HIST_OK, KV_HIST_FAIL, KV_HIST_INFO };
enum kv_hist_op { KV_HIST_PUT, KV_HIST_GET, KV_HIST_DELETE, KV_HIST_INCR };

/* "invoke", ..., and "put", ... */
const char *kv_hist_type_name(enum kv_hist_type t);
const char *kv_hist_op_name(enum kv_hist_op op);

/*
 * Whether an operation that failed with code err (from dvs_call) certainly
 * did not take effect: `fail` in the history, otherwise `info`. Only
 * failures that happen before anything is sent, and errors the kv handler
 * itself returns (it changes nothing when it fails), are certain.
 */
bool kv_hist_error_is_definite(int err);

/* A counter value or increment as histories write it: optional '-', then
 * decimal digits, nothing else (no '+', no spaces), within int64. 0 or
 * -EINVAL. The one reader of numbers for every checker, so that they agree
 * on what is a number. */
int kv_hist_parse_i64(const char *s, int64_t *ret);

/* A parsed history: operations, each an invoke matched with its completion. */
struct kv_history;

/*
 * Read a history from f (name is for messages). Checks the grammar above,
 * that each completion matches its process' pending invocation (same op
 * and key), that no process has two operations in flight, that times never
 * go back, and the values (incr deltas and results are decimal). An
 * invocation still pending at the end counts as `info`.
 *
 * Returns 0 and *ret_history (free with kv_history_free), or -EINVAL with
 * err naming the file, the line and the problem, or -ENOMEM / a negated
 * errno from reading.
 */
int kv_history_read(FILE *f, const char *name, struct kv_history **ret_history,
                    char *err, size_t errlen);

void kv_history_free(struct kv_history *h);

/* The header's endpoint=, or NULL. Owned by h. */
const char *kv_history_endpoint(const struct kv_history *h);

/* Operations parsed (invocations). */
size_t kv_history_ops(const struct kv_history *h);

/*
 * Look up a key's value in the service now, for the final-state checks.
 * Returns 0 and *ret_value (malloc'd, NUL-terminated, freed by the caller),
 * -ENOENT if the key is absent, or another negative code to stop the check.
 */
typedef int (*kv_final_fn)(void *data, const char *key, char **ret_value);

/*
 * One operation of a parsed history, as the linearizability checker
 * (lincheck.h) sees it. Strings are owned by the history. Events are
 * ordered by line: line_inv < line_done, and the lines of a file are in
 * time order.
 */
struct kv_hist_entry {
    const char *key;
    const char *in;       /* the invocation's value; NULL for nil */
    const char *out;      /* the ok completion's value; NULL for nil or none */
    uint64_t process;
    uint64_t t_inv;
    uint64_t t_done;      /* UINT64_MAX unless ok or fail */
    size_t line_inv;
    size_t line_done;     /* 0 if none (an invocation still pending at the end) */
    enum kv_hist_op op;
    enum kv_hist_type result; /* KV_HIST_OK, KV_HIST_FAIL or KV_HIST_INFO */
};

/* Operation i (0 <= i < kv_history_ops(h)). */
void kv_history_entry(const struct kv_history *h, size_t i, struct kv_hist_entry *ret);

/*
 * Append a completed get of key that returned value (NULL: absent), begun
 * after every event of the history and ended before the next one appended:
 * the final read `verify` makes of the service. Its lines number on from
 * the file's last line. Returns 0 or -ENOMEM.
 */
int kv_history_append_read(struct kv_history *h, const char *key, const char *value);

struct kv_check_summary {
    size_t keys;       /* distinct keys in the history */
    size_t registers;  /* keys checked as registers (put/get/delete) */
    size_t counters;   /* keys checked as counters (incr) */
    size_t reads;      /* successful reads checked against the writes */
    size_t finals;     /* keys whose final value was looked up */
    size_t violations; /* problems found; each one is reported */
};

/*
 * Check what a user checks after a migration:
 *   - registers: the final value of every written key is the last
 *     acknowledged write, or a write that may have happened after it
 *     (concurrent with it, or of unknown outcome): no acknowledged write
 *     lost; and every successful read returned a value that was written and
 *     not yet overwritten by an acknowledged write when the read began (no
 *     stale or invented reads);
 *   - counters (positive increments only): the final value is the number of
 *     acknowledged increments, plus at most the indeterminate ones: no lost
 *     and no duplicated increment; no two acknowledged increments returned
 *     the same value; every read lies between the increments acknowledged
 *     before it began and those sent before it ended.
 * final (may be NULL: skip the final-value checks) is called once for each
 * key that has a write that may have taken effect.
 *
 * Writes one line per violation to report (at most a few hundred, then a
 * count) and fills *ret_summary. Returns 0 (look at violations), or the
 * negative code final returned to stop, or -ENOMEM.
 */
int kv_history_check(const struct kv_history *h, kv_final_fn final, void *data,
                     FILE *report, struct kv_check_summary *ret_summary);

#endif
