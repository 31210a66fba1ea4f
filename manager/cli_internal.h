/*
 * Internals of the operator CLI (cli.h), shared by cli.c and the command
 * files cli_*.c.
 *
 * After tmux, every command is one declarative entry, struct cli_cmd, in the
 * file of its command group. The entry's positional arguments (struct
 * cli_arg) and flags (an opt_def table, common/opts.h) drive parsing,
 * validation and --help in cli.c, so a command's exec function starts with
 * checked input and only talks to the manager.
 *
 * Return values: functions here that run or report part of a command return
 * an exit code (enum cli_exit, CLI_OK = 0) instead of a negative errno. A
 * failure in the CLI has one consumer, the process exit status, and its
 * message is printed where the failure is understood, so the code is all
 * that needs to travel back up.
 */
#ifndef DVS_MANAGER_CLI_INTERNAL_H
#define DVS_MANAGER_CLI_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "api/client.h"
#include "common/opts.h"
#include "manager/cli.h"

#define CLI_PROG "dvs-manager"

/* ------------------------------------------------------------------------ */
/* The command table                                                          */
/* ------------------------------------------------------------------------ */

/* What a positional argument must look like; checked before any request. */
enum cli_arg_type {
    CLI_ARG_NAME,     /* node id, endpoint name or member id (docs/api.md, "Names") */
    CLI_ARG_ID,       /* a numeric object id: a decimal integer >= 1 */
    CLI_ARG_RAFTADDR, /* A.B.C.D:PORT (libraft's TCP transport wants IPv4) */
    CLI_ARG_HOSTPORT, /* HOST:PORT */
};

/* One positional argument. Every positional argument is required. */
struct cli_arg {
    const char *metavar; /* as shown in the synopsis: "NODE"; NULL ends a list */
    enum cli_arg_type type;
    const char *help;    /* for --help: "the node's id" */
};

struct cli_ctx;
typedef int (*cli_exec_fn)(struct cli_ctx *ctx);

/*
 * A command. A group ("node") has SUB and nothing else; a leaf ("node show")
 * has EXEC and optionally ARGS and OPTS. Each command file exports one entry
 * (cli_node_cmd, ...), which cli.c lists in its top-level table.
 */
struct cli_cmd {
    const char *name;
    const char *summary;     /* one line, shown in the parent's command list */
    const char *description; /* paragraph for the command's own --help, or NULL */

    const struct cli_cmd *const *sub; /* NULL-terminated; groups only */

    const struct cli_arg *args; /* ends at metavar == NULL; or NULL for none */
    const struct opt_def *opts; /* flags (common/opts.h); NULL-terminated; or NULL */
    size_t opts_size;           /* size of the struct OPTS write into */
    cli_exec_fn exec;
};

/* Everything a leaf's exec function gets: validated input and a client. */
struct cli_ctx {
    const struct cli_cmd *cmd;
    const char *path;    /* the command words, "endpoint create", for messages */
    char **args;         /* positional arguments, validated against cmd->args */
    int nargs;
    void *opts;          /* the struct cmd->opts wrote into (defaults applied) */
    uint32_t opts_given; /* bit i set: cmd->opts[i] appeared on the command line */
    bool json;           /* --json */
    int64_t timeout_ms;  /* --timeout: the budget of each request, retries included */
    struct api_client *client;
};

/* The command groups, one per file. */
extern const struct cli_cmd cli_status_cmd;    /* cli_status.c */
extern const struct cli_cmd cli_plan_cmd;      /* cli_status.c */
extern const struct cli_cmd cli_member_cmd;    /* cli_member.c */
extern const struct cli_cmd cli_node_cmd;      /* cli_node.c */
extern const struct cli_cmd cli_endpoint_cmd;  /* cli_endpoint.c */
extern const struct cli_cmd cli_migration_cmd; /* cli_migration.c */
extern const struct cli_cmd cli_events_cmd;    /* cli_events.c */

/* Was flag NAME (without "--") given on the command line of CTX's command? */
bool cli_opt_given(const struct cli_ctx *ctx, const char *name);

/* ------------------------------------------------------------------------ */
/* Messages                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Print "dvs-manager: MESSAGE" to stderr. Control characters (which could
 * come from a server's answer) are shown as '?'.
 */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A usage error in CTX's command: the message, the command's synopsis and a
 * pointer to its --help, on stderr. Returns CLI_EUSAGE.
 */
int cli_usage_error(const struct cli_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Check VALUE, given for WHAT ("--node"), against the name rules of
 * docs/api.md. Returns CLI_OK, or prints a usage error and returns CLI_EUSAGE.
 */
int cli_check_name(const struct cli_ctx *ctx, const char *what, const char *value);

/* ------------------------------------------------------------------------ */
/* Requests                                                                   */
/* ------------------------------------------------------------------------ */

/* The exit code for an HTTP status and the error "code" of its body (or NULL). */
int cli_exit_for_status(long status, const char *code);

/*
 * Send METHOD to the path made from PATH_FMT (BODY borrowed; NULL for none).
 * Returns CLI_OK with *RET filled when the manager answered 2xx. Otherwise
 * prints the server's "error" (or what went wrong in reaching it), leaves
 * *RET zeroed and returns the exit code. The caller clears *RET either way.
 * Every path component must already be URL-safe (validated names and ids).
 */
int cli_call(struct cli_ctx *ctx, const char *method, json_t *body, struct api_response *ret,
             const char *path_fmt, ...) __attribute__((format(printf, 5, 6)));

typedef int (*cli_render_fn)(struct cli_ctx *ctx, json_t *body);

/*
 * The common read: GET the path, then with --json print the answer as is,
 * otherwise hand its JSON body to RENDER. Returns an exit code.
 */
int cli_show(struct cli_ctx *ctx, cli_render_fn render, const char *path_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print an answer's JSON (indented by 2) or, if it was not JSON, its raw text. */
void cli_print_response(const struct api_response *r);
void cli_print_json(json_t *body);

/* Report an answer whose shape the CLI does not understand. Returns CLI_EFAIL. */
int cli_bad_answer(const char *what);

/* How long a blocking query may wait, so that it returns within --timeout. */
int64_t cli_watch_wait_ms(const struct cli_ctx *ctx);

/* The pause between reads when the server gives nothing to block on. */
#define CLI_POLL_MS 1000

/*
 * Was a blocking query sent at STARTED_MS (monotonic) answered well before
 * its wait? If so and nothing changed, the server does not block on that
 * route, and the caller pauses (cli_pause_ms) rather than spin.
 */
bool cli_watch_too_fast(const struct cli_ctx *ctx, int64_t started_ms);
void cli_pause_ms(int64_t ms);

/* ------------------------------------------------------------------------ */
/* Reading answers: tolerant of missing fields and of null                   */
/* ------------------------------------------------------------------------ */

/* The string at KEY, or NULL when absent, null or not a string. */
const char *cli_str(json_t *obj, const char *key);
/* Same, with DEFAULT in place of NULL. */
const char *cli_str_or(json_t *obj, const char *key, const char *dflt);
/* The number at KEY (integer or real). False when absent or not a number. */
bool cli_num(json_t *obj, const char *key, double *ret);
/* The integer at KEY. False when absent or not an integer. */
bool cli_int(json_t *obj, const char *key, int64_t *ret);

/*
 * Append to the string in BUF (LEN bytes, of which *POS are used), cutting
 * what does not fit; *POS never passes LEN - 1. Start with *POS = 0.
 */
void cli_appendf(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------------------ */
/* Formatting for humans: each writes BUF (at least CLI_CELL bytes) and       */
/* returns it; an absent field gives "-".                                     */
/* ------------------------------------------------------------------------ */

#define CLI_CELL 64

const char *cli_fmt_size(json_t *obj, const char *key, char *buf, size_t len);
const char *cli_fmt_cpu(json_t *obj, const char *key, char *buf, size_t len);
const char *cli_fmt_int(json_t *obj, const char *key, char *buf, size_t len);
/* A duration held in milliseconds: "350ms", "1.2s", "3m05s". */
const char *cli_fmt_ms(json_t *obj, const char *key, char *buf, size_t len);
/* How long ago a wall-clock time in milliseconds was: "3m05s ago". */
const char *cli_fmt_ago(json_t *obj, const char *key, char *buf, size_t len);
const char *cli_fmt_bool(json_t *obj, const char *key, char *buf, size_t len);

/*
 * "key: value" lines with the values aligned, as status and the show
 * commands print them. VALUE NULL prints "-".
 */
void cli_kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------ */
/* Tables                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * An aligned table: columns separated by two spaces, left-aligned, headers in
 * capitals. Cells are added left to right, a row wrapping after the last
 * column; each cell is copied.
 */
struct cli_table;

/* HEADERS is NULL-terminated and borrowed for the table's lifetime. */
struct cli_table *cli_table_new(const char *const *headers);
/* Add the next cell; NULL or "" shows as "-". */
void cli_table_add(struct cli_table *t, const char *cell);
void cli_table_addf(struct cli_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_table_print(const struct cli_table *t, FILE *out);
void cli_table_free(struct cli_table *t); /* accepts NULL */

/* ------------------------------------------------------------------------ */
/* Shared renderers                                                           */
/* ------------------------------------------------------------------------ */

/*
 * Print a list of scheduler decisions (GET /v1/plan, node drain --dry-run) as
 * a table with each decision's explanation; EMPTY_MSG when there are none.
 * Falls back to the indented JSON for an answer of an unknown shape.
 * cli_status.c.
 */
int cli_print_decisions(json_t *body, const char *empty_msg);
/* The "projection" array of a plan as a table; nothing when absent. */
void cli_print_projection(json_t *body);

/*
 * Follow the migration MIGRATION (the manager's object, borrowed) until it is
 * committed (CLI_OK) or aborted (CLI_EFAIL, with its error printed), showing
 * each phase; with --json, print only the final object. cli_migration.c.
 */
int cli_migration_follow(struct cli_ctx *ctx, json_t *migration);

#endif
