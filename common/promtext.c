/* Prometheus text exposition helpers (promtext.h). */
#include <stdarg.h>
#include <stdio.h>

#include "common/promtext.h"
#include "common/util.h"

void prom_put(struct prom_buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(n > 0 ? n : 64);
        b->p = xrealloc(b->p, b->cap);
    }
}

void prom_label(struct prom_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            prom_put(b, "\\%c", *v);
        else if (*v == '\n')
            prom_put(b, "\\n");
        else
            prom_put(b, "%c", *v);
    }
}
