/*
 * Services: starting, supervising, adopting and stopping the processes that
 * serve the endpoints placed on this node (docs/migration.md, "Running
 * endpoints" and "Agent restart").
 *
 * The arena. For every instance the agent creates the arena memfd itself
 * and hands it to the service as DVS_ARENA_FD (libdvs/dvs.h,
 * dvs_server_options), so that it can read the arena for a migration
 * without the service's help (DESIGN.md §4: "the agent reads the memfd
 * directly"), and so that the arena outlives the process: a service that
 * crashes is restarted in restore mode on the same memfd, with its data
 * and its reply cache, and generation + 1. Only an arena that never held a
 * formatted arena (the crash came before the service opened) is replaced by
 * a fresh one. The memfd is sealed against shrinking and growing, so the
 * agent's own mapping of it can never fault (SIGBUS) on a truncated file.
 *
 * Records. Each service process has a record in
 * DATA_DIR/services/NAME.PID.json (pid, process start time, generation,
 * arena), written as soon as it is spawned and removed when it is gone. When the agent starts, a record whose process is still alive (same
 * pid, same start time) becomes an undecided instance; the first orders
 * decide: adopted when the directory places the endpoint here with the same
 * generation, killed otherwise. So an agent restart neither orphans nor
 * duplicates a service. Adopted processes are not our children: they are
 * watched through a pidfd, and their arena memfd is fetched back over the
 * control channel (the "fds" command).
 *
 * Generations. Every start is a new generation: the directory's + 1, and
 * never below what this agent ran before. The report (PATCH
 * /v1/endpoints/NAME) that carries it is refused with 409 if another
 * instance went ahead meanwhile, and then ours is stopped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "node/agent.h"
#include "node/argv.h"

#define COMP NODE_COMP_SVC
#define RECORD_MAX (64u << 10)
#define REPORT_RETRY_MS 1000
#define CTL_TIMEOUT_MS 5000
/* A process that served this long without crashing starts a new window. */
#define HEALTHY_MS 30000

extern char **environ;

static void inst_start(struct node_instance *inst, uint64_t generation);
static void inst_destroy(struct node_instance *inst);
static void inst_crashed(struct node_instance *inst, const char *how);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

/*
 * The instance that owns the endpoint's name on this node. An instance on
 * its way out (moved and lingering, or stopping) no longer does: the
 * endpoint may come back (a migration back within the linger) and get a new
 * instance beside the old one.
 */
struct node_instance *node_inst_find(struct node *n, const char *endpoint)
{
    for (struct node_instance *i = n->instances; i; i = i->next)
        if (!i->dead && i->state != INST_MOVED && i->state != INST_STOPPING &&
            strcmp(i->endpoint, endpoint) == 0)
            return i;
    return NULL;
}

struct node_instance *node_inst_by_pid(struct node *n, pid_t pid)
{
    for (struct node_instance *i = n->instances; i; i = i->next)
        if (!i->dead && pid > 0 && i->pid == pid)
            return i;
    return NULL;
}

struct node_instance *node_inst_by_serial(struct node *n, uint64_t serial)
{
    for (struct node_instance *i = n->instances; i; i = i->next)
        if (!i->dead && i->serial == serial)
            return i;
    return NULL;
}

/* "0x..." -> address; the manager formats arena addresses this way. */
static int parse_hex_addr(const char *s, uint64_t *ret)
{
    if (!s || strncmp(s, "0x", 2) != 0 || s[2] == '\0' || strlen(s) > 18)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s + 2, &end, 16);
    if (errno || *end || v == 0 || v % 4096 != 0)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Records                                                                   */
/* ------------------------------------------------------------------------ */

/* One record per process: DATA_DIR/services/NAME.PID.json. Keyed by pid as
 * well as name because two processes of one endpoint may live side by side
 * for a moment (the old one lingering as moved, the new one restoring). */
static void record_path(struct node *n, const char *endpoint, pid_t pid, char *buf, size_t len)
{
    snprintf(buf, len, "%s/services/%s.%d.json", n->data_dir, endpoint, (int)pid);
}

static void record_remove(struct node_instance *inst)
{
    if (inst->record_pid <= 0)
        return;
    char path[4200];
    record_path(inst->n, inst->endpoint, inst->record_pid, path, sizeof(path));
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn(COMP, "endpoint=%s cannot remove %s: %s", inst->endpoint, path,
                 strerror(errno));
    inst->record_pid = 0;
}

/* Write (or rewrite) the record of the instance's current process. */
static int record_save(struct node_instance *inst)
{
    struct node *n = inst->n;
    if (inst->pid <= 0)
        return 0;
    if (inst->record_pid != inst->pid)
        record_remove(inst);
    char path[4200], tmp[4300];
    record_path(n, inst->endpoint, inst->pid, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    char addr[32];
    snprintf(addr, sizeof(addr), "0x%" PRIx64, inst->arena_addr);
    json_t *j = json_pack("{s:s,s:i,s:I,s:I,s:s,s:I,s:s,s:b,s:I}", "endpoint", inst->endpoint,
                          "pid", (int)inst->pid, "start_time", (json_int_t)inst->start_time,
                          "generation", (json_int_t)inst->generation, "arena_addr", addr,
                          "arena_size", (json_int_t)inst->arena_size, "command", inst->command,
                          "restore", inst->restore, "migration",
                          (json_int_t)inst->migration_id);
    int rv = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rv = -errno;
        goto out;
    }
    /* No fsync: a record is for surviving the agent's death, not the
     * machine's (which takes the services with it); the page cache keeps
     * it. Spared, the fsync would be downtime in every migration. */
    if (json_dumpfd(j, fd, JSON_COMPACT) != 0)
        rv = errno ? -errno : -EIO;
    close(fd);
    /* rename() is atomic: a crash leaves the old record or the new one. */
    if (rv == 0 && rename(tmp, path) != 0)
        rv = -errno;
    if (rv == 0)
        inst->record_pid = inst->pid;
out:
    json_decref(j);
    if (rv != 0)
        log_error(COMP, "endpoint=%s cannot write %s: %s (an agent restart would not find "
                        "this service)",
                  inst->endpoint, path, strerror(-rv));
    return rv;
}

/* ------------------------------------------------------------------------ */
/* Instance objects                                                          */
/* ------------------------------------------------------------------------ */

static void inst_handle_closed(uv_handle_t *h)
{
    struct node_instance *inst = h->data;
    inst->handles--;
    if (inst->dead && inst->handles == 0) {
        free(inst->command);
        free(inst);
    }
}

static struct node_instance *inst_new(struct node *n, const char *endpoint, const char *command)
{
    struct node_instance *inst = xcalloc(1, sizeof(*inst));
    inst->n = n;
    inst->serial = node_next_serial(n);
    snprintf(inst->endpoint, sizeof(inst->endpoint), "%s", endpoint);
    inst->command = xstrdup(command);
    inst->memfd = -1;
    inst->pidfd = -1;
    uv_timer_init(&n->loop, &inst->timer);
    inst->timer.data = inst;
    uv_timer_init(&n->loop, &inst->report_timer);
    inst->report_timer.data = inst;
    inst->handles = 2;
    inst->next = n->instances;
    if (n->instances)
        n->instances->prev = inst;
    n->instances = inst;
    return inst;
}

static void inst_close_memfd(struct node_instance *inst)
{
    if (inst->memfd >= 0) {
        close(inst->memfd);
        inst->memfd = -1;
    }
    inst->arena_formatted = false;
}

/* Forget the instance: its record, its arena, its handles. The process must
 * be gone (or never have existed). */
static void inst_destroy(struct node_instance *inst)
{
    struct node *n = inst->n;
    if (inst->dead)
        return;
    inst->dead = true;
    if (inst->prev)
        inst->prev->next = inst->next;
    else
        n->instances = inst->next;
    if (inst->next)
        inst->next->prev = inst->prev;
    inst->prev = inst->next = NULL;
    if (inst->ctl) {
        struct node_ctl *c = inst->ctl;
        inst->ctl = NULL;
        node_ctl_bind(c, NULL);
        node_ctl_detach(c);
    }
    if (!inst->keep_record)
        record_remove(inst);
    inst_close_memfd(inst);
    uv_close((uv_handle_t *)&inst->timer, inst_handle_closed);
    uv_close((uv_handle_t *)&inst->report_timer, inst_handle_closed);
}

/* ------------------------------------------------------------------------ */
/* Process exit                                                              */
/* ------------------------------------------------------------------------ */

/* The process is gone, however we learnt it. */
static void inst_process_gone(struct node_instance *inst, const char *how)
{
    struct node *n = inst->n;
    pid_t pid = inst->pid;
    if (!n->stopping)
        record_remove(inst); /* a record names a live process */
    inst->pid = 0;
    inst->start_time = 0;
    uv_timer_stop(&inst->timer);
    if (inst->ctl) {
        struct node_ctl *c = inst->ctl;
        node_ctl_bind(c, NULL);
        inst->ctl = NULL;
        node_ctl_detach(c);
    }
    if (n->stopping) {
        /* The agent is going away; do not restart anything. */
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d exited (%s)", inst->endpoint,
                 inst->generation, (int)pid, how);
        inst_destroy(inst);
        node_maybe_finish_stop(n);
        return;
    }
    switch (inst->state) {
    case INST_STOPPING:
    case INST_MOVED:
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d exited (%s) as expected",
                 inst->endpoint, inst->generation, (int)pid, how);
        inst_destroy(inst);
        return;
    case INST_UNDECIDED:
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d (found at start-up) exited (%s)",
                 inst->endpoint, inst->generation, (int)pid, how);
        inst_destroy(inst);
        return;
    default:
        break;
    }
    if (inst->migration_id > 0) {
        /* A destination's restore instance that died before "start": the
         * migration it belongs to cannot commit any more. */
        log_warn(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d restore instance for migration=%" PRId64
                       " exited (%s)",
                 inst->endpoint, inst->generation, (int)pid, inst->migration_id, how);
        inst->state = INST_DOWN;
        if (!node_mig_on_instance_gone(n, inst)) {
            inst_destroy(inst);
            return;
        }
    }
    inst_crashed(inst, how);
}

static void on_child_exit(uv_process_t *p, int64_t status, int term_signal)
{
    struct node_instance *inst = p->data;
    char how[64];
    if (term_signal)
        snprintf(how, sizeof(how), "signal %d", term_signal);
    else
        snprintf(how, sizeof(how), "status %d", (int)status);
    uv_close((uv_handle_t *)p, inst_handle_closed);
    inst->proc_open = false;
    inst_process_gone(inst, how);
}

static void on_pidfd(uv_poll_t *p, int status, int events)
{
    struct node_instance *inst = p->data;
    (void)status;
    (void)events;
    /* A pidfd becomes readable when the process exits; an error means the
     * same for our purpose. Not our child: no exit status to read. */
    uv_close((uv_handle_t *)p, inst_handle_closed);
    inst->pidpoll_open = false;
    close(inst->pidfd);
    inst->pidfd = -1;
    inst_process_gone(inst, "exit of an adopted process");
}

static int watch_pidfd(struct node_instance *inst)
{
    int fd = (int)syscall(SYS_pidfd_open, inst->pid, 0);
    if (fd < 0)
        return -errno;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    int rv = uv_poll_init(&inst->n->loop, &inst->pidpoll, fd);
    if (rv != 0) {
        close(fd);
        return rv;
    }
    inst->pidfd = fd;
    inst->pidpoll.data = inst;
    inst->handles++;
    inst->pidpoll_open = true;
    uv_poll_start(&inst->pidpoll, UV_READABLE, on_pidfd);
    return 0;
}

/* Send SIGNAL to the process, however it is watched. */
static void inst_signal(struct node_instance *inst, int sig)
{
    if (inst->pid <= 0)
        return;
    if (inst->proc_open)
        uv_process_kill(&inst->proc, sig);
    else if (inst->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, inst->pidfd, sig, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Spawning                                                                  */
/* ------------------------------------------------------------------------ */

static bool env_overridden(const char *kv)
{
    static const char *const ours[] = {
        "DVS_ENDPOINT=",   "DVS_LISTEN=",     "DVS_GENERATION=",   "DVS_MODE=",
        "DVS_ARENA_FD=",   "DVS_ARENA_ADDR=", "DVS_ARENA_SIZE=",   "DVS_CONTROL_FD=",
        "DVS_CONTROL_PATH=",
    };
    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        if (strncmp(kv, ours[i], strlen(ours[i])) == 0)
            return true;
    return false;
}

/* A new memfd of the arena's size, sealed so it can never shrink under a
 * mapping (ours or the service's). */
static int make_memfd(const char *endpoint, uint64_t size)
{
    char name[80];
    snprintf(name, sizeof(name), "dvs-arena:%s", endpoint);
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int node_make_arena_memfd(const char *endpoint, uint64_t size)
{
    return make_memfd(endpoint, size);
}

static void start_timeout(uv_timer_t *t)
{
    struct node_instance *inst = t->data;
    if (inst->state != INST_STARTING && inst->state != INST_RESTORING)
        return;
    log_warn(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d did not open within %" PRId64
                   " ms; killing it",
             inst->endpoint, inst->generation, (int)inst->pid, inst->n->cfg.start_timeout_ms);
    inst->kill_reason = "start timeout";
    inst_signal(inst, SIGKILL);
}

/*
 * Spawn the process for inst (state, generation, memfd, restore set by the
 * caller). On failure the instance is left without a process and the
 * error returned; the caller decides (a crash for a restart, an abort for a
 * migration).
 */
static int inst_spawn(struct node_instance *inst)
{
    struct node *n = inst->n;
    char **argv = NULL;
    const char *why = NULL;
    int rv = node_split_command(inst->command, &argv, &why);
    if (rv != 0) {
        log_error(COMP, "endpoint=%s command \"%s\" cannot be run: %s", inst->endpoint,
                  inst->command, why);
        return rv;
    }

    /* The environment: ours minus the DVS_ variables of this contract. */
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    char **env = xcalloc(nenv + 16, sizeof(char *));
    size_t k = 0;
    char *owned[16];
    size_t nowned = 0;
    bool have_manager = false;
    for (size_t i = 0; i < nenv; i++) {
        if (env_overridden(environ[i]))
            continue;
        if (strncmp(environ[i], "DVS_MANAGER=", 12) == 0)
            have_manager = true;
        env[k++] = environ[i];
    }
#define SETENV(...) (env[k++] = owned[nowned++] = xasprintf(__VA_ARGS__))
    SETENV("DVS_ENDPOINT=%s", inst->endpoint);
    SETENV(strchr(n->host, ':') ? "DVS_LISTEN=[%s]:0" : "DVS_LISTEN=%s:0", n->host);
    SETENV("DVS_GENERATION=%" PRIu64, inst->generation);
    SETENV("DVS_MODE=%s", inst->restore ? "restore" : "fresh");
    SETENV("DVS_ARENA_FD=3");
    SETENV("DVS_ARENA_ADDR=0x%" PRIx64, inst->arena_addr);
    SETENV("DVS_ARENA_SIZE=%" PRIu64, inst->arena_size);
    SETENV("DVS_CONTROL_PATH=%s", n->ctl_path);
    if (!have_manager)
        SETENV("DVS_MANAGER=%s", n->cfg.manager);
#undef SETENV
    env[k] = NULL;

    char logpath[4200];
    snprintf(logpath, sizeof(logpath), "%s/log/%s.log", n->data_dir, inst->endpoint);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (logfd < 0)
        log_warn(COMP, "endpoint=%s cannot open %s: %s; its output is discarded",
                 inst->endpoint, logpath, strerror(errno));

    /* fd 3 is the arena (DVS_ARENA_FD=3); stdout and stderr go to the log. */
    uv_stdio_container_t stdio[4];
    stdio[0].flags = UV_IGNORE;
    for (int i = 1; i <= 2; i++) {
        stdio[i].flags = logfd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
        stdio[i].data.fd = logfd;
    }
    stdio[3].flags = UV_INHERIT_FD;
    stdio[3].data.fd = inst->memfd;

    uv_process_options_t opts = {
        .exit_cb = on_child_exit,
        .file = argv[0],
        .args = argv,
        .env = env,
        .cwd = n->data_dir,
        /* Its own session: a signal to the agent's process group (a
         * terminal's ^C, a service manager stopping the agent) does not
         * reach the services, which outlive the agent by design. */
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 4,
        .stdio = stdio,
    };
    inst->proc.data = inst;
    rv = uv_spawn(&n->loop, &inst->proc, &opts);
    /* The handle is initialised even when the spawn fails; it must be
     * closed either way. */
    inst->handles++;
    if (rv != 0) {
        uv_close((uv_handle_t *)&inst->proc, inst_handle_closed);
        log_error(COMP, "endpoint=%s gen=%" PRIu64 " cannot start \"%s\": %s", inst->endpoint,
                  inst->generation, argv[0], uv_strerror(rv));
    } else {
        inst->proc_open = true;
        inst->pid = inst->proc.pid;
        inst->started_ms = now_mono_ms();
        inst->kill_reason = NULL;
        if (node_proc_start_time(inst->pid, &inst->start_time) != 0)
            inst->start_time = 0;
        inst->address[0] = '\0';
        uv_timer_start(&inst->timer, start_timeout, (uint64_t)n->cfg.start_timeout_ms, 0);
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d mode=%s started: %s", inst->endpoint,
                 inst->generation, (int)inst->pid, inst->restore ? "restore" : "fresh",
                 inst->command);
        record_save(inst);
    }
    if (logfd >= 0)
        close(logfd);
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(env);
    free(argv);
    return rv;
}

/* Start (or restart) the endpoint's process with generation G. */
static void inst_start(struct node_instance *inst, uint64_t generation)
{
    if (inst->memfd < 0 || !inst->arena_formatted) {
        /* No arena worth keeping: a fresh one. */
        inst_close_memfd(inst);
        int fd = make_memfd(inst->endpoint, inst->arena_size);
        if (fd < 0) {
            log_error(COMP, "endpoint=%s cannot create its arena (%" PRIu64 " bytes): %s",
                      inst->endpoint, inst->arena_size, strerror(-fd));
            inst->state = INST_DOWN;
            inst_crashed(inst, "no arena");
            return;
        }
        inst->memfd = fd;
        inst->restore = false;
    } else {
        inst->restore = true; /* the arena of the crashed process, kept */
    }
    inst->generation = generation;
    inst->state = INST_STARTING;
    if (inst_spawn(inst) != 0) {
        inst->state = INST_DOWN;
        inst_crashed(inst, "spawn failed");
    }
}

/* ------------------------------------------------------------------------ */
/* Crashes and restarts                                                      */
/* ------------------------------------------------------------------------ */

static void restart_timer_cb(uv_timer_t *t)
{
    struct node_instance *inst = t->data;
    struct node *n = inst->n;
    if (inst->state != INST_DOWN || n->stopping)
        return;
    /* Not while a migration of this endpoint is unresolved: a source that
     * crashed while frozen may only serve again once the abort is
     * committed (docs/migration.md step 6). The next orders retry. */
    if (node_mig_busy(n, inst->endpoint)) {
        uv_timer_start(&inst->timer, restart_timer_cb, 500, 0);
        return;
    }
    uint64_t gen = inst->generation + 1;
    if (inst->dir_generation + 1 > gen)
        gen = inst->dir_generation + 1;
    log_info(COMP, "endpoint=%s restarting gen=%" PRIu64 " (crash %u of %" PRId64 " allowed)",
             inst->endpoint, gen, inst->crashes, n->cfg.restart_limit);
    node_metrics_restart(n);
    inst_start(inst, gen);
}

static void report_failed(struct node_instance *inst);

/*
 * An endpoint that keeps crashing on its arena is given up, but its data is
 * not thrown away with it: the arena goes to DATA_DIR/failed/NAME.gG.arena
 * (sparse: holes stay holes) for an operator to inspect or restore. The
 * crash loop may well be a bug in the service that a fixed binary survives.
 */
static void save_failed_arena(struct node_instance *inst)
{
    struct node *n = inst->n;
    if (inst->memfd < 0 || !inst->arena_formatted)
        return;
    char dir[4200], path[4400];
    snprintf(dir, sizeof(dir), "%s/failed", n->data_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        goto fail;
    snprintf(path, sizeof(path), "%s/%s.g%" PRIu64 ".arena", dir, inst->endpoint,
             inst->generation);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        goto fail;
    int rv = ftruncate(out, (off_t)inst->arena_size) == 0 ? 0 : -errno;
    off_t pos = 0;
    while (rv == 0 && (uint64_t)pos < inst->arena_size) {
        off_t data = lseek(inst->memfd, pos, SEEK_DATA);
        if (data < 0)
            break; /* ENXIO: no more data */
        off_t hole = lseek(inst->memfd, data, SEEK_HOLE);
        if (hole < 0) {
            rv = -errno;
            break;
        }
        off_t in = data, o = data;
        while (in < hole) {
            ssize_t k = copy_file_range(inst->memfd, &in, out, &o, (size_t)(hole - in), 0);
            if (k <= 0) {
                rv = k < 0 ? -errno : -EIO;
                break;
            }
        }
        pos = hole;
    }
    close(out);
    if (rv != 0) {
        errno = -rv;
        goto fail;
    }
    log_warn(COMP, "endpoint=%s gen=%" PRIu64 " its arena is saved in %s", inst->endpoint,
             inst->generation, path);
    return;
fail:
    log_error(COMP, "endpoint=%s cannot save its arena under %s: %s", inst->endpoint, dir,
              strerror(errno));
}

static void inst_crashed(struct node_instance *inst, const char *how)
{
    struct node *n = inst->n;
    int64_t now = now_mono_ms();
    const char *reason = inst->kill_reason ? inst->kill_reason : how;
    if (inst->state != INST_DOWN && inst->started_ms && now - inst->started_ms >= HEALTHY_MS) {
        inst->crashes = 0; /* it had been healthy: a new window */
        inst->window_start_ms = now;
    }
    if (inst->crashes == 0 || now - inst->window_start_ms > n->cfg.restart_window_ms) {
        inst->crashes = 0;
        inst->window_start_ms = now;
    }
    inst->crashes++;
    inst->state = INST_DOWN;
    if ((int64_t)inst->crashes > n->cfg.restart_limit) {
        log_error(COMP, "endpoint=%s gen=%" PRIu64 " failed: %u crashes within %" PRId64
                        " ms (last: %s); not restarting",
                  inst->endpoint, inst->generation, inst->crashes, n->cfg.restart_window_ms,
                  reason);
        inst->state = INST_FAILED;
        save_failed_arena(inst);
        inst_close_memfd(inst);
        report_failed(inst);
        return;
    }
    int64_t delay = n->cfg.restart_backoff_ms;
    for (unsigned i = 1; i < inst->crashes && delay < n->cfg.restart_backoff_max_ms; i++)
        delay *= 2;
    if (delay > n->cfg.restart_backoff_max_ms)
        delay = n->cfg.restart_backoff_max_ms;
    log_warn(COMP, "endpoint=%s gen=%" PRIu64 " crashed (%s); restart in %" PRId64 " ms%s",
             inst->endpoint, inst->generation, reason, delay,
             inst->arena_formatted && inst->memfd >= 0 ? " on its kept arena" : "");
    uv_timer_start(&inst->timer, restart_timer_cb, (uint64_t)delay, 0);
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                   */
/* ------------------------------------------------------------------------ */

static void report_timer_cb(uv_timer_t *t);
static void frozen_check(struct node_instance *inst);

static void report_done(struct node *n, const struct node_call_result *res, uint64_t cookie)
{
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst)
        return;
    inst->report_busy = false;
    uint64_t gen = inst->report_gen;
    if (res->rv == 0 && res->status == 200) {
        if (inst->report_failed_state) {
            log_info(COMP, "endpoint=%s reported failed", inst->endpoint);
            inst->failed_reported = true;
            return;
        }
        inst->reported_gen = gen;
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " address=%s reported running",
                 inst->endpoint, gen, inst->address);
        if (gen != inst->generation && inst->state == INST_SERVING)
            node_inst_report_running(inst); /* restarted meanwhile */
        return;
    }
    const char *field = res->rv == 0 ? json_string_value(json_object_get(res->body, "field"))
                                     : NULL;
    if (res->rv == 0 && res->status == 409 && !inst->report_failed_state && field &&
        strcmp(field, "generation") == 0) {
        /* docs/migration.md: the FSM refuses a generation lower than the
         * current one; an agent that raced with a newer instance must kill
         * its own. */
        log_warn(COMP, "endpoint=%s gen=%" PRIu64 " refused by the directory (%s); stopping "
                       "this instance",
                 inst->endpoint, gen, node_call_error(res));
        if (inst->state == INST_SERVING && gen == inst->generation)
            node_inst_stop(inst, "stale generation");
        return;
    }
    if (res->rv == 0 && res->status == 409) {
        /* Any other conflict (a migration of the endpoint started, which
         * owns its state until it ends): the orders say what to do next. */
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " report not applied: %s", inst->endpoint,
                 gen, node_call_error(res));
        return;
    }
    if (res->rv == 0 && res->status == 404) {
        log_warn(COMP, "endpoint=%s no longer exists; stopping its instance", inst->endpoint);
        node_inst_stop(inst, "endpoint deleted");
        return;
    }
    if (res->rv == DVS_ESHUTDOWN || n->stopping)
        return;
    log_warn(COMP, "endpoint=%s gen=%" PRIu64 " report failed: %s%s; retrying",
             inst->endpoint, gen, res->rv ? "" : "HTTP error: ", node_call_error(res));
    uv_timer_start(&inst->report_timer, report_timer_cb, REPORT_RETRY_MS, 0);
}

static void report_timer_cb(uv_timer_t *t)
{
    struct node_instance *inst = t->data;
    if (inst->state == INST_FAILED && !inst->failed_reported)
        report_failed(inst);
    else if (inst->state == INST_SERVING && inst->reported_gen != inst->generation)
        node_inst_report_running(inst);
    else if (inst->state == INST_FROZEN)
        frozen_check(inst);
}

void node_inst_report_running(struct node_instance *inst)
{
    struct node *n = inst->n;
    if (inst->report_busy || n->stopping)
        return;
    char path[256];
    snprintf(path, sizeof(path), "/v1/endpoints/%s", inst->endpoint);
    inst->report_busy = true;
    inst->report_gen = inst->generation;
    inst->report_failed_state = false;
    node_call(n, "PATCH", path,
              json_pack("{s:s,s:s,s:I}", "state", "running", "address", inst->address,
                        "generation", (json_int_t)inst->generation),
              report_done, inst->serial);
}

static void report_failed(struct node_instance *inst)
{
    struct node *n = inst->n;
    if (inst->report_busy || n->stopping)
        return;
    char path[256];
    snprintf(path, sizeof(path), "/v1/endpoints/%s", inst->endpoint);
    inst->report_busy = true;
    inst->report_failed_state = true;
    node_call(n, "PATCH", path, json_pack("{s:s}", "state", "failed"), report_done,
              inst->serial);
}

/* ------------------------------------------------------------------------ */
/* Stopping                                                                  */
/* ------------------------------------------------------------------------ */

static void stop_escalate(uv_timer_t *t)
{
    struct node_instance *inst = t->data;
    if (inst->state != INST_STOPPING || inst->pid <= 0)
        return;
    log_warn(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d did not stop within %" PRId64
                   " ms; SIGKILL",
             inst->endpoint, inst->generation, (int)inst->pid, inst->n->cfg.stop_timeout_ms);
    inst_signal(inst, SIGKILL);
}

static void stop_answered(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    (void)reply;
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (inst && err != 0 && inst->state == INST_STOPPING)
        inst_signal(inst, SIGTERM); /* no usable channel: the signal way */
}

void node_inst_stop(struct node_instance *inst, const char *why)
{
    struct node *n = inst->n;
    if (inst->state == INST_STOPPING)
        return;
    log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d stopping: %s", inst->endpoint,
             inst->generation, (int)inst->pid, why);
    uv_timer_stop(&inst->timer);
    uv_timer_stop(&inst->report_timer);
    inst->state = INST_STOPPING;
    if (inst->pid <= 0) {
        inst_destroy(inst);
        return;
    }
    if (!inst->ctl || node_ctl_request(inst->ctl, "stop", NULL, CTL_TIMEOUT_MS, stop_answered,
                                       inst->serial) != 0)
        inst_signal(inst, SIGTERM);
    uv_timer_start(&inst->timer, stop_escalate, (uint64_t)n->cfg.stop_timeout_ms, 0);
}

/* ------------------------------------------------------------------------ */
/* Control events                                                            */
/* ------------------------------------------------------------------------ */

static void fds_answered(struct node *n, int err, struct node_ctl_msg *reply, uint64_t cookie)
{
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst || err != 0 || !reply)
        return;
    /* "fds=arena,uffd,pagemap": the arena comes first. */
    const char *names = node_ctl_get(reply, "fds");
    if (!names || strncmp(names, "arena", 5) != 0 || reply->n_fds < 1)
        return;
    int fd = reply->fds[0];
    struct stat st;
    if (inst->memfd < 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size == inst->arena_size) {
        inst->memfd = fd;
        inst->arena_formatted = true;
        reply->fds[0] = -1; /* taken */
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " arena recovered from the adopted process",
                 inst->endpoint, inst->generation);
    }
}

static void start_answered(struct node *n, int err, struct node_ctl_msg *reply,
                           uint64_t cookie)
{
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst)
        return;
    if (err != 0) {
        const char *msg = reply ? node_ctl_get(reply, "message") : NULL;
        log_error(COMP, "endpoint=%s gen=%" PRIu64 " refused start: %s%s%s", inst->endpoint,
                  inst->generation, dvs_err_name(err), msg ? ": " : "", msg ? msg : "");
        inst->kill_reason = "start refused";
        inst_signal(inst, SIGKILL);
    }
    /* Serving is announced by the "serving" event. */
}

/* Adopt: the directory says the process found at start-up is still the
 * endpoint's instance. */
static void inst_adopt(struct node_instance *inst, json_t *ep);

void node_inst_on_hello(struct node *n, struct node_ctl *c, pid_t pid, struct node_ctl_msg *m)
{
    struct node_instance *inst = NULL;
    for (struct node_instance *i = n->instances; i; i = i->next)
        if (!i->dead && i->pid == pid && pid > 0)
            inst = i;
    const char *ep = node_ctl_get(m, "endpoint");
    const char *state = node_ctl_get(m, "state");
    const char *addr = node_ctl_get(m, "address");
    uint64_t gen = 0;
    node_ctl_get_u64(m, "generation", 1, INT64_MAX, &gen);
    if (!inst || !ep || strcmp(ep, inst->endpoint) != 0) {
        /* Not a process we run: a leftover we have no record of. */
        log_warn(COMP, "pid=%d endpoint=%s connected but is not a service of this agent; "
                       "telling it to stop",
                 (int)pid, ep ? ep : "?");
        node_ctl_request(c, "stop", NULL, CTL_TIMEOUT_MS, NULL, 0);
        return;
    }
    node_ctl_bind(c, inst);
    if (addr && strlen(addr) < sizeof(inst->address))
        snprintf(inst->address, sizeof(inst->address), "%s", addr);
    snprintf(inst->svc_state, sizeof(inst->svc_state), "%s", state ? state : "");
    log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d connected state=%s address=%s",
             inst->endpoint, gen, (int)pid, state ? state : "?", addr ? addr : "?");

    switch (inst->state) {
    case INST_UNDECIDED:
        /* The orders decide; fetch the arena back meanwhile. */
        if (inst->memfd < 0)
            node_ctl_request(c, "fds", NULL, CTL_TIMEOUT_MS, fds_answered, inst->serial);
        if (inst->decided_ep) {
            json_t *e = inst->decided_ep;
            inst->decided_ep = NULL;
            inst_adopt(inst, e);
            json_decref(e);
        }
        return;
    case INST_STARTING:
        /* The arena is formatted (fresh) or validated (restore) once the
         * service says hello: from now on a crash keeps it. The start
         * deadline runs on until "serving", except for a migration's
         * restore instance, which waits for a commit its migration bounds. */
        inst->arena_formatted = true;
        if (state && strcmp(state, "restoring") == 0) {
            inst->state = INST_RESTORING;
            if (inst->migration_id > 0) {
                uv_timer_stop(&inst->timer);
                node_mig_on_restore_ready(n, inst);
            } else {
                /* A restart on the kept arena: nothing to wait for. */
                char args[64];
                snprintf(args, sizeof(args), "generation=%" PRIu64, inst->generation);
                if (node_ctl_request(c, "start", args, CTL_TIMEOUT_MS, start_answered,
                                     inst->serial) != 0)
                    inst_signal(inst, SIGKILL);
            }
        }
        return;
    default:
        /* A service that reconnected (a transient failure of the channel).
         * Frozen with no migration left to settle it: the one that froze it
         * ended while the channel was down; settle it now. */
        if (state && strcmp(state, "frozen") == 0 && !node_mig_busy(n, inst->endpoint)) {
            inst->state = INST_FROZEN;
            frozen_check(inst);
        }
        return;
    }
}

void node_inst_on_event(struct node *n, struct node_instance *inst, struct node_ctl_msg *m)
{
    if (strcmp(m->verb, "serving") == 0) {
        const char *addr = node_ctl_get(m, "address");
        uint64_t gen = 0;
        node_ctl_get_u64(m, "generation", 1, INT64_MAX, &gen);
        if (addr && strlen(addr) < sizeof(inst->address))
            snprintf(inst->address, sizeof(inst->address), "%s", addr);
        snprintf(inst->svc_state, sizeof(inst->svc_state), "serving");
        if (inst->state == INST_STARTING || inst->state == INST_RESTORING) {
            uv_timer_stop(&inst->timer);
            inst->state = INST_SERVING;
            inst->arena_formatted = true;
            log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d serving address=%s",
                     inst->endpoint, inst->generation, (int)inst->pid, inst->address);
            record_save(inst);
            if (inst->reported_gen != inst->generation)
                node_inst_report_running(inst);
        }
        return;
    }
    if (strcmp(m->verb, "exiting") == 0) {
        const char *reason = node_ctl_get(m, "reason");
        const char *code = node_ctl_get(m, "code");
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d exiting: %s%s%s", inst->endpoint,
                 inst->generation, (int)inst->pid, reason ? reason : "?", code ? " " : "",
                 code ? code : "");
        if (code && strcmp(code, "DVS_EPROTO") == 0 && inst->restore)
            inst->kill_reason = "the kept arena is not valid";
        return;
    }
    (void)n;
    log_debug(COMP, "endpoint=%s unexpected control message %s", inst->endpoint, m->verb);
}

void node_inst_on_ctl_closed(struct node *n, struct node_instance *inst)
{
    (void)n;
    /* The process exit (or a reconnection) follows; nothing to decide here. */
    log_debug(COMP, "endpoint=%s gen=%" PRIu64 " control channel closed", inst->endpoint,
              inst->generation);
}

/* ------------------------------------------------------------------------ */
/* Adoption at start-up                                                      */
/* ------------------------------------------------------------------------ */

static int load_one_record(struct node *n, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)RECORD_MAX)
        return -EINVAL;
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return -EINVAL;
    int rv = -EINVAL;
    const char *ep = json_string_value(json_object_get(j, "endpoint"));
    const char *cmd = json_string_value(json_object_get(j, "command"));
    const char *addr_s = json_string_value(json_object_get(j, "arena_addr"));
    json_int_t pid = json_integer_value(json_object_get(j, "pid"));
    json_int_t start = json_integer_value(json_object_get(j, "start_time"));
    json_int_t gen = json_integer_value(json_object_get(j, "generation"));
    json_int_t size = json_integer_value(json_object_get(j, "arena_size"));
    json_int_t mig = json_integer_value(json_object_get(j, "migration"));
    uint64_t addr;
    if (!ep || !cmd || strlen(ep) > DVS_MAX_NAME || pid <= 1 || pid > INT32_MAX || gen <= 0 ||
        size <= 0 || parse_hex_addr(addr_s, &addr) != 0)
        goto out;
    rv = 0;
    uint64_t now_start = 0;
    if (node_proc_start_time((pid_t)pid, &now_start) != 0 || now_start != (uint64_t)start) {
        log_info(COMP, "endpoint=%s pid=%d of the previous run is gone", ep, (int)pid);
        unlink(path);
        goto out;
    }
    struct node_instance *inst = inst_new(n, ep, cmd);
    inst->pid = (pid_t)pid;
    inst->record_pid = (pid_t)pid;
    inst->start_time = (uint64_t)start;
    inst->generation = (uint64_t)gen;
    inst->arena_addr = addr;
    inst->arena_size = (uint64_t)size;
    inst->migration_id = mig;
    inst->restore = json_is_true(json_object_get(j, "restore"));
    inst->state = INST_UNDECIDED;
    if (watch_pidfd(inst) != 0) {
        log_warn(COMP, "endpoint=%s pid=%d cannot be watched; killing it", ep, (int)pid);
        kill((pid_t)pid, SIGKILL);
        inst_destroy(inst);
        goto out;
    }
    log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d found alive from the previous run; "
                   "waiting for the directory",
             ep, inst->generation, (int)pid);
out:
    json_decref(j);
    return rv;
}

int node_inst_load_records(struct node *n)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/services", n->data_dir);
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char path[8400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (len > 9 && strcmp(de->d_name + len - 9, ".json.tmp") == 0) {
            unlink(path); /* an interrupted write */
            continue;
        }
        if (len <= 5 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        if (load_one_record(n, path) != 0) {
            log_warn(COMP, "ignoring malformed record %s", path);
            unlink(path);
        }
    }
    closedir(d);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reconciliation with the orders                                            */
/* ------------------------------------------------------------------------ */

struct ep_view {
    const char *name;
    const char *command;
    const char *state;
    const char *address;
    uint64_t generation;
    uint64_t arena_addr;
    uint64_t arena_size;
};

static bool ep_parse(json_t *e, struct ep_view *v)
{
    json_int_t gen = json_integer_value(json_object_get(e, "generation"));
    json_int_t size = json_integer_value(json_object_get(e, "arena_size"));
    v->name = json_string_value(json_object_get(e, "name"));
    v->command = json_string_value(json_object_get(e, "command"));
    v->state = json_string_value(json_object_get(e, "state"));
    v->address = json_string_value(json_object_get(e, "address"));
    v->generation = gen > 0 ? (uint64_t)gen : 0;
    v->arena_size = size > 0 ? (uint64_t)size : 0;
    if (!v->name || !v->command || !v->state || strlen(v->name) > DVS_MAX_NAME ||
        parse_hex_addr(json_string_value(json_object_get(e, "arena_addr")), &v->arena_addr) !=
            0 ||
        v->arena_size < 65536 || v->arena_size % 4096 != 0)
        return false;
    return true;
}

static void unfreeze_answered(struct node *n, int err, struct node_ctl_msg *reply,
                              uint64_t cookie)
{
    (void)reply;
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst)
        return;
    inst->unfreezing = false;
    if (err == 0) {
        inst->state = INST_SERVING;
        log_info(COMP, "endpoint=%s gen=%" PRIu64 " unfrozen (its migration ended without a "
                       "commit while the agent was away)",
                 inst->endpoint, inst->generation);
    } else {
        log_warn(COMP, "endpoint=%s unfreeze failed: %s", inst->endpoint, dvs_err_name(err));
    }
}

/*
 * An adopted instance that is frozen: the agent that froze it died during a
 * migration. It may serve again only if the abort is committed, which a
 * consistent read of the endpoint shows: still here, same generation, not
 * migrating (docs/migration.md step 6; an ordinary read could be stale).
 */
static void frozen_check_done(struct node *n, const struct node_call_result *res,
                              uint64_t cookie)
{
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    if (!inst || inst->state != INST_FROZEN)
        return;
    inst->report_busy = false;
    if (res->rv != 0 || res->status != 200) {
        if (res->rv != DVS_ESHUTDOWN)
            uv_timer_start(&inst->report_timer, report_timer_cb, REPORT_RETRY_MS, 0);
        return;
    }
    const char *node = json_string_value(json_object_get(res->body, "node"));
    const char *state = json_string_value(json_object_get(res->body, "state"));
    json_int_t gen = json_integer_value(json_object_get(res->body, "generation"));
    if (node && strcmp(node, n->cfg.id) == 0 && (uint64_t)gen == inst->generation && state &&
        strcmp(state, "migrating") != 0 && !node_mig_busy(n, inst->endpoint)) {
        if (node_ctl_request(inst->ctl, "unfreeze", NULL, CTL_TIMEOUT_MS, unfreeze_answered,
                             inst->serial) != 0)
            log_warn(COMP, "endpoint=%s cannot send unfreeze", inst->endpoint);
        else
            inst->unfreezing = true;
    }
}

static void frozen_check(struct node_instance *inst)
{
    if (inst->report_busy || inst->unfreezing || !inst->ctl ||
        node_mig_busy(inst->n, inst->endpoint))
        return;
    char path[256];
    snprintf(path, sizeof(path), "/v1/endpoints/%s?consistent", inst->endpoint);
    inst->report_busy = true;
    node_call(inst->n, "GET", path, NULL, frozen_check_done, inst->serial);
}

static void inst_adopt(struct node_instance *inst, json_t *ep)
{
    struct node *n = inst->n;
    const char *st = inst->svc_state;
    log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d adopted (service state %s)",
             inst->endpoint, inst->generation, (int)inst->pid, st);
    inst->reported_gen = inst->generation;
    inst->started_ms = now_mono_ms();
    if (strcmp(st, "serving") == 0) {
        inst->state = INST_SERVING;
        struct ep_view v;
        if (ep_parse(ep, &v) && (!v.address || strcmp(v.address, inst->address) != 0 ||
                                 strcmp(v.state, "running") != 0)) {
            inst->reported_gen = 0;
            node_inst_report_running(inst);
        }
    } else if (strcmp(st, "frozen") == 0) {
        inst->state = INST_FROZEN;
        frozen_check(inst);
    } else if (strcmp(st, "restoring") == 0) {
        /* The previous agent died between the commit of a migration to this
         * node and its "start": the directory names this very instance, so
         * the commit happened; finish the job. */
        inst->state = INST_RESTORING;
        inst->migration_id = 0;
        record_save(inst);
        char args[64];
        snprintf(args, sizeof(args), "generation=%" PRIu64, inst->generation);
        if (node_ctl_request(inst->ctl, "start", args, CTL_TIMEOUT_MS, start_answered,
                             inst->serial) != 0)
            inst_signal(inst, SIGKILL);
    } else if (strcmp(st, "moved") == 0) {
        inst->state = INST_MOVED; /* it exits after its linger */
    } else {
        inst->state = INST_STOPPING;
        inst_signal(inst, SIGKILL);
    }
    (void)n;
}

/* The directory has no place for this process: kill it (docs/migration.md,
 * "Agent restart": adopt those the directory says belong here, kill the
 * others). */
static void inst_reject(struct node_instance *inst, const char *why)
{
    log_info(COMP, "endpoint=%s gen=%" PRIu64 " pid=%d from the previous run is not wanted "
                   "(%s); killing it",
             inst->endpoint, inst->generation, (int)inst->pid, why);
    inst->state = INST_STOPPING;
    inst_signal(inst, SIGKILL);
}

static void reconcile_one(struct node *n, json_t *e)
{
    struct ep_view v;
    if (!ep_parse(e, &v)) {
        log_warn(COMP, "orders hold a malformed endpoint; ignored");
        return;
    }
    /* Processes found at start-up: the one with the directory's generation
     * is adopted, any other of the same endpoint killed. */
    bool undecided = false;
    for (struct node_instance *u = n->instances; u; u = u->next) {
        if (u->dead || u->state != INST_UNDECIDED || strcmp(u->endpoint, v.name) != 0)
            continue;
        undecided = true;
        u->seen = true;
        u->dir_generation = v.generation;
        if (v.generation != u->generation) {
            inst_reject(u, "the directory has another generation");
        } else if (u->ctl) {
            inst_adopt(u, e);
        } else {
            /* Wait for its hello (it reconnects within a second). */
            json_decref(u->decided_ep);
            u->decided_ep = json_incref(e);
        }
    }
    if (undecided)
        return;
    struct node_instance *inst = node_inst_find(n, v.name);
    if (inst)
        inst->dir_generation = v.generation;
    if (node_mig_busy(n, v.name))
        return; /* the migration owns the endpoint until it is resolved */
    if (!inst) {
        if (strcmp(v.state, "pending") != 0 && strcmp(v.state, "running") != 0)
            return; /* failed, stopped, or migrating without us */
        inst = inst_new(n, v.name, v.command);
        inst->arena_addr = v.arena_addr;
        inst->arena_size = v.arena_size;
        inst->dir_generation = v.generation;
        log_info(COMP, "endpoint=%s placed here (directory gen=%" PRIu64 ", state %s); "
                       "starting gen=%" PRIu64,
                 v.name, v.generation, v.state, v.generation + 1);
        inst_start(inst, v.generation + 1);
        return;
    }
    if (inst->migration_id > 0)
        return;
    switch (inst->state) {
    case INST_SERVING:
        if (strcmp(v.state, "stopped") == 0) {
            node_inst_stop(inst, "the endpoint is stopped");
        } else if (v.generation > inst->generation) {
            log_warn(COMP, "endpoint=%s directory gen=%" PRIu64 " is newer than ours (%" PRIu64
                           ")",
                     v.name, v.generation, inst->generation);
            node_inst_stop(inst, "stale generation");
        } else if (!inst->report_busy &&
                   (v.generation != inst->generation || strcmp(v.state, "running") != 0 ||
                    !v.address || strcmp(v.address, inst->address) != 0)) {
            inst->reported_gen = 0;
            node_inst_report_running(inst);
        }
        break;
    case INST_FROZEN:
        frozen_check(inst);
        break;
    case INST_FAILED:
        if (strcmp(v.state, "failed") != 0 && !inst->report_busy)
            report_failed(inst);
        break;
    default:
        break;
    }
}

void node_inst_reconcile(struct node *n, json_t *orders)
{
    json_t *eps = json_object_get(orders, "endpoints");
    size_t i;
    json_t *e;
    for (struct node_instance *inst = n->instances; inst; inst = inst->next)
        inst->seen = false;
    json_array_foreach(eps, i, e)
    {
        const char *node = json_string_value(json_object_get(e, "node"));
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!node || !name || strcmp(node, n->cfg.id) != 0)
            continue;
        struct node_instance *inst = node_inst_find(n, name);
        if (inst)
            inst->seen = true;
        reconcile_one(n, e);
        if ((inst = node_inst_find(n, name)) != NULL)
            inst->seen = true;
    }
    /* Instances of endpoints no longer placed here. */
    struct node_instance *next;
    for (struct node_instance *inst = n->instances; inst; inst = next) {
        next = inst->next;
        /* A migration's restore instance belongs to its migration, except
         * one found at start-up (its agent died): unless the directory
         * placed its endpoint here (seen), its migration did not commit. */
        if (inst->seen || inst->dead ||
            (inst->migration_id > 0 && inst->state != INST_UNDECIDED) ||
            node_mig_busy(n, inst->endpoint))
            continue;
        switch (inst->state) {
        case INST_UNDECIDED:
            inst_reject(inst, "the endpoint is not placed on this node");
            break;
        case INST_DOWN:
        case INST_FAILED:
            uv_timer_stop(&inst->timer);
            log_info(COMP, "endpoint=%s no longer placed here; forgetting it", inst->endpoint);
            inst_destroy(inst);
            break;
        case INST_STOPPING:
        case INST_MOVED:
            break;
        default:
            node_inst_stop(inst, "the endpoint is no longer placed on this node");
            break;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Migrations' instances                                                     */
/* ------------------------------------------------------------------------ */

int node_inst_spawn_restore(struct node *n, const char *endpoint, const char *command,
                            uint64_t generation, uint64_t arena_addr, uint64_t arena_size,
                            int memfd, int64_t migration_id, struct node_instance **ret)
{
    struct node_instance *inst = node_inst_find(n, endpoint);
    if (inst) {
        /* A leftover (down or failed) of an earlier stay on this node. */
        if (inst->pid > 0 || inst->state == INST_STOPPING) {
            close(memfd);
            return -EBUSY;
        }
        uv_timer_stop(&inst->timer);
        inst_destroy(inst);
    }
    inst = inst_new(n, endpoint, command);
    inst->arena_addr = arena_addr;
    inst->arena_size = arena_size;
    inst->memfd = memfd;
    inst->arena_formatted = true;
    inst->restore = true;
    inst->generation = generation;
    inst->migration_id = migration_id;
    inst->state = INST_STARTING;
    int rv = inst_spawn(inst);
    if (rv != 0) {
        inst->state = INST_DOWN;
        inst_destroy(inst);
        return rv;
    }
    *ret = inst;
    return 0;
}

/* The destination's instance is now the endpoint's: the commit is done. */
void node_inst_promote(struct node_instance *inst)
{
    inst->migration_id = 0;
    inst->reported_gen = inst->generation; /* the commit wrote the directory */
    inst->crashes = 0;
    inst->started_ms = now_mono_ms();
    record_save(inst);
}

/* ------------------------------------------------------------------------ */
/* Load                                                                      */
/* ------------------------------------------------------------------------ */

static void status_answered(struct node *n, int err, struct node_ctl_msg *reply,
                            uint64_t cookie)
{
    struct node_instance *inst = node_inst_by_serial(n, cookie);
    uint64_t req;
    if (!inst || err != 0 || !reply ||
        node_ctl_get_u64(reply, "requests", 0, UINT64_MAX, &req) != 0)
        return;
    int64_t now = now_mono_ms();
    if (inst->req_sample_ms > 0 && req >= inst->requests && now > inst->req_sample_ms)
        inst->rps = (double)(req - inst->requests) * 1000.0 / (double)(now - inst->req_sample_ms);
    inst->requests = req;
    inst->req_sample_ms = now;
}

void node_inst_sample_load(struct node *n, double interval_s)
{
    long hz = sysconf(_SC_CLK_TCK);
    double cpu = 0, rps = 0;
    uint64_t rss_total = 0;
    for (struct node_instance *inst = n->instances; inst; inst = inst->next) {
        if (inst->dead || inst->pid <= 0)
            continue;
        uint64_t ticks, rss;
        if (node_proc_read(inst->pid, &ticks, &rss) == 0) {
            if (inst->have_sample && ticks >= inst->cpu_ticks && interval_s > 0 && hz > 0)
                inst->cpu_cores = (double)(ticks - inst->cpu_ticks) / (double)hz / interval_s;
            inst->cpu_ticks = ticks;
            inst->rss = rss;
            inst->have_sample = true;
            cpu += inst->cpu_cores;
            rss_total += rss;
        }
        if (inst->state == INST_SERVING && inst->ctl)
            node_ctl_request(inst->ctl, "status", NULL, CTL_TIMEOUT_MS, status_answered,
                             inst->serial);
        if (inst->state == INST_SERVING)
            rps += inst->rps;
    }

    /* A node whose capacity was declared (--cpu/--mem) offers that share to
     * DVS: its use is what the services use. A node measured whole is
     * judged whole: other processes eat into the same capacity. */
    struct node_cpu_sample s;
    double node_cpu = -1;
    if (node_cpu_read(&s) == 0) {
        if (n->cpu_prev_ok)
            node_cpu = node_cpu_cores_used(&n->cpu_prev, &s, sysconf(_SC_NPROCESSORS_ONLN));
        n->cpu_prev = s;
        n->cpu_prev_ok = true;
    }
    uint64_t mem_used = 0, mem_total = 0;
    bool mem_ok = node_mem_read(&mem_used, &mem_total) == 0;

    struct node_load_figures f = {.rps = rps, .valid = true};
    f.cpu_used = n->cfg.cpu > 0 || node_cpu < 0 ? cpu : node_cpu;
    f.mem_used = n->cfg.mem > 0 || !mem_ok ? (double)rss_total : (double)mem_used;
    pthread_mutex_lock(&n->mu);
    n->load = f;
    pthread_mutex_unlock(&n->mu);
    log_debug(COMP, "load cpu=%.2f mem=%.0f rps=%.1f services_cpu=%.2f services_rss=%" PRIu64,
              f.cpu_used, f.mem_used, f.rps, cpu, rss_total);
}

/* ------------------------------------------------------------------------ */
/* Shut-down                                                                 */
/* ------------------------------------------------------------------------ */

void node_inst_close_all(struct node *n)
{
    struct node_instance *next;
    for (struct node_instance *inst = n->instances; inst; inst = next) {
        next = inst->next;
        uv_timer_stop(&inst->timer);
        uv_timer_stop(&inst->report_timer);
        json_decref(inst->decided_ep);
        inst->decided_ep = NULL;
        bool stop = n->cfg.stop_services_on_exit || inst->migration_id > 0 ||
                    inst->state == INST_STARTING || inst->state == INST_RESTORING;
        if (inst->pid > 0 && stop) {
            /* A restore instance never started, or the operator wants the
             * services down with the agent. */
            inst_signal(inst, inst->migration_id > 0 ? SIGKILL : SIGTERM);
        }
        /* Running services stay up for the next agent to adopt: keep their
         * records; stopped ones took theirs with them (inst_destroy). */
        inst->keep_record = inst->pid > 0 && !stop;
        if (inst->proc_open) {
            /* Closing the handle does not kill the child. */
            uv_close((uv_handle_t *)&inst->proc, inst_handle_closed);
            inst->proc_open = false;
        }
        if (inst->pidpoll_open) {
            uv_close((uv_handle_t *)&inst->pidpoll, inst_handle_closed);
            inst->pidpoll_open = false;
            close(inst->pidfd);
            inst->pidfd = -1;
        }
        inst_destroy(inst);
    }
}
