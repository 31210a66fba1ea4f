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

#ifdef __cplusplus
}
#endif

#endif /* DVS_H */
