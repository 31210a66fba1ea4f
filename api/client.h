/*
 * A small blocking REST client (libcurl) for the CLI and the node agent.
 *
 * It knows several manager URLs; a request goes to the last URL that worked
 * and moves on to the next when a connection cannot be made. 307 redirects
 * (follower -> leader) are followed with method and body kept, up to 5 hops.
 * A 503 "no_leader" answer is retried on the other URLs and then, until the
 * request's deadline, after short pauses (an election takes ~0.5 s).
 *
 * Not thread-safe: one client per thread.
 */
#ifndef DVS_API_CLIENT_H
#define DVS_API_CLIENT_H

#include <jansson.h>
#include <stdint.h>

struct api_client;

struct api_response {
    long status;      /* HTTP status; 0 if none was received */
    json_t *body;     /* parsed JSON (owned), or NULL if the body was not JSON */
    char *raw;        /* the raw body, NUL-terminated (owned) */
    size_t raw_len;
    uint64_t index;   /* X-Dvs-Index, or 0 */
    char url[256];    /* the base URL that answered */
};

/*
 * URLS: comma-separated base URLs ("http://127.0.0.1:7001,http://..."); each
 * must start with http:// or https://. Returns 0, -EINVAL (bad list: message
 * in ERR), or -ENOMEM.
 */
int api_client_create(const char *urls, struct api_client **ret_client, char *err,
                      size_t errlen);
void api_client_destroy(struct api_client *c); /* accepts NULL */

/*
 * Send TOKEN (copied; NULL or "" for none) as "Authorization: Bearer TOKEN"
 * with every request, including on the hops of a 307 to another member (the
 * members of one cluster share their tokens). Returns 0 or -EINVAL (a token
 * api/auth.h would not accept; nothing changes).
 */
int api_client_set_token(struct api_client *c, const char *token);

/*
 * Verify https:// members against the CA certificates in the PEM file
 * CA_FILE (copied path; NULL = the system's CA store). Certificates are
 * always verified, names included; a member whose certificate does not
 * verify counts as unreachable, and ERR says so ("TLS certificate of
 * https://...: ..."). Returns 0, or -errno when CA_FILE cannot be read.
 */
int api_client_set_ca_file(struct api_client *c, const char *ca_file);

/*
 * Both of the above from the environment unless given: TOKEN, else the
 * contents of $DVS_TOKEN; CA_FILE, else $DVS_CA_FILE. TOKEN_FILE (when not
 * NULL) is read with api_token_load() and wins over both. Returns 0, or
 * -EINVAL / -errno with a message naming the source in ERR.
 */
int api_client_setup_auth(struct api_client *c, const char *token_file, const char *ca_file,
                          char *err, size_t errlen);

/*
 * Send METHOD PATH (with query) and BODY (borrowed; NULL for none). Waits at
 * most TIMEOUT_MS in all (retries included). Returns 0 when an HTTP answer
 * was received (whatever its status: look at ret->status), or
 * DVS_EUNAVAILABLE (no URL answered; ERR says what each one did),
 * DVS_ENOLEADER (members answered but no leader was elected in time),
 * DVS_ETIMEOUT. On failure *ret is zeroed.
 */
int api_client_request(struct api_client *c, const char *method, const char *path,
                       json_t *body, long timeout_ms, struct api_response *ret,
                       char *err, size_t errlen);

void api_response_clear(struct api_response *r); /* accepts a zeroed struct */

#endif
