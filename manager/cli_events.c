/*
 * "events": the replicated event log (GET /v1/events, docs/api.md "Events"):
 * directory changes, node state changes and migration phases with their
 * reasons, one line each. --follow keeps a blocking query open and prints
 * each event as it is applied, until interrupted.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "manager/cli_internal.h"

struct events_opts {
    bool follow;
    int64_t since;
};

#define EOFF(f) offsetof(struct events_opts, f)

static const struct opt_def events_opts[] = {
    {"follow", OPT_BOOL, NULL, 0, 0, EOFF(follow), NULL,
     "keep waiting for new events and print them as they happen (until interrupted)",
     false, false},
    {"since", OPT_INT, "0", 0, 9007199254740992.0, EOFF(since), "INDEX",
     "only events with an index above INDEX (an X-Dvs-Index or an event's index)", false,
     false},
    {NULL},
};

/* "2026-11-23T12:34:56.789Z" from a wall-clock time in ms. */
static const char *fmt_time(int64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&s, &tm)) {
        snprintf(buf, len, "-");
        return buf;
    }
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
    return buf;
}

static void print_event(const struct cli_ctx *ctx, json_t *ev)
{
    if (ctx->json) {
        /* One compact object per line, so that a pipe can read events as they come. */
        json_dumpf(ev, stdout, JSON_COMPACT | JSON_SORT_KEYS);
        fputc('\n', stdout);
        return;
    }
    int64_t index = 0, time_ms = 0;
    char when[40];
    cli_int(ev, "index", &index);
    cli_int(ev, "time", &time_ms);
    char line[2048];
    snprintf(line, sizeof(line), "%s  %-8lld %-20s %-12s %s", fmt_time(time_ms, when, sizeof(when)),
             (long long)index, cli_str_or(ev, "type", "?"), cli_str_or(ev, "subject", "-"),
             cli_str_or(ev, "message", ""));
    /* The message comes from the server: no control characters on the terminal. */
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    puts(line);
}

static int events_exec(struct cli_ctx *ctx)
{
    const struct events_opts *o = ctx->opts;
    struct api_response r = {0};
    int64_t index = o->since;
    long long wait = (long long)cli_watch_wait_ms(ctx);
    bool warned = false;
    int rv = CLI_OK;

    for (;;) {
        int64_t started = now_mono_ms();
        api_response_clear(&r);
        /* Without --follow, nothing to wait for: wait=0 answers at once. */
        rv = cli_call(ctx, "GET", NULL, &r, "/v1/events?index=%lld&wait=%lldms",
                      (long long)index, o->follow ? wait : 0LL);
        if (rv == CLI_EUNAVAILABLE && o->follow) {
            /* Every member unreachable (a restart, a partition): keep trying;
             * the api client moves between members by itself. */
            cli_pause_ms(CLI_POLL_MS);
            continue;
        }
        if (rv != CLI_OK)
            goto cleanup;
        json_t *list = json_object_get(r.body, "events");
        int64_t next;
        if (!json_is_array(list) || !cli_int(r.body, "next_index", &next)) {
            rv = cli_bad_answer("no \"events\" array or \"next_index\"");
            goto cleanup;
        }
        json_t *missed = json_object_get(r.body, "missed");
        if (json_is_true(missed) && !warned) {
            int64_t oldest = 0;
            cli_int(r.body, "oldest_index", &oldest);
            cli_error("events between index %lld and %lld were dropped by the retention "
                      "(--events-retention)",
                      (long long)index, (long long)oldest);
            warned = true;
        }
        size_t i;
        json_t *ev;
        json_array_foreach(list, i, ev)
        {
            int64_t ei = 0;
            /* After a failover the new member may repeat what we have seen. */
            if (cli_int(ev, "index", &ei) && ei <= index)
                continue;
            print_event(ctx, ev);
        }
        fflush(stdout);
        bool more = json_is_true(json_object_get(r.body, "more"));
        /* A member behind the one we asked before must not move us back. */
        if (next > index)
            index = next;
        if (!o->follow && !more)
            break;
        if (o->follow && !more && json_array_size(list) == 0 && cli_watch_too_fast(ctx, started))
            cli_pause_ms(CLI_POLL_MS); /* the server did not block: don't spin */
    }
cleanup:
    api_response_clear(&r);
    return rv;
}

const struct cli_cmd cli_events_cmd = {
    .name = "events",
    .summary = "show the event log: directory changes, node states, migrations",
    .description =
        "Print the cluster's events, oldest first, one line each: time, index,\n"
        "type, subject and what happened (endpoint created, moved, deleted or\n"
        "changing state; node state changes with their reason; every migration\n"
        "phase, with the reason and the scheduler's explanation). The log is\n"
        "replicated and bounded (--events-retention of the leader). With\n"
        "--follow, keep waiting for new events until interrupted, across leader\n"
        "changes and member failures; with --json, print one JSON object per line.",
    .opts = events_opts,
    .opts_size = sizeof(struct events_opts),
    .exec = events_exec,
};
