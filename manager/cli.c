/*
 * The operator CLI of dvs-manager (DESIGN.md §7): dispatch, global flags,
 * --help, and the helpers every command file shares (requests and their exit
 * codes, --json printing, tables).
 *
 * A command line is read in one pass. Words walk down the command tree
 * ("endpoint" then "create"); once a leaf is reached the remaining words are
 * its positional arguments. Flags may stand anywhere: the global ones
 * (--manager, --json, --timeout, --help, --version) at any point, a command's
 * own flags after the words that name the command. Usage errors are recorded
 * and reported after the pass, so that "--help" wins over a bad flag
 * wherever it stands. Nothing is sent to the manager before the whole line
 * has been validated.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "dvs.h"
#include "manager/cli_internal.h"

#define CLI_DEFAULT_MANAGER "http://127.0.0.1:7001"

/* ------------------------------------------------------------------------ */
/* The command tree and the global flags                                      */
/* ------------------------------------------------------------------------ */

static const struct cli_cmd *const cli_commands[] = {
    &cli_status_cmd,   &cli_plan_cmd,      &cli_member_cmd, &cli_node_cmd,
    &cli_endpoint_cmd, &cli_migration_cmd, &cli_events_cmd, NULL,
};

static const struct cli_cmd cli_root = {
    .name = NULL,
    .summary = "operate a DVS cluster through its manager's REST API",
    .sub = cli_commands,
};

struct cli_globals {
    char *manager;
    char *token_file;
    char *ca_file;
    bool json;
    int64_t timeout_ms;
    bool help;
    bool version;
};

#define GOFF(f) offsetof(struct cli_globals, f)

static const struct opt_def cli_global_opts[] = {
    {"manager", OPT_STRING, NULL, 0, 0, GOFF(manager), "URL[,URL]",
     "members to ask (default: $DVS_MANAGER, else " CLI_DEFAULT_MANAGER ")", false,
     true},
    {"token-file", OPT_STRING, NULL, 0, 0, GOFF(token_file), "FILE",
     "send the token in FILE (default: $DVS_TOKEN; see docs/security.md)", false, true},
    {"ca-file", OPT_STRING, NULL, 0, 0, GOFF(ca_file), "FILE",
     "verify https:// members against these PEM CA certificates (default: $DVS_CA_FILE, "
     "else the system's)",
     false, true},
    {"json", OPT_BOOL, NULL, 0, 0, GOFF(json), NULL,
     "print the manager's JSON (indented), not tables", false, true},
    {"timeout", OPT_DURATION, "10s", 100, 600000, GOFF(timeout_ms), "DURATION",
     "limit per request, retries included", false, true},
    {"help", OPT_BOOL, NULL, 0, 0, GOFF(help), NULL, "show help (-h; also: help COMMAND)",
     false, true},
    {"version", OPT_BOOL, NULL, 0, 0, GOFF(version), NULL, "print the version", false, true},
    {NULL},
};

/* ------------------------------------------------------------------------ */
/* Messages                                                                   */
/* ------------------------------------------------------------------------ */

/* Replace control characters in place, so that text from a server cannot
 * move the cursor or break a table's alignment. */
static void cli_sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            *s = '?';
}

static void cli_verror(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    cli_sanitize(msg);
    fprintf(stderr, "%s: %s\n", CLI_PROG, msg);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_verror(fmt, ap);
    va_end(ap);
}

static bool cli_is_group(const struct cli_cmd *cmd)
{
    return cmd->sub != NULL;
}

static bool cli_has_optional_opts(const struct cli_cmd *cmd)
{
    for (const struct opt_def *d = cmd->opts; d && d->name; d++)
        if (!d->required)
            return true;
    return false;
}

void cli_appendf(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    assert(len > 0 && *pos < len);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len - 1;
}

/* "NAME --command \"PATH ARGS\" [OPTIONS]": the words after the command's name. */
static void cli_synopsis_args(const struct cli_cmd *cmd, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    if (cli_is_group(cmd)) {
        cli_appendf(buf, len, &n, "COMMAND [ARGS] [OPTIONS]");
        return;
    }
    for (const struct cli_arg *a = cmd->args; a && a->metavar; a++)
        cli_appendf(buf, len, &n, "%s%s", n ? " " : "", a->metavar);
    for (const struct opt_def *d = cmd->opts; d && d->name; d++)
        if (d->required)
            cli_appendf(buf, len, &n, "%s--%s %s", n ? " " : "", d->name,
                        d->metavar ? d->metavar : "VALUE");
    if (cli_has_optional_opts(cmd))
        cli_appendf(buf, len, &n, "%s[OPTIONS]", n ? " " : "");
}

int cli_usage_error(const struct cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_verror(fmt, ap);
    va_end(ap);
    char syn[256];
    cli_synopsis_args(ctx->cmd, syn, sizeof(syn));
    fprintf(stderr, "Usage: %s %s%s%s\nTry '%s %s --help' for more information.\n", CLI_PROG,
            ctx->path, *syn ? " " : "", syn, CLI_PROG, ctx->path);
    return CLI_EUSAGE;
}

/* docs/api.md: 1-63 characters of [a-z0-9_.-], starting with a letter or digit. */
static bool cli_valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63)
        return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

int cli_check_name(const struct cli_ctx *ctx, const char *what, const char *value)
{
    if (cli_valid_name(value))
        return CLI_OK;
    return cli_usage_error(ctx,
                           "invalid %s \"%s\": expected 1-63 characters of a-z, 0-9, '_', '.' "
                           "and '-', starting with a letter or digit",
                           what, value);
}

static int cli_check_arg(const struct cli_ctx *ctx, const struct cli_arg *a, const char *v)
{
    char host[256];
    uint16_t port;
    int64_t id;

    switch (a->type) {
    case CLI_ARG_NAME:
        return cli_check_name(ctx, a->metavar, v);
    case CLI_ARG_ID:
        if (parse_int64(v, &id) == 0 && id >= 1)
            return CLI_OK;
        return cli_usage_error(ctx, "invalid %s \"%s\": expected a number (1, 2, ...)",
                               a->metavar, v);
    case CLI_ARG_RAFTADDR:
        if (parse_hostport(v, true, host, sizeof(host), &port) == 0)
            return CLI_OK;
        return cli_usage_error(ctx,
                               "invalid %s \"%s\": expected an IPv4 address and port "
                               "(A.B.C.D:PORT)",
                               a->metavar, v);
    case CLI_ARG_HOSTPORT:
        if (parse_hostport(v, false, host, sizeof(host), &port) == 0)
            return CLI_OK;
        return cli_usage_error(ctx, "invalid %s \"%s\": expected HOST:PORT", a->metavar, v);
    }
    return CLI_EUSAGE;
}

bool cli_opt_given(const struct cli_ctx *ctx, const char *name)
{
    const struct opt_def *defs = ctx->cmd->opts;
    for (unsigned i = 0; defs && defs[i].name; i++)
        if (strcmp(defs[i].name, name) == 0)
            return (ctx->opts_given >> i) & 1;
    return false;
}

/* ------------------------------------------------------------------------ */
/* Requests and exit codes                                                   */
/* ------------------------------------------------------------------------ */

int cli_exit_for_status(long status, const char *code)
{
    if (status >= 200 && status < 300)
        return CLI_OK;
    if (status == 404)
        return CLI_ENOTFOUND;
    if (status == 409)
        return CLI_ECONFLICT;
    /*
     * 503 means "no leader" (retry later, another member may answer) except
     * for no_space, which is the cluster's answer to the request itself and
     * would not change by asking again.
     */
    if (status == 503 && !(code && strcmp(code, "no_space") == 0))
        return CLI_EUNAVAILABLE;
    return CLI_EFAIL;
}

/* A non-2xx answer: the server's message, and the exit code it maps to. */
static int cli_report_http_error(const struct api_response *r)
{
    const char *msg = r->body ? cli_str(r->body, "error") : NULL;
    const char *code = r->body ? cli_str(r->body, "code") : NULL;

    if (msg && *msg) {
        cli_error("%s", msg);
        if (r->status == 401)
            fprintf(stderr, "%s: this manager needs a token: give --token-file FILE or set "
                            "DVS_TOKEN\n",
                    CLI_PROG);
        else if (r->status == 403)
            fprintf(stderr, "%s: the token given is refused for this request (is it the "
                            "management token?)\n",
                    CLI_PROG);
    } else {
        /* No JSON error: show the start of whatever came back. */
        char snippet[160] = "";
        if (r->raw && r->raw_len > 0) {
            snprintf(snippet, sizeof(snippet), ": %.*s",
                     (int)(r->raw_len < 120 ? r->raw_len : 120), r->raw);
            char *nl = strchr(snippet, '\n');
            if (nl)
                *nl = '\0';
        }
        cli_error("the manager at %s answered HTTP %ld%s", r->url[0] ? r->url : "?",
                  r->status, snippet);
    }
    return cli_exit_for_status(r->status, code);
}

/* The client could not get an answer at all (api/client.h). */
static int cli_report_client_error(const struct cli_ctx *ctx, int rv, const char *err)
{
    char budget[32];
    format_duration(ctx->timeout_ms, budget, sizeof(budget));
    const char *sep = err[0] ? ": " : "";

    switch (rv) {
    case DVS_EUNAVAILABLE:
        cli_error("no manager reachable%s%s", sep, err);
        return CLI_EUNAVAILABLE;
    case DVS_ENOLEADER:
        cli_error("the manager cluster has no leader%s%s", sep, err);
        return CLI_EUNAVAILABLE;
    case DVS_ETIMEOUT:
        cli_error("no answer from the manager within %s (--timeout)%s%s", budget, sep, err);
        return CLI_EUNAVAILABLE;
    default:
        cli_error("request failed: %s%s%s", dvs_strerror(rv), sep, err);
        return CLI_EFAIL;
    }
}

static int cli_vcall(struct cli_ctx *ctx, const char *method, json_t *body,
                     struct api_response *ret, const char *path_fmt, va_list ap)
{
    char path[512];
    char err[1024] = "";

    memset(ret, 0, sizeof(*ret));
    int n = vsnprintf(path, sizeof(path), path_fmt, ap);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        cli_error("request path too long");
        return CLI_EFAIL;
    }
    int rv = api_client_request(ctx->client, method, path, body, ctx->timeout_ms, ret, err,
                                sizeof(err));
    if (rv != 0)
        return cli_report_client_error(ctx, rv, err);
    if (ret->status >= 200 && ret->status < 300)
        return CLI_OK;
    int code = cli_report_http_error(ret);
    api_response_clear(ret);
    memset(ret, 0, sizeof(*ret));
    return code;
}

int cli_call(struct cli_ctx *ctx, const char *method, json_t *body, struct api_response *ret,
             const char *path_fmt, ...)
{
    va_list ap;
    va_start(ap, path_fmt);
    int rv = cli_vcall(ctx, method, body, ret, path_fmt, ap);
    va_end(ap);
    return rv;
}

int cli_show(struct cli_ctx *ctx, cli_render_fn render, const char *path_fmt, ...)
{
    struct api_response r;
    va_list ap;
    va_start(ap, path_fmt);
    int rv = cli_vcall(ctx, "GET", NULL, &r, path_fmt, ap);
    va_end(ap);
    if (rv != CLI_OK)
        goto cleanup;
    if (ctx->json)
        cli_print_response(&r);
    else if (!r.body)
        rv = cli_bad_answer("the body is not JSON");
    else
        rv = render(ctx, r.body);
cleanup:
    api_response_clear(&r);
    return rv;
}

void cli_print_json(json_t *body)
{
    /* The default real precision (17 digits) reproduces the server's numbers. */
    json_dumpf(body, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
}

void cli_print_response(const struct api_response *r)
{
    if (r->body) {
        cli_print_json(r->body);
    } else if (r->raw && r->raw_len > 0) {
        fwrite(r->raw, 1, r->raw_len, stdout);
        if (r->raw[r->raw_len - 1] != '\n')
            fputc('\n', stdout);
    }
}

int cli_bad_answer(const char *what)
{
    cli_error("unexpected answer from the manager: %s", what);
    return CLI_EFAIL;
}

int64_t cli_watch_wait_ms(const struct cli_ctx *ctx)
{
    /* Leave a quarter of the request's budget for the answer to travel. */
    int64_t wait = ctx->timeout_ms - ctx->timeout_ms / 4;
    return wait > 0 ? wait : 1;
}

bool cli_watch_too_fast(const struct cli_ctx *ctx, int64_t started_ms)
{
    return now_mono_ms() - started_ms < cli_watch_wait_ms(ctx) / 2;
}

void cli_pause_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------------ */
/* Reading and formatting answers                                             */
/* ------------------------------------------------------------------------ */

const char *cli_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

const char *cli_str_or(json_t *obj, const char *key, const char *dflt)
{
    const char *s = cli_str(obj, key);
    return s ? s : dflt;
}

bool cli_num(json_t *obj, const char *key, double *ret)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        return false;
    *ret = json_number_value(v);
    return true;
}

bool cli_int(json_t *obj, const char *key, int64_t *ret)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return false;
    *ret = (int64_t)json_integer_value(v);
    return true;
}

const char *cli_fmt_size(json_t *obj, const char *key, char *buf, size_t len)
{
    double v;
    if (!cli_num(obj, key, &v) || v < 0)
        snprintf(buf, len, "-");
    else
        format_size((uint64_t)v, buf, len);
    return buf;
}

const char *cli_fmt_cpu(json_t *obj, const char *key, char *buf, size_t len)
{
    double v;
    if (!cli_num(obj, key, &v))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.3g", v);
    return buf;
}

const char *cli_fmt_int(json_t *obj, const char *key, char *buf, size_t len)
{
    int64_t v;
    if (!cli_int(obj, key, &v))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%lld", (long long)v);
    return buf;
}

const char *cli_fmt_ms(json_t *obj, const char *key, char *buf, size_t len)
{
    double v;
    if (!cli_num(obj, key, &v) || v < 0)
        snprintf(buf, len, "-");
    else
        format_duration((int64_t)v, buf, len);
    return buf;
}

const char *cli_fmt_ago(json_t *obj, const char *key, char *buf, size_t len)
{
    int64_t t;
    if (!cli_int(obj, key, &t) || t <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    /* Clocks of different machines disagree a little: never "-3ms ago". */
    int64_t age = now_wall_ms() - t;
    char d[32];
    format_duration(age > 0 ? age : 0, d, sizeof(d));
    snprintf(buf, len, "%s ago", d);
    return buf;
}

const char *cli_fmt_bool(json_t *obj, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(obj, key);
    snprintf(buf, len, "%s", json_is_boolean(v) ? (json_is_true(v) ? "yes" : "no") : "-");
    return buf;
}

void cli_kv(const char *key, const char *fmt, ...)
{
    char value[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof(value), fmt, ap);
    va_end(ap);
    cli_sanitize(value);
    char label[64];
    snprintf(label, sizeof(label), "%s:", key);
    printf("%-16s %s\n", label, value[0] ? value : "-");
}

/* ------------------------------------------------------------------------ */
/* Tables                                                                     */
/* ------------------------------------------------------------------------ */

struct cli_table {
    const char *const *headers;
    size_t ncols;
    char **cells; /* row-major, ncells of cap */
    size_t ncells, cap;
};

struct cli_table *cli_table_new(const char *const *headers)
{
    struct cli_table *t = xcalloc(1, sizeof(*t));
    t->headers = headers;
    while (headers[t->ncols])
        t->ncols++;
    assert(t->ncols > 0);
    return t;
}

void cli_table_add(struct cli_table *t, const char *cell)
{
    if (t->ncells == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->cells = xrealloc(t->cells, t->cap * sizeof(*t->cells));
    }
    char *c = xstrdup(cell && *cell ? cell : "-");
    cli_sanitize(c);
    t->cells[t->ncells++] = c;
}

void cli_table_addf(struct cli_table *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    cli_table_add(t, buf);
}

void cli_table_print(const struct cli_table *t, FILE *out)
{
    size_t *width = xcalloc(t->ncols, sizeof(*width));
    for (size_t c = 0; c < t->ncols; c++)
        width[c] = strlen(t->headers[c]);
    for (size_t i = 0; i < t->ncells; i++) {
        size_t w = strlen(t->cells[i]);
        if (w > width[i % t->ncols])
            width[i % t->ncols] = w;
    }
    /* A partial last row is a bug in the caller; pad it rather than crash. */
    size_t rows = (t->ncells + t->ncols - 1) / t->ncols;
    for (size_t r = 0; r <= rows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell;
            if (r == 0)
                cell = t->headers[c];
            else if ((r - 1) * t->ncols + c < t->ncells)
                cell = t->cells[(r - 1) * t->ncols + c];
            else
                cell = "";
            if (c + 1 < t->ncols)
                fprintf(out, "%-*s  ", (int)width[c], cell);
            else
                fprintf(out, "%s\n", cell);
        }
    }
    free(width);
}

void cli_table_free(struct cli_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* --help                                                                    */
/* ------------------------------------------------------------------------ */

/* One "  SYNOPSIS    summary" line; long synopses put the summary below. */
static void cli_help_line(FILE *out, const char *left, const char *summary)
{
    const int col = 34;
    if ((int)strlen(left) <= col - 2)
        fprintf(out, "  %-*s%s\n", col, left, summary);
    else
        fprintf(out, "  %s\n  %-*s%s\n", left, col, "", summary);
}

/* List every leaf under CMD, with PREFIX the words leading to it. */
static void cli_help_list(FILE *out, const struct cli_cmd *cmd, const char *prefix)
{
    for (const struct cli_cmd *const *s = cmd->sub; *s; s++) {
        char words[128];
        snprintf(words, sizeof(words), "%s%s%s", prefix, *prefix ? " " : "", (*s)->name);
        if (cli_is_group(*s)) {
            cli_help_list(out, *s, words);
            continue;
        }
        char syn[256], left[400];
        cli_synopsis_args(*s, syn, sizeof(syn));
        snprintf(left, sizeof(left), "%s%s%s", words, *syn ? " " : "", syn);
        cli_help_line(out, left, (*s)->summary);
    }
}

static void cli_help_exit_codes(FILE *out)
{
    fprintf(out,
            "\nExit status:\n"
            "  0  success\n"
            "  1  the manager refused the request, or another failure\n"
            "  2  usage error (bad command, flag or argument); nothing was sent\n"
            "  3  not found\n"
            "  4  conflict: already exists, or the state forbids the change\n"
            "  5  no manager reachable, no leader, or no answer within --timeout\n");
}

static void cli_help_root(FILE *out)
{
    fprintf(out,
            "Usage: %s [--manager URL[,URL]] [--token-file FILE] [--ca-file FILE] [--json]\n"
            "                   [--timeout DURATION] COMMAND [ARGS]\n"
            "       %s serve [OPTIONS]\n"
            "\n"
            "Operate a DVS cluster: inspect the manager, its nodes, endpoints and\n"
            "migrations, and change them through the manager's REST API.\n"
            "\n"
            "Commands:\n",
            CLI_PROG, CLI_PROG);
    cli_help_list(out, &cli_root, "");
    cli_help_line(out, "serve [OPTIONS]",
                  "run a manager member (see serve --help)");
    cli_help_line(out, "help [COMMAND]", "show help for a command");
    fprintf(out, "\nGlobal options (accepted anywhere on the command line):\n");
    opts_usage(cli_global_opts, out);
    cli_help_exit_codes(out);
}

static void cli_help_group(FILE *out, const struct cli_cmd *cmd, const char *path)
{
    fprintf(out, "Usage: %s %s COMMAND [ARGS] [OPTIONS]\n\n", CLI_PROG, path);
    fprintf(out, "%s\n", cmd->description ? cmd->description : cmd->summary);
    fprintf(out, "\nCommands:\n");
    cli_help_list(out, cmd, "");
    fprintf(out,
            "\nRun '%s %s COMMAND --help' for a command's arguments and options,\n"
            "'%s --help' for the global options and exit codes.\n",
            CLI_PROG, path, CLI_PROG);
}

static void cli_help_leaf(FILE *out, const struct cli_cmd *cmd, const char *path)
{
    char syn[256];
    cli_synopsis_args(cmd, syn, sizeof(syn));
    fprintf(out, "Usage: %s %s%s%s\n\n", CLI_PROG, path, *syn ? " " : "", syn);
    fprintf(out, "%s\n", cmd->description ? cmd->description : cmd->summary);
    if (cmd->args && cmd->args->metavar) {
        fprintf(out, "\nArguments:\n");
        for (const struct cli_arg *a = cmd->args; a->metavar; a++)
            fprintf(out, "  %-28s %s\n", a->metavar, a->help);
    }
    if (cmd->opts && cmd->opts->name) {
        fprintf(out, "\nOptions:\n");
        opts_usage(cmd->opts, out);
    }
    fprintf(out, "\nGlobal options:\n");
    opts_usage(cli_global_opts, out);
}

/* ------------------------------------------------------------------------ */
/* Parsing the command line                                                   */
/* ------------------------------------------------------------------------ */

struct cli_parse {
    const struct cli_cmd *cmd; /* the deepest command the words named */
    char path[128];            /* its words */
    bool help;                 /* --help, -h, or the word "help" */
    bool stuck;                /* an unknown command word: the rest is not read */
    char err[512];             /* the first usage error, reported after the pass */

    char **pos; /* a leaf's positional arguments (pointers into argv) */
    int npos;

    struct cli_globals g;
    uint32_t g_given;
    void *opts; /* the leaf's flag struct */
    uint32_t opts_given;
};

static void cli_parse_fail(struct cli_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void cli_parse_fail(struct cli_parse *p, const char *fmt, ...)
{
    if (p->err[0])
        return; /* the first error is the one that explains the others */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof(p->err), fmt, ap);
    va_end(ap);
}

static const struct opt_def *cli_find_opt(const struct opt_def *defs, const char *name,
                                          unsigned *ret_index)
{
    for (unsigned i = 0; defs && defs[i].name; i++) {
        if (strcmp(defs[i].name, name) == 0) {
            *ret_index = i;
            return &defs[i];
        }
    }
    return NULL;
}

static void cli_parse_word(struct cli_parse *p, char *word)
{
    if (p->stuck)
        return;
    if (!cli_is_group(p->cmd)) {
        p->pos[p->npos++] = word;
        return;
    }
    if (strcmp(word, "help") == 0) {
        p->help = true; /* the words that follow name the topic */
        return;
    }
    for (const struct cli_cmd *const *s = p->cmd->sub; *s; s++) {
        if (strcmp((*s)->name, word) != 0)
            continue;
        p->cmd = *s;
        size_t n = strlen(p->path);
        snprintf(p->path + n, sizeof(p->path) - n, "%s%s", n ? " " : "", word);
        if (!cli_is_group(p->cmd) && p->cmd->opts) {
            char err[256];
            p->opts = xcalloc(1, p->cmd->opts_size);
            /* A failing default is a bug in the table, caught by any test run. */
            if (opts_defaults(p->cmd->opts, p->opts, err, sizeof(err)) != 0)
                cli_parse_fail(p, "internal error: %s", err);
        }
        return;
    }
    if (p->cmd == &cli_root && strcmp(word, "serve") == 0)
        cli_parse_fail(p, "'serve' must be the first word: %s serve [OPTIONS]", CLI_PROG);
    else if (p->cmd == &cli_root)
        cli_parse_fail(p, "unknown command \"%s\"", word);
    else
        cli_parse_fail(p, "unknown command \"%s %s\"", p->path, word);
    p->stuck = true;
}

/* Parse the flag at argv[*i], consuming its value if it takes one. */
static void cli_parse_flag(struct cli_parse *p, int argc, char **argv, int *i)
{
    const char *arg = argv[*i];
    if (strcmp(arg, "-h") == 0)
        arg = "--help";
    if (strncmp(arg, "--", 2) != 0) {
        cli_parse_fail(p, "unknown option \"%s\" (options are spelled --name)", arg);
        return;
    }

    char name[64];
    const char *eq = strchr(arg + 2, '=');
    size_t nl = eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);
    if (nl >= sizeof(name)) {
        cli_parse_fail(p, "unknown option \"%.40s...\"", arg);
        return;
    }
    memcpy(name, arg + 2, nl);
    name[nl] = '\0';

    unsigned idx;
    const struct opt_def *defs = cli_global_opts;
    const struct opt_def *d = cli_find_opt(defs, name, &idx);
    void *target = &p->g;
    uint32_t *given = &p->g_given;
    if (!d && !cli_is_group(p->cmd) && p->cmd->opts) {
        defs = p->cmd->opts;
        d = cli_find_opt(defs, name, &idx);
        target = p->opts;
        given = &p->opts_given;
    }
    if (!d) {
        if (p->cmd == &cli_root || cli_is_group(p->cmd))
            cli_parse_fail(p, "unknown option --%s (a command's options go after its name)",
                           name);
        else
            cli_parse_fail(p, "unknown option --%s for '%s'", name, p->path);
        return;
    }

    const char *value;
    if (eq) {
        value = eq + 1;
    } else if (d->type == OPT_BOOL) {
        value = "true";
    } else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        value = argv[++*i];
    } else {
        cli_parse_fail(p, "--%s needs a value (%s)", name, d->metavar ? d->metavar : "VALUE");
        return;
    }

    if (d->type != OPT_BOOL && (*given >> idx) & 1) {
        cli_parse_fail(p, "--%s given twice", name);
        return;
    }
    char source[80], err[512];
    snprintf(source, sizeof(source), "--%s", name);
    if (opts_set(defs, target, name, value, source, err, sizeof(err)) != 0) {
        cli_parse_fail(p, "%s", err);
        return;
    }
    assert(idx < 32); /* opts_given is a 32-bit mask: tables stay small */
    *given |= UINT32_C(1) << idx;
}

static void cli_parse_argv(struct cli_parse *p, int argc, char **argv)
{
    bool only_words = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_words && strcmp(arg, "--") == 0) {
            only_words = true;
        } else if (!only_words && arg[0] == '-' && arg[1] != '\0') {
            cli_parse_flag(p, argc, argv, &i);
            if (p->g.help)
                p->help = true;
        } else {
            cli_parse_word(p, argv[i]);
        }
    }
}

/* After the pass: are the leaf's arguments and required flags all there? */
static int cli_check_leaf(struct cli_ctx *ctx)
{
    const struct cli_cmd *cmd = ctx->cmd;
    int want = 0;
    for (const struct cli_arg *a = cmd->args; a && a->metavar; a++, want++) {
        if (want >= ctx->nargs)
            return cli_usage_error(ctx, "missing %s (%s)", a->metavar, a->help);
        int rv = cli_check_arg(ctx, a, ctx->args[want]);
        if (rv != CLI_OK)
            return rv;
    }
    if (ctx->nargs > want)
        return cli_usage_error(ctx, "unexpected argument \"%s\"", ctx->args[want]);
    for (const struct opt_def *d = cmd->opts; d && d->name; d++)
        if (d->required && !cli_opt_given(ctx, d->name))
            return cli_usage_error(ctx, "missing --%s %s", d->name,
                                   d->metavar ? d->metavar : "VALUE");
    return CLI_OK;
}

static int cli_create_client(struct cli_ctx *ctx, const char *flag, const char *token_file,
                             const char *ca_file)
{
    const char *env = getenv("DVS_MANAGER");
    const char *urls = flag;
    const char *source = "--manager";
    if (!urls && env && *env) {
        urls = env;
        source = "$DVS_MANAGER";
    }
    if (!urls) {
        urls = CLI_DEFAULT_MANAGER;
        source = "the default manager URL";
    }
    char err[512] = "";
    int rv = api_client_create(urls, &ctx->client, err, sizeof(err));
    if (rv == -EINVAL)
        return cli_usage_error(ctx, "bad %s \"%s\": %s", source, urls,
                               err[0] ? err : "expected http://HOST:PORT[,http://HOST:PORT]");
    if (rv != 0) {
        cli_error("cannot create the REST client: %s", dvs_strerror(rv));
        return CLI_EFAIL;
    }
    rv = api_client_setup_auth(ctx->client, token_file, ca_file, err, sizeof(err));
    if (rv != 0) {
        cli_error("%s", err);
        api_client_destroy(ctx->client);
        ctx->client = NULL;
        return CLI_EUSAGE; /* a bad --token-file, $DVS_TOKEN or CA file: nothing was sent */
    }
    return CLI_OK;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                                */
/* ------------------------------------------------------------------------ */

int mgr_cli_main(int argc, char **argv)
{
    struct cli_parse p = {.cmd = &cli_root};
    struct cli_ctx ctx = {0};
    int rv = CLI_OK;
    char err[256];

    p.pos = xcalloc((size_t)(argc > 0 ? argc : 1), sizeof(*p.pos));
    if (opts_defaults(cli_global_opts, &p.g, err, sizeof(err)) != 0)
        cli_parse_fail(&p, "internal error: %s", err);
    cli_parse_argv(&p, argc, argv);

    ctx.cmd = p.cmd;
    ctx.path = p.cmd == &cli_root ? "" : p.path;
    ctx.args = p.pos;
    ctx.nargs = p.npos;
    ctx.opts = p.opts;
    ctx.opts_given = p.opts_given;
    ctx.json = p.g.json;
    ctx.timeout_ms = p.g.timeout_ms;

    /* --help wins over everything but an unknown command: help for what? */
    if (p.help && !p.stuck) {
        if (p.cmd == &cli_root)
            cli_help_root(stdout);
        else if (cli_is_group(p.cmd))
            cli_help_group(stdout, p.cmd, p.path);
        else
            cli_help_leaf(stdout, p.cmd, p.path);
        goto flush;
    }
    if (p.g.version && !p.stuck) {
        printf("%s %s (libdvs %u.%u.%u)\n", CLI_PROG, PACKAGE_VERSION, dvs_version() >> 16,
               (dvs_version() >> 8) & 0xff, dvs_version() & 0xff);
        goto flush;
    }
    if (p.err[0]) {
        if (p.cmd == &cli_root) {
            cli_error("%s", p.err);
            fprintf(stderr, "Try '%s --help' for more information.\n", CLI_PROG);
            rv = CLI_EUSAGE;
        } else {
            rv = cli_usage_error(&ctx, "%s", p.err);
        }
        goto free_parse;
    }
    if (p.cmd == &cli_root) {
        fprintf(stderr, "Usage: %s [OPTIONS] COMMAND [ARGS]\n", CLI_PROG);
        fprintf(stderr, "Try '%s --help' for the list of commands.\n", CLI_PROG);
        rv = CLI_EUSAGE;
        goto free_parse;
    }
    if (cli_is_group(p.cmd)) {
        char names[256] = "";
        size_t n = 0;
        for (const struct cli_cmd *const *s = p.cmd->sub; *s; s++)
            cli_appendf(names, sizeof(names), &n, "%s%s", n ? ", " : "", (*s)->name);
        rv = cli_usage_error(&ctx, "%s: missing command (one of: %s)", p.path, names);
        goto free_parse;
    }

    rv = cli_check_leaf(&ctx);
    if (rv != CLI_OK)
        goto free_parse;
    rv = cli_create_client(&ctx, p.g.manager, p.g.token_file, p.g.ca_file);
    if (rv != CLI_OK)
        goto free_parse;

    rv = p.cmd->exec(&ctx);

    api_client_destroy(ctx.client);
flush:
    /* A full disk or closed pipe must not pass for success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("cannot write the output: %s", strerror(errno));
        if (rv == CLI_OK)
            rv = CLI_EFAIL;
    }
free_parse:
    if (p.opts) {
        opts_free(p.cmd->opts, p.opts);
        free(p.opts);
    }
    opts_free(cli_global_opts, &p.g);
    free(p.pos);
    return rv;
}
