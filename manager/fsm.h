/*
 * The manager's finite state machine: an in-memory SQLite database (RAFT.md
 * item 6) that every member builds by applying the same Raft log.
 *
 * Determinism: apply reads no clock and no randomness; times come from the
 * command (time_ms). The FSM keeps its own modify index: the count of commands
 * applied. It is stored in the database, so snapshots carry it, and since
 * every member applies the same entries in the same order it is the same on
 * every member for the same log prefix. It is exported as X-Dvs-Index and
 * drives blocking queries. Every row carries the index of its last change
 * (modify_index) and every table a table index.
 *
 * Threading: everything runs on the daemon's loop thread; not thread-safe.
 */
#ifndef DVS_MANAGER_FSM_H
#define DVS_MANAGER_FSM_H

#include <jansson.h>
#include <raft.h>
#include <stdbool.h>
#include <stdint.h>

#include "manager/cmd.h"

/*
 * Schema version stored in the database (PRAGMA user_version). Version 2
 * added the events and stats tables, version 3 the endpoints' auto_migrate
 * and the migrations' transfer_secret; older snapshots are upgraded when
 * restored (so a member of the new version can join a cluster of the old).
 */
#define MGR_FSM_SCHEMA_VERSION 3

/*
 * Arena placement (DESIGN.md §4): every endpoint gets a virtual address range
 * that no other endpoint anywhere can overlap, so an arena can be mapped at
 * the same address on any node. Ranges are aligned to MGR_ARENA_ALIGN, sizes
 * rounded up to it, and MGR_ARENA_GUARD bytes are left unmapped between two.
 */
#define MGR_ARENA_BASE 0x200000000000ull  /* 32 TiB: above ASan's shadow memory (ends 0x10007fff7fff) */
#define MGR_ARENA_LIMIT 0x600000000000ull /* 96 TiB, below x86-64's 128 TiB */
#define MGR_ARENA_ALIGN (2ull << 20)
#define MGR_ARENA_GUARD (2ull << 20)
#define MGR_ARENA_MIN (1ull << 20)
#define MGR_ARENA_MAX (64ull << 30)
#define MGR_ARENA_DEFAULT (64ull << 20)

/* How many recent request ids the FSM remembers for deduplication. */
#define MGR_FSM_REQUEST_MEMORY 16384

/* Table bits for change notifications and table indexes. */
enum mgr_table {
    MGR_T_MEMBERS = 1u << 0,
    MGR_T_NODES = 1u << 1,
    MGR_T_ENDPOINTS = 1u << 2,
    MGR_T_MIGRATIONS = 1u << 3,
    MGR_T_LOAD = 1u << 4,
    MGR_T_EVENTS = 1u << 5, /* the event log (GET /v1/events) */
};

/* The outcome of applying one command. */
struct mgr_fsm_result {
    int code;       /* 0, or a DVS_E* code / negated errno */
    char msg[256];  /* on error: names the input at fault and what is accepted */
    char field[64]; /* on error: the body field at fault, or "" */
    json_t *object; /* on success: the created/updated object (owned), or NULL */
};

struct mgr_fsm;

/*
 * Called after each applied command whose request_id is known to the caller
 * (the daemon looks it up among its own pending proposals; followers ignore
 * it). RES is borrowed for the duration of the call; steal res->object by
 * setting it to NULL. A duplicate request id (a retry) reports the result
 * recorded the first time, with object NULL.
 */
typedef void (*mgr_fsm_result_cb)(void *data, uint64_t request_id,
                                  struct mgr_fsm_result *res);

/* Called after each apply that changed something: TABLES is a mask of enum mgr_table. */
typedef void (*mgr_fsm_change_cb)(void *data, unsigned tables, uint64_t index);

/* Open an empty FSM with the current schema. 0 or -ENOMEM / DVS_EINTERNAL. */
int mgr_fsm_open(struct mgr_fsm **ret_fsm);
void mgr_fsm_close(struct mgr_fsm *fsm); /* accepts NULL */

void mgr_fsm_set_callbacks(struct mgr_fsm *fsm, mgr_fsm_result_cb on_result,
                           mgr_fsm_change_cb on_change, void *data);

/*
 * The struct raft_fsm (version 2) bound to this FSM, for raft_init. Its apply
 * decodes the entry and calls mgr_fsm_apply; it always returns 0 (RAFT.md 4)
 * and sets *result = NULL (results travel through the result callback).
 */
struct raft_fsm *mgr_fsm_raft(struct mgr_fsm *fsm);

/*
 * Apply one decoded command. Deterministic. Fills *ret_res (caller clears it
 * with mgr_fsm_result_clear). Returns ret_res->code. Application errors
 * (unknown node, duplicate name, bad field) change nothing at all: each
 * command runs in one SQLite transaction that is rolled back on error.
 * Every command, successful or not, increments the modify index, so that the
 * index is a pure function of the log.
 */
int mgr_fsm_apply(struct mgr_fsm *fsm, const struct mgr_cmd *cmd,
                  struct mgr_fsm_result *ret_res);
void mgr_fsm_result_clear(struct mgr_fsm_result *res);

/* Modify index of the whole FSM, and of one table (enum mgr_table bit). */
uint64_t mgr_fsm_index(const struct mgr_fsm *fsm);
uint64_t mgr_fsm_table_index(const struct mgr_fsm *fsm, unsigned table);

/*
 * Snapshot: the serialized database (sqlite3_serialize). *ret_data is from
 * sqlite3_malloc; free with sqlite3_free. Restore: replaces the whole state
 * with DATA (borrowed, copied) after checking it is a database of a known
 * schema version; on failure the old state is kept. 0 or a negative code.
 */
int mgr_fsm_snapshot(struct mgr_fsm *fsm, void **ret_data, size_t *ret_len);
int mgr_fsm_restore(struct mgr_fsm *fsm, const void *data, size_t len);

/*
 * Queries. Each returns a new JSON reference (caller decrefs), or NULL when
 * the object does not exist. Shapes are those of docs/api.md.
 */
json_t *mgr_fsm_members(struct mgr_fsm *fsm);              /* array */
json_t *mgr_fsm_member(struct mgr_fsm *fsm, const char *id);
json_t *mgr_fsm_nodes(struct mgr_fsm *fsm);                /* array */
json_t *mgr_fsm_node(struct mgr_fsm *fsm, const char *id);
json_t *mgr_fsm_endpoints(struct mgr_fsm *fsm);            /* array */
json_t *mgr_fsm_endpoint(struct mgr_fsm *fsm, const char *name);
json_t *mgr_fsm_migrations(struct mgr_fsm *fsm);           /* array, newest first */
json_t *mgr_fsm_migration(struct mgr_fsm *fsm, int64_t id);
/* {"node","state","endpoints":[...on node...],"migrations":[...active, node is src or dst,
 * each with its "transfer_secret" (64 hex digits; docs/security.md)...]} or NULL.
 * For the agent-only orders route: nothing else shows the secret. */
json_t *mgr_fsm_orders(struct mgr_fsm *fsm, const char *node);
/* Counts for /v1/status: {"members":N,"nodes":{"up":N,...},"endpoints":N,"migrations_active":N} */
json_t *mgr_fsm_counts(struct mgr_fsm *fsm);
/* The whole state (every table, every column) as one JSON value, for tests. */
json_t *mgr_fsm_dump(struct mgr_fsm *fsm);

/* ---- The event log (GET /v1/events, docs/api.md) ----
 *
 * Apply appends an event for each change an operator would want to see:
 * directory changes (endpoint created, state changed, moved, deleted), node
 * state changes, member changes and migration phase changes (with the
 * migration's reason and the scheduler's explanation). Each event carries
 * the FSM index of the command that caused it (several events may share one
 * index). Only the newest MGR_CMD_SETTINGS "events_retention" events are
 * kept; pruning happens inside apply, so every member keeps the same list.
 */
#define MGR_FSM_EVENTS_RETENTION_DEFAULT 10000
#define MGR_FSM_EVENTS_RETENTION_MAX 1000000

/*
 * Events with index > AFTER, oldest first: {"id","index","time","type",
 * "subject","message", ...type-specific fields}. At most about LIMIT (> 0)
 * events, never splitting the events of one index. *RET_MORE (may be NULL)
 * tells whether newer events were left out. NULL on failure.
 */
json_t *mgr_fsm_events(struct mgr_fsm *fsm, uint64_t after, unsigned limit, bool *ret_more);
/* Index of the oldest event still kept (0 when there is none). *RET_PRUNED
 * (may be NULL): whether any event has ever been dropped by the retention. */
uint64_t mgr_fsm_events_oldest(struct mgr_fsm *fsm, bool *ret_pruned);
/* The retention in force (events kept). */
int64_t mgr_fsm_events_retention(const struct mgr_fsm *fsm);

/* ---- Counters kept by apply (for /metrics) ----
 *
 * Migration outcomes and the downtime and duration histograms are counted
 * by apply when a migration becomes final, so they are the same on every
 * member and survive restarts and leader changes (they travel in
 * snapshots). Histogram buckets are cumulative, upper bounds in ms.
 */
#define MGR_FSM_DOWNTIME_BUCKETS 12
extern const int64_t mgr_fsm_downtime_le_ms[MGR_FSM_DOWNTIME_BUCKETS];
#define MGR_FSM_DURATION_BUCKETS 12
extern const int64_t mgr_fsm_duration_le_ms[MGR_FSM_DURATION_BUCKETS];

/*
 * Every counter as one JSON object {"NAME|LABEL": value}, absent = 0:
 *   migrations_total|REASON/OUTCOME      outcome committed or aborted
 *   downtime_bucket|LE_MS, downtime_count|, downtime_sum_ms|   (committed)
 *   duration_bucket|OUTCOME/LE_MS, duration_count|OUTCOME, duration_sum_ms|OUTCOME
 * LE_MS is a bound of the tables above. NULL on failure.
 */
json_t *mgr_fsm_stats(struct mgr_fsm *fsm);

/* Look up a member's HTTP address by its raft address (for redirects). Copies into BUF. */
bool mgr_fsm_member_http_by_raft(struct mgr_fsm *fsm, const char *raft_addr, char *buf,
                                 size_t len, char *ret_id, size_t idlen);

/* True when NAME is a valid node/endpoint/member name (docs/api.md). */
bool mgr_valid_name(const char *name);

#endif
