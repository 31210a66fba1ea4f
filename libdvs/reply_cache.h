/*
 * The reply cache: at-most-once execution across resends and migrations.
 *
 * A client numbers its requests (client id, seq) and resends the same pair
 * when it does not get an answer (DESIGN.md §4, "no request is executed
 * twice"). The service saves each reply under that pair; a resend gets the
 * saved reply instead of a second execution. The cache lives in the arena,
 * so it migrates with the state it describes: a request executed on the
 * source just before the freeze is answered from the cache on the
 * destination.
 *
 * What has been executed is tracked apart from what is saved: per client, a
 * "floor" (every seq up to it is acknowledged: each request carries an
 * "ack", meaning every reply up to it was received or given up on) and a
 * bitmap of the 1024 seqs above the floor. A request marked executed whose
 * reply is no longer saved is never run again (DVS__RC_FORGOTTEN; the
 * service answers DVS_EUNKNOWNOUTCOME). Requests of one client may arrive
 * in any order (it may call from several threads), and dropping a saved
 * reply never changes whether another request counts as executed.
 *
 * Bounds, because every client could otherwise grow the cache forever:
 *   - per client, at most max_entries saved replies; acknowledged ones are
 *     freed, and beyond the bound the oldest saved reply is dropped;
 *   - at most max_clients clients; the least recently used one is evicted
 *     with everything it knew (a resend from an evicted client would run
 *     again, so max_clients must exceed the number of clients active within
 *     one call timeout);
 *   - at most max_bytes of saved reply bytes; beyond that, the replies of
 *     the least recently used other clients are dropped first, and a reply
 *     that still does not fit is not saved (its request stays executed);
 *   - a client more than 1024 requests ahead of its acknowledgements has its
 *     oldest treated as acknowledged.
 *
 * All structures are in the arena and linked by offsets; dvs__rc_check
 * validates them after a restore. Not thread-safe (the server loop is one
 * thread). Time plays no part: eviction is by recency of use only, so the
 * cache behaves identically on the destination whatever its clock says.
 */
#ifndef DVS_REPLY_CACHE_H
#define DVS_REPLY_CACHE_H

#include <stdint.h>

#include "arena.h"
#include "frame.h"

struct dvs__rc; /* arena-resident, see reply_cache.c */

struct dvs__rc_limits {
    uint32_t max_clients; /* >= 1 */
    uint32_t max_entries; /* per client, >= 1 */
    uint64_t max_bytes;   /* saved reply bytes */
};

enum dvs__rc_verdict {
    DVS__RC_NEW = 0,       /* not seen before: execute, then dvs__rc_store */
    DVS__RC_REPLAY = 1,    /* executed before: answer with *ret_reply */
    DVS__RC_FORGOTTEN = 2, /* executed before, reply no longer kept */
};

struct dvs__rc_reply {
    uint8_t status;   /* DVS__STATUS_OK or DVS__STATUS_ERROR */
    const void *data; /* in the arena, valid until the next cache call */
    uint32_t len;
};

struct dvs__rc_stats {
    uint32_t clients;
    uint64_t entries;
    uint64_t bytes;
    uint64_t replays;         /* answers served from the cache */
    uint64_t evicted_clients; /* LRU evictions of whole clients */
    uint64_t dropped_replies; /* replies dropped before their ack */
};

/*
 * Find the arena's reply cache, creating it with lim if the arena has none
 * (a fresh arena). A restored cache keeps the limits it was created with.
 * Returns 0 and *ret_rc, -EINVAL (limits out of range), -ENOMEM (no room in
 * the arena), or DVS_EPROTO (the arena's cache fails dvs__rc_check).
 */
int dvs__rc_open(dvs_arena *arena, const struct dvs__rc_limits *lim,
                 struct dvs__rc **ret_rc);

/*
 * Look up request (id, seq), first forgetting the client's replies up to
 * ack. Marks the client most recently used, creating its record if needed
 * (which may evict the least recently used client). Returns a verdict (>= 0)
 * and, for DVS__RC_REPLAY, the saved reply; or -ENOMEM if the arena has no
 * room for a new client record even after evictions (do not execute).
 */
int dvs__rc_lookup(dvs_arena *arena, struct dvs__rc *rc,
                   const uint8_t id[DVS__CLIENT_ID_SIZE], uint64_t seq,
                   uint64_t ack, struct dvs__rc_reply *ret_reply);

/*
 * Record that (id, seq), which dvs__rc_lookup just called NEW, has been
 * executed, and save its reply (copied into the arena). Returns 0 if saved,
 * 1 if only the fact of execution was recorded (no room for the bytes),
 * -ENOMEM if not even that (the client record could not be recreated).
 */
int dvs__rc_store(dvs_arena *arena, struct dvs__rc *rc,
                  const uint8_t id[DVS__CLIENT_ID_SIZE], uint64_t seq,
                  uint8_t status, const void *data, uint32_t len);

/* Deep validation of every structure: 0 or DVS_EPROTO. */
int dvs__rc_check(const dvs_arena *arena, const struct dvs__rc *rc);

void dvs__rc_stats(const struct dvs__rc *rc, struct dvs__rc_stats *ret_stats);

#endif /* DVS_REPLY_CACHE_H */
