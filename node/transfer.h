/*
 * The transfer stream: how a source agent sends an arena to a destination
 * agent over TCP during a migration (DESIGN.md §4, docs/migration.md steps
 * 3-4). This file is the format and its checks only; no I/O except reading
 * the arena for the image checksum. migrate.c drives the sockets.
 *
 * Source -> destination (every integer little-endian):
 *
 *   hello   64 bytes, once:
 *     0  u32 magic "DVSX"      4  u16 version (2)     6  u16 hello size (64)
 *     8  u64 migration id     16  u64 token (from the destination's precopy
 *                                     report, info.token)
 *    24  u64 arena address    32  u64 arena size
 *    40  u64 generation of the source instance
 *    48  u32 page size        52  u32 flags (0)
 *    56  u64 XXH64 of bytes 0..55 (random bytes that happen to start with
 *            the magic are not taken for a hello)
 *
 *   then records, each a 32-byte header:
 *     0  u16 type   2  u16 flags (0)   4  u32 low half of XXH64(bytes 8..31,
 *                                         seed = type): catches a stream that
 *                                         lost its framing
 *     8  u64 a     16  u64 b          24  u64 c
 *
 *   RESERVE a = offset, b = length (page multiples, inside the arena): the
 *          source has data there; the destination allocates and maps the
 *          range now, before the freeze. No payload.
 *   SYNC   a = number of RESERVE records before it. The destination answers
 *          READY once every reserved range is in place.
 *   FREEZE the service is frozen as of this record (the start of the last
 *          round): the destination times the downtime from its arrival.
 *          a = dirty-tracking method (enum node_xfer_method), b = why
 *          pre-copy stopped (enum node_xfer_stop), c = the bandwidth the
 *          source measured, bytes per second (0 if unknown). For the
 *          migration record; the destination checks only their range.
 *   THROTTLE (right after FREEZE, when pre-copy ran) a = the delay per
 *          request the service was throttled to at the freeze, in
 *          microseconds (0 = never throttled), b = the stop reason that
 *          started throttling (0 = none), c = microseconds of pre-copy
 *          before the freeze. For the record only.
 *   PAGES  a = offset, b = length; b bytes of arena follow. Offset and length
 *          are multiples of the page size, 0 < b <= NODE_XFER_MAX_RUN, and
 *          the range lies inside the arena. A page may be sent more than once
 *          (later rounds overwrite earlier ones); a page never sent is zero.
 *   ROUND  a = round number (0, 1, ... in order), b = pages sent in the
 *          round, c = bytes sent in the round. Closes a round.
 *   END    a = PAGES payload bytes in the whole stream, b = image checksum
 *          (below), c = microseconds the service had been frozen when END
 *          was written. Nothing follows.
 *
 * Stop-and-copy: RESERVE..., SYNC; (READY comes back) the source freezes the
 * service; FREEZE, every allocated page, ROUND 0, END.
 * Pre-copy: RESERVE..., SYNC; (READY) PAGES... ROUND 0 while the service
 * serves; PAGES... ROUND k for each dirty round; FREEZE, the last dirty
 * pages, ROUND n, END. The reservation is
 * DESIGN.md §4's "the destination pre-faults its memfd during round 0":
 * first touch of fresh memory is the slow part of a copy, and here it is
 * paid while the service still serves. Pre-copy adds rounds without
 * changing the format: round 0 is every non-zero page while the service
 * runs, then a round per dirty set, FREEZE before the last one, then END.
 *
 * Destination -> source, on the same connection, 32-byte records too:
 *
 *   READY  a = number of RESERVE records honoured: the source may freeze.
 *   RESULT a = 1 committed / 2 aborted, b = the generation now serving,
 *          sent after the outcome is committed in the manager. A hint only:
 *          the source acts on what the manager says (it reads the migration
 *          back), never on this record alone.
 *
 * The image checksum is the sum modulo 2^64, over every page of the arena
 * that is not all zeros, of XXH3-64 of the page's 4096 bytes with the
 * page's offset as the seed (node_xfer_page_hash). A sum and not a chained
 * hash, so that (1) the destination keeps it up to date as pages arrive,
 * even when a later round overwrites a page (subtract the page's old hash,
 * add the new one): no pass over the image after END, which would be
 * downtime; (2) the source checksums the frozen image in parallel chunks.
 * The source computes it from the frozen arena itself, not from what it
 * sent, so a write that dirty tracking missed shows as a mismatch. Zero
 * pages count as nothing on both sides, so holes in the memfd are never
 * read (reading a hole through a mapping would allocate it) and the cost
 * is proportional to the data, not to the arena size. (Version 1 chained
 * XXH64 over the pages in order; it could not be kept up to date across
 * rounds.)
 */
#ifndef DVS_NODE_TRANSFER_H
#define DVS_NODE_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_XFER_MAGIC 0x58535644u /* "DVSX" read as a little-endian u32 */
#define NODE_XFER_VERSION 2
#define NODE_XFER_HELLO_SIZE 64
#define NODE_XFER_REC_SIZE 32
#define NODE_XFER_PAGE 4096u
/* The longest PAGES record; also bounds how much one read may target. */
#define NODE_XFER_MAX_RUN (8u << 20)
/* The arena sizes the manager hands out (manager/fsm.h MGR_ARENA_MIN/MAX). */
#define NODE_XFER_MIN_ARENA (64u << 10)
#define NODE_XFER_MAX_ARENA (64ull << 30)

enum node_xfer_type {
    /* source -> destination */
    NODE_XFER_PAGES = 1,
    NODE_XFER_ROUND = 2,
    NODE_XFER_END = 3,
    NODE_XFER_RESERVE = 4,
    NODE_XFER_SYNC = 5,
    NODE_XFER_FREEZE = 6,
    NODE_XFER_THROTTLE = 7,
    /* destination -> source */
    NODE_XFER_RESULT = 16,
    NODE_XFER_READY = 17,
};

/* At most this many RESERVE records in a stream; the source merges ranges
 * to stay below it. */
#define NODE_XFER_MAX_RESERVES 4096

/* FREEZE a: how the source tracked dirty pages. */
enum node_xfer_method {
    NODE_XFER_M_NONE = 0,      /* stop-and-copy: no pre-copy rounds */
    NODE_XFER_M_UFFD = 1,      /* userfaultfd WP async + PAGEMAP_SCAN */
    NODE_XFER_M_MPROTECT = 2,  /* mprotect + SIGSEGV inside the service */
    NODE_XFER_M_MAX = 2,
};

/* FREEZE b: why pre-copy stopped. */
enum node_xfer_stop {
    NODE_XFER_S_NONE = 0,       /* stop-and-copy: pre-copy never ran */
    NODE_XFER_S_BUDGET = 1,     /* the rest fits the downtime budget */
    NODE_XFER_S_NO_PROGRESS = 2,/* rounds stopped shrinking; then throttled */
    NODE_XFER_S_ROUND_CAP = 3,  /* the round cap; then throttled */
    NODE_XFER_S_THROTTLE_CAP = 4,/* throttled to the cap and still too much: forced */
    NODE_XFER_S_TRACKING_LOST = 5,/* tracking failed mid-way: forced stop-and-copy */
    NODE_XFER_S_MAX = 5,
};

const char *node_xfer_method_name(uint64_t m);
const char *node_xfer_stop_name(uint64_t s);

enum node_xfer_outcome {
    NODE_XFER_COMMITTED = 1,
    NODE_XFER_ABORTED = 2,
};

struct node_xfer_hello {
    uint64_t migration_id;
    uint64_t token;
    uint64_t arena_addr;
    uint64_t arena_size;
    uint64_t generation;
    uint32_t page_size;
    uint32_t flags;
};

struct node_xfer_rec {
    uint16_t type;
    uint64_t a, b, c;
};

/* Encode a hello into out[NODE_XFER_HELLO_SIZE]. */
void node_xfer_hello_encode(const struct node_xfer_hello *h, uint8_t *out);

/*
 * Decode and check a hello: magic, version, size, check sum, page size,
 * flags, and an arena size and address that are page multiples within the
 * manager's bounds. Returns 0 and fills *ret, or DVS_EPROTO with *ret_why a
 * static phrase for the log. *ret is untouched on failure.
 */
int node_xfer_hello_decode(const uint8_t *in, struct node_xfer_hello *ret,
                           const char **ret_why);

/* Encode a record header into out[NODE_XFER_REC_SIZE]. */
void node_xfer_rec_encode(uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint8_t *out);

/*
 * Decode a record header and check what can be checked without context:
 * the check sum, a known type, zero flags, and for PAGES and RESERVE the
 * range against arena_size. Returns 0 and fills *ret, or DVS_EPROTO with *ret_why.
 */
int node_xfer_rec_decode(const uint8_t *in, uint64_t arena_size, struct node_xfer_rec *ret,
                         const char **ret_why);

/* Whether the page at p (NODE_XFER_PAGE bytes) is all zeros. */
bool node_xfer_page_is_zero(const uint8_t *p);

/* A page's term in the image checksum: 0 for a zero page, else XXH3-64 of
 * its bytes seeded with its offset. */
uint64_t node_xfer_page_hash(uint64_t off, const uint8_t *p);

/* A run of consecutive non-zero pages: [offset, offset + len). */
struct node_xfer_run {
    uint64_t offset;
    uint64_t len;
};

struct node_xfer_scan {
    uint64_t checksum;          /* the image checksum */
    uint64_t pages;             /* non-zero pages */
    struct node_xfer_run *runs; /* malloc'd, NULL when not asked for or none */
    size_t nruns;
};

/*
 * Scan the arena image: fd is the memfd (used only for SEEK_DATA/SEEK_HOLE,
 * so that holes are skipped without being touched), map its read-only
 * mapping of size bytes. Computes the image checksum; with want_runs, also
 * the runs of non-zero pages, each at most NODE_XFER_MAX_RUN long.
 *
 * Blocking and CPU-bound (memory speed): call it from a worker thread.
 * Returns 0 and fills *ret (free ret->runs), -ENOMEM, or a negated errno
 * from lseek. *ret is untouched on failure.
 */
int node_xfer_scan(int fd, const uint8_t *map, uint64_t size, bool want_runs,
                   struct node_xfer_scan *ret);

/* The same over [from, to) only (page multiples): the checksum of the
 * whole image is the sum of those of disjoint ranges covering it. */
int node_xfer_scan_range(int fd, const uint8_t *map, uint64_t from, uint64_t to, bool want_runs,
                         struct node_xfer_scan *ret);

/*
 * The extents of the memfd that hold data (SEEK_DATA/SEEK_HOLE: allocated
 * pages, whatever their content), page-aligned, merged across holes
 * shorter than merge_gap and then as needed to stay within max_runs. No
 * page is read. Returns 0 with a malloc'd array (free it; NULL when empty),
 * -ENOMEM, or a negated errno from lseek.
 */
int node_xfer_extents(int fd, uint64_t size, uint64_t merge_gap, size_t max_runs,
                      struct node_xfer_run **ret_runs, size_t *ret_nruns);

#endif
