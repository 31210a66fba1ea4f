/* Small helpers shared by the daemons: allocation, clocks, text parsing. */
#ifndef DVS_COMMON_UTIL_H
#define DVS_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Daemons abort on allocation failure, in this one place only (STYLE.md 11).
 * Libraries (libdvs, scheduler) return -ENOMEM instead and never call these.
 */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Milliseconds since the Unix epoch (wall clock) and since boot (monotonic). */
int64_t now_wall_ms(void);
int64_t now_mono_ms(void);
uint64_t now_mono_ns(void);

/*
 * "250ms", "2s", "1m30s", "1h", "1.5s" -> milliseconds. A bare number is
 * rejected (units are mandatory) so "30" cannot mean both 30 s and 30 ms.
 * Returns 0, or -EINVAL (malformed) / -ERANGE (overflow).
 */
int parse_duration_ms(const char *s, int64_t *ret_ms);

/* "4096", "64K", "64KiB", "256M", "1G", "1GiB" (powers of 1024) -> bytes. */
int parse_size(const char *s, uint64_t *ret_bytes);

/* A decimal integer with no trailing junk. -EINVAL or -ERANGE on failure. */
int parse_int64(const char *s, int64_t *ret);

/* A finite, non-negative decimal number ("2", "0.5"). */
int parse_double(const char *s, double *ret);

/*
 * "HOST:PORT" with a non-empty host and a port 1..65535. When ipv4_only, the
 * host must be a dotted quad (libraft's TCP transport accepts nothing else,
 * RAFT.md item 11).
 */
int parse_hostport(const char *s, bool ipv4_only, char *ret_host, size_t hostlen,
                   uint16_t *ret_port);

/* Format a duration (ms) compactly: "1.2s", "350ms", "3m05s". */
void format_duration(int64_t ms, char *buf, size_t len);

/* Format a size: "64.0 MiB". */
void format_size(uint64_t bytes, char *buf, size_t len);

/* Random bytes from getrandom(2); aborts only if the kernel refuses. */
void random_bytes(void *buf, size_t n);
uint64_t random_u64(void);

#endif
