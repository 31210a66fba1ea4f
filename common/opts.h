/*
 * One declarative option table per daemon drives the command-line flags, the
 * configuration file, --help and validation (STYLE.md 15, after tmux's
 * options-table and Redis' config table).
 *
 * A table is an array of struct opt_def ending with an entry whose name is
 * NULL. Each entry writes into a field of the caller's settings struct at
 * `offset`. Precedence: defaults < config file (--config FILE) < flags.
 *
 * Config file syntax: one "name = value" per line, '#' starts a comment,
 * blank lines ignored, values may be double-quoted. Unknown names, bad values
 * and duplicate names are errors that name the line.
 */
#ifndef DVS_COMMON_OPTS_H
#define DVS_COMMON_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum opt_type {
    OPT_STRING,   /* char * (owned by the settings struct, strdup'd) */
    OPT_INT,      /* int64_t within [min, max] */
    OPT_BOOL,     /* bool; flag without value = true; file: true/false/yes/no/1/0 */
    OPT_DURATION, /* int64_t milliseconds within [min, max] */
    OPT_SIZE,     /* uint64_t bytes within [min, max] */
    OPT_DOUBLE,   /* double within [min, max] */
    OPT_HOSTPORT, /* char * "HOST:PORT" */
    OPT_RAFTADDR, /* char * "A.B.C.D:PORT" (IPv4 dotted quad, RAFT.md 11) */
    OPT_LOGLEVEL, /* int (enum log_level) */
};

struct opt_def {
    const char *name;    /* long flag (--name) and config key */
    enum opt_type type;
    const char *def;     /* default as text, or NULL for none */
    double min, max;     /* bounds for numeric types, in the stored unit */
    size_t offset;       /* offsetof(settings, field) */
    const char *metavar; /* for --help, e.g. "DURATION" */
    const char *help;
    bool required;       /* must be set by file or flag */
    bool cli_only;       /* not accepted in the config file (e.g. --config) */
};

/* Apply every default in the table. 0 or -EINVAL (a default fails its own bounds). */
int opts_defaults(const struct opt_def *defs, void *settings, char *err, size_t errlen);

/*
 * Set option NAME from text VALUE. SOURCE names where it came from, for the
 * error ("--raft-addr", "dvs.conf:12"). 0, -ENOENT (unknown name), -EINVAL.
 */
int opts_set(const struct opt_def *defs, void *settings, const char *name,
             const char *value, const char *source, char *err, size_t errlen);

/* Load a config file. 0, or a negative errno with ERR filled. */
int opts_load_file(const struct opt_def *defs, void *settings, const char *path,
                   char *err, size_t errlen);

/*
 * Parse argv (argv[0] is the first candidate flag, not the program name):
 * defaults, then --config FILE if present anywhere, then every flag in order.
 * Accepts "--name value" and "--name=value"; "--help" sets *ret_help.
 * Non-flag arguments are an error. Checks required options at the end.
 */
int opts_parse_argv(const struct opt_def *defs, void *settings, int argc, char **argv,
                    bool *ret_help, char *err, size_t errlen);

/* Print the options as a --help section, with types, defaults and bounds. */
void opts_usage(const struct opt_def *defs, FILE *out);

/*
 * Print a commented configuration file generated from the table, so that a
 * shipped default config never drifts from the code: a header naming TITLE
 * and the syntax, then, for every option the file accepts, its help text,
 * type, bounds and a commented "# name = default" line. Options given in
 * ARGV (flags as opts_parse_argv takes them; --config and --help refused)
 * are validated into SETTINGS and written as active "name = value" lines
 * instead: "dvs-node serve --print-config --data-dir /var/lib/dvs-node".
 * Required options are not checked. 0, or -EINVAL with ERR filled (nothing
 * written); -EIO if OUT fails. The caller frees SETTINGS with opts_free.
 */
int opts_print_config(const struct opt_def *defs, void *settings, int argc, char **argv,
                      const char *title, FILE *out, char *err, size_t errlen);

/* Free the strings the table put into SETTINGS. */
void opts_free(const struct opt_def *defs, void *settings);

#endif
