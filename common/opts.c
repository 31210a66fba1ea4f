#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/opts.h"
#include "common/util.h"

static const struct opt_def *find(const struct opt_def *defs, const char *name)
{
    for (const struct opt_def *d = defs; d->name; d++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

static const char *type_name(enum opt_type t)
{
    switch (t) {
    case OPT_STRING:
        return "a string";
    case OPT_INT:
        return "an integer";
    case OPT_BOOL:
        return "true or false";
    case OPT_DURATION:
        return "a duration with a unit (e.g. 500ms, 2s, 1m)";
    case OPT_SIZE:
        return "a size (e.g. 4096, 64M, 1GiB)";
    case OPT_DOUBLE:
        return "a number";
    case OPT_HOSTPORT:
        return "HOST:PORT";
    case OPT_RAFTADDR:
        return "an IPv4 address and port (A.B.C.D:PORT)";
    case OPT_LOGLEVEL:
        return "debug, info, warn or error";
    }
    return "?";
}

static int bad(const struct opt_def *d, const char *value, const char *source,
               char *err, size_t errlen, const char *extra)
{
    snprintf(err, errlen, "%s: invalid value \"%s\" for %s: expected %s%s", source,
             value, d->name, type_name(d->type), extra ? extra : "");
    return -EINVAL;
}

static int range_check(const struct opt_def *d, double v, const char *value,
                       const char *source, char *err, size_t errlen)
{
    if (d->min == 0 && d->max == 0)
        return 0;
    if (v < d->min || v > d->max) {
        char extra[96];
        snprintf(extra, sizeof(extra), " between %g and %g", d->min, d->max);
        if (d->type == OPT_DURATION)
            snprintf(extra, sizeof(extra), " between %gms and %gms", d->min, d->max);
        else if (d->type == OPT_SIZE)
            snprintf(extra, sizeof(extra), " between %g and %g bytes", d->min, d->max);
        return bad(d, value, source, err, errlen, extra);
    }
    return 0;
}

int opts_set(const struct opt_def *defs, void *settings, const char *name,
             const char *value, const char *source, char *err, size_t errlen)
{
    const struct opt_def *d = find(defs, name);
    if (!d) {
        snprintf(err, errlen, "%s: unknown option \"%s\"", source, name);
        return -ENOENT;
    }
    char *field = (char *)settings + d->offset;
    switch (d->type) {
    case OPT_STRING:
    case OPT_HOSTPORT:
    case OPT_RAFTADDR: {
        if (d->type != OPT_STRING) {
            char host[256];
            uint16_t port;
            if (parse_hostport(value, d->type == OPT_RAFTADDR, host, sizeof(host),
                               &port) != 0)
                return bad(d, value, source, err, errlen, NULL);
        } else if (*value == '\0' && d->required) {
            return bad(d, value, source, err, errlen, " (not empty)");
        }
        char **s = (char **)field;
        free(*s);
        *s = xstrdup(value);
        return 0;
    }
    case OPT_INT: {
        int64_t v;
        if (parse_int64(value, &v) != 0)
            return bad(d, value, source, err, errlen, NULL);
        int rv = range_check(d, (double)v, value, source, err, errlen);
        if (rv)
            return rv;
        *(int64_t *)field = v;
        return 0;
    }
    case OPT_BOOL: {
        bool v;
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "1") ||
            !strcmp(value, "on"))
            v = true;
        else if (!strcmp(value, "false") || !strcmp(value, "no") ||
                 !strcmp(value, "0") || !strcmp(value, "off"))
            v = false;
        else
            return bad(d, value, source, err, errlen, NULL);
        *(bool *)field = v;
        return 0;
    }
    case OPT_DURATION: {
        int64_t ms;
        if (parse_duration_ms(value, &ms) != 0)
            return bad(d, value, source, err, errlen, NULL);
        int rv = range_check(d, (double)ms, value, source, err, errlen);
        if (rv)
            return rv;
        *(int64_t *)field = ms;
        return 0;
    }
    case OPT_SIZE: {
        uint64_t b;
        if (parse_size(value, &b) != 0)
            return bad(d, value, source, err, errlen, NULL);
        int rv = range_check(d, (double)b, value, source, err, errlen);
        if (rv)
            return rv;
        *(uint64_t *)field = b;
        return 0;
    }
    case OPT_DOUBLE: {
        double v;
        if (parse_double(value, &v) != 0)
            return bad(d, value, source, err, errlen, NULL);
        int rv = range_check(d, v, value, source, err, errlen);
        if (rv)
            return rv;
        *(double *)field = v;
        return 0;
    }
    case OPT_LOGLEVEL: {
        enum log_level l;
        if (log_parse_level(value, &l) != 0)
            return bad(d, value, source, err, errlen, NULL);
        *(int *)field = (int)l;
        return 0;
    }
    }
    return -EINVAL;
}

int opts_defaults(const struct opt_def *defs, void *settings, char *err, size_t errlen)
{
    for (const struct opt_def *d = defs; d->name; d++) {
        if (!d->def)
            continue;
        int rv = opts_set(defs, settings, d->name, d->def, "default", err, errlen);
        if (rv)
            return rv;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int opts_load_file(const struct opt_def *defs, void *settings, const char *path,
                   char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(e));
        return -e;
    }
    char line[4096];
    unsigned lineno = 0;
    int rv = 0;
    /* Duplicate keys are almost always a mistake; remember what was set. */
    size_t ndefs = 0;
    while (defs[ndefs].name)
        ndefs++;
    bool *seen = xcalloc(ndefs ? ndefs : 1, sizeof(bool));
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char source[512];
        snprintf(source, sizeof(source), "%s:%u", path, lineno);
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "%s: line longer than %zu bytes", source,
                     sizeof(line) - 2);
            rv = -EINVAL;
            break;
        }
        char *hash = strchr(line, '#');
        char *eq = strchr(line, '=');
        /* A '#' inside a quoted value is part of the value. */
        if (hash && (!eq || hash < eq))
            *hash = '\0';
        char *s = trim(line);
        if (*s == '\0')
            continue;
        eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s: expected \"name = value\", got \"%s\"", source, s);
            rv = -EINVAL;
            break;
        }
        *eq = '\0';
        char *name = trim(s);
        char *value = trim(eq + 1);
        if (value[0] == '"') {
            /* A quoted value ends at the next quote; only a comment may follow. */
            char *close = strchr(value + 1, '"');
            char *rest = close ? trim(close + 1) : NULL;
            if (!close || (*rest && *rest != '#')) {
                snprintf(err, errlen, "%s: unterminated or malformed quoted value for %s",
                         source, name);
                rv = -EINVAL;
                break;
            }
            *close = '\0';
            value++;
        } else {
            char *h = strchr(value, '#');
            if (h) {
                *h = '\0';
                value = trim(value);
            }
        }
        const struct opt_def *d = find(defs, name);
        if (d && d->cli_only) {
            snprintf(err, errlen, "%s: option \"%s\" is accepted on the command line only",
                     source, name);
            rv = -EINVAL;
            break;
        }
        if (d && seen[d - defs]) {
            snprintf(err, errlen, "%s: option \"%s\" is set twice", source, name);
            rv = -EINVAL;
            break;
        }
        rv = opts_set(defs, settings, name, value, source, err, errlen);
        if (rv) {
            rv = -EINVAL;
            break;
        }
        seen[d - defs] = true;
    }
    free(seen);
    fclose(f);
    return rv;
}

static bool is_set(const struct opt_def *d, const void *settings)
{
    const char *field = (const char *)settings + d->offset;
    switch (d->type) {
    case OPT_STRING:
    case OPT_HOSTPORT:
    case OPT_RAFTADDR:
        return *(char *const *)field != NULL;
    default:
        return true;
    }
}

/*
 * The flag at argv[*I]: its name into NAME and its value into *RET_VALUE (a
 * pointer into ARGV, or "true" for a bare boolean flag); *I advances past a
 * separate value. "--config" is taken with its FILE even if the table lacks
 * it. 0, or -EINVAL with ERR filled.
 */
static int take_flag(const struct opt_def *defs, int argc, char **argv, int *i, char *name,
                     size_t namelen, const char **ret_value, char *err, size_t errlen)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0) {
        snprintf(err, errlen, "unexpected argument \"%s\" (options start with --)", arg);
        return -EINVAL;
    }
    const char *eq = strchr(arg + 2, '=');
    size_t nl = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    if (nl >= namelen) {
        snprintf(err, errlen, "unknown option \"%.64s...\"", arg);
        return -EINVAL;
    }
    memcpy(name, arg + 2, nl);
    name[nl] = '\0';
    const struct opt_def *d = find(defs, name);
    if (!d && strcmp(name, "config") != 0) {
        snprintf(err, errlen, "unknown option --%s (see --help)", name);
        return -EINVAL;
    }
    if (eq) {
        *ret_value = eq + 1;
    } else if (d && d->type == OPT_BOOL &&
               (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0 ||
                (strcmp(argv[*i + 1], "true") && strcmp(argv[*i + 1], "false")))) {
        *ret_value = "true";
    } else {
        if (*i + 1 >= argc) {
            snprintf(err, errlen, "--%s needs a value (%s)", name,
                     d ? type_name(d->type) : "FILE");
            return -EINVAL;
        }
        *ret_value = argv[++*i];
    }
    return 0;
}

int opts_parse_argv(const struct opt_def *defs, void *settings, int argc, char **argv,
                    bool *ret_help, char *err, size_t errlen)
{
    *ret_help = false;
    int rv = opts_defaults(defs, settings, err, errlen);
    if (rv)
        return rv;

    /* The config file first, so that flags override it wherever they stand. */
    for (int i = 0; i < argc; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--config needs a FILE");
                return -EINVAL;
            }
            path = argv[i + 1];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
        if (path) {
            rv = opts_load_file(defs, settings, path, err, errlen);
            if (rv)
                return rv;
        }
    }

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *ret_help = true;
            return 0;
        }
        char name[128];
        const char *value;
        rv = take_flag(defs, argc, argv, &i, name, sizeof(name), &value, err, errlen);
        if (rv)
            return rv;
        if (strcmp(name, "config") == 0)
            continue; /* already loaded */
        char source[140];
        snprintf(source, sizeof(source), "--%s", name);
        rv = opts_set(defs, settings, name, value, source, err, errlen);
        if (rv)
            return -EINVAL;
    }

    for (const struct opt_def *d = defs; d->name; d++) {
        if (d->required && !is_set(d, settings)) {
            snprintf(err, errlen, "missing required option --%s %s", d->name,
                     d->metavar ? d->metavar : "");
            return -EINVAL;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A commented config file from the table                                    */
/* ------------------------------------------------------------------------ */

/* Whether opts_load_file reads V back as written bare, or needs quotes. */
static bool conf_needs_quotes(const char *v)
{
    size_t n = strlen(v);
    return n == 0 || strchr(v, '#') || v[0] == '"' || isspace((unsigned char)v[0]) ||
           isspace((unsigned char)v[n - 1]);
}

/* Whether V can be written at all: no line breaks, no quote in a quoted value. */
static bool conf_representable(const char *v)
{
    if (strchr(v, '\n') || strchr(v, '\r'))
        return false;
    return !conf_needs_quotes(v) || !strchr(v, '"');
}

static void conf_value(FILE *out, const char *v)
{
    if (conf_needs_quotes(v))
        fprintf(out, "\"%s\"", v);
    else
        fputs(v, out);
}

/* TEXT as "# " comment lines of at most about 78 columns, broken at spaces. */
static void conf_comment(FILE *out, const char *text)
{
    const size_t width = 76;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strlen(p);
        if (n > width) {
            n = width;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0) { /* one long word: let it overflow */
                n = width;
                while (p[n] && p[n] != ' ')
                    n++;
            }
        }
        fprintf(out, "# %.*s\n", (int)n, p);
        p += n;
    }
}

/* A bound in the option's own notation (durations as 2s, sizes as 64KiB). */
static void conf_bound(const struct opt_def *d, double v, char *buf, size_t len)
{
    if (d->type == OPT_DURATION)
        format_duration((int64_t)v, buf, len);
    else if (d->type == OPT_SIZE)
        format_size((uint64_t)v, buf, len);
    else
        snprintf(buf, len, "%g", v);
}

int opts_print_config(const struct opt_def *defs, void *settings, int argc, char **argv,
                      const char *title, FILE *out, char *err, size_t errlen)
{
    size_t ndefs = 0;
    while (defs[ndefs].name)
        ndefs++;
    int rv = opts_defaults(defs, settings, err, errlen);
    if (rv)
        return rv;
    const char **given = xcalloc(ndefs ? ndefs : 1, sizeof(*given));
    for (int i = 0; i < argc && rv == 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            snprintf(err, errlen, "--print-config takes option flags only, not %s", argv[i]);
            rv = -EINVAL;
            break;
        }
        char name[128];
        const char *value;
        rv = take_flag(defs, argc, argv, &i, name, sizeof(name), &value, err, errlen);
        if (rv)
            break;
        const struct opt_def *d = find(defs, name);
        if (!d || d->cli_only) {
            snprintf(err, errlen, "--%s cannot go into a config file", name);
            rv = -EINVAL;
            break;
        }
        char source[140];
        snprintf(source, sizeof(source), "--%s", name);
        rv = opts_set(defs, settings, name, value, source, err, errlen);
        if (rv) {
            rv = -EINVAL;
            break;
        }
        if (!conf_representable(value)) {
            snprintf(err, errlen,
                     "--%s: a value with a line break, or with a '\"' that needs quoting, "
                     "cannot be written in a config file",
                     name);
            rv = -EINVAL;
            break;
        }
        given[d - defs] = value;
    }
    if (rv) {
        free(given);
        return rv;
    }

    if (title)
        conf_comment(out, title);
    fputs("#\n", out);
    conf_comment(out, "Generated from the program's option table: every option this file "
                      "accepts, with its default commented out. Syntax: one \"name = "
                      "value\" per line; '#' starts a comment; a value may be "
                      "\"double-quoted\" (then it may hold '#'). Unknown names, bad values "
                      "and names set twice are errors that name the line. A command-line "
                      "flag --name VALUE overrides the file.");
    for (const struct opt_def *d = defs; d->name; d++) {
        if (d->cli_only)
            continue;
        fputc('\n', out);
        conf_comment(out, d->help);
        char line[320];
        int n = snprintf(line, sizeof(line), "%s: %s", d->required ? "Required" : "Type",
                         type_name(d->type));
        if ((d->min != 0 || d->max != 0) && n > 0 && (size_t)n < sizeof(line) &&
            (d->type == OPT_INT || d->type == OPT_DOUBLE || d->type == OPT_DURATION ||
             d->type == OPT_SIZE)) {
            char lo[32], hi[32];
            conf_bound(d, d->min, lo, sizeof(lo));
            conf_bound(d, d->max, hi, sizeof(hi));
            snprintf(line + n, sizeof(line) - (size_t)n, ", from %s to %s", lo, hi);
        }
        conf_comment(out, line);
        size_t k = (size_t)(d - defs);
        if (given[k]) {
            fprintf(out, "%s = ", d->name);
            conf_value(out, given[k]);
        } else if (d->def) {
            fprintf(out, "# %s = ", d->name);
            conf_value(out, d->def);
        } else {
            fprintf(out, "# %s =", d->name);
        }
        fputc('\n', out);
    }
    free(given);
    fflush(out);
    return ferror(out) ? -EIO : 0;
}

void opts_usage(const struct opt_def *defs, FILE *out)
{
    for (const struct opt_def *d = defs; d->name; d++) {
        char left[96];
        snprintf(left, sizeof(left), "--%s%s%s", d->name, d->type == OPT_BOOL ? "" : " ",
                 d->type == OPT_BOOL ? "" : (d->metavar ? d->metavar : "VALUE"));
        fprintf(out, "  %-28s %s", left, d->help);
        if (d->required)
            fprintf(out, " (required)");
        else if (d->def)
            fprintf(out, " (default: %s)", d->def);
        if ((d->min != 0 || d->max != 0) &&
            (d->type == OPT_INT || d->type == OPT_DOUBLE))
            fprintf(out, " [%g..%g]", d->min, d->max);
        fputc('\n', out);
    }
}

void opts_free(const struct opt_def *defs, void *settings)
{
    for (const struct opt_def *d = defs; d->name; d++) {
        if (d->type == OPT_STRING || d->type == OPT_HOSTPORT || d->type == OPT_RAFTADDR) {
            char **s = (char **)((char *)settings + d->offset);
            free(*s);
            *s = NULL;
        }
    }
}
