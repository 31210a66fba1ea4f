/*
 * Building a Prometheus text exposition (manager and agent /metrics): a
 * growing buffer, printf into it, and label values escaped as the format
 * wants.
 */
#ifndef DVS_COMMON_PROMTEXT_H
#define DVS_COMMON_PROMTEXT_H

#include <stddef.h>

struct prom_buf {
    char *p; /* malloc'd, NUL-terminated once anything was put; free it */
    size_t len, cap;
};

/* Append printf output, growing the buffer (aborts only if memory is out). */
void prom_put(struct prom_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append V as a label value: backslash, double quote and newline escaped. */
void prom_label(struct prom_buf *b, const char *v);

#endif
