/*
 * Bearer tokens of the REST API (docs/security.md): reading them from files,
 * parsing the Authorization header, comparing them in constant time, and
 * deciding what a request may do.
 *
 * Three tokens, each optional, each read from a file so that it never shows
 * in ps(1) or in a shell history:
 *
 *   management  every route; required for every change when configured;
 *   read        GETs of the public routes (when set, GETs need it or the
 *               management token);
 *   agent       the agent-facing routes (node registration, heartbeats,
 *               orders, migration reports), and nothing else.
 *
 * No token at all leaves the API open, as before; the manager then refuses to
 * listen on anything but loopback without --insecure-open.
 *
 * Pure functions apart from api_token_load (file I/O); no allocation.
 */
#ifndef DVS_API_AUTH_H
#define DVS_API_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Longest accepted token, in bytes (a 64-hex-digit secret fits easily). */
#define API_TOKEN_MAX 256
/* Shortest accepted token: a guessable token is no token. */
#define API_TOKEN_MIN 16

/* What a route needs (struct api_route.access). */
enum api_access {
    API_ACCESS_DEFAULT = 0, /* by method: GET/HEAD = API_ACCESS_READ, else MANAGE */
    API_ACCESS_READ,        /* read, agent-read or management token */
    API_ACCESS_MANAGE,      /* management token only */
    API_ACCESS_AGENT,       /* agent or management token */
    API_ACCESS_PUBLIC,      /* no token (e.g. nothing today; kept for health checks) */
};

/* The tokens a server accepts; an empty string = not configured. */
struct api_tokens {
    char management[API_TOKEN_MAX + 1];
    char read[API_TOKEN_MAX + 1];
    char agent[API_TOKEN_MAX + 1];
};

/* The outcome of api_authorize. */
enum api_auth_result {
    API_AUTH_OK = 0,
    API_AUTH_MISSING,   /* 401: no Authorization header */
    API_AUTH_MALFORMED, /* 401: not "Bearer <token>" */
    API_AUTH_WRONG,     /* 403: a token that is none of ours */
    API_AUTH_DENIED,    /* 403: a valid token whose role may not do this */
};

/* Whether any token is configured (otherwise the API is open). */
bool api_tokens_enabled(const struct api_tokens *t);

/*
 * Constant-time equality of two strings: the time taken depends on the
 * lengths only (and on the longest, never on where they first differ).
 * Both must be NUL-terminated and at most API_TOKEN_MAX bytes long.
 */
bool api_token_equal(const char *a, const char *b);

/*
 * Parse an Authorization header value: "Bearer" (any case), one or more
 * spaces or tabs, then a token of RFC 6750 b64token characters
 * ([A-Za-z0-9-._~+/]+=*), optionally followed by spaces. On success copies
 * the token into RET_TOKEN (LEN bytes, NUL-terminated) and returns 0;
 * returns -EINVAL for anything else (another scheme, an empty or
 * over-long token, characters outside the set).
 */
int api_bearer_parse(const char *header, char *ret_token, size_t len);

/*
 * May a request with Authorization header HEADER (NULL if absent) use a route
 * needing ACCESS with METHOD? Fills *RET_ROLE ("management", "read",
 * "agent" or "none") when not NULL. With no token configured, always OK.
 */
enum api_auth_result api_authorize(const struct api_tokens *t, const char *method,
                                   enum api_access access, const char *header,
                                   const char **ret_role);

/*
 * Read a token from PATH: the whole file, one trailing newline (or CRLF)
 * dropped. Refuses (returns -EINVAL with a message in ERR) an empty token,
 * one shorter than API_TOKEN_MIN or longer than API_TOKEN_MAX, or one with
 * characters outside the b64token set; returns -errno when the file cannot be
 * read. Sets *RET_LOOSE when the file is readable by other users (the caller
 * may warn). RET_TOKEN must have API_TOKEN_MAX + 1 bytes and is untouched on
 * failure.
 */
int api_token_load(const char *path, char *ret_token, bool *ret_loose, char *err,
                   size_t errlen);

#endif
