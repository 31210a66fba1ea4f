/*
 * The dvs-kv request handler: decode a request (proto.h), apply it to the
 * table (table.h), encode the reply. Kept apart from main() so the unit
 * tests drive it exactly as dvs_server_run does.
 */
#ifndef DVS_EXAMPLES_KV_SERVICE_H
#define DVS_EXAMPLES_KV_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "dvs.h"
#include "examples/kv/table.h"

/* Process-local (never in the arena): what the handler needs. */
struct kv_service {
    struct kv *kv;
    uint64_t generation; /* reported by STATS */
    dvs_log_fn log;      /* optional: rejected requests, at debug level */
    void *log_data;
};

/*
 * A dvs_handler_fn; data is a struct kv_service. Returns 0 with a reply
 * (whose status may be NOTFOUND, MISMATCH or NOTNUMBER), or:
 * DVS_EBADREQUEST (the request is malformed), DVS_ENOSPACE (the arena is
 * full), DVS_ETOOBIG (the value does not fit the reply buffer, which only a
 * server configured with a smaller max_payload than the writer's can see).
 * The table is unchanged whenever the result is an error.
 */
int kv_service_handle(void *data, const void *req, size_t req_len, void *reply,
                      size_t *reply_len);

#endif
