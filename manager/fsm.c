/*
 * The manager's FSM: an in-memory SQLite database built by applying the Raft
 * log (DESIGN.md §3, RAFT.md items 4-6).
 *
 * Rules this file lives by:
 *
 * - Determinism. Apply reads no clock and no randomness, and every decision
 *   (placement, arena addresses, ids) is a function of the database and the
 *   command alone, computed in a fixed order. Sums of floating-point figures
 *   are done here in C, in id order, rather than by SQL aggregates, so that a
 *   different SQLite build cannot round them differently.
 * - All or nothing. Each command runs inside a savepoint of the transaction
 *   that also bumps the modify index: a command that fails is rolled back
 *   entirely, but still counts in the index, which therefore stays a pure
 *   function of the log.
 * - Strict input. Bodies come from other processes (through the leader's
 *   REST layer and then the log): every field is checked for type, bounds and
 *   presence, unknown fields are refused, and errors name the field and what
 *   would be accepted (STYLE.md 9, DESIGN.md §8).
 * - Library manners. No logging, no aborting allocation; SQLite and jansson
 *   failures come back as DVS_EINTERNAL / -ENOMEM.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <sqlite3.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/fsm.h"

/* Bounds of body fields. Generous, but every string and number has one. */
#define NAME_MAX_LEN 63
#define ADDR_MAX_LEN 262 /* 256-byte host, ':' and a 5-digit port */
#define COMMAND_MAX_LEN 4096
#define REASON_MAX_LEN 256
#define EXPLANATION_MAX_LEN 4096
#define ERROR_MAX_LEN 1024
#define INFO_MAX_LEN 16384
#define CPU_MAX 65536.0                /* cores */
#define MEM_MAX (1ll << 50)            /* 1 PiB */
#define RPS_MAX 1e12
#define LOAD_SUMMARY_MAX_NODES 100000

/* Defaults of ENDPOINT_CREATE (docs/api.md). */
#define ENDPOINT_CPU_DEFAULT 0.1
#define ENDPOINT_MEM_DEFAULT (64ll << 20)

/*
 * Finished migrations kept as history. Beyond this the oldest finished
 * records are dropped, so that the in-memory database (and every snapshot)
 * stays bounded however long the cluster runs.
 */
#define MIGRATION_HISTORY 10000

/* Tolerance of capacity comparisons: 0.1 * 10 must fit in 1 core. */
#define CPU_EPSILON 1e-9

/* ======================================================================
 * Meta values, cached in C
 * ====================================================================== */

/*
 * The meta table holds the counters that snapshots must carry. They are
 * cached here because mgr_fsm_index() must be cheap (every REST answer) and
 * const, and written back once per command, at the end of its transaction.
 * Table index slots follow the bit order of enum mgr_table.
 */
enum meta_slot {
    META_INDEX,
    META_INDEX_MEMBERS,
    META_INDEX_NODES,
    META_INDEX_ENDPOINTS,
    META_INDEX_MIGRATIONS,
    META_INDEX_LOAD,
    META_INDEX_EVENTS,
    META_NEXT_ENDPOINT_ID,
    META_NEXT_MIGRATION_ID,
    META_REQUEST_SEQ,
    META_NEXT_EVENT_ID,
    META_EVENTS_RETENTION,
    META_COUNT,
};

static const char *const meta_keys[META_COUNT] = {
    [META_INDEX] = "index",
    [META_INDEX_MEMBERS] = "index_members",
    [META_INDEX_NODES] = "index_nodes",
    [META_INDEX_ENDPOINTS] = "index_endpoints",
    [META_INDEX_MIGRATIONS] = "index_migrations",
    [META_INDEX_LOAD] = "index_load",
    [META_INDEX_EVENTS] = "index_events",
    [META_NEXT_ENDPOINT_ID] = "next_endpoint_id",
    [META_NEXT_MIGRATION_ID] = "next_migration_id",
    [META_REQUEST_SEQ] = "request_seq",
    [META_NEXT_EVENT_ID] = "next_event_id",
    [META_EVENTS_RETENTION] = "events_retention",
};

/* Initial meta values (0 unless listed): ids start at 1 so that 0 never
 * names an object. */
static int64_t meta_initial(int slot)
{
    switch (slot) {
    case META_NEXT_ENDPOINT_ID:
    case META_NEXT_MIGRATION_ID:
    case META_NEXT_EVENT_ID:
        return 1;
    case META_EVENTS_RETENTION:
        return MGR_FSM_EVENTS_RETENTION_DEFAULT;
    default:
        return 0;
    }
}

#define TABLE_COUNT 6 /* bits of enum mgr_table */

/* ======================================================================
 * Schema and statements
 * ====================================================================== */

/*
 * What schema version 2 added to version 1: the event log and the counters
 * of apply. Also run on a version 1 snapshot when it is restored.
 */
#define SCHEMA_V2_SQL                                                          \
    "CREATE TABLE events("                                                     \
    "  id INTEGER PRIMARY KEY,"                                                \
    "  idx INTEGER NOT NULL,"                                                  \
    "  time INTEGER NOT NULL,"                                                 \
    "  type TEXT NOT NULL,"                                                    \
    "  subject TEXT NOT NULL,"                                                 \
    "  message TEXT NOT NULL,"                                                 \
    "  data TEXT) STRICT;"                                                     \
    "CREATE INDEX events_idx ON events(idx);"                                  \
    "CREATE TABLE stats("                                                      \
    "  name TEXT NOT NULL,"                                                    \
    "  label TEXT NOT NULL,"                                                   \
    "  value INTEGER NOT NULL,"                                                \
    "  PRIMARY KEY(name, label)) STRICT, WITHOUT ROWID;"

/*
 * STRICT tables make SQLite itself refuse a value of the wrong type, a second
 * line of defence behind the body validation below. This is version 1 of the
 * schema; later versions are the statements of schema_upgrades[] below.
 */
static const char schema_sql[] =
    "CREATE TABLE meta("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL) STRICT, WITHOUT ROWID;"
    "CREATE TABLE members("
    "  id TEXT PRIMARY KEY,"
    "  raft_addr TEXT NOT NULL,"
    "  http_addr TEXT NOT NULL,"
    "  modify_index INTEGER NOT NULL) STRICT, WITHOUT ROWID;"
    "CREATE TABLE nodes("
    "  id TEXT PRIMARY KEY,"
    "  address TEXT NOT NULL,"
    "  cpu REAL NOT NULL,"
    "  mem INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  eligible INTEGER NOT NULL,"
    "  registered_at INTEGER NOT NULL,"
    "  state_since INTEGER NOT NULL,"
    "  state_reason TEXT,"
    "  modify_index INTEGER NOT NULL,"
    /* DESIGN.md §6: when a drain must be over (ms), while the node is draining. */
    "  drain_deadline INTEGER) STRICT, WITHOUT ROWID;"
    "CREATE TABLE node_load("
    "  node TEXT PRIMARY KEY,"
    "  time INTEGER NOT NULL,"
    "  cpu REAL NOT NULL,"
    "  mem INTEGER NOT NULL,"
    "  rps REAL NOT NULL) STRICT, WITHOUT ROWID;"
    "CREATE TABLE endpoints("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  command TEXT NOT NULL,"
    "  cpu REAL NOT NULL,"
    "  mem INTEGER NOT NULL,"
    "  arena_size INTEGER NOT NULL,"
    "  arena_addr INTEGER NOT NULL UNIQUE,"
    "  node TEXT,"
    "  address TEXT,"
    "  generation INTEGER NOT NULL,"
    "  state TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  modify_index INTEGER NOT NULL) STRICT;"
    "CREATE INDEX endpoints_node ON endpoints(node);"
    "CREATE TABLE migrations("
    "  id INTEGER PRIMARY KEY,"
    "  endpoint TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  destination TEXT NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  phase TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  finished_at INTEGER,"
    "  bytes INTEGER NOT NULL,"
    "  rounds INTEGER NOT NULL,"
    "  downtime_ms INTEGER NOT NULL,"
    "  explanation TEXT NOT NULL,"
    "  error TEXT,"
    "  info TEXT,"
    "  modify_index INTEGER NOT NULL) STRICT;"
    /* Active migrations are few and looked up all the time. */
    "CREATE INDEX migrations_active ON migrations(endpoint) WHERE finished_at IS NULL;"
    "CREATE TABLE requests("
    "  request_id INTEGER PRIMARY KEY,"
    "  seq INTEGER NOT NULL,"
    "  code INTEGER NOT NULL,"
    "  msg TEXT NOT NULL,"
    "  field TEXT NOT NULL) STRICT;"
    "CREATE INDEX requests_seq ON requests(seq);"
    SCHEMA_V2_SQL;

/* The tables a snapshot must contain and mgr_fsm_dump() shows, in order. */
static const char *const table_names[] = {
    "meta", "members", "nodes", "node_load", "endpoints", "migrations", "requests",
    "events", "stats",
};

/* Column lists shared by the queries that build JSON objects. */
#define NODE_COLS                                                                  \
    "n.id, n.address, n.cpu, n.mem, n.state, n.eligible, n.registered_at, "        \
    "n.state_since, n.state_reason, n.modify_index, l.time, l.cpu, l.mem, l.rps, " \
    "n.drain_deadline "                                                            \
    "FROM nodes n LEFT JOIN node_load l ON l.node = n.id"
#define ENDPOINT_COLS                                                              \
    "id, name, command, cpu, mem, arena_size, arena_addr, node, address, "         \
    "generation, state, created_at, modify_index, auto_migrate FROM endpoints"
#define MIGRATION_COLS                                                             \
    "id, endpoint, source, destination, reason, phase, created_at, updated_at, "   \
    "finished_at, bytes, rounds, downtime_ms, explanation, error, info, "          \
    "modify_index FROM migrations"
/* The same columns plus the transfer secret: for the agents' orders only. */
#define MIGRATION_COLS_SECRET                                                      \
    "id, endpoint, source, destination, reason, phase, created_at, updated_at, "   \
    "finished_at, bytes, rounds, downtime_ms, explanation, error, info, "          \
    "modify_index, transfer_secret FROM migrations"
#define ACTIVE "finished_at IS NULL"

/*
 * Every statement the FSM runs, prepared once (SQLITE_PREPARE_PERSISTENT) on
 * first use and kept until the connection changes (restore) or closes: apply
 * must sustain tens of thousands of commands per second.
 */
#define STATEMENTS(X)                                                                   \
    X(BEGIN, "BEGIN")                                                                   \
    X(COMMIT, "COMMIT")                                                                 \
    X(ROLLBACK, "ROLLBACK")                                                             \
    X(SAVEPOINT, "SAVEPOINT cmd")                                                       \
    X(RELEASE, "RELEASE cmd")                                                           \
    X(ROLLBACK_TO, "ROLLBACK TO cmd")                                                   \
    X(META_SET, "UPDATE meta SET value = ?2 WHERE key = ?1")                            \
    X(META_ALL, "SELECT key, value FROM meta")                                          \
    X(REQ_GET, "SELECT code, msg, field FROM requests WHERE request_id = ?1")           \
    X(REQ_PUT, "INSERT INTO requests(request_id, seq, code, msg, field) "               \
               "VALUES (?1, ?2, ?3, ?4, ?5)")                                           \
    X(REQ_PRUNE, "DELETE FROM requests WHERE seq <= ?1")                                \
    X(MEMBER_GET, "SELECT id, raft_addr, http_addr, modify_index FROM members "         \
                  "WHERE id = ?1")                                                      \
    X(MEMBER_ALL, "SELECT id, raft_addr, http_addr, modify_index FROM members "         \
                  "ORDER BY id")                                                        \
    X(MEMBER_ADDR_USER, "SELECT id, raft_addr = ?2 FROM members WHERE id <> ?1 AND "     \
                        "(raft_addr = ?2 OR http_addr = ?3) ORDER BY id LIMIT 1")       \
    X(MEMBER_PUT, "INSERT INTO members(id, raft_addr, http_addr, modify_index) "        \
                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET "              \
                  "raft_addr = ?2, http_addr = ?3, modify_index = ?4")                  \
    X(MEMBER_DEL, "DELETE FROM members WHERE id = ?1")                                  \
    X(MEMBER_BY_RAFT, "SELECT id, http_addr FROM members WHERE raft_addr = ?1 "         \
                      "ORDER BY id LIMIT 1")                                            \
    X(NODE_ROW, "SELECT id, address, cpu, mem, state, eligible, registered_at, "        \
                "state_since, state_reason, drain_deadline FROM nodes WHERE id = ?1")   \
    X(NODE_INSERT, "INSERT INTO nodes(id, address, cpu, mem, state, eligible, "         \
                   "registered_at, state_since, state_reason, modify_index) "           \
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")                  \
    X(NODE_UPDATE, "UPDATE nodes SET address = ?2, cpu = ?3, mem = ?4, state = ?5, "    \
                   "eligible = ?6, state_since = ?7, state_reason = ?8, "               \
                   "modify_index = ?9, drain_deadline = ?10 WHERE id = ?1")             \
    X(NODE_JSON, "SELECT " NODE_COLS " WHERE n.id = ?1")                                \
    X(NODE_JSON_ALL, "SELECT " NODE_COLS " ORDER BY n.id")                              \
    X(NODE_EXISTS, "SELECT 1 FROM nodes WHERE id = ?1")                                 \
    X(NODE_CANDIDATES, "SELECT id, cpu, mem FROM nodes WHERE state = 'up' AND "         \
                       "eligible = 1 ORDER BY id")                                      \
    X(NODE_STATE_COUNTS, "SELECT state, count(*) FROM nodes GROUP BY state")            \
    X(LOAD_PUT, "INSERT INTO node_load(node, time, cpu, mem, rps) "                     \
                "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(node) DO UPDATE SET "          \
                "time = ?2, cpu = ?3, mem = ?4, rps = ?5")                              \
    X(EP_ROW, "SELECT id, node, address, generation, state, cpu, mem, auto_migrate "    \
              "FROM endpoints "                                                         \
              "WHERE name = ?1")                                                        \
    X(EP_EXISTS, "SELECT 1 FROM endpoints WHERE name = ?1")                             \
    X(EP_ARENAS, "SELECT arena_addr, arena_size FROM endpoints ORDER BY arena_addr")    \
    X(EP_INSERT, "INSERT INTO endpoints(id, name, command, cpu, mem, arena_size, "      \
                 "arena_addr, node, address, generation, state, created_at, "           \
                 "modify_index, auto_migrate) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, " \
                 "NULL, 0, 'pending', ?9, ?10, ?11)")                                   \
    X(EP_SET_AUTO, "UPDATE endpoints SET auto_migrate = ?2, modify_index = ?3 "          \
                   "WHERE name = ?1 AND auto_migrate <> ?2")                             \
    X(EP_UPDATE, "UPDATE endpoints SET node = ?2, address = ?3, generation = ?4, "      \
                 "state = ?5, modify_index = ?6 WHERE name = ?1")                       \
    X(EP_DELETE, "DELETE FROM endpoints WHERE name = ?1")                               \
    X(EP_JSON, "SELECT " ENDPOINT_COLS " WHERE name = ?1")                              \
    X(EP_JSON_ALL, "SELECT " ENDPOINT_COLS " ORDER BY name")                            \
    X(EP_JSON_ON_NODE, "SELECT " ENDPOINT_COLS " WHERE node = ?1 ORDER BY name")        \
    X(EP_COUNT, "SELECT count(*) FROM endpoints")                                       \
    /* What each node has committed to: the endpoints on it, plus those on         \
     * their way to it (an active migration reserves room on its destination). */  \
    /* Ordered by node, then endpoint id: the order in which sums are made. */   \
    X(EP_USAGE, "SELECT node, cpu, mem, id FROM endpoints WHERE node IS NOT NULL "      \
                "UNION ALL SELECT m.destination, e.cpu, e.mem, e.id FROM migrations m " \
                "JOIN endpoints e ON e.name = m.endpoint WHERE m." ACTIVE " "           \
                "ORDER BY 1, 4")                                                        \
    X(EP_USAGE_OF, "SELECT cpu, mem, id FROM endpoints WHERE node = ?1 "                \
                   "UNION ALL SELECT e.cpu, e.mem, e.id FROM migrations m "             \
                   "JOIN endpoints e ON e.name = m.endpoint WHERE m." ACTIVE " AND "    \
                   "m.destination = ?1 ORDER BY 3")                                     \
    X(MIG_ROW, "SELECT id, endpoint, source, destination, phase FROM migrations "       \
               "WHERE id = ?1")                                                         \
    X(MIG_ACTIVE_OF, "SELECT id FROM migrations WHERE endpoint = ?1 AND " ACTIVE        \
                     " ORDER BY id LIMIT 1")                                            \
    X(MIG_INSERT, "INSERT INTO migrations(id, endpoint, source, destination, reason, "  \
                  "phase, created_at, updated_at, finished_at, bytes, rounds, "         \
                  "downtime_ms, explanation, error, info, modify_index, "               \
                  "transfer_secret) VALUES (?1, "                                       \
                  "?2, ?3, ?4, ?5, 'planned', ?6, ?6, NULL, 0, 0, 0, ?7, NULL, NULL, "  \
                  "?8, ?9)")                                                            \
    X(MIG_UPDATE, "UPDATE migrations SET phase = ?2, updated_at = ?3, "                 \
                  "finished_at = ?4, bytes = coalesce(?5, bytes), "                     \
                  "rounds = coalesce(?6, rounds), "                                     \
                  "downtime_ms = coalesce(?7, downtime_ms), "                           \
                  "error = coalesce(?8, error), info = coalesce(?9, info), "            \
                  "modify_index = ?10, transfer_secret = CASE WHEN ?4 IS NULL THEN "    \
                  "transfer_secret END WHERE id = ?1")                                  \
    X(MIG_ABORT_OF, "UPDATE migrations SET phase = 'aborted', updated_at = ?2, "        \
                    "finished_at = ?2, error = ?3, modify_index = ?4, "                 \
                    "transfer_secret = NULL "                                           \
                    "WHERE endpoint = ?1 AND " ACTIVE)                                  \
    X(MIG_PRUNE, "DELETE FROM migrations WHERE finished_at IS NOT NULL AND id <= "      \
                 "(SELECT id FROM migrations WHERE finished_at IS NOT NULL "            \
                 "ORDER BY id DESC LIMIT 1 OFFSET ?1)")                                 \
    X(MIG_JSON, "SELECT " MIGRATION_COLS " WHERE id = ?1")                              \
    X(MIG_JSON_ALL, "SELECT " MIGRATION_COLS " ORDER BY id DESC")                       \
    X(MIG_JSON_OF_NODE, "SELECT " MIGRATION_COLS " WHERE " ACTIVE " AND "               \
                        "(source = ?1 OR destination = ?1) ORDER BY id")                \
    X(MIG_JSON_OF_NODE_SECRET, "SELECT " MIGRATION_COLS_SECRET " WHERE " ACTIVE " AND " \
                               "(source = ?1 OR destination = ?1) ORDER BY id")        \
    X(MIG_ACTIVE_COUNT, "SELECT count(*) FROM migrations WHERE " ACTIVE)               \
    X(MEMBER_COUNT, "SELECT count(*) FROM members")                                     \
    X(MIG_FACTS, "SELECT endpoint, source, destination, reason, phase, created_at, "    \
                 "finished_at, bytes, rounds, downtime_ms, explanation, error "         \
                 "FROM migrations WHERE id = ?1")                                       \
    X(EV_PUT, "INSERT INTO events(id, idx, time, type, subject, message, data) "        \
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")                                    \
    X(EV_PRUNE, "DELETE FROM events WHERE id <= ?1")                                    \
    X(EV_AFTER, "SELECT id, idx, time, type, subject, message, data FROM events "       \
                "WHERE idx > ?1 AND idx <= coalesce((SELECT idx FROM events WHERE "     \
                "idx > ?1 ORDER BY id LIMIT 1 OFFSET ?2), 9223372036854775807) "        \
                "ORDER BY id")                                                          \
    X(EV_OLDEST, "SELECT idx, id FROM events ORDER BY id LIMIT 1")                          \
    X(EV_MORE, "SELECT 1 FROM events WHERE idx > ?1 LIMIT 1")                           \
    X(STAT_ADD, "INSERT INTO stats(name, label, value) VALUES (?1, ?2, ?3) "            \
                "ON CONFLICT(name, label) DO UPDATE SET value = value + ?3")            \
    X(STAT_ALL, "SELECT name, label, value FROM stats ORDER BY name, label")            \
    X(SCHEMA, "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema "      \
              "ORDER BY type, name")

enum stmt_id {
#define X(id, sql) S_##id,
    STATEMENTS(X)
#undef X
    S_COUNT,
};

static const char *const stmt_sql[S_COUNT] = {
#define X(id, sql) [S_##id] = sql,
    STATEMENTS(X)
#undef X
};

struct mgr_fsm {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
    int64_t meta[META_COUNT];

    /* The command being applied. */
    int64_t now;      /* its time_ms: the only clock apply knows */
    unsigned changed; /* mask of enum mgr_table touched so far */

    /* The schema as sqlite_schema describes it, to check snapshots against. */
    char *schema_signature;

    mgr_fsm_result_cb on_result;
    mgr_fsm_change_cb on_change;
    void *cb_data;

    struct raft_fsm raft;
};

/* ======================================================================
 * SQL helpers
 * ====================================================================== */

/*
 * The cached statement ID, reset and bound to the arguments described by FMT,
 * one letter per parameter: 't' const char * (NULL binds NULL), 'i' int64_t,
 * 'd' double, 'n' NULL (takes no argument), 'I' an optional int64_t given as
 * two arguments, an int "present" flag and the value (NULL when absent).
 * Returns NULL on a SQLite failure.
 */
static sqlite3_stmt *db_vstmt(struct mgr_fsm *fsm, enum stmt_id id, const char *fmt,
                              va_list ap)
{
    sqlite3_stmt *s = fsm->stmt[id];
    if (!s) {
        if (sqlite3_prepare_v3(fsm->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s,
                               NULL) != SQLITE_OK)
            return NULL;
        fsm->stmt[id] = s;
    } else {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
    }

    int rc = SQLITE_OK;
    for (int i = 1; fmt && *fmt && rc == SQLITE_OK; fmt++, i++) {
        switch (*fmt) {
        case 't': {
            const char *t = va_arg(ap, const char *);
            rc = t ? sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
            break;
        }
        case 'i':
            rc = sqlite3_bind_int64(s, i, va_arg(ap, int64_t));
            break;
        case 'I': {
            int present = va_arg(ap, int);
            int64_t v = va_arg(ap, int64_t);
            rc = present ? sqlite3_bind_int64(s, i, v) : sqlite3_bind_null(s, i);
            break;
        }
        case 'd':
            rc = sqlite3_bind_double(s, i, va_arg(ap, double));
            break;
        case 'n':
            rc = sqlite3_bind_null(s, i);
            break;
        default:
            assert(!"bad statement argument format");
            rc = SQLITE_MISUSE;
        }
    }
    if (rc != SQLITE_OK) {
        sqlite3_reset(s);
        return NULL;
    }
    return s;
}

static sqlite3_stmt *db_stmt(struct mgr_fsm *fsm, enum stmt_id id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *s = db_vstmt(fsm, id, fmt, ap);
    va_end(ap);
    return s;
}

/* Run a statement that returns no rows. 0 or DVS_EINTERNAL. */
static int db_exec(struct mgr_fsm *fsm, enum stmt_id id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *s = db_vstmt(fsm, id, fmt, ap);
    va_end(ap);
    if (!s)
        return DVS_EINTERNAL;
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : DVS_EINTERNAL;
}

/* Step a query: 1 for a row, 0 when done, DVS_EINTERNAL on failure (reset). */
static int db_step(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return 1;
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : DVS_EINTERNAL;
}

/* Copy a text column into BUF (empty for NULL). Values never exceed their
 * bound because validation refused them, so truncation cannot happen. */
static void col_text(sqlite3_stmt *s, int col, char *buf, size_t len)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(buf, len, "%s", t ? (const char *)t : "");
}

static int64_t col_int(sqlite3_stmt *s, int col)
{
    return sqlite3_column_int64(s, col);
}

static bool col_null(sqlite3_stmt *s, int col)
{
    return sqlite3_column_type(s, col) == SQLITE_NULL;
}

/* ======================================================================
 * Results
 * ====================================================================== */

static void result_init(struct mgr_fsm_result *res)
{
    memset(res, 0, sizeof(*res));
}

void mgr_fsm_result_clear(struct mgr_fsm_result *res)
{
    if (!res)
        return;
    json_decref(res->object);
    res->object = NULL;
}

static int fail(struct mgr_fsm_result *res, int code, const char *field, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

/* Record an application error in RES and return its code. */
static int fail(struct mgr_fsm_result *res, int code, const char *field, const char *fmt,
                ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
    va_end(ap);
    snprintf(res->field, sizeof(res->field), "%s", field ? field : "");
    res->code = code;
    return code;
}

/* A SQLite or allocation failure: not the command's fault, not deterministic. */
static int fail_internal(struct mgr_fsm *fsm, struct mgr_fsm_result *res)
{
    return fail(res, DVS_EINTERNAL, NULL, "internal error in the manager's database: %s",
                sqlite3_errmsg(fsm->db));
}

static int fail_nomem(struct mgr_fsm_result *res)
{
    return fail(res, DVS_EINTERNAL, NULL, "internal error: out of memory");
}

/* Mark TABLES changed by the command being applied (their index = this one). */
static void touch(struct mgr_fsm *fsm, unsigned tables)
{
    fsm->changed |= tables;
    for (unsigned i = 0; i < TABLE_COUNT; i++)
        if (tables & (1u << i))
            fsm->meta[META_INDEX_MEMBERS + i] = fsm->meta[META_INDEX];
}

/* ======================================================================
 * Body validation
 * ====================================================================== */

bool mgr_valid_name(const char *name)
{
    if (!name)
        return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (n == 0 && !alnum)
            return false;
        if (!alnum && c != '_' && c != '.' && c != '-')
            return false;
        if (n >= NAME_MAX_LEN)
            return false;
    }
    return n > 0;
}

enum field_type {
    F_NAME,     /* mgr_valid_name */
    F_TEXT,     /* string of [min, max] bytes */
    F_HOSTPORT, /* HOST:PORT */
    F_RAFTADDR, /* A.B.C.D:PORT (libraft's TCP transport, RAFT.md item 11) */
    F_NUMBER,   /* finite number in [min, max] */
    F_INT,      /* JSON integer in [min, max] */
    F_BOOL,
    F_ENUM,     /* one of values[] */
    F_OBJECT,   /* any object; compact dump of at most max bytes */
    F_ARRAY,    /* array of at most max items (items checked by the caller) */
};

struct field {
    const char *name;
    enum field_type type;
    bool required;
    bool nullable; /* JSON null accepted (means "clear") */
    double min, max;
    const char *unit; /* for messages: "cores", "bytes" */
    const char *const *values;
};

static const char *const node_states[] = {"up", "down", "draining", "drained", "standby",
                                          NULL};
static const char *const endpoint_states[] = {"pending", "running", "migrating", "failed",
                                              "stopped", NULL};
static const char *const reasons[] = {"overload", "energy", "maintenance", "manual",
                                      "rebalance", NULL};
static const char *const phases[] = {"planned", "precopy", "frozen", "committed", "aborted",
                                     NULL};

/* Field tables, one per command type (cmd.h lists the same fields). */
static const struct field member_set_fields[] = {
    {"id", F_NAME, .required = true},
    {"raft_addr", F_RAFTADDR, .required = true},
    {"http_addr", F_HOSTPORT, .required = true},
    {NULL},
};
static const struct field member_del_fields[] = {
    {"id", F_NAME, .required = true},
    {NULL},
};
static const struct field node_register_fields[] = {
    {"id", F_NAME, .required = true},
    {"address", F_HOSTPORT, .required = true},
    {"cpu", F_NUMBER, .required = true, .max = CPU_MAX, .unit = "cores"},
    {"mem", F_INT, .required = true, .max = (double)MEM_MAX, .unit = "bytes"},
    {NULL},
};
static const struct field node_state_fields[] = {
    {"id", F_NAME, .required = true},
    {"state", F_ENUM, .required = true, .values = node_states},
    {"eligible", F_BOOL},
    {"reason", F_TEXT, .max = REASON_MAX_LEN},
    {"from", F_ENUM, .values = node_states},
    {"drain_deadline", F_INT, .max = 9007199254740992.0, .unit = "ms"},
    {NULL},
};
static const struct field load_summary_fields[] = {
    {"nodes", F_ARRAY, .required = true, .max = LOAD_SUMMARY_MAX_NODES},
    {NULL},
};
static const struct field load_item_fields[] = {
    {"id", F_NAME, .required = true},
    {"cpu", F_NUMBER, .required = true, .max = CPU_MAX, .unit = "cores"},
    {"mem", F_INT, .required = true, .max = (double)MEM_MAX, .unit = "bytes"},
    {"rps", F_NUMBER, .required = true, .max = RPS_MAX, .unit = "requests/s"},
    {NULL},
};
static const struct field endpoint_create_fields[] = {
    {"name", F_NAME, .required = true},
    {"command", F_TEXT, .required = true, .min = 1, .max = COMMAND_MAX_LEN},
    {"cpu", F_NUMBER, .max = CPU_MAX, .unit = "cores"},
    {"mem", F_INT, .max = (double)MEM_MAX, .unit = "bytes"},
    {"arena", F_INT, .min = (double)MGR_ARENA_MIN, .max = (double)MGR_ARENA_MAX,
     .unit = "bytes"},
    {"node", F_NAME},
    /* DESIGN.md §6: false keeps the automatic policies off it (drains still move it). */
    {"auto_migrate", F_BOOL},
    {NULL},
};
static const struct field endpoint_update_fields[] = {
    {"name", F_NAME, .required = true},
    {"state", F_ENUM, .values = endpoint_states},
    {"address", F_HOSTPORT, .nullable = true},
    {"node", F_NAME},
    {"generation", F_INT, .max = 9007199254740992.0 /* 2^53: exact in JSON */},
    {"auto_migrate", F_BOOL},
    {NULL},
};
static const struct field endpoint_delete_fields[] = {
    {"name", F_NAME, .required = true},
    {NULL},
};
static const struct field migration_create_fields[] = {
    {"endpoint", F_NAME, .required = true},
    {"destination", F_NAME, .required = true},
    {"reason", F_ENUM, .required = true, .values = reasons},
    {"explanation", F_TEXT, .max = EXPLANATION_MAX_LEN},
    /* Drawn by the leader (mgr_propose), never by a client. */
    {"transfer_secret", F_TEXT, .min = 64, .max = 64},
    {NULL},
};
static const struct field migration_update_fields[] = {
    {"id", F_INT, .required = true, .min = 1, .max = 9007199254740992.0},
    {"phase", F_ENUM, .required = true, .values = phases},
    {"bytes", F_INT, .max = 9007199254740992.0, .unit = "bytes"},
    {"rounds", F_INT, .max = 1e9},
    {"downtime_ms", F_INT, .max = 9007199254740992.0, .unit = "ms"},
    {"error", F_TEXT, .max = ERROR_MAX_LEN},
    {"info", F_OBJECT, .max = INFO_MAX_LEN},
    {"address", F_HOSTPORT},
    {NULL},
};

static const struct field settings_fields[] = {
    {"events_retention", F_INT, .min = 1, .max = MGR_FSM_EVENTS_RETENTION_MAX,
     .unit = "events"},
    {NULL},
};

static const struct field *const command_fields[MGR_CMD_TYPE_MAX + 1] = {
    [MGR_CMD_MEMBER_SET] = member_set_fields,
    [MGR_CMD_MEMBER_DEL] = member_del_fields,
    [MGR_CMD_NODE_REGISTER] = node_register_fields,
    [MGR_CMD_NODE_STATE] = node_state_fields,
    [MGR_CMD_LOAD_SUMMARY] = load_summary_fields,
    [MGR_CMD_ENDPOINT_CREATE] = endpoint_create_fields,
    [MGR_CMD_ENDPOINT_UPDATE] = endpoint_update_fields,
    [MGR_CMD_ENDPOINT_DELETE] = endpoint_delete_fields,
    [MGR_CMD_MIGRATION_CREATE] = migration_create_fields,
    [MGR_CMD_MIGRATION_UPDATE] = migration_update_fields,
    [MGR_CMD_SETTINGS] = settings_fields,
};

/* "what is accepted" for a field, for error messages. */
static void describe(const struct field *f, char *buf, size_t len)
{
    switch (f->type) {
    case F_NAME:
        snprintf(buf, len, "a name of 1 to %d characters from [a-z0-9_.-] starting with a "
                           "letter or digit",
                 NAME_MAX_LEN);
        return;
    case F_TEXT:
        snprintf(buf, len, "a string of %.0f to %.0f bytes", f->min, f->max);
        return;
    case F_HOSTPORT:
        snprintf(buf, len, "HOST:PORT with a port from 1 to 65535");
        return;
    case F_RAFTADDR:
        snprintf(buf, len, "an IPv4 address and port (A.B.C.D:PORT)");
        return;
    case F_NUMBER:
        snprintf(buf, len, "a number from %g to %g%s%s", f->min, f->max, f->unit ? " " : "",
                 f->unit ? f->unit : "");
        return;
    case F_INT:
        snprintf(buf, len, "an integer from %.0f to %.0f%s%s", f->min, f->max,
                 f->unit ? " " : "", f->unit ? f->unit : "");
        return;
    case F_BOOL:
        snprintf(buf, len, "true or false");
        return;
    case F_ENUM: {
        size_t n = (size_t)snprintf(buf, len, "one of");
        for (const char *const *v = f->values; *v && n < len; v++)
            n += (size_t)snprintf(buf + n, len - n, "%s %s", v == f->values ? "" : ",", *v);
        return;
    }
    case F_OBJECT:
        snprintf(buf, len, "a JSON object of at most %.0f bytes", f->max);
        return;
    case F_ARRAY:
        snprintf(buf, len, "an array of at most %.0f items", f->max);
        return;
    }
}

static bool in_list(const char *s, const char *const *values)
{
    for (; *values; values++)
        if (strcmp(s, *values) == 0)
            return true;
    return false;
}

static bool valid_hostport(const char *s, bool ipv4_only)
{
    char host[300];
    uint16_t port;
    return strlen(s) <= ADDR_MAX_LEN &&
           parse_hostport(s, ipv4_only, host, sizeof(host), &port) == 0;
}

/* Check one present value V of field F. */
static bool field_ok(const struct field *f, const json_t *v)
{
    if (json_is_null(v))
        return f->nullable;
    switch (f->type) {
    case F_NAME:
        return json_is_string(v) && mgr_valid_name(json_string_value(v));
    case F_TEXT: {
        if (!json_is_string(v))
            return false;
        size_t n = json_string_length(v);
        return n >= (size_t)f->min && n <= (size_t)f->max;
    }
    case F_HOSTPORT:
    case F_RAFTADDR:
        return json_is_string(v) && valid_hostport(json_string_value(v), f->type == F_RAFTADDR);
    case F_NUMBER: {
        if (!json_is_number(v))
            return false;
        double d = json_number_value(v);
        return isfinite(d) && d >= f->min && d <= f->max;
    }
    case F_INT: {
        if (!json_is_integer(v))
            return false;
        json_int_t i = json_integer_value(v);
        return (double)i >= f->min && (double)i <= f->max;
    }
    case F_BOOL:
        return json_is_boolean(v);
    case F_ENUM:
        return json_is_string(v) && in_list(json_string_value(v), f->values);
    case F_OBJECT: {
        if (!json_is_object(v))
            return false;
        size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
        return n > 0 && n <= (size_t)f->max;
    }
    case F_ARRAY:
        return json_is_array(v) && json_array_size(v) <= (size_t)f->max;
    }
    return false;
}

/*
 * Check OBJ against the field table FIELDS: every required field present,
 * every present field valid, no other field. WHERE prefixes field names in
 * messages ("nodes[3]."), WHAT names the command for the unknown-field text.
 */
static int check_fields(const json_t *obj, const struct field *fields, const char *where,
                        const char *what, struct mgr_fsm_result *res)
{
    char name[64], expect[160];

    if (!json_is_object(obj)) {
        /* "nodes[3]." names the item as "nodes[3]". */
        size_t n = strlen(where);
        snprintf(name, sizeof(name), "%.*s", (int)(n > 0 ? n - 1 : 0), where);
        return fail(res, DVS_EBADREQUEST, name, "%s: expected a JSON object",
                    n > 0 ? name : what);
    }

    for (const struct field *f = fields; f->name; f++) {
        const json_t *v = json_object_get(obj, f->name);
        snprintf(name, sizeof(name), "%s%s", where, f->name);
        if (!v) {
            if (!f->required)
                continue;
            describe(f, expect, sizeof(expect));
            return fail(res, DVS_EBADREQUEST, name, "%s: required field missing; expected %s",
                        name, expect);
        }
        if (!field_ok(f, v)) {
            describe(f, expect, sizeof(expect));
            return fail(res, DVS_EBADREQUEST, name, "%s: invalid value; expected %s%s", name,
                        expect, json_is_null(v) ? " (or omit the field)" : "");
        }
    }

    /* Unknown fields are refused rather than ignored, so that a typo
     * ("memory" for "mem") is an error and not a silent default. */
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        const struct field *f = fields;
        while (f->name && strcmp(f->name, key) != 0)
            f++;
        if (f->name)
            continue;
        char accepted[160];
        size_t n = 0;
        accepted[0] = '\0';
        for (f = fields; f->name && n < sizeof(accepted); f++)
            n += (size_t)snprintf(accepted + n, sizeof(accepted) - n, "%s%s",
                                  f == fields ? "" : ", ", f->name);
        snprintf(name, sizeof(name), "%s%.40s", where, key);
        return fail(res, DVS_EBADREQUEST, name, "unknown field \"%.64s\" in %s; accepted: %s",
                    name, what, accepted);
    }
    return 0;
}

/* Accessors for fields that check_fields() has validated. */
static const char *get_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* NULL when absent or null */
}

static bool has(const json_t *obj, const char *key)
{
    return json_object_get(obj, key) != NULL;
}

static int64_t get_int(const json_t *obj, const char *key, int64_t def)
{
    const json_t *v = json_object_get(obj, key);
    return v ? (int64_t)json_integer_value(v) : def;
}

static double get_num(const json_t *obj, const char *key, double def)
{
    const json_t *v = json_object_get(obj, key);
    return v ? json_number_value(v) : def;
}

/* ======================================================================
 * Rows as JSON (the shapes of docs/api.md)
 * ====================================================================== */

/*
 * json_object_set_new() with a NULL value fails and leaves the object
 * incomplete; these builders instead count failures and drop the object.
 */
struct jb {
    json_t *obj;
    bool failed;
};

static void jb_set(struct jb *b, const char *key, json_t *v)
{
    if (!v || json_object_set_new(b->obj, key, v) != 0)
        b->failed = true;
}

static json_t *jb_done(struct jb *b)
{
    if (b->failed) {
        json_decref(b->obj);
        return NULL;
    }
    return b->obj;
}

static json_t *col_json_text(sqlite3_stmt *s, int col)
{
    if (col_null(s, col))
        return json_null();
    return json_string((const char *)sqlite3_column_text(s, col));
}

static json_t *col_json_int(sqlite3_stmt *s, int col)
{
    if (col_null(s, col))
        return json_null();
    return json_integer(col_int(s, col));
}

/* NODE_COLS */
static json_t *node_json(sqlite3_stmt *s)
{
    struct jb b = {json_object(), false};
    if (!b.obj)
        return NULL;
    jb_set(&b, "id", col_json_text(s, 0));
    jb_set(&b, "address", col_json_text(s, 1));
    jb_set(&b, "state", col_json_text(s, 4));
    jb_set(&b, "eligible", json_boolean(col_int(s, 5) != 0));
    jb_set(&b, "cpu", json_real(sqlite3_column_double(s, 2)));
    jb_set(&b, "mem", json_integer(col_int(s, 3)));
    if (col_null(s, 10)) {
        jb_set(&b, "load", json_null());
    } else {
        json_t *load = json_pack("{s:f, s:I, s:f, s:I}", "cpu", sqlite3_column_double(s, 11),
                                 "mem", (json_int_t)col_int(s, 12), "rps",
                                 sqlite3_column_double(s, 13), "time",
                                 (json_int_t)col_int(s, 10));
        jb_set(&b, "load", load);
    }
    jb_set(&b, "registered_at", json_integer(col_int(s, 6)));
    jb_set(&b, "state_since", json_integer(col_int(s, 7)));
    jb_set(&b, "state_reason", col_json_text(s, 8));
    jb_set(&b, "modify_index", json_integer(col_int(s, 9)));
    /* Only while a drain with a deadline runs (docs/api.md). */
    if (!col_null(s, 14))
        jb_set(&b, "drain_deadline", json_integer(col_int(s, 14)));
    return jb_done(&b);
}

/* ENDPOINT_COLS */
static json_t *endpoint_json(sqlite3_stmt *s)
{
    char addr[32];
    struct jb b = {json_object(), false};
    if (!b.obj)
        return NULL;
    snprintf(addr, sizeof(addr), "0x%" PRIx64, (uint64_t)col_int(s, 6));
    jb_set(&b, "name", col_json_text(s, 1));
    jb_set(&b, "id", json_integer(col_int(s, 0)));
    jb_set(&b, "command", col_json_text(s, 2));
    jb_set(&b, "cpu", json_real(sqlite3_column_double(s, 3)));
    jb_set(&b, "mem", json_integer(col_int(s, 4)));
    jb_set(&b, "arena_size", json_integer(col_int(s, 5)));
    jb_set(&b, "arena_addr", json_string(addr));
    jb_set(&b, "node", col_json_text(s, 7));
    jb_set(&b, "address", col_json_text(s, 8));
    jb_set(&b, "generation", json_integer(col_int(s, 9)));
    jb_set(&b, "state", col_json_text(s, 10));
    jb_set(&b, "created_at", json_integer(col_int(s, 11)));
    jb_set(&b, "modify_index", json_integer(col_int(s, 12)));
    jb_set(&b, "auto_migrate", json_boolean(col_int(s, 13) != 0));
    return jb_done(&b);
}

/* MIGRATION_COLS */
static json_t *migration_json(sqlite3_stmt *s)
{
    struct jb b = {json_object(), false};
    if (!b.obj)
        return NULL;
    jb_set(&b, "id", json_integer(col_int(s, 0)));
    jb_set(&b, "endpoint", col_json_text(s, 1));
    jb_set(&b, "source", col_json_text(s, 2));
    jb_set(&b, "destination", col_json_text(s, 3));
    jb_set(&b, "reason", col_json_text(s, 4));
    jb_set(&b, "phase", col_json_text(s, 5));
    jb_set(&b, "created_at", json_integer(col_int(s, 6)));
    jb_set(&b, "updated_at", json_integer(col_int(s, 7)));
    jb_set(&b, "finished_at", col_json_int(s, 8));
    jb_set(&b, "bytes", json_integer(col_int(s, 9)));
    jb_set(&b, "rounds", json_integer(col_int(s, 10)));
    jb_set(&b, "downtime_ms", json_integer(col_int(s, 11)));
    jb_set(&b, "explanation", col_json_text(s, 12));
    jb_set(&b, "error", col_json_text(s, 13));
    if (col_null(s, 14)) {
        jb_set(&b, "info", json_null());
    } else {
        const char *text = (const char *)sqlite3_column_text(s, 14);
        jb_set(&b, "info", text ? json_loads(text, 0, NULL) : NULL);
    }
    jb_set(&b, "modify_index", json_integer(col_int(s, 15)));
    return jb_done(&b);
}

/* MIGRATION_COLS_SECRET: a migration as the agents on its two nodes see it. */
static json_t *migration_json_secret(sqlite3_stmt *s)
{
    json_t *o = migration_json(s);
    if (o && json_object_set_new(o, "transfer_secret", col_json_text(s, 16)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *member_json(sqlite3_stmt *s)
{
    return json_pack("{s:s, s:s, s:s, s:I}", "id", (const char *)sqlite3_column_text(s, 0),
                     "raft_addr", (const char *)sqlite3_column_text(s, 1), "http_addr",
                     (const char *)sqlite3_column_text(s, 2), "modify_index",
                     (json_int_t)col_int(s, 3));
}

typedef json_t *(*row_json_fn)(sqlite3_stmt *s);

/* One object from a prepared, bound query: NULL when there is no row or on failure. */
static json_t *query_one(sqlite3_stmt *s, row_json_fn fn)
{
    if (!s)
        return NULL;
    json_t *obj = NULL;
    if (db_step(s) == 1)
        obj = fn(s);
    sqlite3_reset(s);
    return obj;
}

/* Every row of a prepared, bound query as an array; NULL on failure. */
static json_t *query_all(sqlite3_stmt *s, row_json_fn fn)
{
    if (!s)
        return NULL;
    json_t *arr = json_array();
    if (!arr)
        goto fail;
    int rc;
    while ((rc = db_step(s)) == 1) {
        json_t *obj = fn(s);
        if (!obj || json_array_append_new(arr, obj) != 0)
            goto fail;
    }
    if (rc < 0)
        goto fail;
    return arr;
fail:
    sqlite3_reset(s);
    json_decref(arr);
    return NULL;
}

/* ======================================================================
 * Rows as C structs, for the commands' logic
 * ====================================================================== */

struct node_row {
    char id[NAME_MAX_LEN + 1];
    char address[ADDR_MAX_LEN + 1];
    double cpu;
    int64_t mem;
    char state[16];
    bool eligible;
    int64_t registered_at;
    int64_t state_since;
    char reason[REASON_MAX_LEN + 1];
    bool has_reason;
    int64_t drain_deadline; /* 0: none */
};

/* 1 and *ROW filled when node ID exists, 0 when it does not, or DVS_EINTERNAL. */
static int load_node(struct mgr_fsm *fsm, const char *id, struct node_row *row)
{
    sqlite3_stmt *s = db_stmt(fsm, S_NODE_ROW, "t", id);
    if (!s)
        return DVS_EINTERNAL;
    int rc = db_step(s);
    if (rc != 1)
        return rc;
    col_text(s, 0, row->id, sizeof(row->id));
    col_text(s, 1, row->address, sizeof(row->address));
    row->cpu = sqlite3_column_double(s, 2);
    row->mem = col_int(s, 3);
    col_text(s, 4, row->state, sizeof(row->state));
    row->eligible = col_int(s, 5) != 0;
    row->registered_at = col_int(s, 6);
    row->state_since = col_int(s, 7);
    row->has_reason = !col_null(s, 8);
    col_text(s, 8, row->reason, sizeof(row->reason));
    row->drain_deadline = col_null(s, 9) ? 0 : col_int(s, 9);
    sqlite3_reset(s);
    return 1;
}

static int store_node(struct mgr_fsm *fsm, const struct node_row *n)
{
    return db_exec(fsm, S_NODE_UPDATE, "ttditiitiI", n->id, n->address, n->cpu, n->mem,
                   n->state, (int64_t)n->eligible, n->state_since,
                   n->has_reason ? n->reason : NULL, fsm->meta[META_INDEX],
                   (int)(n->drain_deadline > 0), n->drain_deadline);
}

struct endpoint_row {
    int64_t id;
    char node[NAME_MAX_LEN + 1];
    bool has_node;
    char address[ADDR_MAX_LEN + 1];
    bool has_address;
    int64_t generation;
    char state[16];
    double cpu;
    int64_t mem;
    bool auto_migrate;
};

static int load_endpoint(struct mgr_fsm *fsm, const char *name, struct endpoint_row *row)
{
    sqlite3_stmt *s = db_stmt(fsm, S_EP_ROW, "t", name);
    if (!s)
        return DVS_EINTERNAL;
    int rc = db_step(s);
    if (rc != 1)
        return rc;
    row->id = col_int(s, 0);
    row->has_node = !col_null(s, 1);
    col_text(s, 1, row->node, sizeof(row->node));
    row->has_address = !col_null(s, 2);
    col_text(s, 2, row->address, sizeof(row->address));
    row->generation = col_int(s, 3);
    col_text(s, 4, row->state, sizeof(row->state));
    row->cpu = sqlite3_column_double(s, 5);
    row->mem = col_int(s, 6);
    row->auto_migrate = col_int(s, 7) != 0;
    sqlite3_reset(s);
    return 1;
}

static int store_endpoint(struct mgr_fsm *fsm, const char *name, const struct endpoint_row *e)
{
    return db_exec(fsm, S_EP_UPDATE, "tttiti", name, e->has_node ? e->node : NULL,
                   e->has_address ? e->address : NULL, e->generation, e->state,
                   fsm->meta[META_INDEX]);
}

/* The id of the active migration of endpoint NAME (1), none (0), or DVS_EINTERNAL. */
static int active_migration_of(struct mgr_fsm *fsm, const char *name, int64_t *ret_id)
{
    sqlite3_stmt *s = db_stmt(fsm, S_MIG_ACTIVE_OF, "t", name);
    if (!s)
        return DVS_EINTERNAL;
    int rc = db_step(s);
    if (rc == 1) {
        *ret_id = col_int(s, 0);
        sqlite3_reset(s);
    }
    return rc;
}

static int exists(struct mgr_fsm *fsm, enum stmt_id id, const char *key)
{
    sqlite3_stmt *s = db_stmt(fsm, id, "t", key);
    if (!s)
        return DVS_EINTERNAL;
    int rc = db_step(s);
    if (rc == 1)
        sqlite3_reset(s);
    return rc;
}

/* Set RES->object to the endpoint / node / migration / member as the API shows it. */
static int result_object(struct mgr_fsm *fsm, struct mgr_fsm_result *res, enum stmt_id id,
                         row_json_fn fn, const char *key, int64_t num)
{
    sqlite3_stmt *s = key ? db_stmt(fsm, id, "t", key) : db_stmt(fsm, id, "i", num);
    if (!s)
        return fail_internal(fsm, res);
    res->object = query_one(s, fn);
    return res->object ? 0 : fail_nomem(res);
}

/* ======================================================================
 * Capacity
 * ====================================================================== */

/* What is committed on one node: see EP_USAGE. */
struct usage {
    double cpu;
    uint64_t mem;
};

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Sum what is committed on NODE, in endpoint id order (see EP_USAGE). */
static int node_usage(struct mgr_fsm *fsm, const char *node, struct usage *ret)
{
    sqlite3_stmt *s = db_stmt(fsm, S_EP_USAGE_OF, "t", node);
    if (!s)
        return DVS_EINTERNAL;
    struct usage u = {0, 0};
    int rc;
    while ((rc = db_step(s)) == 1) {
        u.cpu += sqlite3_column_double(s, 0);
        u.mem = add_sat(u.mem, (uint64_t)col_int(s, 1));
    }
    if (rc < 0)
        return rc;
    *ret = u;
    return 0;
}

static bool fits(double cap_cpu, int64_t cap_mem, const struct usage *used, double cpu,
                 int64_t mem)
{
    return used->cpu + cpu <= cap_cpu + CPU_EPSILON &&
           add_sat(used->mem, (uint64_t)mem) <= (uint64_t)cap_mem;
}

/*
 * Check that NODE can take an endpoint of CPU cores and MEM bytes: it exists,
 * is up and eligible, and has room. WHAT and FIELD name the input for the
 * messages. 0, or the failure recorded in RES.
 */
static int check_target(struct mgr_fsm *fsm, const char *node, double cpu, int64_t mem,
                        const char *field, const char *what, struct mgr_fsm_result *res)
{
    struct node_row n;
    int rc = load_node(fsm, node, &n);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, field, "%s: no node named \"%s\"", field, node);
    if (strcmp(n.state, "up") != 0)
        return fail(res, DVS_ECONFLICT, field,
                    "%s: node %s is %s; only an up node can take %s", field, node, n.state,
                    what);
    if (!n.eligible)
        return fail(res, DVS_ECONFLICT, field,
                    "%s: node %s is not eligible to receive endpoints (enable it first)",
                    field, node);
    struct usage u;
    if (node_usage(fsm, node, &u) != 0)
        return fail_internal(fsm, res);
    if (!fits(n.cpu, n.mem, &u, cpu, mem)) {
        double free_cpu = n.cpu - u.cpu > 0 ? n.cpu - u.cpu : 0;
        uint64_t free_mem = u.mem < (uint64_t)n.mem ? (uint64_t)n.mem - u.mem : 0;
        return fail(res, DVS_ENOSPACE, field,
                    "%s: node %s has %.2f cores and %" PRIu64 " bytes free; %s needs %.2f "
                    "cores and %" PRId64 " bytes",
                    field, node, free_cpu, free_mem, what, cpu, mem);
    }
    return 0;
}

/*
 * Best fit (DESIGN.md §6 leaves first placement to the manager): among the
 * up and eligible nodes with room, the one left with the least spare
 * capacity, measured as the sum of the spare fractions of cpu and memory.
 * Ties go to the smallest node id. 1 with RET_NODE filled, 0 when no node
 * fits, DVS_EINTERNAL or -ENOMEM.
 */
static int binpack(struct mgr_fsm *fsm, double cpu, int64_t mem, char *ret_node, size_t len)
{
    /* Gather the candidates first: node_usage() reuses statements. */
    struct cand {
        char id[NAME_MAX_LEN + 1];
        double cpu;
        int64_t mem;
        struct usage used;
    } *cands = NULL;
    size_t n = 0, cap = 0;
    int rc;

    sqlite3_stmt *s = db_stmt(fsm, S_NODE_CANDIDATES, NULL);
    if (!s)
        return DVS_EINTERNAL;
    while ((rc = db_step(s)) == 1) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct cand *c = realloc(cands, ncap * sizeof(*c));
            if (!c) {
                sqlite3_reset(s);
                rc = -ENOMEM;
                goto out;
            }
            cands = c;
            cap = ncap;
        }
        col_text(s, 0, cands[n].id, sizeof(cands[n].id));
        cands[n].cpu = sqlite3_column_double(s, 1);
        cands[n].mem = col_int(s, 2);
        cands[n].used = (struct usage){0, 0};
        n++;
    }
    if (rc < 0 || n == 0)
        goto out;

    /* One pass over what is committed where; candidates are sorted by id. */
    s = db_stmt(fsm, S_EP_USAGE, NULL);
    if (!s) {
        rc = DVS_EINTERNAL;
        goto out;
    }
    while ((rc = db_step(s)) == 1) {
        const char *node = (const char *)sqlite3_column_text(s, 0);
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(cands[mid].id, node);
            if (c == 0) {
                cands[mid].used.cpu += sqlite3_column_double(s, 1);
                cands[mid].used.mem = add_sat(cands[mid].used.mem, (uint64_t)col_int(s, 2));
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    if (rc < 0)
        goto out;

    size_t best = n;
    double best_score = 0;
    for (size_t i = 0; i < n; i++) {
        const struct cand *c = &cands[i];
        if (!fits(c->cpu, c->mem, &c->used, cpu, mem))
            continue;
        double spare_cpu = c->cpu > 0 ? (c->cpu - c->used.cpu - cpu) / c->cpu : 0;
        double spare_mem =
            c->mem > 0 ? ((double)c->mem - (double)c->used.mem - (double)mem) / (double)c->mem
                       : 0;
        double score = spare_cpu + spare_mem;
        /* Strictly better only: on a tie the earlier (smaller) id stays. */
        if (best == n || score < best_score) {
            best = i;
            best_score = score;
        }
    }
    rc = 0;
    if (best < n) {
        snprintf(ret_node, len, "%s", cands[best].id);
        rc = 1;
    }
out:
    free(cands);
    return rc;
}

/* ======================================================================
 * Arena placement (DESIGN.md §4)
 * ====================================================================== */

/*
 * First fit over the ranges in use, in address order, keeping MGR_ARENA_GUARD
 * free bytes between neighbours, inside [MGR_ARENA_BASE, MGR_ARENA_LIMIT).
 * Everything is a multiple of MGR_ARENA_ALIGN, so the result is aligned. 1
 * with *RET_ADDR set, 0 when no gap is large enough, or DVS_EINTERNAL.
 */
static int arena_alloc(struct mgr_fsm *fsm, uint64_t size, uint64_t *ret_addr)
{
    sqlite3_stmt *s = db_stmt(fsm, S_EP_ARENAS, NULL);
    if (!s)
        return DVS_EINTERNAL;
    uint64_t cand = MGR_ARENA_BASE;
    int rc;
    while ((rc = db_step(s)) == 1) {
        uint64_t addr = (uint64_t)col_int(s, 0);
        uint64_t end = addr + (uint64_t)col_int(s, 1) + MGR_ARENA_GUARD;
        if (cand + size + MGR_ARENA_GUARD <= addr) {
            sqlite3_reset(s);
            break;
        }
        if (end > cand)
            cand = end;
    }
    if (rc < 0)
        return rc;
    assert(cand % MGR_ARENA_ALIGN == 0);
    if (cand + size > MGR_ARENA_LIMIT)
        return 0;
    *ret_addr = cand;
    return 1;
}

/* ======================================================================
 * The event log and the counters (fsm.h)
 * ====================================================================== */

const int64_t mgr_fsm_downtime_le_ms[MGR_FSM_DOWNTIME_BUCKETS] = {
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
};
const int64_t mgr_fsm_duration_le_ms[MGR_FSM_DURATION_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000,
};

/*
 * Append an event of the command being applied. DATA (stolen, may be NULL)
 * holds the type-specific fields. The oldest events beyond the retention go
 * at once, by id, which every member assigns the same way. 0 or
 * DVS_EINTERNAL / -ENOMEM: the command then fails as a whole, events
 * included (they are written inside its savepoint).
 */
static int event_add(struct mgr_fsm *fsm, const char *type, const char *subject, json_t *data,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int event_add(struct mgr_fsm *fsm, const char *type, const char *subject, json_t *data,
                     const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char *text = NULL;
    if (data) {
        text = json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(data);
        if (!text)
            return -ENOMEM;
    }
    int64_t id = fsm->meta[META_NEXT_EVENT_ID];
    int rc = db_exec(fsm, S_EV_PUT, "iiitttt", id, fsm->meta[META_INDEX], fsm->now, type,
                     subject, msg, text);
    free(text);
    if (rc != 0)
        return DVS_EINTERNAL;
    fsm->meta[META_NEXT_EVENT_ID] = id + 1;
    int64_t keep = fsm->meta[META_EVENTS_RETENTION];
    if (id > keep && db_exec(fsm, S_EV_PRUNE, "i", id - keep) != 0)
        return DVS_EINTERNAL;
    touch(fsm, MGR_T_EVENTS);
    return 0;
}

static int stat_add(struct mgr_fsm *fsm, const char *name, const char *label, int64_t delta)
{
    return db_exec(fsm, S_STAT_ADD, "tti", name, label, delta);
}

/* One observation of a histogram: cumulative buckets, count and sum. */
static int stat_observe(struct mgr_fsm *fsm, const char *name, const char *prefix,
                        const int64_t *le, unsigned n, int64_t value_ms)
{
    char key[64], label[96];
    for (unsigned i = 0; i < n; i++) {
        if (value_ms > le[i])
            continue;
        snprintf(key, sizeof(key), "%s_bucket", name);
        snprintf(label, sizeof(label), "%s%" PRId64, prefix, le[i]);
        if (stat_add(fsm, key, label, 1) != 0)
            return DVS_EINTERNAL;
    }
    /* The prefix without its trailing '/' labels count and sum. */
    size_t plen = strlen(prefix);
    snprintf(label, sizeof(label), "%.*s", (int)(plen ? plen - 1 : 0), prefix);
    snprintf(key, sizeof(key), "%s_count", name);
    if (stat_add(fsm, key, label, 1) != 0)
        return DVS_EINTERNAL;
    snprintf(key, sizeof(key), "%s_sum_ms", name);
    return stat_add(fsm, key, label, value_ms);
}

/*
 * Migration ID has just changed phase (from phase FROM): record the event,
 * and if it is now final, count its outcome and observe its figures.
 */
static int migration_event(struct mgr_fsm *fsm, int64_t id, const char *from)
{
    sqlite3_stmt *s = db_stmt(fsm, S_MIG_FACTS, "i", id);
    if (!s)
        return DVS_EINTERNAL;
    int rc = db_step(s);
    if (rc != 1)
        return rc < 0 ? rc : DVS_EINTERNAL;
    char endpoint[NAME_MAX_LEN + 1], src[NAME_MAX_LEN + 1], dst[NAME_MAX_LEN + 1];
    char reason[32], phase[16], error[ERROR_MAX_LEN + 1];
    char *explanation = NULL;
    col_text(s, 0, endpoint, sizeof(endpoint));
    col_text(s, 1, src, sizeof(src));
    col_text(s, 2, dst, sizeof(dst));
    col_text(s, 3, reason, sizeof(reason));
    col_text(s, 4, phase, sizeof(phase));
    int64_t created = col_int(s, 5);
    bool final = !col_null(s, 6);
    int64_t finished = col_int(s, 6);
    int64_t bytes = col_int(s, 7), rounds = col_int(s, 8), downtime = col_int(s, 9);
    const char *expl = (const char *)sqlite3_column_text(s, 10);
    bool has_error = !col_null(s, 11);
    col_text(s, 11, error, sizeof(error));
    explanation = expl ? strdup(expl) : NULL;
    sqlite3_reset(s);
    if (!explanation)
        return -ENOMEM;

    json_t *data = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "migration", (json_int_t)id,
                             "source", src, "destination", dst, "reason", reason, "phase",
                             phase, "explanation", explanation);
    if (data && from)
        json_object_set_new(data, "from", json_string(from));
    if (data && final)
        json_object_set_new(data, "downtime_ms", json_integer(downtime));
    if (data && has_error)
        json_object_set_new(data, "error", json_string(error));
    if (!data) {
        free(explanation);
        return -ENOMEM;
    }
    char type[32];
    snprintf(type, sizeof(type), "migration.%s", phase);
    if (!from)
        rc = event_add(fsm, type, endpoint, data, "migration %" PRId64 " of %s: %s -> %s, %s%s%s",
                       id, endpoint, src, dst, reason, explanation[0] ? ": " : "",
                       explanation);
    else if (!strcmp(phase, "committed"))
        rc = event_add(fsm, type, endpoint, data,
                       "migration %" PRId64 " of %s committed: now on %s, %" PRId64
                       " bytes in %" PRId64 " rounds, downtime %" PRId64 " ms, took %" PRId64
                       " ms",
                       id, endpoint, dst, bytes, rounds, downtime, finished - created);
    else if (!strcmp(phase, "aborted"))
        rc = event_add(fsm, type, endpoint, data,
                       "migration %" PRId64 " of %s aborted in %s, stays on %s: %s", id,
                       endpoint, from, src, has_error ? error : "no error given");
    else
        rc = event_add(fsm, type, endpoint, data, "migration %" PRId64 " of %s: %s -> %s", id,
                       endpoint, from, phase);
    free(explanation);
    if (rc != 0 || !final)
        return rc;

    char label[64];
    snprintf(label, sizeof(label), "%s/%s", reason, phase);
    if (stat_add(fsm, "migrations_total", label, 1) != 0)
        return DVS_EINTERNAL;
    if (!strcmp(phase, "committed") &&
        stat_observe(fsm, "downtime", "", mgr_fsm_downtime_le_ms, MGR_FSM_DOWNTIME_BUCKETS,
                     downtime) != 0)
        return DVS_EINTERNAL;
    snprintf(label, sizeof(label), "%s/", phase);
    /* Times come from proposers' clocks: never let a skew make it negative. */
    return stat_observe(fsm, "duration", label, mgr_fsm_duration_le_ms,
                        MGR_FSM_DURATION_BUCKETS, finished > created ? finished - created : 0);
}

/* ======================================================================
 * Commands
 * ====================================================================== */

/* A failure of event_add / migration_event, recorded in RES. */
static int fail_event(struct mgr_fsm *fsm, struct mgr_fsm_result *res, int rc)
{
    return rc == -ENOMEM ? fail_nomem(res) : fail_internal(fsm, res);
}

static int cmd_member_set(struct mgr_fsm *fsm, const json_t *body, struct mgr_fsm_result *res)
{
    const char *id = get_str(body, "id");
    const char *raft_addr = get_str(body, "raft_addr");
    const char *http_addr = get_str(body, "http_addr");

    /* Two members on one address would make redirects and the Raft
     * configuration ambiguous. */
    sqlite3_stmt *s = db_stmt(fsm, S_MEMBER_ADDR_USER, "ttt", id, raft_addr, http_addr);
    if (!s)
        return fail_internal(fsm, res);
    int rc = db_step(s);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 1) {
        char other[NAME_MAX_LEN + 1];
        col_text(s, 0, other, sizeof(other));
        bool raft = col_int(s, 1) != 0;
        const char *field = raft ? "raft_addr" : "http_addr";
        sqlite3_reset(s);
        return fail(res, DVS_ECONFLICT, field,
                    "%s: member %s already uses %s; each member needs its own addresses",
                    field, other, raft ? raft_addr : http_addr);
    }

    s = db_stmt(fsm, S_MEMBER_GET, "t", id);
    if (!s)
        return fail_internal(fsm, res);
    rc = db_step(s);
    if (rc < 0)
        return fail_internal(fsm, res);
    bool same = rc == 1 && strcmp((const char *)sqlite3_column_text(s, 1), raft_addr) == 0 &&
                strcmp((const char *)sqlite3_column_text(s, 2), http_addr) == 0;
    sqlite3_reset(s);

    /* Re-announcing the same addresses changes nothing, so watchers stay asleep. */
    if (!same) {
        if (db_exec(fsm, S_MEMBER_PUT, "ttti", id, raft_addr, http_addr,
                    fsm->meta[META_INDEX]) != 0)
            return fail_internal(fsm, res);
        touch(fsm, MGR_T_MEMBERS);
        rc = event_add(fsm, "member.set", id,
                       json_pack("{s:s, s:s}", "raft_addr", raft_addr, "http_addr", http_addr),
                       "member %s: raft %s, http %s", id, raft_addr, http_addr);
        if (rc)
            return fail_event(fsm, res, rc);
    }
    return result_object(fsm, res, S_MEMBER_GET, member_json, id, 0);
}

static int cmd_member_del(struct mgr_fsm *fsm, const json_t *body, struct mgr_fsm_result *res)
{
    const char *id = get_str(body, "id");
    int rc = exists(fsm, S_MEMBER_GET, id);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, "id", "id: no member named \"%s\"", id);
    if (db_exec(fsm, S_MEMBER_DEL, "t", id) != 0)
        return fail_internal(fsm, res);
    touch(fsm, MGR_T_MEMBERS);
    rc = event_add(fsm, "member.removed", id, NULL, "member %s removed", id);
    if (rc)
        return fail_event(fsm, res, rc);
    res->object = json_pack("{s:s}", "deleted", id);
    return res->object ? 0 : fail_nomem(res);
}

static int cmd_node_register(struct mgr_fsm *fsm, const json_t *body,
                             struct mgr_fsm_result *res)
{
    const char *id = get_str(body, "id");
    const char *address = get_str(body, "address");
    double cpu = get_num(body, "cpu", 0);
    int64_t mem = get_int(body, "mem", 0);

    struct node_row n;
    int rc = load_node(fsm, id, &n);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0) {
        if (db_exec(fsm, S_NODE_INSERT, "ttditiiini", id, address, cpu, mem, "up", (int64_t)1,
                    fsm->now, fsm->now, fsm->meta[META_INDEX]) != 0)
            return fail_internal(fsm, res);
        touch(fsm, MGR_T_NODES);
        rc = event_add(fsm, "node.registered", id,
                       json_pack("{s:s, s:f, s:I, s:s}", "address", address, "cpu", cpu,
                                 "mem", (json_int_t)mem, "state", "up"),
                       "node %s registered at %s (%g cores, %" PRId64 " bytes)", id, address,
                       cpu, mem);
        if (rc)
            return fail_event(fsm, res, rc);
        return result_object(fsm, res, S_NODE_JSON, node_json, id, 0);
    }

    /*
     * Re-registration (an agent restart) updates address and capacity. A node
     * that was down is evidently back; draining, drained and standby are
     * operator or policy decisions that a restart must not undo.
     */
    bool changed = strcmp(n.address, address) != 0 || n.cpu != cpu || n.mem != mem;
    snprintf(n.address, sizeof(n.address), "%s", address);
    n.cpu = cpu;
    n.mem = mem;
    if (strcmp(n.state, "down") == 0) {
        snprintf(n.state, sizeof(n.state), "up");
        n.state_since = fsm->now;
        n.has_reason = true;
        snprintf(n.reason, sizeof(n.reason), "registered again");
        changed = true;
        rc = event_add(fsm, "node.state", id,
                       json_pack("{s:s, s:s, s:s}", "from", "down", "state", "up", "reason",
                                 n.reason),
                       "node %s: down -> up (registered again)", id);
        if (rc)
            return fail_event(fsm, res, rc);
    }
    if (changed) {
        if (store_node(fsm, &n) != 0)
            return fail_internal(fsm, res);
        touch(fsm, MGR_T_NODES);
    }
    return result_object(fsm, res, S_NODE_JSON, node_json, id, 0);
}

static int cmd_node_state(struct mgr_fsm *fsm, const json_t *body, struct mgr_fsm_result *res)
{
    const char *id = get_str(body, "id");
    const char *state = get_str(body, "state");
    const char *reason = get_str(body, "reason");
    const char *from = get_str(body, "from");

    struct node_row n;
    int rc = load_node(fsm, id, &n);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, "id", "id: no node named \"%s\"", id);

    /*
     * "from" makes the change conditional on the state it was decided in:
     * the scheduler's "drained" must not land on a drain the operator has
     * cancelled meanwhile, nor a power-off on a node that began draining.
     */
    if (from && strcmp(n.state, from) != 0)
        return fail(res, DVS_ECONFLICT, "from",
                    "from: node %s is %s, not %s; the change to %s was not applied", id,
                    n.state, from, state);
    if (has(body, "drain_deadline") && strcmp(state, "draining") != 0)
        return fail(res, DVS_EBADREQUEST, "drain_deadline",
                    "drain_deadline: only accepted with state draining");

    struct node_row old = n;
    bool state_changes = strcmp(n.state, state) != 0;

    /* A drain's deadline lives as long as the drain (DESIGN.md §6): set or
     * kept while draining (0 = none), cleared by any other state. */
    if (strcmp(state, "draining") != 0)
        n.drain_deadline = 0;
    else if (has(body, "drain_deadline"))
        n.drain_deadline = get_int(body, "drain_deadline", 0);

    /*
     * Eligibility (DESIGN.md §2) is separate from state, but some states
     * decide it when the command does not: a drained or standby node must
     * not receive endpoints, and such a node coming back up may again.
     * Other transitions (down and back, draining and cancelled) keep it.
     */
    bool eligible = n.eligible;
    if (has(body, "eligible"))
        eligible = json_is_true(json_object_get(body, "eligible"));
    else if (!strcmp(state, "drained") || !strcmp(state, "standby"))
        eligible = false;
    else if (!strcmp(state, "up") && (!strcmp(n.state, "drained") || !strcmp(n.state, "standby")))
        eligible = true;
    n.eligible = eligible;

    if (state_changes) {
        snprintf(n.state, sizeof(n.state), "%s", state);
        n.state_since = fsm->now;
        n.has_reason = reason != NULL;
        snprintf(n.reason, sizeof(n.reason), "%s", reason ? reason : "");
    } else if (reason) {
        n.has_reason = true;
        snprintf(n.reason, sizeof(n.reason), "%s", reason);
    }

    bool changed = state_changes || n.eligible != old.eligible ||
                   n.has_reason != old.has_reason || strcmp(n.reason, old.reason) != 0 ||
                   n.drain_deadline != old.drain_deadline;
    if (changed) {
        if (store_node(fsm, &n) != 0)
            return fail_internal(fsm, res);
        touch(fsm, MGR_T_NODES);
    }
    if (state_changes || n.eligible != old.eligible) {
        json_t *data = json_pack("{s:s, s:s, s:b}", "from", old.state, "state", n.state,
                                 "eligible", (int)n.eligible);
        if (data && n.has_reason)
            json_object_set_new(data, "reason", json_string(n.reason));
        if (state_changes)
            rc = event_add(fsm, "node.state", id, data, "node %s: %s -> %s%s%s%s", id,
                           old.state, n.state, n.eligible ? "" : ", not eligible",
                           n.has_reason ? ": " : "", n.has_reason ? n.reason : "");
        else
            rc = event_add(fsm, "node.eligibility", id, data, "node %s (%s) is %s%s%s", id,
                           n.state, n.eligible ? "eligible again" : "no longer eligible",
                           n.has_reason ? ": " : "", n.has_reason ? n.reason : "");
        if (rc)
            return fail_event(fsm, res, rc);
    }
    return result_object(fsm, res, S_NODE_JSON, node_json, id, 0);
}

static int cmd_load_summary(struct mgr_fsm *fsm, const json_t *body,
                            struct mgr_fsm_result *res)
{
    const json_t *nodes = json_object_get(body, "nodes");
    size_t i;
    const json_t *item;
    char where[32];

    /* Validate everything before writing anything. */
    json_array_foreach(nodes, i, item) {
        snprintf(where, sizeof(where), "nodes[%zu].", i);
        int rc = check_fields(item, load_item_fields, where, "a load summary entry", res);
        if (rc)
            return rc;
    }

    /*
     * Entries for unknown nodes are skipped: the leader may summarise a node
     * whose registration is still in flight, and a summary is only a hint.
     */
    int64_t updated = 0, skipped = 0;
    json_array_foreach(nodes, i, item) {
        const char *id = get_str(item, "id");
        int rc = exists(fsm, S_NODE_EXISTS, id);
        if (rc < 0)
            return fail_internal(fsm, res);
        if (rc == 0) {
            skipped++;
            continue;
        }
        if (db_exec(fsm, S_LOAD_PUT, "tidid", id, fsm->now, get_num(item, "cpu", 0),
                    get_int(item, "mem", 0), get_num(item, "rps", 0)) != 0)
            return fail_internal(fsm, res);
        updated++;
    }
    if (updated > 0)
        touch(fsm, MGR_T_LOAD);
    res->object = json_pack("{s:I, s:I}", "updated", (json_int_t)updated, "skipped",
                            (json_int_t)skipped);
    return res->object ? 0 : fail_nomem(res);
}

static int cmd_endpoint_create(struct mgr_fsm *fsm, const json_t *body,
                               struct mgr_fsm_result *res)
{
    const char *name = get_str(body, "name");
    const char *command = get_str(body, "command");
    const char *node = get_str(body, "node");
    double cpu = get_num(body, "cpu", ENDPOINT_CPU_DEFAULT);
    int64_t mem = get_int(body, "mem", ENDPOINT_MEM_DEFAULT);
    uint64_t arena = (uint64_t)get_int(body, "arena", (int64_t)MGR_ARENA_DEFAULT);
    bool auto_migrate = !json_is_false(json_object_get(body, "auto_migrate"));
    char what[NAME_MAX_LEN + 16];

    int rc = exists(fsm, S_EP_EXISTS, name);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 1)
        return fail(res, DVS_EEXISTS, "name", "name: an endpoint named \"%s\" already exists",
                    name);

    /* Sizes are whole alignment units so that every range stays aligned. */
    arena = (arena + MGR_ARENA_ALIGN - 1) & ~(MGR_ARENA_ALIGN - 1);
    uint64_t addr;
    rc = arena_alloc(fsm, arena, &addr);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOSPACE, "arena",
                    "arena: no free range of %" PRIu64 " bytes is left in the arena address "
                    "space; delete endpoints or ask for a smaller arena",
                    arena);

    char placed[NAME_MAX_LEN + 1] = "";
    snprintf(what, sizeof(what), "endpoint %s", name);
    if (node) {
        rc = check_target(fsm, node, cpu, mem, "node", what, res);
        if (rc)
            return rc;
        snprintf(placed, sizeof(placed), "%s", node);
    } else {
        /* No room anywhere is not an error: the endpoint waits, pending,
         * until the leader can place it (docs/api.md: no_space only with
         * an explicit node). */
        rc = binpack(fsm, cpu, mem, placed, sizeof(placed));
        if (rc == -ENOMEM)
            return fail_nomem(res);
        if (rc < 0)
            return fail_internal(fsm, res);
    }

    int64_t id = fsm->meta[META_NEXT_ENDPOINT_ID];
    if (db_exec(fsm, S_EP_INSERT, "ittdiiitiii", id, name, command, cpu, mem, (int64_t)arena,
                (int64_t)addr, placed[0] ? placed : NULL, fsm->now, fsm->meta[META_INDEX],
                (int64_t)auto_migrate) != 0)
        return fail_internal(fsm, res);
    fsm->meta[META_NEXT_ENDPOINT_ID] = id + 1;
    touch(fsm, MGR_T_ENDPOINTS);
    json_t *data = json_pack("{s:I, s:s, s:I}", "endpoint_id", (json_int_t)id, "state",
                             "pending", "arena_size", (json_int_t)arena);
    if (data)
        json_object_set_new(data, "node", placed[0] ? json_string(placed) : json_null());
    rc = event_add(fsm, "endpoint.created", name, data, "endpoint %s created%s%s", name,
                   placed[0] ? ", placed on " : ", pending: no node has room for it yet",
                   placed);
    if (rc)
        return fail_event(fsm, res, rc);
    return result_object(fsm, res, S_EP_JSON, endpoint_json, name, 0);
}

/* The event of an agent's report that changed endpoint NAME from OLD to E. */
static int endpoint_event(struct mgr_fsm *fsm, const char *name, const struct endpoint_row *old,
                          const struct endpoint_row *e)
{
    const char *type = "endpoint.updated";
    if (e->has_node != old->has_node || strcmp(e->node, old->node) != 0)
        type = "endpoint.moved";
    else if (strcmp(e->state, old->state) != 0)
        type = "endpoint.state";
    json_t *data = json_pack("{s:s, s:s, s:I}", "from", old->state, "state", e->state,
                             "generation", (json_int_t)e->generation);
    if (data) {
        json_object_set_new(data, "node", e->has_node ? json_string(e->node) : json_null());
        json_object_set_new(data, "address",
                            e->has_address ? json_string(e->address) : json_null());
    }
    return event_add(fsm, type, name, data,
                     "endpoint %s: %s%s%s on %s at %s, generation %" PRId64, name,
                     strcmp(old->state, e->state) ? old->state : "",
                     strcmp(old->state, e->state) ? " -> " : "", e->state,
                     e->has_node ? e->node : "no node",
                     e->has_address ? e->address : "no address", e->generation);
}

static int cmd_endpoint_update(struct mgr_fsm *fsm, const json_t *body,
                               struct mgr_fsm_result *res)
{
    const char *name = get_str(body, "name");
    const char *state = get_str(body, "state");
    const char *node = get_str(body, "node");

    struct endpoint_row e;
    int rc = load_endpoint(fsm, name, &e);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, "name", "name: no endpoint named \"%s\"", name);

    /* Generation fencing (DESIGN.md §2): a report about an older instance
     * must not overwrite what a newer one said. */
    int64_t generation = get_int(body, "generation", e.generation);
    if (generation < e.generation)
        return fail(res, DVS_ESTALEGEN, "generation",
                    "generation: %" PRId64 " is older than the current generation %" PRId64
                    " of endpoint %s",
                    generation, e.generation, name);

    if (node && strcmp(node, e.node) != 0) {
        rc = exists(fsm, S_NODE_EXISTS, node);
        if (rc < 0)
            return fail_internal(fsm, res);
        if (rc == 0)
            return fail(res, DVS_ENOTFOUND, "node", "node: no node named \"%s\"", node);
    }

    /*
     * While a migration runs, the endpoint's node and state belong to it
     * (DESIGN.md §4): only commit or abort move it on. An agent may still
     * report the instance failed, or the migrating state it already has.
     */
    int64_t mig;
    rc = active_migration_of(fsm, name, &mig);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 1) {
        if (state && strcmp(state, "migrating") != 0 && strcmp(state, "failed") != 0)
            return fail(res, DVS_ECONFLICT, "state",
                        "state: endpoint %s is migrating (migration %" PRId64 "); it can "
                        "only be reported failed until the migration commits or aborts",
                        name, mig);
        if (node && (!e.has_node || strcmp(node, e.node) != 0))
            return fail(res, DVS_ECONFLICT, "node",
                        "node: endpoint %s is migrating (migration %" PRId64 "); its node "
                        "changes when the migration commits",
                        name, mig);
    } else if (state && strcmp(state, "migrating") == 0 && strcmp(e.state, "migrating") != 0) {
        return fail(res, DVS_ECONFLICT, "state",
                    "state: endpoint %s has no active migration; \"migrating\" is set by "
                    "creating one",
                    name);
    }

    struct endpoint_row old = e;
    if (state)
        snprintf(e.state, sizeof(e.state), "%s", state);
    if (node) {
        e.has_node = true;
        snprintf(e.node, sizeof(e.node), "%s", node);
    }
    if (has(body, "address")) {
        const char *address = get_str(body, "address");
        e.has_address = address != NULL;
        snprintf(e.address, sizeof(e.address), "%s", address ? address : "");
    }
    e.generation = generation;

    if (strcmp(e.state, old.state) != 0 || e.has_node != old.has_node ||
        strcmp(e.node, old.node) != 0 || e.has_address != old.has_address ||
        strcmp(e.address, old.address) != 0 || e.generation != old.generation) {
        if (store_endpoint(fsm, name, &e) != 0)
            return fail_internal(fsm, res);
        touch(fsm, MGR_T_ENDPOINTS);
        rc = endpoint_event(fsm, name, &old, &e);
        if (rc)
            return fail_event(fsm, res, rc);
    }
    /* An operator's setting, allowed whatever the endpoint is doing. */
    if (has(body, "auto_migrate")) {
        bool want = json_is_true(json_object_get(body, "auto_migrate"));
        if (want != e.auto_migrate) {
            if (db_exec(fsm, S_EP_SET_AUTO, "tii", name, (int64_t)want,
                        fsm->meta[META_INDEX]) != 0)
                return fail_internal(fsm, res);
            touch(fsm, MGR_T_ENDPOINTS);
        }
    }
    return result_object(fsm, res, S_EP_JSON, endpoint_json, name, 0);
}

static int cmd_endpoint_delete(struct mgr_fsm *fsm, const json_t *body,
                               struct mgr_fsm_result *res)
{
    const char *name = get_str(body, "name");
    int rc = exists(fsm, S_EP_EXISTS, name);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, "name", "name: no endpoint named \"%s\"", name);

    /* A migration of a deleted endpoint cannot finish; record it as aborted
     * so that both agents see it end and stop their instances. */
    int64_t mig;
    rc = active_migration_of(fsm, name, &mig);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 1) {
        sqlite3_stmt *s = db_stmt(fsm, S_MIG_ROW, "i", mig);
        if (!s || db_step(s) != 1)
            return fail_internal(fsm, res);
        char phase[16];
        col_text(s, 4, phase, sizeof(phase));
        sqlite3_reset(s);
        if (db_exec(fsm, S_MIG_ABORT_OF, "titi", name, fsm->now, "endpoint deleted",
                    fsm->meta[META_INDEX]) != 0)
            return fail_internal(fsm, res);
        touch(fsm, MGR_T_MIGRATIONS);
        rc = migration_event(fsm, mig, phase);
        if (rc)
            return fail_event(fsm, res, rc);
    }
    if (db_exec(fsm, S_EP_DELETE, "t", name) != 0)
        return fail_internal(fsm, res);
    touch(fsm, MGR_T_ENDPOINTS);
    rc = event_add(fsm, "endpoint.deleted", name, NULL, "endpoint %s deleted", name);
    if (rc)
        return fail_event(fsm, res, rc);
    res->object = json_pack("{s:s}", "deleted", name);
    return res->object ? 0 : fail_nomem(res);
}

static int cmd_migration_create(struct mgr_fsm *fsm, const json_t *body,
                                struct mgr_fsm_result *res)
{
    const char *name = get_str(body, "endpoint");
    const char *dest = get_str(body, "destination");
    const char *reason = get_str(body, "reason");
    const char *explanation = get_str(body, "explanation");
    const char *secret = get_str(body, "transfer_secret");

    struct endpoint_row e;
    int rc = load_endpoint(fsm, name, &e);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, "endpoint", "endpoint: no endpoint named \"%s\"", name);

    int64_t mig;
    rc = active_migration_of(fsm, name, &mig);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 1)
        return fail(res, DVS_ECONFLICT, "endpoint",
                    "endpoint: %s is already migrating (migration %" PRId64 ")", name, mig);
    if (!e.has_node)
        return fail(res, DVS_ECONFLICT, "endpoint",
                    "endpoint: %s is not placed on any node yet, so it cannot migrate", name);
    if (strcmp(e.state, "running") != 0 && strcmp(e.state, "pending") != 0)
        return fail(res, DVS_ECONFLICT, "endpoint",
                    "endpoint: %s is %s; only a running or pending endpoint can migrate", name,
                    e.state);
    if (strcmp(dest, e.node) == 0)
        return fail(res, DVS_ECONFLICT, "destination",
                    "destination: endpoint %s already runs on %s; choose another node", name,
                    dest);

    /* The destination must be able to take it, as for a placement. */
    char what[NAME_MAX_LEN + 16];
    snprintf(what, sizeof(what), "endpoint %s", name);
    rc = check_target(fsm, dest, e.cpu, e.mem, "destination", what, res);
    if (rc)
        return rc;

    int64_t id = fsm->meta[META_NEXT_MIGRATION_ID];
    if (db_exec(fsm, S_MIG_INSERT, "ittttitit", id, name, e.node, dest, reason, fsm->now,
                explanation ? explanation : "", fsm->meta[META_INDEX], secret) != 0)
        return fail_internal(fsm, res);
    fsm->meta[META_NEXT_MIGRATION_ID] = id + 1;

    snprintf(e.state, sizeof(e.state), "migrating");
    if (store_endpoint(fsm, name, &e) != 0)
        return fail_internal(fsm, res);
    touch(fsm, MGR_T_MIGRATIONS | MGR_T_ENDPOINTS);
    rc = migration_event(fsm, id, NULL);
    if (rc)
        return fail_event(fsm, res, rc);
    return result_object(fsm, res, S_MIG_JSON, migration_json, NULL, id);
}

static int phase_rank(const char *phase)
{
    for (int i = 0; phases[i]; i++)
        if (strcmp(phases[i], phase) == 0)
            return i;
    return -1;
}

static int cmd_migration_update(struct mgr_fsm *fsm, const json_t *body,
                                struct mgr_fsm_result *res)
{
    int64_t id = get_int(body, "id", 0);
    const char *phase = get_str(body, "phase");
    const char *address = get_str(body, "address");
    const json_t *info = json_object_get(body, "info");
    enum { PLANNED, PRECOPY, FROZEN, COMMITTED, ABORTED };

    sqlite3_stmt *s = db_stmt(fsm, S_MIG_ROW, "i", id);
    if (!s)
        return fail_internal(fsm, res);
    int rc = db_step(s);
    if (rc < 0)
        return fail_internal(fsm, res);
    if (rc == 0)
        return fail(res, DVS_ENOTFOUND, "id", "id: no migration %" PRId64, id);
    char endpoint[NAME_MAX_LEN + 1], dest[NAME_MAX_LEN + 1], cur[16];
    col_text(s, 1, endpoint, sizeof(endpoint));
    col_text(s, 3, dest, sizeof(dest));
    col_text(s, 4, cur, sizeof(cur));
    sqlite3_reset(s);

    /*
     * Phases only move forward (DESIGN.md §4). Pre-copy may be skipped (the
     * stop-and-copy fallback freezes straight away), but a commit needs a
     * freeze first: only then is the final copy complete. Repeating the
     * current phase records progress (bytes, rounds).
     */
    int from = phase_rank(cur), to = phase_rank(phase);
    assert(from >= 0 && to >= 0);
    if (from == COMMITTED || from == ABORTED)
        return fail(res, DVS_ECONFLICT, "phase",
                    "phase: migration %" PRId64 " is already %s and cannot change", id, cur);
    if (to < from)
        return fail(res, DVS_ECONFLICT, "phase",
                    "phase: migration %" PRId64 " is %s; it cannot go back to %s", id, cur,
                    phase);
    if (to == COMMITTED && from != FROZEN)
        return fail(res, DVS_ECONFLICT, "phase",
                    "phase: migration %" PRId64 " is %s; it can only commit once frozen", id,
                    cur);
    if (address && to != COMMITTED)
        return fail(res, DVS_EBADREQUEST, "address",
                    "address: only accepted with phase committed (the destination's new "
                    "address)");

    char *info_text = NULL;
    if (info) {
        info_text = json_dumps(info, JSON_COMPACT | JSON_SORT_KEYS);
        if (!info_text)
            return fail_nomem(res);
    }
    bool final = to == COMMITTED || to == ABORTED;
    /* Absent figures keep their recorded values (NULL binds, coalesce). */
    const json_t *bytes = json_object_get(body, "bytes");
    const json_t *rounds = json_object_get(body, "rounds");
    const json_t *downtime = json_object_get(body, "downtime_ms");
    rc = db_exec(fsm, S_MIG_UPDATE, "itiIIIItti", id, phase, fsm->now, (int)final, fsm->now,
                 (int)(bytes != NULL), (int64_t)json_integer_value(bytes),
                 (int)(rounds != NULL), (int64_t)json_integer_value(rounds),
                 (int)(downtime != NULL), (int64_t)json_integer_value(downtime),
                 get_str(body, "error"), info_text, fsm->meta[META_INDEX]);
    free(info_text);
    if (rc != 0)
        return fail_internal(fsm, res);
    touch(fsm, MGR_T_MIGRATIONS);
    /* Repeating the current phase is progress, not an event. */
    if (from != to) {
        rc = migration_event(fsm, id, cur);
        if (rc)
            return fail_event(fsm, res, rc);
    }

    if (final) {
        struct endpoint_row e;
        rc = load_endpoint(fsm, endpoint, &e);
        if (rc < 0)
            return fail_internal(fsm, res);
        /* Deleting an endpoint aborts its migration, so a committing one exists. */
        assert(rc == 1 || to == ABORTED);
        if (rc == 1 && to == COMMITTED) {
            /* The move (DESIGN.md §4 phase 4): new node, new generation, so
             * that the old instance is fenced off. */
            e.has_node = true;
            snprintf(e.node, sizeof(e.node), "%s", dest);
            e.generation++;
            snprintf(e.state, sizeof(e.state), "running");
            e.has_address = address != NULL;
            snprintf(e.address, sizeof(e.address), "%s", address ? address : "");
        } else if (rc == 1 && strcmp(e.state, "migrating") == 0) {
            /* The source resumes serving (phase 5). A failure reported
             * meanwhile stays recorded. */
            snprintf(e.state, sizeof(e.state), "running");
        } else {
            rc = 0;
        }
        if (rc == 1) {
            if (store_endpoint(fsm, endpoint, &e) != 0)
                return fail_internal(fsm, res);
            touch(fsm, MGR_T_ENDPOINTS);
        }
        if (rc == 1 && to == COMMITTED) {
            json_t *data = json_pack("{s:s, s:s, s:I, s:I}", "node", dest, "state", e.state,
                                     "generation", (json_int_t)e.generation, "migration",
                                     (json_int_t)id);
            if (data)
                json_object_set_new(data, "address",
                                    address ? json_string(address) : json_null());
            rc = event_add(fsm, "endpoint.moved", endpoint, data,
                           "endpoint %s moved to %s at %s, generation %" PRId64
                           " (migration %" PRId64 ")",
                           endpoint, dest, address ? address : "no address", e.generation,
                           id);
            if (rc)
                return fail_event(fsm, res, rc);
        }
        if (db_exec(fsm, S_MIG_PRUNE, "i", (int64_t)MIGRATION_HISTORY) != 0)
            return fail_internal(fsm, res);
    }
    return result_object(fsm, res, S_MIG_JSON, migration_json, NULL, id);
}

/*
 * Cluster-wide settings that apply must know, so they come through the log
 * (the leader proposes its configured values when they differ from these):
 * events_retention, the number of events kept.
 */
static int cmd_settings(struct mgr_fsm *fsm, const json_t *body, struct mgr_fsm_result *res)
{
    if (has(body, "events_retention")) {
        int64_t keep = get_int(body, "events_retention", 0);
        int64_t last = fsm->meta[META_NEXT_EVENT_ID] - 1;
        if (keep != fsm->meta[META_EVENTS_RETENTION]) {
            fsm->meta[META_EVENTS_RETENTION] = keep;
            if (last > keep) {
                if (db_exec(fsm, S_EV_PRUNE, "i", last - keep) != 0)
                    return fail_internal(fsm, res);
                touch(fsm, MGR_T_EVENTS);
            }
        }
    }
    res->object = json_pack("{s:I}", "events_retention",
                            (json_int_t)fsm->meta[META_EVENTS_RETENTION]);
    return res->object ? 0 : fail_nomem(res);
}

typedef int (*cmd_fn)(struct mgr_fsm *fsm, const json_t *body, struct mgr_fsm_result *res);

static const cmd_fn command_handlers[MGR_CMD_TYPE_MAX + 1] = {
    [MGR_CMD_MEMBER_SET] = cmd_member_set,
    [MGR_CMD_MEMBER_DEL] = cmd_member_del,
    [MGR_CMD_NODE_REGISTER] = cmd_node_register,
    [MGR_CMD_NODE_STATE] = cmd_node_state,
    [MGR_CMD_LOAD_SUMMARY] = cmd_load_summary,
    [MGR_CMD_ENDPOINT_CREATE] = cmd_endpoint_create,
    [MGR_CMD_ENDPOINT_UPDATE] = cmd_endpoint_update,
    [MGR_CMD_ENDPOINT_DELETE] = cmd_endpoint_delete,
    [MGR_CMD_MIGRATION_CREATE] = cmd_migration_create,
    [MGR_CMD_MIGRATION_UPDATE] = cmd_migration_update,
    [MGR_CMD_SETTINGS] = cmd_settings,
};

/* ======================================================================
 * Apply
 * ====================================================================== */

/* Write the meta values that differ from SAVED. */
static int meta_store(struct mgr_fsm *fsm, const int64_t *saved)
{
    for (int i = 0; i < META_COUNT; i++) {
        if (fsm->meta[i] == saved[i])
            continue;
        if (db_exec(fsm, S_META_SET, "ti", meta_keys[i], fsm->meta[i]) != 0)
            return DVS_EINTERNAL;
    }
    return 0;
}

static int meta_load(struct mgr_fsm *fsm)
{
    int64_t meta[META_COUNT];
    bool seen[META_COUNT] = {false};
    sqlite3_stmt *s = db_stmt(fsm, S_META_ALL, NULL);
    if (!s)
        return DVS_EINTERNAL;
    int rc;
    while ((rc = db_step(s)) == 1) {
        const char *key = (const char *)sqlite3_column_text(s, 0);
        if (!key) {
            /* The key is TEXT NOT NULL: NULL here means out of memory. */
            sqlite3_reset(s);
            return DVS_EINTERNAL;
        }
        for (int i = 0; i < META_COUNT; i++) {
            if (strcmp(key, meta_keys[i]) == 0) {
                meta[i] = col_int(s, 1);
                seen[i] = true;
            }
        }
    }
    if (rc < 0)
        return rc;
    for (int i = 0; i < META_COUNT; i++)
        if (!seen[i] || meta[i] < 0)
            return DVS_EPROTO;
    memcpy(fsm->meta, meta, sizeof(meta));
    return 0;
}

/* 1 and RES filled from the recorded result of REQUEST_ID, 0 if unknown, or < 0. */
static int request_lookup(struct mgr_fsm *fsm, uint64_t request_id, struct mgr_fsm_result *res)
{
    sqlite3_stmt *s = db_stmt(fsm, S_REQ_GET, "i", (int64_t)request_id);
    if (!s)
        return DVS_EINTERNAL;
    int rc = db_step(s);
    if (rc != 1)
        return rc;
    res->code = (int)col_int(s, 0);
    col_text(s, 1, res->msg, sizeof(res->msg));
    col_text(s, 2, res->field, sizeof(res->field));
    sqlite3_reset(s);
    return 1;
}

/* Remember the outcome of REQUEST_ID, forgetting the oldest beyond the limit. */
static int request_record(struct mgr_fsm *fsm, uint64_t request_id,
                          const struct mgr_fsm_result *res)
{
    int64_t seq = ++fsm->meta[META_REQUEST_SEQ];
    if (db_exec(fsm, S_REQ_PUT, "iiitt", (int64_t)request_id, seq, (int64_t)res->code,
                res->msg, res->field) != 0)
        return DVS_EINTERNAL;
    if (seq > MGR_FSM_REQUEST_MEMORY &&
        db_exec(fsm, S_REQ_PRUNE, "i", seq - MGR_FSM_REQUEST_MEMORY) != 0)
        return DVS_EINTERNAL;
    return 0;
}

static void notify(struct mgr_fsm *fsm, uint64_t request_id, struct mgr_fsm_result *res,
                   unsigned changed)
{
    if (fsm->on_result)
        fsm->on_result(fsm->cb_data, request_id, res);
    if (changed && fsm->on_change)
        fsm->on_change(fsm->cb_data, changed, (uint64_t)fsm->meta[META_INDEX]);
}

/*
 * The database itself failed (out of memory, most likely). Nothing of the
 * command can be trusted, so all of it is rolled back; the index is still
 * advanced, in a transaction of its own, to keep counting entries.
 */
static int apply_internal_failure(struct mgr_fsm *fsm, const int64_t *saved, uint64_t request_id,
                                  struct mgr_fsm_result *res)
{
    char msg[sizeof(res->msg)];
    snprintf(msg, sizeof(msg), "internal error in the manager's database: %s",
             sqlite3_errmsg(fsm->db));
    if (!sqlite3_get_autocommit(fsm->db))
        db_exec(fsm, S_ROLLBACK, NULL);
    memcpy(fsm->meta, saved, sizeof(fsm->meta));
    if (db_exec(fsm, S_BEGIN, NULL) == 0) {
        fsm->meta[META_INDEX]++;
        if (meta_store(fsm, saved) != 0 || db_exec(fsm, S_COMMIT, NULL) != 0) {
            db_exec(fsm, S_ROLLBACK, NULL);
            memcpy(fsm->meta, saved, sizeof(fsm->meta));
        }
    }
    json_decref(res->object);
    result_init(res);
    fail(res, DVS_EINTERNAL, NULL, "%s", msg);
    notify(fsm, request_id, res, 0);
    return res->code;
}

/* Validate and run CMD; its writes are inside the caller's savepoint. */
static int run_command(struct mgr_fsm *fsm, const struct mgr_cmd *cmd,
                       struct mgr_fsm_result *res)
{
    if (cmd->type == 0 || cmd->type > MGR_CMD_TYPE_MAX)
        return fail(res, DVS_EBADREQUEST, NULL, "unknown command type %u (expected 1..%d)",
                    cmd->type, MGR_CMD_TYPE_MAX);
    int rc = check_fields(cmd->body, command_fields[cmd->type], "",
                          mgr_cmd_type_name(cmd->type), res);
    if (rc)
        return rc;
    return command_handlers[cmd->type](fsm, cmd->body, res);
}

int mgr_fsm_apply(struct mgr_fsm *fsm, const struct mgr_cmd *cmd,
                  struct mgr_fsm_result *ret_res)
{
    struct mgr_fsm_result *res = ret_res;
    int64_t saved[META_COUNT];
    memcpy(saved, fsm->meta, sizeof(saved));
    result_init(res);

    if (db_exec(fsm, S_BEGIN, NULL) != 0)
        return apply_internal_failure(fsm, saved, cmd->request_id, res);
    fsm->meta[META_INDEX]++;
    fsm->now = cmd->time_ms;
    fsm->changed = 0;

    /* A retry of a command already applied (RAFT.md item 3) gets the first
     * outcome and changes nothing. */
    int rc = cmd->request_id ? request_lookup(fsm, cmd->request_id, res) : 0;
    if (rc < 0)
        return apply_internal_failure(fsm, saved, cmd->request_id, res);

    if (rc == 0) {
        if (db_exec(fsm, S_SAVEPOINT, NULL) != 0)
            return apply_internal_failure(fsm, saved, cmd->request_id, res);
        rc = run_command(fsm, cmd, res);
        if (rc != 0) {
            /* Undo every write of the command, and its counters; only the
             * index advance survives. */
            if (db_exec(fsm, S_ROLLBACK_TO, NULL) != 0)
                return apply_internal_failure(fsm, saved, cmd->request_id, res);
            int64_t index = fsm->meta[META_INDEX];
            memcpy(fsm->meta, saved, sizeof(fsm->meta));
            fsm->meta[META_INDEX] = index;
            fsm->changed = 0;
            json_decref(res->object);
            res->object = NULL;
        }
        if (db_exec(fsm, S_RELEASE, NULL) != 0)
            return apply_internal_failure(fsm, saved, cmd->request_id, res);
        /*
         * Internal failures are not recorded: they are not the command's
         * fault and not deterministic, so a retry deserves a fresh try.
         */
        if (cmd->request_id && res->code != DVS_EINTERNAL &&
            request_record(fsm, cmd->request_id, res) != 0)
            return apply_internal_failure(fsm, saved, cmd->request_id, res);
    }

    if (meta_store(fsm, saved) != 0 || db_exec(fsm, S_COMMIT, NULL) != 0)
        return apply_internal_failure(fsm, saved, cmd->request_id, res);

    notify(fsm, cmd->request_id, res, fsm->changed);
    return res->code;
}

/* ======================================================================
 * Open, close, schema
 * ====================================================================== */

static void finalize_statements(struct mgr_fsm *fsm)
{
    for (int i = 0; i < S_COUNT; i++) {
        sqlite3_finalize(fsm->stmt[i]);
        fsm->stmt[i] = NULL;
    }
}

/*
 * Settings of every connection: defensive mode (no writable schema, no
 * corrupting pragmas), and no triggers or views, which the schema does not
 * use and which a crafted snapshot could otherwise smuggle in.
 */
static int configure_db(sqlite3 *db)
{
    int rc = sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    return rc == SQLITE_OK ? 0 : DVS_EINTERNAL;
}

static int open_memory_db(sqlite3 **ret_db)
{
    sqlite3 *db = NULL;
    /* NOMUTEX: the FSM lives on the loop thread only (fsm.h), and SQLite's
     * per-call locking is a measurable part of a small command's cost. */
    int rc = sqlite3_open_v2(":memory:", &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        return rc == SQLITE_NOMEM ? -ENOMEM : DVS_EINTERNAL;
    }
    if (configure_db(db) != 0) {
        sqlite3_close(db);
        return DVS_EINTERNAL;
    }
    *ret_db = db;
    return 0;
}

/* The text of every schema object, to compare a snapshot's schema with ours. */
static int schema_signature(sqlite3 *db, char **ret_sig)
{
    sqlite3_stmt *s = NULL;
    sqlite3_str *str = sqlite3_str_new(db);
    int rc = sqlite3_prepare_v2(db, stmt_sql[S_SCHEMA], -1, &s, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        for (int i = 0; i < 4 && rc == SQLITE_OK; i++) {
            /* Every column is text (coalesce): NULL means out of memory. */
            const unsigned char *t = sqlite3_column_text(s, i);
            if (t)
                sqlite3_str_appendf(str, "%s\x1f", (const char *)t);
            else
                rc = SQLITE_NOMEM;
        }
    }
    sqlite3_finalize(s);
    char *sig = sqlite3_str_finish(str);
    if (rc != SQLITE_DONE || !sig) {
        sqlite3_free(sig);
        return rc == SQLITE_NOMEM || (rc == SQLITE_DONE && !sig) ? -ENOMEM : DVS_EPROTO;
    }
    *ret_sig = sig;
    return 0;
}

/*
 * Schema changes since version 1, one statement per version: upgrades[v - 1]
 * takes a database from version v to v + 1. A new database is built the same
 * way (version 1, then every upgrade), so that it and an upgraded snapshot
 * have the very same schema text, which restore compares.
 */
static const char *const schema_upgrades[MGR_FSM_SCHEMA_VERSION - 1] = {
    /* 1 -> 2 (events and stats tables, meta rows) is upgrade_v1: new
     * databases get those tables with schema_sql. */
    [0] = NULL,
    /* 2 -> 3: DESIGN.md §6, per-endpoint opt-out of automatic moves; and
     * docs/security.md, the per-migration transfer secret (64 hex digits),
     * shown to agents only (mgr_fsm_orders), dropped once the migration ends. */
    [1] = "ALTER TABLE endpoints ADD COLUMN auto_migrate INTEGER NOT NULL DEFAULT 1;"
          "ALTER TABLE migrations ADD COLUMN transfer_secret TEXT",
};

/* Bring DB from schema VERSION to MGR_FSM_SCHEMA_VERSION. An SQLite code. */
static int upgrade_schema(sqlite3 *db, long version)
{
    char sql[64];
    int rc = SQLITE_OK;
    for (long v = version; v < MGR_FSM_SCHEMA_VERSION && rc == SQLITE_OK; v++)
        if (schema_upgrades[v - 1])
            rc = sqlite3_exec(db, schema_upgrades[v - 1], NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MGR_FSM_SCHEMA_VERSION);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    return rc;
}

static int create_schema(sqlite3 *db)
{
    char sql[1024];
    int rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL); /* version 2 */
    if (rc == SQLITE_OK)
        rc = upgrade_schema(db, 2);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MGR_FSM_SCHEMA_VERSION);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    for (int i = 0; i < META_COUNT && rc == SQLITE_OK; i++) {
        snprintf(sql, sizeof(sql), "INSERT INTO meta(key, value) VALUES ('%s', %lld)",
                 meta_keys[i], (long long)meta_initial(i));
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        return 0;
    return rc == SQLITE_NOMEM ? -ENOMEM : DVS_EINTERNAL;
}

static int fsm_raft_apply(struct raft_fsm *rfsm, const struct raft_buffer *buf, void **result);
static int fsm_raft_snapshot(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
                            unsigned *n_bufs);
static int fsm_raft_snapshot_finalize(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
                                     unsigned *n_bufs);
static int fsm_raft_restore(struct raft_fsm *rfsm, struct raft_buffer *buf);

int mgr_fsm_open(struct mgr_fsm **ret_fsm)
{
    struct mgr_fsm *fsm = calloc(1, sizeof(*fsm));
    if (!fsm)
        return -ENOMEM;
    int rv = open_memory_db(&fsm->db);
    if (rv)
        goto free_fsm;
    rv = create_schema(fsm->db);
    if (rv)
        goto close_db;
    rv = schema_signature(fsm->db, &fsm->schema_signature);
    if (rv)
        goto close_db;
    rv = meta_load(fsm);
    if (rv) {
        rv = DVS_EINTERNAL;
        goto free_signature;
    }

    fsm->raft.version = 2;
    fsm->raft.data = fsm;
    fsm->raft.apply = fsm_raft_apply;
    fsm->raft.snapshot = fsm_raft_snapshot;
    fsm->raft.restore = fsm_raft_restore;
    fsm->raft.snapshot_finalize = fsm_raft_snapshot_finalize;
    *ret_fsm = fsm;
    return 0;

free_signature:
    sqlite3_free(fsm->schema_signature);
close_db:
    finalize_statements(fsm);
    sqlite3_close(fsm->db);
free_fsm:
    free(fsm);
    return rv;
}

void mgr_fsm_close(struct mgr_fsm *fsm)
{
    if (!fsm)
        return;
    finalize_statements(fsm);
    sqlite3_close(fsm->db);
    sqlite3_free(fsm->schema_signature);
    free(fsm);
}

void mgr_fsm_set_callbacks(struct mgr_fsm *fsm, mgr_fsm_result_cb on_result,
                           mgr_fsm_change_cb on_change, void *data)
{
    fsm->on_result = on_result;
    fsm->on_change = on_change;
    fsm->cb_data = data;
}

uint64_t mgr_fsm_index(const struct mgr_fsm *fsm)
{
    return (uint64_t)fsm->meta[META_INDEX];
}

uint64_t mgr_fsm_table_index(const struct mgr_fsm *fsm, unsigned tables)
{
    /* With several bits, the latest of them: what a watcher of all of them needs. */
    int64_t max = 0;
    for (unsigned i = 0; i < TABLE_COUNT; i++)
        if ((tables & (1u << i)) && fsm->meta[META_INDEX_MEMBERS + i] > max)
            max = fsm->meta[META_INDEX_MEMBERS + i];
    return (uint64_t)max;
}

/* ======================================================================
 * Snapshot and restore (RAFT.md item 5)
 * ====================================================================== */

int mgr_fsm_snapshot(struct mgr_fsm *fsm, void **ret_data, size_t *ret_len)
{
    sqlite3_int64 size = 0;
    unsigned char *data = sqlite3_serialize(fsm->db, "main", &size, 0);
    if (!data)
        return -ENOMEM;
    *ret_data = data;
    *ret_len = (size_t)size;
    return 0;
}

/* Single-value query on a candidate connection. */
static int query_text(sqlite3 *db, const char *sql, char *buf, size_t len)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            /* These pragmas never answer NULL: NULL means out of memory. */
            const unsigned char *t = sqlite3_column_text(s, 0);
            snprintf(buf, len, "%s", t ? (const char *)t : "");
            rc = t ? SQLITE_OK : SQLITE_NOMEM;
        }
    }
    sqlite3_finalize(s);
    return rc;
}

/*
 * A version 1 database (before the event log) becomes a version 2 one: the
 * new tables, empty, and the new meta rows at their initial values. The
 * signature check that follows still checks everything else. Only the rows
 * missing are added, so a version 1 database with a doctored meta table
 * still fails that check.
 */
static int upgrade_v1(sqlite3 *db)
{
    static const int added[] = {META_INDEX_EVENTS, META_NEXT_EVENT_ID,
                                META_EVENTS_RETENTION};
    char sql[256];
    int rc = sqlite3_exec(db, "BEGIN;" SCHEMA_V2_SQL, NULL, NULL, NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof(added) / sizeof(added[0]); i++) {
        snprintf(sql, sizeof(sql), "INSERT INTO meta(key, value) VALUES ('%s', %lld)",
                 meta_keys[added[i]], (long long)meta_initial(added[i]));
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql), "PRAGMA user_version = 2; COMMIT");
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        return 0;
    int code = sqlite3_errcode(db);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc == SQLITE_NOMEM || code == SQLITE_NOMEM ? -ENOMEM : DVS_EPROTO;
}

/*
 * Is DB a database this code can run on? Integrity first (garbage fails
 * here), then the schema version, then every table, index and column
 * exactly as this version creates them, then the meta rows.
 */
static int check_candidate(struct mgr_fsm *fsm, sqlite3 *db)
{
    char text[64];
    int rv;
    /* Running out of memory is not the snapshot's fault: say which it is. */
    int rc = query_text(db, "PRAGMA quick_check", text, sizeof(text));
    if (rc == SQLITE_NOMEM)
        return -ENOMEM;
    if (rc != SQLITE_OK || strcmp(text, "ok") != 0)
        return DVS_EPROTO;
    rc = query_text(db, "PRAGMA user_version", text, sizeof(text));
    if (rc != SQLITE_OK)
        return rc == SQLITE_NOMEM ? -ENOMEM : DVS_EPROTO;
    long version = strtol(text, NULL, 10);
    if (version > MGR_FSM_SCHEMA_VERSION)
        return -EPROTONOSUPPORT;
    if (version == 1) {
        rv = upgrade_v1(db);
        if (rv)
            return rv;
        version = 2;
    }
    if (version < 2)
        return DVS_EPROTO;
    if (version < MGR_FSM_SCHEMA_VERSION) {
        /* A snapshot of an older version: upgraded like a new database. */
        rc = upgrade_schema(db, version);
        if (rc != SQLITE_OK)
            return rc == SQLITE_NOMEM ? -ENOMEM : DVS_EPROTO;
    }

    char *sig = NULL;
    rv = schema_signature(db, &sig);
    if (rv)
        return rv;
    bool same = strcmp(sig, fsm->schema_signature) == 0;
    sqlite3_free(sig);
    return same ? 0 : DVS_EPROTO;
}

int mgr_fsm_restore(struct mgr_fsm *fsm, const void *data, size_t len)
{
    if (!data || len == 0 || len > (size_t)INT64_MAX)
        return DVS_EPROTO;

    sqlite3 *db = NULL;
    int rv = open_memory_db(&db);
    if (rv)
        return rv;

    /* SQLite takes this copy over (FREEONCLOSE), also when it fails. */
    unsigned char *copy = sqlite3_malloc64(len);
    if (!copy) {
        rv = -ENOMEM;
        goto close_db;
    }
    memcpy(copy, data, len);
    int rc = sqlite3_deserialize(db, "main", copy, (sqlite3_int64)len, (sqlite3_int64)len,
                                 SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
    if (rc != SQLITE_OK) {
        /* It may answer SQLITE_ERROR with the connection's code NOMEM. */
        rv = rc == SQLITE_NOMEM || sqlite3_errcode(db) == SQLITE_NOMEM ? -ENOMEM : DVS_EPROTO;
        goto close_db;
    }
    rv = check_candidate(fsm, db);
    if (rv)
        goto close_db;

    /* Swap in the new connection. Statements belong to a connection: they
     * go, and are prepared again on the new one when next used. */
    sqlite3 *old_db = fsm->db;
    int64_t old_meta[META_COUNT];
    memcpy(old_meta, fsm->meta, sizeof(old_meta));
    finalize_statements(fsm);
    fsm->db = db;
    rv = meta_load(fsm);
    if (rv) {
        /* Back to the old state, which is intact. */
        finalize_statements(fsm);
        fsm->db = old_db;
        memcpy(fsm->meta, old_meta, sizeof(old_meta));
        rv = rv == DVS_EINTERNAL ? -ENOMEM : DVS_EPROTO;
        goto close_db;
    }
    sqlite3_close(old_db);

    /* Everything may have changed: wake every watcher. */
    if (fsm->on_change)
        fsm->on_change(fsm->cb_data, (1u << TABLE_COUNT) - 1, (uint64_t)fsm->meta[META_INDEX]);
    return 0;

close_db:
    sqlite3_close(db);
    return rv;
}

/* ======================================================================
 * struct raft_fsm (RAFT.md items 4 and 5)
 * ====================================================================== */

/* An entry that does not decode still counts in the index, like any command. */
static void apply_undecodable(struct mgr_fsm *fsm, const struct raft_buffer *buf, int code,
                              const char *err)
{
    struct mgr_fsm_result res;
    result_init(&res);
    uint64_t request_id = 0;
    const unsigned char *p = buf->base;
    /* The header may be sound even when the body is not: the proposer, if
     * it is waiting, should hear why. */
    if (p && buf->len >= 16 && p[0] == 'D' && p[1] == 'V' && p[2] == 'S' && p[3] == 'C')
        for (int i = 0; i < 8; i++)
            request_id |= (uint64_t)p[8 + i] << (8 * i);

    int64_t saved[META_COUNT];
    memcpy(saved, fsm->meta, sizeof(saved));
    if (db_exec(fsm, S_BEGIN, NULL) != 0) {
        apply_internal_failure(fsm, saved, request_id, &res);
        return;
    }
    fsm->meta[META_INDEX]++;
    if (meta_store(fsm, saved) != 0 || db_exec(fsm, S_COMMIT, NULL) != 0) {
        apply_internal_failure(fsm, saved, request_id, &res);
        return;
    }
    fail(&res, code, NULL, "undecodable log entry: %s", err);
    notify(fsm, request_id, &res, 0);
    mgr_fsm_result_clear(&res);
}

static int fsm_raft_apply(struct raft_fsm *rfsm, const struct raft_buffer *buf, void **result)
{
    struct mgr_fsm *fsm = rfsm->data;
    struct mgr_cmd cmd = {0};
    char err[200];
    *result = NULL;

    int rc = mgr_cmd_decode(buf->base, buf->len, &cmd, err, sizeof(err));
    if (rc != 0) {
        apply_undecodable(fsm, buf, rc, err);
        return 0;
    }
    struct mgr_fsm_result res;
    mgr_fsm_apply(fsm, &cmd, &res);
    mgr_fsm_result_clear(&res);
    mgr_cmd_clear(&cmd);
    /* Application errors travel through the result callback: a non-zero
     * return would make libraft 0.15 retry the entry forever (RAFT.md 4). */
    return 0;
}

static int fsm_raft_snapshot(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
                            unsigned *n_bufs)
{
    struct mgr_fsm *fsm = rfsm->data;
    struct raft_buffer *b = raft_malloc(sizeof(*b));
    if (!b)
        return RAFT_NOMEM;
    void *data;
    size_t len;
    if (mgr_fsm_snapshot(fsm, &data, &len) != 0) {
        raft_free(b);
        return RAFT_NOMEM;
    }
    b->base = data;
    b->len = len;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

/* With snapshot_finalize set, the buffers are ours to free (RAFT.md item 5). */
static int fsm_raft_snapshot_finalize(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
                                     unsigned *n_bufs)
{
    if (*bufs) {
        for (unsigned i = 0; i < *n_bufs; i++)
            sqlite3_free((*bufs)[i].base);
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_raft_restore(struct raft_fsm *rfsm, struct raft_buffer *buf)
{
    struct mgr_fsm *fsm = rfsm->data;
    int rv = mgr_fsm_restore(fsm, buf->base, buf->len);
    if (rv == -ENOMEM)
        return RAFT_NOMEM;
    if (rv)
        return RAFT_CORRUPT;
    /* On success the buffer is ours. */
    raft_free(buf->base);
    return 0;
}

struct raft_fsm *mgr_fsm_raft(struct mgr_fsm *fsm)
{
    return &fsm->raft;
}

/* ======================================================================
 * Queries (docs/api.md)
 * ====================================================================== */

json_t *mgr_fsm_members(struct mgr_fsm *fsm)
{
    return query_all(db_stmt(fsm, S_MEMBER_ALL, NULL), member_json);
}

json_t *mgr_fsm_member(struct mgr_fsm *fsm, const char *id)
{
    return query_one(db_stmt(fsm, S_MEMBER_GET, "t", id), member_json);
}

json_t *mgr_fsm_nodes(struct mgr_fsm *fsm)
{
    return query_all(db_stmt(fsm, S_NODE_JSON_ALL, NULL), node_json);
}

json_t *mgr_fsm_node(struct mgr_fsm *fsm, const char *id)
{
    return query_one(db_stmt(fsm, S_NODE_JSON, "t", id), node_json);
}

json_t *mgr_fsm_endpoints(struct mgr_fsm *fsm)
{
    return query_all(db_stmt(fsm, S_EP_JSON_ALL, NULL), endpoint_json);
}

json_t *mgr_fsm_endpoint(struct mgr_fsm *fsm, const char *name)
{
    return query_one(db_stmt(fsm, S_EP_JSON, "t", name), endpoint_json);
}

json_t *mgr_fsm_migrations(struct mgr_fsm *fsm)
{
    return query_all(db_stmt(fsm, S_MIG_JSON_ALL, NULL), migration_json);
}

json_t *mgr_fsm_migration(struct mgr_fsm *fsm, int64_t id)
{
    return query_one(db_stmt(fsm, S_MIG_JSON, "i", id), migration_json);
}

json_t *mgr_fsm_orders(struct mgr_fsm *fsm, const char *node)
{
    struct node_row n;
    if (!node || load_node(fsm, node, &n) != 1)
        return NULL;
    json_t *endpoints = query_all(db_stmt(fsm, S_EP_JSON_ON_NODE, "t", node), endpoint_json);
    json_t *migrations = query_all(db_stmt(fsm, S_MIG_JSON_OF_NODE_SECRET, "t", node),
                                   migration_json_secret);
    if (!endpoints || !migrations) {
        json_decref(endpoints);
        json_decref(migrations);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:o, s:o}", "node", n.id, "state", n.state, "endpoints",
                     endpoints, "migrations", migrations);
}

static int64_t count(struct mgr_fsm *fsm, enum stmt_id id, bool *ok)
{
    sqlite3_stmt *s = db_stmt(fsm, id, NULL);
    if (!s || db_step(s) != 1) {
        *ok = false;
        return 0;
    }
    int64_t n = col_int(s, 0);
    sqlite3_reset(s);
    return n;
}

json_t *mgr_fsm_counts(struct mgr_fsm *fsm)
{
    bool ok = true;
    int64_t members = count(fsm, S_MEMBER_COUNT, &ok);
    int64_t endpoints = count(fsm, S_EP_COUNT, &ok);
    int64_t active = count(fsm, S_MIG_ACTIVE_COUNT, &ok);
    /* Every state is listed, zeros included, so that metrics have all series. */
    json_t *states = json_object();
    for (const char *const *st = node_states; states && *st; st++)
        if (json_object_set_new(states, *st, json_integer(0)) != 0)
            ok = false;
    sqlite3_stmt *s = db_stmt(fsm, S_NODE_STATE_COUNTS, NULL);
    int rc = s ? 0 : DVS_EINTERNAL;
    while (s && states && (rc = db_step(s)) == 1)
        if (json_object_set_new(states, (const char *)sqlite3_column_text(s, 0),
                                json_integer(col_int(s, 1))) != 0)
            ok = false;
    if (!ok || !states || rc < 0) {
        if (s)
            sqlite3_reset(s);
        json_decref(states);
        return NULL;
    }
    return json_pack("{s:I, s:o, s:I, s:I}", "members", (json_int_t)members, "nodes", states,
                     "endpoints", (json_int_t)endpoints, "migrations_active",
                     (json_int_t)active);
}

/* Any row, column by column, with the column's own type. */
static json_t *raw_row_json(sqlite3_stmt *s)
{
    struct jb b = {json_object(), false};
    if (!b.obj)
        return NULL;
    for (int i = 0; i < sqlite3_column_count(s); i++) {
        json_t *v;
        switch (sqlite3_column_type(s, i)) {
        case SQLITE_INTEGER:
            v = json_integer(sqlite3_column_int64(s, i));
            break;
        case SQLITE_FLOAT:
            v = json_real(sqlite3_column_double(s, i));
            break;
        case SQLITE_TEXT:
            v = json_string((const char *)sqlite3_column_text(s, i));
            break;
        case SQLITE_NULL:
            v = json_null();
            break;
        default:
            v = NULL; /* no blobs in this schema */
        }
        jb_set(&b, sqlite3_column_name(s, i), v);
    }
    return jb_done(&b);
}

json_t *mgr_fsm_dump(struct mgr_fsm *fsm)
{
    json_t *dump = json_object();
    if (!dump)
        return NULL;
    for (size_t t = 0; t < sizeof(table_names) / sizeof(table_names[0]); t++) {
        char sql[96];
        sqlite3_stmt *s = NULL;
        /* Rows in key order, so that equal states dump equal. */
        snprintf(sql, sizeof(sql), "SELECT * FROM %s ORDER BY 1", table_names[t]);
        if (sqlite3_prepare_v2(fsm->db, sql, -1, &s, NULL) != SQLITE_OK)
            goto fail;
        json_t *rows = query_all(s, raw_row_json);
        sqlite3_finalize(s);
        if (!rows || json_object_set_new(dump, table_names[t], rows) != 0)
            goto fail;
    }
    char text[32];
    if (query_text(fsm->db, "PRAGMA user_version", text, sizeof(text)) != SQLITE_OK ||
        json_object_set_new(dump, "user_version", json_integer(strtol(text, NULL, 10))) != 0)
        goto fail;
    return dump;
fail:
    json_decref(dump);
    return NULL;
}

bool mgr_fsm_member_http_by_raft(struct mgr_fsm *fsm, const char *raft_addr, char *buf,
                                 size_t len, char *ret_id, size_t idlen)
{
    sqlite3_stmt *s = db_stmt(fsm, S_MEMBER_BY_RAFT, "t", raft_addr);
    if (!s || db_step(s) != 1)
        return false;
    const char *id = (const char *)sqlite3_column_text(s, 0);
    const char *http = (const char *)sqlite3_column_text(s, 1);
    /* A truncated address would send clients somewhere wrong: refuse instead. */
    bool ok = strlen(http) < len && (!ret_id || strlen(id) < idlen);
    if (ok) {
        memcpy(buf, http, strlen(http) + 1);
        if (ret_id)
            memcpy(ret_id, id, strlen(id) + 1);
    }
    sqlite3_reset(s);
    return ok;
}

/* ======================================================================
 * The event log and counters (fsm.h)
 * ====================================================================== */

/* EV_AFTER's columns. */
static json_t *event_json(sqlite3_stmt *s)
{
    json_t *ev = NULL;
    if (!col_null(s, 6)) {
        /* Written by event_add, so it parses; anything else is dropped. */
        ev = json_loads((const char *)sqlite3_column_text(s, 6), 0, NULL);
        if (ev && !json_is_object(ev)) {
            json_decref(ev);
            ev = NULL;
        }
    }
    if (!ev)
        ev = json_object();
    struct jb b = {ev, false};
    if (!b.obj)
        return NULL;
    jb_set(&b, "id", col_json_int(s, 0));
    jb_set(&b, "index", col_json_int(s, 1));
    jb_set(&b, "time", col_json_int(s, 2));
    jb_set(&b, "type", col_json_text(s, 3));
    jb_set(&b, "subject", col_json_text(s, 4));
    jb_set(&b, "message", col_json_text(s, 5));
    return jb_done(&b);
}

json_t *mgr_fsm_events(struct mgr_fsm *fsm, uint64_t after, unsigned limit, bool *ret_more)
{
    assert(limit > 0);
    if (after > (uint64_t)INT64_MAX)
        after = (uint64_t)INT64_MAX;
    json_t *arr = query_all(db_stmt(fsm, S_EV_AFTER, "ii", (int64_t)after, (int64_t)limit - 1),
                            event_json);
    if (arr && ret_more) {
        size_t n = json_array_size(arr);
        int64_t last = n ? json_integer_value(
                               json_object_get(json_array_get(arr, n - 1), "index"))
                         : (int64_t)after;
        sqlite3_stmt *s = db_stmt(fsm, S_EV_MORE, "i", last);
        int rc = s ? db_step(s) : DVS_EINTERNAL;
        if (rc == 1)
            sqlite3_reset(s);
        if (rc < 0) {
            json_decref(arr);
            return NULL;
        }
        *ret_more = rc == 1;
    }
    return arr;
}

uint64_t mgr_fsm_events_oldest(struct mgr_fsm *fsm, bool *ret_pruned)
{
    sqlite3_stmt *s = db_stmt(fsm, S_EV_OLDEST, NULL);
    int64_t id = fsm->meta[META_NEXT_EVENT_ID], idx = 0;
    if (s && db_step(s) == 1) {
        idx = col_int(s, 0);
        id = col_int(s, 1);
        sqlite3_reset(s);
    }
    /* Ids are consecutive from 1: a first one above 1 means some went. */
    if (ret_pruned)
        *ret_pruned = id > 1;
    return (uint64_t)idx;
}

int64_t mgr_fsm_events_retention(const struct mgr_fsm *fsm)
{
    return fsm->meta[META_EVENTS_RETENTION];
}

json_t *mgr_fsm_stats(struct mgr_fsm *fsm)
{
    sqlite3_stmt *s = db_stmt(fsm, S_STAT_ALL, NULL);
    json_t *obj = json_object();
    if (!s || !obj) {
        json_decref(obj);
        return NULL;
    }
    int rc;
    while ((rc = db_step(s)) == 1) {
        char key[256];
        snprintf(key, sizeof(key), "%s|%s", (const char *)sqlite3_column_text(s, 0),
                 (const char *)sqlite3_column_text(s, 1));
        if (json_object_set_new(obj, key, json_integer(col_int(s, 2))) != 0) {
            sqlite3_reset(s);
            rc = -ENOMEM;
            break;
        }
    }
    if (rc < 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}
