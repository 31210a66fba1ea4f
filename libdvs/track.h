/*
 * Dirty-page tracking by write protection: the fallback of DESIGN.md §4
 * for kernels without userfaultfd WP-async (internal; the agent's view of
 * the bitmap is in dvs_track.h, the commands in docs/control-protocol.md §5).
 *
 * The arena is mprotect()ed read-only; the first write to each page raises
 * SIGSEGV, and a process-wide handler records the page in a bitmap that the
 * agent reads, then makes that page writable again. "Collect" swaps the two
 * bitmaps and write-protects the pages just reported. Signal handlers are
 * per process, so at most one arena per process is tracked at a time; the
 * owner argument (the server) says which caller holds it.
 *
 * All functions must be called from one thread at a time (the server's
 * loop thread); the handler itself runs on whichever thread writes.
 */
#ifndef DVS_TRACK_H
#define DVS_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dvs_track.h"

#define DVS__TRACK_DEFAULT_MAX_FAULTS 16384u
/*
 * Each page made writable on its own splits the arena's mapping, and a
 * process may have vm.max_map_count (65530) mappings: after this many
 * faults in one round the handler unprotects the whole arena instead and
 * the round reports overflow (every page dirty).
 */
#define DVS__TRACK_MAX_MAX_FAULTS 16384u

struct dvs__track_report {
    unsigned bitmap;   /* index of the bitmap to read (0 or 1) */
    uint64_t dirty;    /* bits set in it (every page when overflow) */
    uint64_t faults;   /* first-write faults counted in it */
    bool overflow;     /* the round overflowed: every page counts as dirty */
};

/*
 * Start tracking [base, base + size) (page-aligned, mapped read-write) for
 * owner: create the bitmap memfd, install the SIGSEGV handler, and
 * write-protect the range. max_faults: 1..DVS__TRACK_MAX_MAX_FAULTS.
 * On success *ret_fd is the bitmap memfd (O_CLOEXEC, sealed against
 * resizing), owned by the caller; the tracker keeps its own mapping.
 * Returns 0, -EINVAL (bad range or max_faults), -EALREADY (owner already
 * tracks), -EBUSY (another owner in this process tracks), or a negated
 * errno from memfd_create/ftruncate/mmap/sigaction/mprotect (then nothing
 * changed).
 */
int dvs__track_start(const void *owner, void *base, size_t size, uint32_t max_faults,
                     int *ret_fd);

/*
 * End a round: swap the bitmaps, wait for fault handlers still writing into
 * the old one, write-protect the pages it holds, and report it in *ret.
 * Returns 0, -ENOENT (owner does not track), -ETIMEDOUT (a fault handler
 * did not finish within a second: the tracker is broken, every further
 * collect fails the same way until dvs__track_stop), or a negated errno
 * from mprotect (also breaking the tracker).
 */
int dvs__track_collect(const void *owner, struct dvs__track_report *ret);

/*
 * Stop tracking: make the range read-write again, stop handling faults in
 * it (every SIGSEGV then goes to the previous disposition), unmap the
 * bitmap. Returns 0, or -ENOENT if owner was not tracking (harmless).
 */
int dvs__track_stop(const void *owner);

/* Whether owner is tracking now. */
bool dvs__track_active(const void *owner);

#endif /* DVS_TRACK_H */
