/*
 * libdvs — the DVS client and server library.
 *
 * This is the only installed header. Every function returns 0 or a negative
 * error code: a negated errno (passed through from the system or libuv), or
 * one of the DVS_E* codes below, which live in a reserved range so the two
 * never collide. dvs_strerror() and dvs_err_name() describe either kind.
 */
#ifndef DVS_H
#define DVS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(DVS_BUILDING)
#define DVS_API __attribute__((visibility("default")))
#else
#define DVS_API
#endif

#define DVS_VERSION_MAJOR 0
#define DVS_VERSION_MINOR 1
#define DVS_VERSION_PATCH 0
#define DVS_VERSION_HEX \
    ((DVS_VERSION_MAJOR << 16) | (DVS_VERSION_MINOR << 8) | DVS_VERSION_PATCH)

/* The version of the library actually linked, as DVS_VERSION_HEX encodes it. */
DVS_API unsigned dvs_version(void);

/*
 * Domain error codes. They start at -4000 so that they are never confused with
 * a negated errno. One list generates the enum, the names and the messages
 * (as libuv's UV_ERRNO_MAP does).
 */
#define DVS_ERRNO_MAP(XX)                                                     \
    XX(NOTLEADER, -4001, "this manager member is not the leader")            \
    XX(NOLEADER, -4002, "the manager cluster has no leader right now")       \
    XX(NOTFOUND, -4003, "no such object")                                    \
    XX(EXISTS, -4004, "an object with that name already exists")             \
    XX(BADREQUEST, -4005, "the request is malformed")                        \
    XX(TOOBIG, -4006, "the request or message is too large")                 \
    XX(CONFLICT, -4007, "the request conflicts with the current state")      \
    XX(NOSPACE, -4008, "no capacity left for the request")                   \
    XX(MOVED, -4009, "the endpoint moved to another node")                   \
    XX(MIGRATING, -4010, "the endpoint is migrating; retry shortly")         \
    XX(STALEGEN, -4011, "the generation is older than the current one")      \
    XX(PROTO, -4012, "protocol error in a frame or stream")                  \
    XX(TIMEOUT, -4013, "the operation timed out")                            \
    XX(UNAVAILABLE, -4014, "no manager could be reached")                    \
    XX(INTERNAL, -4015, "internal error")                                    \
    XX(SHUTDOWN, -4016, "the daemon is shutting down")                       \
    XX(UNKNOWNOUTCOME, -4017, "the outcome is unknown (leadership was lost)")

enum dvs_errno {
#define DVS__ERR_ENUM(name, value, msg) DVS_E##name = (value),
    DVS_ERRNO_MAP(DVS__ERR_ENUM)
#undef DVS__ERR_ENUM
};

/* A message for a DVS_E* code or a negated errno. Never NULL; static storage. */
DVS_API const char *dvs_strerror(int err);

/* The symbolic name ("DVS_ENOTFOUND", "ENOENT"), or "UNKNOWN". Static storage. */
DVS_API const char *dvs_err_name(int err);

/* ===========================================================================
 * Common definitions
 */

/* The largest request or reply payload, in bytes. Larger ones are refused
 * with DVS_ETOOBIG before anything is sent or allocated. */
#define DVS_MAX_PAYLOAD (1u << 20)

/* Endpoint names: 1..63 characters of [a-z0-9_.-], first a letter or digit. */
#define DVS_MAX_NAME 63

/* Free memory the library handed to the caller (dvs_call's reply). NULL ok. */
DVS_API void dvs_free(void *p);

/*
 * Libraries never print (STYLE.md 14): give a log callback to see what libdvs
 * does. msg is one line without a newline, valid only during the call. The
 * callback runs on whichever thread the library is working on (the server's
 * loop thread, a thread inside dvs_call) and must be thread-safe if the
 * handle is shared between threads.
 */
enum dvs_log_level {
    DVS_LOG_DEBUG = 0,
    DVS_LOG_INFO = 1,
    DVS_LOG_WARN = 2,
    DVS_LOG_ERROR = 3,
};
typedef void (*dvs_log_fn)(void *data, int level, const char *msg);

/* ===========================================================================
 * The migratable arena (DESIGN.md §4)
 *
 * A service keeps all the state it wants to survive a migration in its
 * arena: a memfd mapped MAP_SHARED at an address the manager assigns to the
 * endpoint, the same on every node, so a pointer into the arena stays valid
 * when the arena's pages are copied to another node and mapped there by a
 * fresh instance of the same binary.
 *
 * THE RULE. Memory reachable from the root object must contain only plain
 * data and pointers INTO THE SAME ARENA. Never store in the arena:
 *   - pointers to the heap (malloc), the stack, globals or string literals;
 *   - function pointers or pointers into the binary (vtables, callbacks):
 *     address-space layout randomisation moves them on the next instance;
 *   - file descriptors, thread ids, locks' owners, or anything else that
 *     names a process-local resource.
 * Everything else (integers, floats, char arrays, structs of those, pointers
 * to arena memory) migrates. The library does not and cannot check this.
 *
 * The arena starts with a header (magic, version, size, base address, the
 * allocator's state, the root) that the library validates when an existing
 * arena is opened (the restore case). The allocator is a segregated-fit
 * allocator with boundary tags and immediate coalescing; all its metadata
 * lives inside the arena as offsets, so it migrates with the data.
 *
 * Threads: an arena is not thread-safe; the caller serialises every call on
 * one arena (the server loop does: the handler runs on one thread). The
 * arena is MADV_DONTFORK: a child process does not inherit the mapping.
 */
typedef struct dvs_arena dvs_arena;

/* dvs_arena_open flags. */
enum {
    /* Format a new, empty arena in the fd (its contents are discarded). An
     * fd of size 0 is first extended to the requested size. Without this
     * flag the fd must hold a valid arena formatted for the same address and
     * size, and it is checked (the restore case). */
    DVS_ARENA_INIT = 1u << 0,
    /* When restoring, check only the header, not every allocator block.
     * Faster for huge arenas; a corrupt heap then shows up later. */
    DVS_ARENA_NOCHECK = 1u << 1,
    /* When restoring, only map: no check at all, the contents may still be
     * arriving. Call dvs_arena_check before using the arena. */
    DVS_ARENA_MAPONLY = 1u << 2,
};

/*
 * Create a private memfd (MFD_CLOEXEC, sealed against shrinking and growing)
 * of size bytes, map it at addr and format an empty arena in it. addr and
 * size must be multiples of the page size, size at least 64 KiB.
 *
 * Returns 0 and *ret_arena (close it with dvs_arena_close, which also closes
 * the memfd), or: -EINVAL (bad addr/size), -EEXIST (something is already
 * mapped in [addr, addr+size)), -ENOMEM, or a negated errno from
 * memfd_create/ftruncate/mmap. *ret_arena is untouched on failure.
 */
DVS_API int dvs_arena_create(uintptr_t addr, size_t size, dvs_arena **ret_arena);

/*
 * Map the arena memfd fd (borrowed: it stays the caller's, dvs_arena_close
 * does not close it) at addr with MAP_FIXED_NOREPLACE. With DVS_ARENA_INIT a
 * new arena is formatted; otherwise the existing header and, unless
 * DVS_ARENA_NOCHECK, the whole allocator are validated.
 *
 * Returns 0 and *ret_arena, or: -EINVAL (bad arguments, or the fd's size
 * differs from size), -EEXIST (the range is in use), DVS_EPROTO (the fd
 * does not hold a valid arena for this addr and size), -ENOMEM, or a negated
 * errno from fstat/ftruncate/mmap. On failure nothing stays mapped.
 */
DVS_API int dvs_arena_open(int fd, uintptr_t addr, size_t size, unsigned flags,
                           dvs_arena **ret_arena);

/*
 * Check an arena opened with DVS_ARENA_MAPONLY, as dvs_arena_open would
 * have (the header, and unless DVS_ARENA_NOCHECK in flags every allocator
 * block). Returns 0 or DVS_EPROTO.
 */
DVS_API int dvs_arena_check(dvs_arena *arena, unsigned flags);

/* Unmap the arena and free the handle (closing the fd only if
 * dvs_arena_create made it). Pointers into the arena become invalid. NULL ok. */
DVS_API void dvs_arena_close(dvs_arena *arena);

/* The memfd, the mapping's address and its size. */
DVS_API int dvs_arena_fd(const dvs_arena *arena);
DVS_API void *dvs_arena_base(const dvs_arena *arena);
DVS_API size_t dvs_arena_size(const dvs_arena *arena);

/*
 * Allocate n bytes (16-byte aligned) inside the arena. Returns NULL when the
 * arena has no free block large enough (it never grows) or n is 0 or absurd.
 */
DVS_API void *dvs_arena_alloc(dvs_arena *arena, size_t n);

/* Like dvs_arena_alloc for nmemb * size bytes, zeroed; NULL on overflow. */
DVS_API void *dvs_arena_calloc(dvs_arena *arena, size_t nmemb, size_t size);

/*
 * Resize p (NULL: allocate) to n bytes, in place when the next block is free
 * and large enough, else by moving it. Returns the new pointer, or NULL with
 * p untouched when there is no room. n == 0 frees p and returns NULL.
 */
DVS_API void *dvs_arena_realloc(dvs_arena *arena, void *p, size_t n);

/*
 * Free p (NULL ok). p must come from this arena's allocator and not have been
 * freed: anything else is a bug in the caller and aborts (assert), because
 * going on would corrupt state that outlives the process.
 */
DVS_API void dvs_arena_free(dvs_arena *arena, void *p);

/*
 * The root object: the one pointer the service finds its state through after
 * a restore. NULL in a fresh arena. set_root takes a pointer returned by
 * dvs_arena_alloc (or NULL) and returns 0, or -EINVAL if p is not the start
 * of an allocated block of this arena.
 */
DVS_API void *dvs_arena_root(const dvs_arena *arena);
DVS_API int dvs_arena_set_root(dvs_arena *arena, void *p);

/* Whether [p, p+n) lies inside the arena's mapping. */
DVS_API bool dvs_arena_contains(const dvs_arena *arena, const void *p, size_t n);

struct dvs_arena_stats {
    size_t size;         /* the whole mapping */
    size_t heap_size;    /* the part the allocator manages */
    size_t used;         /* bytes in allocated blocks, headers included */
    size_t free;         /* bytes in free blocks, headers included */
    size_t largest_free; /* the largest allocation that would succeed now */
    uint64_t used_blocks;
    uint64_t free_blocks;
};

/* Fill *ret_stats. O(1) except largest_free, which scans the largest
 * non-empty size class. */
DVS_API void dvs_arena_stats(const dvs_arena *arena, struct dvs_arena_stats *ret_stats);

/* ===========================================================================
 * The server: a service's side of an endpoint
 *
 * A service started by dvs-node gets its identity, arena and listening
 * address from the environment and talks to the agent over a Unix control
 * socket (docs/control-protocol.md): the agent freezes it for a migration,
 * tells it where the endpoint moved, or unfreezes it after an abort.
 *
 *     dvs_server *srv;
 *     int rv = dvs_server_open(NULL, &srv);        // everything from the env
 *     if (rv != 0) { ... dvs_strerror(rv) ... }
 *     struct state *st = dvs_arena_root(dvs_server_arena(srv));
 *     if (st == NULL) { st = dvs_arena_calloc(...); ...; dvs_arena_set_root(...); }
 *     rv = dvs_server_run(srv, handle, st);        // until stopped or moved
 *     dvs_server_close(srv);
 *
 * Thread model: dvs_server_run runs a private libuv loop on the calling
 * thread, and calls the handler on that thread, one request at a time. So
 * the handler may use the arena without locks, and "finish the request in
 * progress" (freeze) needs no cooperation from it. A long handler delays
 * every other client and the control commands: keep handlers short.
 *
 * Only the handler (and code before dvs_server_run) may write to the arena:
 * the library freezes the service by not calling the handler, and a write
 * from another thread after a freeze would be lost by the migration.
 */
typedef struct dvs_server dvs_server;

/*
 * The request handler. req/req_len: the request payload (borrowed, valid
 * during the call). reply: a buffer of *reply_len bytes (DVS_MAX_PAYLOAD, or
 * the configured max_payload) owned by the library; write the reply there
 * and set *reply_len to its length (0 is fine).
 *
 * Return 0 for success, or a negative code (negated errno or DVS_E*), which
 * dvs_call returns to the client unchanged; the reply bytes are then ignored.
 * Either way the outcome is saved in the reply cache, so a resent request
 * gets the same answer and the handler never runs twice for one request.
 */
typedef int (*dvs_handler_fn)(void *data, const void *req, size_t req_len,
                              void *reply, size_t *reply_len);

/*
 * Server options. Initialise with dvs_server_options_init(); a field left at
 * its unset value (NULL, 0, -1) is taken from the environment variable named
 * beside it by dvs_server_open.
 */
struct dvs_server_options {
    const char *endpoint;      /* DVS_ENDPOINT: the endpoint's name */
    const char *listen;        /* DVS_LISTEN: "host:port" to accept requests
                                  on; port 0 picks one (see dvs_server_address) */
    uint64_t generation;       /* DVS_GENERATION: this instance's generation
                                  (default 1; restore mode: from "start") */
    int restore;               /* DVS_MODE=restore (1) or fresh (0); -1 unset.
                                  Restore: the agent fills the arena; open waits
                                  for its "start" command (see the protocol) */
    int arena_fd;              /* DVS_ARENA_FD: the arena memfd from the agent;
                                  -1: create a private one (not migratable) */
    uintptr_t arena_addr;      /* DVS_ARENA_ADDR: "0x..." fixed address */
    size_t arena_size;         /* DVS_ARENA_SIZE: bytes */
    int control_fd;            /* DVS_CONTROL_FD: connected SOCK_SEQPACKET
                                  socket to the agent; -1 unset */
    const char *control_path;  /* DVS_CONTROL_PATH: or a socket path to connect
                                  to (reconnected if the agent restarts) */
    uint32_t cache_clients;    /* DVS_CACHE_CLIENTS: reply cache client bound
                                  (default 1024) */
    uint32_t cache_entries;    /* DVS_CACHE_ENTRIES: unacknowledged replies kept
                                  per client (default 32) */
    uint64_t cache_bytes;      /* DVS_CACHE_BYTES: bound on saved reply bytes
                                  (default: an eighth of the arena) */
    uint32_t max_payload;      /* request/reply bound (default DVS_MAX_PAYLOAD) */
    int hold_ms;               /* while frozen, hold a request this long before
                                  answering "migrating" (default 1000) */
    dvs_log_fn log;            /* optional */
    void *log_data;
};

/* Set every field of opts to its unset value (see above). */
DVS_API void dvs_server_options_init(struct dvs_server_options *opts);

/*
 * Open the endpoint: resolve the options (opts may be NULL: all from the
 * environment; opts is only read during the call, its strings are copied),
 * bind the listening socket, connect to the agent (if a control channel is
 * given) and map the arena:
 *   fresh mode    a new arena is formatted (DVS_ARENA_INIT);
 *   restore mode  the arena the agent filled is validated at once (header,
 *                 every allocator block, the reply cache); then the call
 *                 blocks, answering the agent's control commands, until the
 *                 agent sends "start" after the migration commits, and the
 *                 generation is the one "start" carried. If the agent closes
 *                 the channel or sends "stop" first (the migration aborted),
 *                 the call returns DVS_ESHUTDOWN and the service should exit.
 *
 * Returns 0 and *ret_server, or: -EINVAL (an option or environment variable
 * is missing or malformed; the log callback names it), -EADDRINUSE and other
 * bind errors, -EEXIST (the arena address range is in use), DVS_EPROTO (a
 * restored arena is invalid), DVS_ESHUTDOWN, -ENOMEM. *ret_server is
 * untouched on failure.
 */
DVS_API int dvs_server_open(const struct dvs_server_options *opts,
                            dvs_server **ret_server);

/* The server's arena (owned by the server, valid until dvs_server_close). */
DVS_API dvs_arena *dvs_server_arena(dvs_server *server);

/* The generation this instance serves as. */
DVS_API uint64_t dvs_server_generation(const dvs_server *server);

/*
 * The address the server actually listens on, "host:port" (useful when the
 * configured port was 0). Returns 0, or -ENOBUFS if len is too small.
 */
DVS_API int dvs_server_address(const dvs_server *server, char *buf, size_t len);

/*
 * Serve requests on the calling thread, calling handler(data, ...) for each
 * one that is not answered from the reply cache, and obey the agent's
 * control commands. Returns:
 *   0              dvs_server_stop() was called or the agent sent "stop";
 *   DVS_EMOVED     the agent released the instance as moved; every held and
 *                  later request got the new location for the linger period
 *                  the agent gave. The service should now exit;
 *   negative       a fatal error (the listening socket failed, -ENOMEM).
 * Must not be called twice, nor concurrently.
 */
DVS_API int dvs_server_run(dvs_server *server, dvs_handler_fn handler, void *data);

/*
 * Ask dvs_server_run to return 0 after the request in progress. Safe from
 * any thread and from a signal handler (it is uv_async_send). The server
 * must still be open.
 */
DVS_API void dvs_server_stop(dvs_server *server);

/* Close the sockets, unmap the arena, free the server. NULL ok. Must not run
 * concurrently with dvs_server_run. */
DVS_API void dvs_server_close(dvs_server *server);

/* ===========================================================================
 * The client
 *
 * dvs_call sends one request to an endpoint by name and returns its reply.
 * It finds the serving instance in the manager's directory (and caches it),
 * keeps connections open, and when the instance is migrating, has moved,
 * refuses connections, resets them or stops answering, it finds the new
 * location (from the "moved" reply, or a blocking query on the directory for
 * a newer generation) and resends the same request with the same sequence
 * number. The service's reply cache answers a resent request it has already
 * executed, so the caller gets exactly one reply, or an error, and a request
 * never executes twice.
 *
 * Threads: a dvs_client is thread-safe. Any number of threads may call
 * dvs_call on one handle at the same time (each call uses its own
 * connection). Only dvs_client_destroy must not race with the calls.
 */
typedef struct dvs_client dvs_client;

struct dvs_client_options {
    int connect_timeout_ms; /* per connection attempt (default 1000) */
    int attempt_timeout_ms; /* wait this long for a reply before checking the
                               directory and resending (default 5000) */
    int max_idle_conns;     /* idle connections kept per address (default 4) */
    dvs_log_fn log;         /* optional */
    void *log_data;
};

/* Set the defaults. */
DVS_API void dvs_client_options_init(struct dvs_client_options *opts);

/*
 * Create a client. managers: one or more manager base URLs separated by
 * commas ("http://10.0.0.1:7001,http://10.0.0.2:7001"); NULL means the
 * DVS_MANAGER environment variable, else http://127.0.0.1:7001. The string
 * and opts (NULL: defaults) are copied. When the managers require a read
 * token, the client sends $DVS_TOKEN ("Authorization: Bearer"); https://
 * managers are verified against $DVS_CA_FILE (PEM) or the system's CAs
 * (docs/security.md). Both are read here, once. A random 128-bit client id is drawn
 * from getrandom(2).
 *
 * Returns 0 and *ret_client, or -EINVAL (no or malformed URL), -ENOMEM, or
 * a negated errno from getrandom. *ret_client is untouched on failure.
 */
DVS_API int dvs_client_create(const char *managers,
                              const struct dvs_client_options *opts,
                              dvs_client **ret_client);

/* Close every connection and free the client. NULL ok. */
DVS_API void dvs_client_destroy(dvs_client *client);

/*
 * Call endpoint with the request req[0..req_len) (borrowed, only read during
 * the call) and wait at most timeout_ms (> 0) for its reply.
 *
 * On success returns 0, *ret_reply is a buffer the caller owns (free it with
 * dvs_free; NULL when the reply is empty) and *ret_reply_len its length.
 * On failure the outputs are untouched and the code says what happened:
 *   negative code from the handler   the service executed the request and
 *                                    its handler returned that code;
 *   DVS_ETIMEOUT       no reply in time. The request may or may not have
 *                      executed (once at most);
 *   DVS_EUNKNOWNOUTCOME the service executed the request but no longer has
 *                      its reply (its reply cache overflowed);
 *   DVS_ENOTFOUND      the directory has no such endpoint;
 *   DVS_EUNAVAILABLE   no manager could be reached before the deadline;
 *   -EACCES            the manager refused $DVS_TOKEN (or its absence);
 *   DVS_ETOOBIG        the request is larger than DVS_MAX_PAYLOAD;
 *   DVS_EPROTO         a peer broke the protocol;
 *   -EINVAL            bad arguments (endpoint name, timeout);
 *   -ENOMEM.
 * Thread-safe (see above). Runs on the calling thread; blocks.
 */
DVS_API int dvs_call(dvs_client *client, const char *endpoint, const void *req,
                     size_t req_len, void **ret_reply, size_t *ret_reply_len,
                     int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* DVS_H */
