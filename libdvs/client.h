/*
 * The client's resend logic, separated from its I/O (internal).
 *
 * dvs__call_run is the whole of DESIGN.md §5 as a loop over three
 * operations (resolve, exchange, sleep) reached through a small vtable, so
 * that the unit tests can script every failure deterministically while the
 * library plugs in the directory (libcurl) and real sockets.
 */
#ifndef DVS_CLIENT_H
#define DVS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "directory.h"
#include "frame.h"

struct dvs__call_io {
    void *ctx;
    int64_t (*now_ms)(void *ctx);
    void (*sleep_ms)(void *ctx, int64_t ms);
    /* dvs__dir_resolve's contract. */
    int (*resolve)(void *ctx, const char *name, const struct dvs__location *known,
                   int64_t wait_ms, int64_t deadline, struct dvs__location *ret_loc);
    /* dvs__dir_learn's contract. */
    void (*learn)(void *ctx, const char *name, const struct dvs__location *loc);
    /*
     * Send req to address and wait until deadline for its reply. Returns 0
     * and *ret_reply (its payload in *ret_buf, malloc'd, which the caller
     * frees; also on failure *ret_buf may be set and must be freed), or a
     * transport error: -ECONNREFUSED, -ECONNRESET, -ETIMEDOUT, -EHOSTUNREACH,
     * DVS_EPROTO (the peer sent garbage or a reply to something else)...
     */
    int (*exchange)(void *ctx, const char *address, const struct dvs__frame *req,
                    int64_t deadline, struct dvs__frame *ret_reply, void **ret_buf);
    /* Optional: the log callback for what the loop decides. */
    dvs_log_fn log;
    void *log_data;
};

struct dvs__call {
    const char *name;
    uint8_t client_id[DVS__CLIENT_ID_SIZE];
    uint64_t seq;
    uint64_t ack;
    const void *payload;
    uint32_t payload_len;
    int64_t timeout_ms;
    int64_t attempt_timeout_ms;
};

/* Back-off between retries while an instance is migrating or unreachable. */
#define DVS__BACKOFF_MIN_MS 10
#define DVS__BACKOFF_MAX_MS 500
/* How long one blocking directory query may wait for a change. */
#define DVS__DIR_WAIT_MS 1000

/*
 * Run one call to completion: exactly one reply, or an error (see dvs_call
 * for the codes). On success *ret_reply (malloc'd, NULL if empty) and
 * *ret_len are set.
 */
int dvs__call_run(const struct dvs__call_io *io, const struct dvs__call *call,
                  void **ret_reply, size_t *ret_len);

#endif /* DVS_CLIENT_H */
