/*
 * Raft log commands of the manager FSM.
 *
 * Wire layout (little endian), RAFT.md items 1 and 3:
 *
 *   u32 magic "DVSC" | u16 version | u16 type | u64 request_id | i64 time_ms
 *   | u32 body_len | u32 reserved (0) | body (JSON object, compact, sorted keys)
 *   | zero padding up to a multiple of 8 bytes
 *
 * - version: MGR_CMD_VERSION; decoders refuse newer versions with a clear error.
 * - request_id: chosen by the proposer (random 64-bit, never 0); the FSM
 *   remembers recent ids and their results so a retry after
 *   RAFT_LEADERSHIPLOST (outcome unknown) is applied at most once.
 * - time_ms: the proposer's wall clock. It is the only notion of time apply
 *   has (DESIGN.md §3: apply reads no clock).
 * - body: a JSON object whose fields depend on the type (see fsm.c for each
 *   command's fields). Bounded by MGR_CMD_MAX_BODY.
 */
#ifndef DVS_MANAGER_CMD_H
#define DVS_MANAGER_CMD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MGR_CMD_MAGIC 0x43535644u /* "DVSC" read as little-endian u32 */
#define MGR_CMD_VERSION 1
#define MGR_CMD_HEADER_SIZE 32
#define MGR_CMD_MAX_BODY (1024u * 1024u)

enum mgr_cmd_type {
    MGR_CMD_MEMBER_SET = 1,    /* {id, raft_addr, http_addr} upsert */
    MGR_CMD_MEMBER_DEL = 2,    /* {id} */
    MGR_CMD_NODE_REGISTER = 3, /* {id, address, cpu, mem} upsert; down -> up */
    MGR_CMD_NODE_STATE = 4,    /* {id, state, eligible?, reason?} */
    MGR_CMD_LOAD_SUMMARY = 5,  /* {nodes:[{id, cpu, mem, rps}]} compact, periodic */
    MGR_CMD_ENDPOINT_CREATE = 6, /* {name, command, cpu, mem, arena, node?, auto_migrate?} */
    MGR_CMD_ENDPOINT_UPDATE = 7, /* {name, state?, address?, node?, generation?, auto_migrate?} */
    MGR_CMD_ENDPOINT_DELETE = 8, /* {name} */
    MGR_CMD_MIGRATION_CREATE = 9, /* {endpoint, destination, reason, explanation?} */
    MGR_CMD_MIGRATION_UPDATE = 10, /* {id, phase, bytes?, rounds?, downtime_ms?, error?, info?} */
    MGR_CMD_SETTINGS = 11, /* {events_retention?} cluster-wide settings, from the leader's config */
    MGR_CMD_TYPE_MAX = 11,
};

struct mgr_cmd {
    uint16_t type;       /* enum mgr_cmd_type */
    uint64_t request_id; /* never 0 */
    int64_t time_ms;     /* proposer's wall clock */
    json_t *body;        /* a JSON object; owned by the struct */
};

/* "node_register" etc., or "unknown". */
const char *mgr_cmd_type_name(unsigned type);

/*
 * Serialize CMD into a buffer from raft_malloc() (so it can be handed to
 * raft_apply, which takes ownership on success). *ret_len is a multiple of 8.
 * Returns 0, -EINVAL (bad type, no body, body not an object, id 0),
 * DVS_ETOOBIG (body over MGR_CMD_MAX_BODY) or -ENOMEM. On failure nothing is
 * allocated.
 */
int mgr_cmd_encode(const struct mgr_cmd *cmd, void **ret_buf, size_t *ret_len);

/*
 * Parse LEN bytes at DATA (borrowed). On success fills *ret_cmd (the caller
 * must mgr_cmd_clear it). On failure returns DVS_EPROTO (bad magic, length,
 * padding, JSON), DVS_ETOOBIG, or -EPROTONOSUPPORT (newer version), writes a
 * message naming what was wrong into ERR, and leaves *ret_cmd untouched.
 */
int mgr_cmd_decode(const void *data, size_t len, struct mgr_cmd *ret_cmd, char *err,
                   size_t errlen);

/* Release the body. Accepts a zeroed struct. */
void mgr_cmd_clear(struct mgr_cmd *cmd);

#endif
