/*
 * A stand-in for the manager's directory in the libdvs tests: a real HTTP
 * server on 127.0.0.1 that answers GET /v1/endpoints/{name}, including
 * blocking queries (?index=N&wait=D), as docs/api.md describes. Each
 * connection is served on its own thread, so blocking queries do not stall
 * other lookups.
 */
#ifndef DVS_TEST_DIRSTUB_H
#define DVS_TEST_DIRSTUB_H

#include <stdint.h>

struct dirstub;

/* Start on an ephemeral port; *ret_url receives "http://127.0.0.1:PORT". */
int dirstub_start(struct dirstub **ret, char *ret_url, size_t len);

/* Stop the server and free it; wakes blocked queries. */
void dirstub_stop(struct dirstub *d);

/* Create or update an endpoint (address NULL: no instance). Bumps its
 * modify_index and wakes the blocking queries watching it. */
void dirstub_set(struct dirstub *d, const char *name, const char *address,
                 uint64_t generation, const char *state);

/* Forget an endpoint (later lookups get 404). */
void dirstub_delete(struct dirstub *d, const char *name);

/* How many GETs were answered, and how many of them were blocking. */
unsigned dirstub_gets(struct dirstub *d);
unsigned dirstub_blocking_gets(struct dirstub *d);

#endif
