/*
 * dvs-kv-client: one-shot commands against a dvs-kv endpoint, plus `load`
 * (load.c) and `verify` (verify.c).
 *
 *   dvs-kv-client [--manager URLS] [--endpoint kv] [--timeout D] COMMAND ARGS
 *
 * Requests go through dvs_call, which finds the endpoint in the manager's
 * directory and follows it across migrations (DESIGN.md §5), so a command
 * run during a migration simply takes a little longer.
 *
 * The command line: one option table for every flag (STYLE.md 15), flags
 * anywhere on the line, "--" ends them (so a value may start with "--"),
 * and each command accepts only the flags that mean something to it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"
#include "examples/kv/client.h"

/* ===========================================================================
 * Options and commands
 */

#define OFF(f) offsetof(struct kv_cli, f)

static const struct opt_def kv_cli_opts[] = {
    {"manager", OPT_STRING, NULL, 0, 0, OFF(manager), "URL[,URL]",
     "manager members to resolve the endpoint with (default: $DVS_MANAGER, else "
     "http://127.0.0.1:7001)",
     false, true},
    {"endpoint", OPT_STRING, NULL, 0, 0, OFF(endpoint), "NAME",
     "the endpoint to call (default: kv; verify: the history's)", false, true},
    {"timeout", OPT_DURATION, "5s", 1, 3600000, OFF(timeout_ms), "DURATION",
     "limit per call, resends included", false, true},
    {"log-level", OPT_LOGLEVEL, "warn", 0, 0, OFF(log_level), "LEVEL",
     "libdvs messages shown on stderr", false, true},
    {"help", OPT_BOOL, NULL, 0, 0, OFF(help), NULL, "show this help", false, true},
    {"duration", OPT_DURATION, NULL, 1, 86400000, OFF(duration_ms), "DURATION",
     "load: how long to send requests", false, true},
    {"rate", OPT_DOUBLE, NULL, 0.001, 1e7, OFF(rate), "R",
     "load: requests per second, all threads together (open loop)", false, true},
    {"threads", OPT_INT, "4", 1, 1024, OFF(threads), "T", "load: sending threads", false,
     true},
    {"keys", OPT_INT, "100", 0, 10000000, OFF(keys), "N",
     "load: registers (put/get keys)", false, true},
    {"write-ratio", OPT_DOUBLE, "0.5", 0, 1, OFF(write_ratio), "F",
     "load: fraction of operations that write (put or incr)", false, true},
    {"history", OPT_STRING, NULL, 0, 0, OFF(history), "FILE",
     "load: write the history there; verify: read it", false, true},
    {"incr-keys", OPT_INT, "0", 0, 1000000, OFF(incr_keys), "N",
     "load: counters (incr/get keys)", false, true},
    {"key-prefix", OPT_STRING, NULL, 0, 0, OFF(key_prefix), "P",
     "load: prefix of every key (default: a fresh random one, so that each run "
     "starts from absent keys)",
     false, true},
    {"client-per-thread", OPT_BOOL, NULL, 0, 0, OFF(client_per_thread), NULL,
     "load: give each thread its own dvs_client instead of sharing one", false, true},
    {"offline", OPT_BOOL, NULL, 0, 0, OFF(offline), NULL,
     "verify: check the history alone, without reading final values", false, true},
    {NULL},
};

static const char *const kv_global_flags[] = {"manager", "endpoint", "timeout",
                                              "log-level", "help", NULL};
static const char *const kv_load_flags[] = {
    "duration", "rate",       "threads",    "keys", "write-ratio", "history",
    "incr-keys", "key-prefix", "client-per-thread", NULL};
static const char *const kv_verify_flags[] = {"history", "offline", NULL};

struct kv_cmd {
    const char *name;
    const char *args;          /* synopsis of the positional arguments */
    int min_args, max_args;
    const char *const *flags;  /* accepted besides the global ones */
    int (*run)(const struct kv_cli *cli);
    const char *help;
};

static int kv_cmd_oneshot(const struct kv_cli *cli);
static int kv_cmd_stats(const struct kv_cli *cli);

static const struct kv_cmd kv_cmds[] = {
    {"put", "KEY VALUE", 2, 2, NULL, kv_cmd_oneshot, "set KEY to VALUE"},
    {"get", "KEY", 1, 1, NULL, kv_cmd_oneshot, "print KEY's value (exit 3 if absent)"},
    {"delete", "KEY", 1, 1, NULL, kv_cmd_oneshot, "remove KEY (exit 3 if absent)"},
    {"incr", "KEY [N]", 1, 2, NULL, kv_cmd_oneshot,
     "add N (default 1) to the counter KEY and print the result"},
    {"cas", "KEY OLD NEW", 3, 3, NULL, kv_cmd_oneshot,
     "set KEY to NEW if it is OLD (exit 1 if it is not, 3 if absent)"},
    {"spin", "MS", 1, 1, NULL, kv_cmd_oneshot,
     "make the service burn MS milliseconds of CPU (load tests)"},
    {"stats", "", 0, 0, NULL, kv_cmd_stats, "print the service's figures as JSON"},
    {"load", "", 0, 0, kv_load_flags, kv_cmd_load,
     "drive calls at --rate for --duration; history and JSON summary"},
    {"verify", "", 0, 0, kv_verify_flags, kv_cmd_verify,
     "check a load history against the service (exit 1 on a violation)"},
    {NULL, NULL, 0, 0, NULL, NULL, NULL},
};

static void kv_usage(FILE *out)
{
    fprintf(out, "usage: " KV_CLIENT_PROG
                 " [--manager URLS] [--endpoint NAME] [--timeout D] COMMAND [ARGS]\n\n"
                 "Commands:\n");
    for (const struct kv_cmd *c = kv_cmds; c->name; c++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", c->name, c->args);
        fprintf(out, "  %-20s %s\n", left, c->help);
    }
    fprintf(out,
            "\nOptions:\n");
    opts_usage(kv_cli_opts, out);
    fprintf(out, "\nExit status: 0 ok, 1 error, 2 usage, 3 key not found.\n");
}

static const struct kv_cmd *kv_find_cmd(const char *name)
{
    for (const struct kv_cmd *c = kv_cmds; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static bool kv_in_list(const char *const *list, const char *name)
{
    for (; list && *list; list++)
        if (strcmp(*list, name) == 0)
            return true;
    return false;
}

static const struct opt_def *kv_find_opt(const char *name, size_t len)
{
    for (const struct opt_def *d = kv_cli_opts; d->name; d++)
        if (strlen(d->name) == len && strncmp(d->name, name, len) == 0)
            return d;
    return NULL;
}

/* ===========================================================================
 * Shared helpers
 */

const char *kv_cli_endpoint(const struct kv_cli *cli)
{
    return cli->endpoint ? cli->endpoint : "kv";
}

static void kv_cli_lib_log(void *data, int level, const char *msg)
{
    (void)data;
    enum log_level l = level <= DVS_LOG_DEBUG  ? LOG_DEBUG
                       : level == DVS_LOG_INFO ? LOG_INFO
                       : level == DVS_LOG_WARN ? LOG_WARN
                                               : LOG_ERROR;
    log_msg(l, "libdvs", "%s", msg);
}

int kv_cli_client(const struct kv_cli *cli, dvs_client **ret_client)
{
    struct dvs_client_options o;
    dvs_client_options_init(&o);
    o.log = kv_cli_lib_log;
    int rv = dvs_client_create(cli->manager, &o, ret_client);
    if (rv != 0)
        fprintf(stderr, KV_CLIENT_PROG ": cannot create a client for %s: %s\n",
                cli->manager ? cli->manager : "the default manager", dvs_strerror(rv));
    return rv;
}

int kv_cli_call(dvs_client *client, const char *endpoint, const struct kv_request *req,
                int timeout_ms, struct kv_reply *ret_reply, void **ret_buf)
{
    size_t n = kv_request_size(req);
    if (n == 0)
        return -EINVAL;
    uint8_t *buf = malloc(n);
    if (buf == NULL)
        return -ENOMEM;
    size_t len;
    int rv = kv_request_encode(req, buf, n, &len);
    if (rv == 0) {
        void *reply = NULL;
        size_t reply_len = 0;
        rv = dvs_call(client, endpoint, buf, len, &reply, &reply_len, timeout_ms);
        if (rv == 0) {
            rv = kv_reply_parse(reply, reply_len, ret_reply);
            if (rv == 0)
                *ret_buf = reply;
            else
                dvs_free(reply);
        }
    }
    free(buf);
    return rv;
}

/* Print a value from the service inside a message: control characters
 * escaped, so it cannot move the cursor, and long values cut. */
static void kv_print_quoted(FILE *out, const uint8_t *v, size_t len)
{
    fputc('"', out);
    size_t shown = len < 200 ? len : 200;
    for (size_t i = 0; i < shown; i++) {
        if (v[i] < 0x20 || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\')
            fprintf(out, "\\x%02x", v[i]);
        else
            fputc(v[i], out);
    }
    fputc('"', out);
    if (shown < len)
        fprintf(out, "... (%zu bytes)", len);
}

/* ===========================================================================
 * One-shot commands
 */

/* Build the request for put/get/delete/incr/cas/spin from the arguments. */
static int kv_oneshot_request(const char *cmd, const struct kv_cli *cli,
                              struct kv_request *r)
{
    memset(r, 0, sizeof(*r));
    char **a = cli->argv;
    if (strcmp(cmd, "spin") != 0) {
        r->key = (const uint8_t *)a[0];
        r->key_len = strlen(a[0]);
        if (r->key_len == 0 || r->key_len > KV_MAX_KEY) {
            fprintf(stderr, KV_CLIENT_PROG ": %s: the key must be 1 to %u bytes long\n",
                    cmd, KV_MAX_KEY);
            return -EINVAL;
        }
    }
    if (strcmp(cmd, "put") == 0) {
        r->op = KV_OP_PUT;
        r->a = (const uint8_t *)a[1];
        r->a_len = strlen(a[1]);
    } else if (strcmp(cmd, "get") == 0) {
        r->op = KV_OP_GET;
    } else if (strcmp(cmd, "delete") == 0) {
        r->op = KV_OP_DELETE;
    } else if (strcmp(cmd, "incr") == 0) {
        r->op = KV_OP_INCR;
        r->delta = 1;
        if (cli->argc == 2 && parse_int64(a[1], &r->delta) != 0) {
            fprintf(stderr, KV_CLIENT_PROG ": incr: \"%s\" is not an integer\n", a[1]);
            return -EINVAL;
        }
    } else if (strcmp(cmd, "cas") == 0) {
        r->op = KV_OP_CAS;
        r->a = (const uint8_t *)a[1];
        r->a_len = strlen(a[1]);
        r->b = (const uint8_t *)a[2];
        r->b_len = strlen(a[2]);
    } else {
        int64_t ms;
        r->op = KV_OP_SPIN;
        if (parse_int64(a[0], &ms) != 0 || ms < 0 || ms > KV_MAX_SPIN_MS) {
            fprintf(stderr, KV_CLIENT_PROG ": spin: expected milliseconds from 0 to %u, got \"%s\"\n",
                    KV_MAX_SPIN_MS, a[0]);
            return -EINVAL;
        }
        r->ms = (uint32_t)ms;
    }
    if (kv_request_size(r) == 0) {
        fprintf(stderr, KV_CLIENT_PROG ": %s: a value may be at most %u bytes\n", cmd,
                (unsigned)KV_MAX_VALUE);
        return -EINVAL;
    }
    return 0;
}

static int kv_cmd_oneshot(const struct kv_cli *cli)
{
    const char *cmd = cli->command;
    struct kv_request req;
    if (kv_oneshot_request(cmd, cli, &req) != 0)
        return KV_EXIT_USAGE;

    dvs_client *client;
    if (kv_cli_client(cli, &client) != 0)
        return KV_EXIT_ERROR;
    struct kv_reply rep;
    void *buf = NULL;
    int status = KV_EXIT_ERROR;
    int rv = kv_cli_call(client, kv_cli_endpoint(cli), &req, (int)cli->timeout_ms, &rep,
                         &buf);
    if (rv != 0) {
        fprintf(stderr, KV_CLIENT_PROG ": %s: endpoint %s: %s (%s)\n", cmd,
                kv_cli_endpoint(cli), dvs_strerror(rv), dvs_err_name(rv));
        goto out;
    }

    switch (rep.status) {
    case KV_OK:
        status = KV_EXIT_OK;
        if (req.op == KV_OP_GET) {
            if (rep.value_len > 0)
                fwrite(rep.value, 1, rep.value_len, stdout);
            fputc('\n', stdout);
        } else if (req.op == KV_OP_INCR) {
            if (rep.value_len != 8) {
                fprintf(stderr, KV_CLIENT_PROG ": incr: malformed reply\n");
                status = KV_EXIT_ERROR;
                break;
            }
            printf("%" PRId64 "\n", (int64_t)kv_get_u64(rep.value));
        }
        break;
    case KV_NOTFOUND:
        fprintf(stderr, KV_CLIENT_PROG ": %s %s: no such key\n", cmd, cli->argv[0]);
        status = KV_EXIT_NOTFOUND;
        break;
    case KV_MISMATCH:
        fprintf(stderr, KV_CLIENT_PROG ": cas %s: the value is ", cli->argv[0]);
        kv_print_quoted(stderr, rep.value, rep.value_len);
        fprintf(stderr, ", not \"%s\"; unchanged\n", cli->argv[1]);
        break;
    case KV_NOTNUMBER:
        fprintf(stderr, KV_CLIENT_PROG ": incr %s: the value ", cli->argv[0]);
        kv_print_quoted(stderr, rep.value, rep.value_len);
        fprintf(stderr, " is not an integer, or adding would overflow; unchanged\n");
        break;
    default:
        fprintf(stderr, KV_CLIENT_PROG ": %s: unknown reply status %u\n", cmd, rep.status);
        break;
    }

out:
    if (fflush(stdout) != 0 && status == KV_EXIT_OK) {
        fprintf(stderr, KV_CLIENT_PROG ": writing the result: %s\n", strerror(errno));
        status = KV_EXIT_ERROR;
    }
    dvs_free(buf);
    dvs_client_destroy(client);
    return status;
}

static int kv_cmd_stats(const struct kv_cli *cli)
{
    struct kv_request req = {.op = KV_OP_STATS};
    dvs_client *client;
    if (kv_cli_client(cli, &client) != 0)
        return KV_EXIT_ERROR;
    struct kv_reply rep;
    void *buf = NULL;
    int status = KV_EXIT_ERROR;
    struct kv_stats st;
    int rv = kv_cli_call(client, kv_cli_endpoint(cli), &req, (int)cli->timeout_ms, &rep,
                         &buf);
    if (rv == 0 && rep.status != KV_OK)
        rv = DVS_EPROTO;
    if (rv == 0)
        rv = kv_stats_decode(rep.value, rep.value_len, &st);
    if (rv != 0) {
        fprintf(stderr, KV_CLIENT_PROG ": stats: endpoint %s: %s (%s)\n",
                kv_cli_endpoint(cli), dvs_strerror(rv), dvs_err_name(rv));
        goto out;
    }

    json_t *o = json_object();
    for (const struct kv_stats_field *f = kv_stats_fields; f->name; f++) {
        uint64_t v;
        memcpy(&v, (const char *)&st + f->offset, sizeof(v));
        json_object_set_new(o, f->name, json_integer((json_int_t)v));
    }
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (text == NULL) {
        fprintf(stderr, KV_CLIENT_PROG ": stats: out of memory\n");
        goto out;
    }
    printf("%s\n", text);
    free(text);
    status = fflush(stdout) == 0 ? KV_EXIT_OK : KV_EXIT_ERROR;

out:
    dvs_free(buf);
    dvs_client_destroy(client);
    return status;
}

/* ===========================================================================
 * main
 */

int main(int argc, char **argv)
{
    struct kv_cli cli;
    char err[512];
    bool help;
    int status = KV_EXIT_USAGE;

    memset(&cli, 0, sizeof(cli));
    log_set_ident(KV_CLIENT_PROG);

    /* Split the line into flags (with their values) and words. */
    char **flags = calloc((size_t)argc + 1, sizeof(*flags));
    char **words = calloc((size_t)argc + 1, sizeof(*words));
    int nflags = 0, nwords = 0;
    if (flags == NULL || words == NULL) {
        fprintf(stderr, KV_CLIENT_PROG ": out of memory\n");
        status = KV_EXIT_ERROR;
        goto out;
    }
    bool only_words = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_words || strncmp(a, "--", 2) != 0) {
            if (!only_words && strcmp(a, "-h") == 0)
                flags[nflags++] = a;
            else
                words[nwords++] = a;
            continue;
        }
        if (a[2] == '\0') {
            only_words = true;
            continue;
        }
        flags[nflags++] = a;
        if (strchr(a, '=') != NULL)
            continue;
        const struct opt_def *d = kv_find_opt(a + 2, strlen(a + 2));
        if (d == NULL || i + 1 >= argc)
            continue; /* opts_parse_argv reports it */
        if (d->type != OPT_BOOL || strcmp(argv[i + 1], "true") == 0 ||
            strcmp(argv[i + 1], "false") == 0)
            flags[nflags++] = argv[++i];
    }

    if (opts_parse_argv(kv_cli_opts, &cli, nflags, flags, &help, err, sizeof(err)) != 0) {
        fprintf(stderr, KV_CLIENT_PROG ": %s\n", err);
        goto out;
    }
    if (help || nwords == 0) {
        kv_usage(help ? stdout : stderr);
        status = help ? KV_EXIT_OK : KV_EXIT_USAGE;
        goto out;
    }
    log_set_level((enum log_level)cli.log_level);

    const struct kv_cmd *cmd = kv_find_cmd(words[0]);
    if (cmd == NULL) {
        fprintf(stderr, KV_CLIENT_PROG ": unknown command \"%s\" (see --help)\n", words[0]);
        goto out;
    }
    int nargs = nwords - 1;
    if (nargs < cmd->min_args || nargs > cmd->max_args) {
        fprintf(stderr, KV_CLIENT_PROG ": usage: " KV_CLIENT_PROG " %s %s\n", cmd->name,
                cmd->args);
        goto out;
    }
    for (int i = 0; i < nflags; i++) {
        const char *f = flags[i];
        if (strncmp(f, "--", 2) != 0)
            continue; /* a value */
        size_t len = strcspn(f + 2, "=");
        const struct opt_def *d = kv_find_opt(f + 2, len);
        if (d != NULL && !kv_in_list(kv_global_flags, d->name) &&
            !kv_in_list(cmd->flags, d->name)) {
            fprintf(stderr, KV_CLIENT_PROG ": --%s does not apply to %s\n", d->name,
                    cmd->name);
            goto out;
        }
        /* Skip the value of a flag written "--name value". */
        if (d != NULL && f[2 + len] == '\0' && d->type != OPT_BOOL)
            i++;
    }

    cli.command = cmd->name;
    cli.argc = nargs;
    cli.argv = words + 1;
    status = cmd->run(&cli);

out:
    opts_free(kv_cli_opts, &cli);
    free(flags);
    free(words);
    return status;
}
