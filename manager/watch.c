/*
 * Blocking queries, as Consul does them (DESIGN.md §3): GET ...?index=N&wait=D
 * answers at once if the watched data's index is past N, otherwise it waits
 * until a change moves it past N or until D has passed, then answers with
 * whatever is current. Agents watch their orders this way, clients an
 * endpoint's generation.
 *
 * A parked request is a struct watch on a list; each FSM change (the change
 * callback of fsm.c, on the loop thread) re-runs the handler of the watches
 * whose tables changed. Followers wake their watches too: they apply the
 * same log, so a client may block on any member.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "dvs.h"
#include "manager/daemon.h"

#define DEFAULT_WAIT_MS (5 * 60 * 1000)

struct watch {
    uv_timer_t timer; /* first: the close callback frees the watch through it */
    struct mgr *m;
    struct api_req *req; /* NULL once the client went away */
    api_handler_fn handler;
    unsigned tables;
    uint64_t min_index;
    bool parked;    /* on the list */
    bool timed_out; /* the wait ran out: answer whatever is current */
    struct watch *prev, *next;
};

struct mgr_watches {
    struct watch *head;
    unsigned count;
};

static void unlink_watch(struct mgr_watches *ws, struct watch *w)
{
    if (!w->parked)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        ws->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->parked = false;
    ws->count--;
}

static void link_watch(struct mgr_watches *ws, struct watch *w)
{
    w->prev = NULL;
    w->next = ws->head;
    if (ws->head)
        ws->head->prev = w;
    ws->head = w;
    w->parked = true;
    ws->count++;
}

static void free_watch_cb(uv_handle_t *h)
{
    free(h); /* the timer is the first member of struct watch */
}

static void release_watch(struct watch *w)
{
    unlink_watch(w->m->watches, w);
    if (w->req) {
        api_req_on_close(w->req, NULL, NULL);
        api_req_set_data(w->req, NULL);
    }
    uv_close((uv_handle_t *)&w->timer, free_watch_cb);
}

/* The client went away: forget the request. */
static void on_req_closed(struct api_req *req, void *data)
{
    struct watch *w = data;
    w->req = NULL;
    unlink_watch(w->m->watches, w);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, free_watch_cb);
}

static void rerun(struct watch *w)
{
    unlink_watch(w->m->watches, w);
    /* The handler either parks the request again or answers it (and then
     * mgr_watch_park has released the watch). */
    w->handler(w->req, w->m);
}

static void on_timeout(uv_timer_t *t)
{
    struct watch *w = (struct watch *)t;
    w->timed_out = true;
    rerun(w);
}

bool mgr_watch_park(struct mgr *m, struct api_req *req, unsigned tables, uint64_t current,
                    api_handler_fn handler)
{
    struct watch *w = api_req_get_data(req);
    if (w) {
        /* Woken by a change or by the timer. */
        if (w->timed_out || current > w->min_index || m->stopping) {
            uv_timer_stop(&w->timer);
            release_watch(w);
            return false;
        }
        link_watch(m->watches, w); /* a change elsewhere in the table: wait on */
        return true;
    }

    const char *qi = api_req_query(req, "index");
    if (!qi)
        return false;
    int64_t index;
    if (parse_int64(qi, &index) != 0 || index < 0) {
        api_reply_error(req, 400, "bad_request", "index",
                        "query parameter index=\"%s\" is not a non-negative integer "
                        "(use the X-Dvs-Index of a previous answer)",
                        qi);
        return true;
    }
    int64_t wait_ms = DEFAULT_WAIT_MS;
    const char *qw = api_req_query(req, "wait");
    if (qw && parse_duration_ms(qw, &wait_ms) != 0) {
        api_reply_error(req, 400, "bad_request", "wait",
                        "query parameter wait=\"%s\" is not a duration (e.g. 500ms, 30s, "
                        "5m)",
                        qw);
        return true;
    }
    if (wait_ms > m->cfg.max_wait_ms)
        wait_ms = m->cfg.max_wait_ms;
    if (current > (uint64_t)index || wait_ms == 0 || m->stopping)
        return false;

    w = xcalloc(1, sizeof(*w));
    w->m = m;
    w->req = req;
    w->handler = handler;
    w->tables = tables;
    w->min_index = (uint64_t)index;
    uv_timer_init(&m->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_timeout, (uint64_t)wait_ms, 0);
    api_req_set_data(req, w);
    api_req_on_close(req, on_req_closed, w);
    link_watch(m->watches, w);
    return true;
}

void mgr_watches_notify(struct mgr *m, unsigned tables, uint64_t index)
{
    struct mgr_watches *ws = m->watches;
    if (!ws || !ws->head)
        return;
    /* Collect first: re-running a handler may re-link the watch at the head. */
    struct watch *fire = NULL;
    for (struct watch *w = ws->head, *next; w; w = next) {
        next = w->next;
        if ((w->tables & tables) && index > w->min_index) {
            unlink_watch(ws, w);
            w->next = fire;
            fire = w;
        }
    }
    while (fire) {
        struct watch *w = fire;
        fire = w->next;
        w->next = NULL;
        w->handler(w->req, w->m);
    }
}

unsigned mgr_watches_count(const struct mgr *m)
{
    return m->watches ? m->watches->count : 0;
}

int mgr_watches_init(struct mgr *m)
{
    m->watches = xcalloc(1, sizeof(*m->watches));
    return 0;
}

/* Shutdown: answer every parked request now (with what is current). */
void mgr_watches_close(struct mgr *m)
{
    struct mgr_watches *ws = m->watches;
    if (!ws)
        return;
    while (ws->head) {
        struct watch *w = ws->head;
        w->timed_out = true;
        uv_timer_stop(&w->timer);
        rerun(w);
    }
    free(ws);
    m->watches = NULL;
}
