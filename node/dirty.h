/*
 * Dirty-page tracking of a service's arena during pre-copy (DESIGN.md §4).
 *
 * Two methods, both driven by the agent:
 *
 *   - uffd: userfaultfd write-protection in async mode, read and re-armed
 *     with PAGEMAP_SCAN (one atomic collect-and-re-protect). The service
 *     hands over its uffd and its /proc/self/pagemap (control command
 *     "fds"); the agent registers the arena range only for the migration.
 *     Nothing runs in the service: a first write after a collect costs one
 *     in-kernel fault.
 *   - mprotect: the service write-protects its arena and records faults in
 *     a bitmap it shares with the agent (control commands track-start,
 *     track-collect, track-stop; docs/control-protocol.md). Used where the
 *     kernel lacks async uffd write-protection.
 *
 * Where neither works, the migration is a stop-and-copy.
 *
 * Everything here is synchronous and cheap (a page-table walk, a bitmap
 * read); migrate.c calls it on the loop thread.
 */
#ifndef DVS_NODE_DIRTY_H
#define DVS_NODE_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/transfer.h"

/* A growing list of page runs [offset, offset + len), offsets relative to
 * the arena, in ascending order, adjacent runs merged up to
 * NODE_XFER_MAX_RUN. */
struct node_runs {
    struct node_xfer_run *v;
    size_t n, cap;
    uint64_t bytes;
};

void node_runs_add(struct node_runs *r, uint64_t off, uint64_t len);
void node_runs_clear(struct node_runs *r);
void node_runs_free(struct node_runs *r);
/* Merge b into a (both ascending): the union, each page once. */
void node_runs_union(struct node_runs *a, const struct node_runs *b);

/*
 * Whether this kernel gives async userfaultfd write-protection on shared
 * memory and PAGEMAP_SCAN: tried on a small memfd mapping of the agent's
 * own. Returns true, or false with a reason in why.
 */
bool node_dirty_probe_uffd(char *why, size_t why_len);

struct node_dirty_uffd {
    int uffd;     /* the service's; owned */
    int pagemap;  /* the service's /proc/self/pagemap; owned */
    uint64_t addr, len;
    bool registered;
    void *vec; /* struct page_region[], scan results */
    size_t vec_len;
};

/* Take the two descriptors (owned from now on, closed by stop), register
 * the range [addr, addr + len) of the service's memory for async
 * write-protection and protect all of it: from here every write to a page
 * marks it. Returns 0 or a negated errno; on failure the descriptors are
 * closed and the tracker is stopped. */
int node_dirty_uffd_start(struct node_dirty_uffd *t, int uffd, int pagemap, uint64_t addr,
                          uint64_t len);

/* Append the pages written since the previous collect (or start) to out,
 * and re-protect exactly those, atomically. Returns 0, or a negated errno
 * (-EPERM: some page of the range is not tracked any more; start over with
 * a full copy). */
int node_dirty_uffd_collect(struct node_dirty_uffd *t, struct node_runs *out);

/* Unregister (the service's pages become plainly writable again) and
 * close the descriptors. Idempotent. */
void node_dirty_uffd_stop(struct node_dirty_uffd *t);

/*
 * The bitmap the service shares in mprotect mode (layout in
 * docs/control-protocol.md, "track-start"): a 64-byte header, then two
 * bitmaps of ceil(pages / 64) little-endian u64 words, bit i = page i.
 */
#include "dvs_track.h" /* the layout, shared with libdvs */
#define NODE_DIRTY_BITMAP_MAGIC DVS_TRACK_MAGIC
#define NODE_DIRTY_BITMAP_HEADER DVS_TRACK_HDR_SIZE

/* Check the header of a mapped bitmap file of file_size bytes against the
 * arena's page count. Returns 0 or DVS_EPROTO with *why set. */
int node_dirty_bitmap_check(const uint8_t *map, uint64_t file_size, uint64_t pages,
                            const char **why);

/* Append the pages set in bitmap `which` (0 or 1) to out. */
void node_dirty_bitmap_runs(const uint8_t *map, uint64_t pages, unsigned which,
                            struct node_runs *out);

/*
 * The pre-copy stop rule (DESIGN.md §4), pure so that it is tested alone.
 * After each round the source collects the pages written meanwhile and
 * asks what to do with them.
 */
struct node_precopy_rule {
    double budget_ms;        /* --downtime-budget */
    uint64_t max_rounds;     /* --precopy-max-rounds */
    unsigned throttle_steps; /* steps of auto-converge available */
    double overhead_ms;      /* freeze + commit + start, fixed part */
};

struct node_precopy_state {
    uint64_t rounds;         /* rounds sent so far (round 0 included) */
    uint64_t prev_dirty;     /* bytes collected after the previous round */
    unsigned throttle_step;  /* steps applied so far */
    double bw;               /* measured bytes per second, 0 = not yet */
};

enum node_precopy_next {
    NODE_PC_SEND,     /* send them as another round */
    NODE_PC_THROTTLE, /* one throttle step more, and send them */
    NODE_PC_FREEZE,   /* freeze; they go in the last round */
};

/* Decide for `dirty` bytes collected. *reason gets an enum node_xfer_stop:
 * for FREEZE why pre-copy stops, for THROTTLE what started throttling;
 * *est_ms the estimated stop-and-copy time. Never SEND past max_rounds
 * without a throttle step, and never THROTTLE past the last step: every
 * sequence of decisions ends in FREEZE. */
enum node_precopy_next node_precopy_decide(const struct node_precopy_rule *rule,
                                           const struct node_precopy_state *st, uint64_t dirty,
                                           int *reason, double *est_ms);

#endif
