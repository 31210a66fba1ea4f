/*
 * "migration": the records of live migrations (DESIGN.md §4), whoever
 * started them: the scheduler (overload, energy, rebalance), a drain
 * (maintenance) or an operator (manual, "endpoint migrate"). Also the
 * follower that "endpoint migrate" uses to show one migration's phases.
 */
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "manager/cli_internal.h"

static bool migration_finished(const char *phase)
{
    return strcmp(phase, "committed") == 0 || strcmp(phase, "aborted") == 0;
}

/* "1.2s" from created_at to finished_at (or to now while it runs). */
static const char *migration_fmt_took(json_t *m, char *buf, size_t len)
{
    int64_t start, end;
    if (!cli_int(m, "created_at", &start) || start <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    if (!cli_int(m, "finished_at", &end))
        end = now_wall_ms();
    format_duration(end > start ? end - start : 0, buf, len);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* migration list                                                             */
/* ------------------------------------------------------------------------ */

static int migration_list_render(struct cli_ctx *ctx, json_t *body)
{
    static const char *const headers[] = {"ID",     "ENDPOINT", "FROM",     "TO",
                                          "REASON", "PHASE",    "BYTES",    "ROUNDS",
                                          "DOWNTIME", "TOOK",   "STARTED",  NULL};
    json_t *list = json_object_get(body, "migrations");
    json_t *m;
    size_t i;

    if (!json_is_array(list))
        return cli_bad_answer("no \"migrations\" array");
    struct cli_table *t = cli_table_new(headers);
    json_array_foreach(list, i, m)
    {
        char buf[CLI_CELL];
        cli_table_add(t, cli_fmt_int(m, "id", buf, sizeof(buf)));
        cli_table_add(t, cli_str(m, "endpoint"));
        cli_table_add(t, cli_str(m, "source"));
        cli_table_add(t, cli_str(m, "destination"));
        cli_table_add(t, cli_str(m, "reason"));
        cli_table_add(t, cli_str(m, "phase"));
        cli_table_add(t, cli_fmt_size(m, "bytes", buf, sizeof(buf)));
        cli_table_add(t, cli_fmt_int(m, "rounds", buf, sizeof(buf)));
        cli_table_add(t, cli_fmt_ms(m, "downtime_ms", buf, sizeof(buf)));
        cli_table_add(t, migration_fmt_took(m, buf, sizeof(buf)));
        cli_table_add(t, cli_fmt_ago(m, "created_at", buf, sizeof(buf)));
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    return CLI_OK;
}

static int migration_list_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, migration_list_render, "/v1/migrations");
}

static const struct cli_cmd migration_list_cmd = {
    .name = "list",
    .summary = "list migrations, running and finished",
    .exec = migration_list_exec,
};

/* ------------------------------------------------------------------------ */
/* migration show                                                             */
/* ------------------------------------------------------------------------ */

/* What the destination recorded of the transfer (docs/migration.md, "The
 * record"): absent while the migration runs and for older records. */
static void migration_show_transfer(json_t *info)
{
    const char *method = json_string_value(json_object_get(info, "method"));
    if (!method)
        return;
    char a[CLI_CELL], b[CLI_CELL];
    cli_kv("method", "%s", method);
    cli_kv("pre-copy stop", "%s", cli_str_or(info, "precopy_stop", "-"));
    json_int_t thr = json_integer_value(json_object_get(info, "throttle_us"));
    if (thr > 0)
        cli_kv("throttled", "to %lld us per request (started: %s)", (long long)thr,
               cli_str_or(info, "throttle_trigger", "-"));
    cli_kv("pre-copy", "%s", cli_fmt_ms(info, "precopy_ms", a, sizeof(a)));
    json_int_t bw = json_integer_value(json_object_get(info, "bandwidth_bps"));
    if (bw > 0)
        cli_kv("bandwidth", "%.1f MiB/s", (double)bw / 1048576.0);
    cli_kv("arena", "%s", cli_fmt_size(info, "arena_bytes", a, sizeof(a)));
    json_t *rounds = json_object_get(info, "round_stats");
    size_t i;
    json_t *r;
    json_array_foreach(rounds, i, r) {
        char name[32];
        snprintf(name, sizeof(name), "round %zu", i);
        cli_kv(name, "%s pages, %s", cli_fmt_int(r, "pages", a, sizeof(a)),
               cli_fmt_size(r, "bytes", b, sizeof(b)));
    }
    cli_kv("checksum", "%s", cli_str_or(info, "checksum", "-"));
}

static int migration_show_render(struct cli_ctx *ctx, json_t *m)
{
    char a[CLI_CELL];

    if (!json_is_object(m))
        return cli_bad_answer("the migration is not a JSON object");
    cli_kv("id", "%s", cli_fmt_int(m, "id", a, sizeof(a)));
    cli_kv("endpoint", "%s", cli_str_or(m, "endpoint", "-"));
    cli_kv("from", "%s", cli_str_or(m, "source", "-"));
    cli_kv("to", "%s", cli_str_or(m, "destination", "-"));
    cli_kv("reason", "%s", cli_str_or(m, "reason", "-"));
    cli_kv("phase", "%s", cli_str_or(m, "phase", "-"));
    cli_kv("started", "%s", cli_fmt_ago(m, "created_at", a, sizeof(a)));
    cli_kv("updated", "%s", cli_fmt_ago(m, "updated_at", a, sizeof(a)));
    cli_kv("finished", "%s", cli_fmt_ago(m, "finished_at", a, sizeof(a)));
    cli_kv("took", "%s", migration_fmt_took(m, a, sizeof(a)));
    cli_kv("copied", "%s", cli_fmt_size(m, "bytes", a, sizeof(a)));
    cli_kv("rounds", "%s", cli_fmt_int(m, "rounds", a, sizeof(a)));
    cli_kv("downtime", "%s", cli_fmt_ms(m, "downtime_ms", a, sizeof(a)));
    migration_show_transfer(json_object_get(m, "info"));
    cli_kv("explanation", "%s", cli_str_or(m, "explanation", "-"));
    cli_kv("error", "%s", cli_str_or(m, "error", "-"));
    cli_kv("modify index", "%s", cli_fmt_int(m, "modify_index", a, sizeof(a)));
    return CLI_OK;
}

static int migration_show_exec(struct cli_ctx *ctx)
{
    return cli_show(ctx, migration_show_render, "/v1/migrations/%s", ctx->args[0]);
}

static const struct cli_arg migration_id_arg[] = {
    {"ID", CLI_ARG_ID, "the migration's number, as 'migration list' shows it"},
    {NULL},
};

static const struct cli_cmd migration_show_cmd = {
    .name = "show",
    .summary = "show a migration: phases, timings, reason",
    .args = migration_id_arg,
    .exec = migration_show_exec,
};

/* ------------------------------------------------------------------------ */
/* Following one migration to its end                                        */
/* ------------------------------------------------------------------------ */

int cli_migration_follow(struct cli_ctx *ctx, json_t *migration)
{
    struct api_response r = {0};
    long long wait = (long long)cli_watch_wait_ms(ctx);
    json_t *m = migration; /* the latest view; borrowed from MIGRATION or R */
    char shown_phase[32] = "";
    int64_t id, shown_rounds = -1;
    int rv = CLI_OK;

    if (!cli_int(m, "id", &id))
        return cli_bad_answer("the migration has no \"id\"");
    if (!ctx->json) {
        printf("migration %lld: %s %s -> %s (%s)\n", (long long)id,
               cli_str_or(m, "endpoint", "?"), cli_str_or(m, "source", "?"),
               cli_str_or(m, "destination", "?"), cli_str_or(m, "reason", "?"));
        fflush(stdout);
    }
    for (;;) {
        const char *phase = cli_str(m, "phase");
        int64_t rounds = 0, index = 0;
        if (!phase) {
            rv = cli_bad_answer("the migration has no \"phase\"");
            goto cleanup;
        }
        cli_int(m, "rounds", &rounds);
        if (!ctx->json && (strcmp(phase, shown_phase) != 0 || rounds != shown_rounds)) {
            char copied[CLI_CELL];
            if (strcmp(phase, "precopy") == 0 && rounds > 0)
                printf("  precopy: round %lld, %s copied\n", (long long)rounds,
                       cli_fmt_size(m, "bytes", copied, sizeof(copied)));
            else if (strcmp(phase, shown_phase) != 0)
                printf("  %s\n", phase);
            fflush(stdout);
            snprintf(shown_phase, sizeof(shown_phase), "%s", phase);
            shown_rounds = rounds;
        }
        if (migration_finished(phase))
            break;

        /*
         * Through the leader (?consistent): a follower that has not applied
         * the migration yet would answer 404. Block until the record changes.
         */
        cli_int(m, "modify_index", &index);
        int64_t started = now_mono_ms();
        if (index <= 0)
            cli_pause_ms(CLI_POLL_MS); /* nothing to block on: poll */
        api_response_clear(&r);
        if (index > 0)
            rv = cli_call(ctx, "GET", NULL, &r,
                          "/v1/migrations/%lld?consistent&index=%lld&wait=%lldms",
                          (long long)id, (long long)index, wait);
        else
            rv = cli_call(ctx, "GET", NULL, &r, "/v1/migrations/%lld?consistent",
                          (long long)id);
        if (rv != CLI_OK)
            goto cleanup;
        if (!json_is_object(r.body)) {
            rv = cli_bad_answer("the migration is not a JSON object");
            goto cleanup;
        }
        m = r.body;
        int64_t new_index = 0;
        cli_int(m, "modify_index", &new_index);
        if (index > 0 && new_index == index && cli_watch_too_fast(ctx, started))
            cli_pause_ms(CLI_POLL_MS);
    }

    if (ctx->json)
        cli_print_json(m);
    if (strcmp(cli_str(m, "phase"), "aborted") == 0) {
        cli_error("migration %lld aborted: %s", (long long)id,
                  cli_str_or(m, "error", "no reason given"));
        rv = CLI_EFAIL;
    } else if (!ctx->json) {
        char took[CLI_CELL], bytes[CLI_CELL], down[CLI_CELL], rounds[CLI_CELL];
        printf("%s now runs on %s: took %s, %s copied in %s rounds, downtime %s\n",
               cli_str_or(m, "endpoint", "?"), cli_str_or(m, "destination", "?"),
               migration_fmt_took(m, took, sizeof(took)),
               cli_fmt_size(m, "bytes", bytes, sizeof(bytes)),
               cli_fmt_int(m, "rounds", rounds, sizeof(rounds)),
               cli_fmt_ms(m, "downtime_ms", down, sizeof(down)));
    }
cleanup:
    api_response_clear(&r);
    return rv;
}

/* ------------------------------------------------------------------------ */

static const struct cli_cmd *const migration_cmds[] = {
    &migration_list_cmd,
    &migration_show_cmd,
    NULL,
};

const struct cli_cmd cli_migration_cmd = {
    .name = "migration",
    .summary = "live migrations of endpoints between nodes",
    .description = "Inspect live migrations: who started them and why, their phases\n"
                   "(planned, precopy, frozen, committed or aborted), bytes, rounds and\n"
                   "the service's downtime.",
    .sub = migration_cmds,
};
