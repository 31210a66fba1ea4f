/*
 * Daemon logging: one line per event, "TIME LEVEL component: message k=v ...".
 * Libraries never call this directly (STYLE.md 14); daemons do.
 */
#ifndef DVS_COMMON_LOG_H
#define DVS_COMMON_LOG_H

#include <stdarg.h>
#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Messages below LEVEL are dropped. Default LOG_INFO. */
void log_set_level(enum log_level level);

/* Parse "debug"/"info"/"warn"/"error". Returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *ret_level);

/* Output stream; default stderr. Not owned. */
void log_set_stream(FILE *f);

/* The process' own name for the log lines (e.g. "mgr1"). Copied. */
void log_set_ident(const char *ident);

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) log_msg(LOG_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_ERROR, comp, __VA_ARGS__)

#endif
