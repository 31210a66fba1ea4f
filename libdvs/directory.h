/*
 * The client's view of the manager's directory (internal).
 *
 * GET /v1/endpoints/{name} (docs/api.md) gives the serving instance's
 * address and generation; with ?index=N&wait=D it blocks until the entry
 * changes past N. Results are cached per name; the cache only moves forward
 * in generation, because any manager member answers reads from its own,
 * possibly stale, copy (DESIGN.md §3) and a "moved" reply may be newer than
 * every member's copy.
 *
 * Thread-safe: the cache is behind a mutex, and each HTTP request uses its
 * own libcurl easy handle, outside the lock.
 */
#ifndef DVS_DIRECTORY_H
#define DVS_DIRECTORY_H

#include <stdbool.h>
#include <stdint.h>

#include "dvs.h"
#include "frame.h"

struct dvs__location {
    char address[DVS__FRAME_MAX_TEXT + 1]; /* "" when no instance serves */
    uint64_t generation;
    uint64_t index; /* the entry's modify_index, for blocking queries */
};

/* Whether b is newer than a (a later generation, or an address where a had none). */
bool dvs__location_newer(const struct dvs__location *b, const struct dvs__location *a);

struct dvs__dir;

/*
 * managers: comma-separated base URLs (copied). Returns 0, -EINVAL (empty
 * or not http(s)://) or -ENOMEM.
 */
int dvs__dir_create(const char *managers, dvs_log_fn log, void *log_data,
                    struct dvs__dir **ret_dir);
void dvs__dir_destroy(struct dvs__dir *dir);

/*
 * Where name is served.
 *   known == NULL: the cached entry if there is one, else a GET.
 *   known != NULL: the caller found known stale (refused, reset, silent or
 *     wrong); ask a manager again, and if its answer is not newer than known,
 *     block (?index=&wait=) up to wait_ms for the entry to change. The
 *     result may still equal known: then nothing changed in time.
 * Never waits past deadline (dvs__now_ms scale). Returns 0 and *ret_loc, or
 * DVS_ENOTFOUND (no such endpoint), DVS_EUNAVAILABLE (no manager answered),
 * DVS_EPROTO (a manager's answer was malformed), DVS_ETIMEOUT, -ENOMEM.
 */
int dvs__dir_resolve(struct dvs__dir *dir, const char *name, const struct dvs__location *known,
                     int64_t wait_ms, int64_t deadline, struct dvs__location *ret_loc);

/* Record a location learnt elsewhere (a "moved" reply); ignored if older. */
void dvs__dir_learn(struct dvs__dir *dir, const char *name, const struct dvs__location *loc);

/*
 * Parse a GET /v1/endpoints/{name} body. Returns 0, or DVS_EPROTO if it is
 * not a valid endpoint object for name. Exposed for the tests.
 */
int dvs__dir_parse_endpoint(const char *body, size_t len, const char *name,
                            struct dvs__location *ret_loc);

#endif /* DVS_DIRECTORY_H */
