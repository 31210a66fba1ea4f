/* Splitting an endpoint's command into argv (argv.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "node/argv.h"

int node_split_command(const char *cmd, char ***ret_argv, const char **ret_why)
{
    size_t len = strlen(cmd);
    if (len == 0 || len > NODE_MAX_COMMAND) {
        *ret_why = len ? "longer than 4096 bytes" : "empty";
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)cmd[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *ret_why = "a control character";
            return -EINVAL;
        }
    }
    /* The words are never longer than the command; one block holds the
     * pointer array and the copied words. */
    char **argv = xmalloc(sizeof(char *) * (NODE_MAX_ARGS + 1) + len + NODE_MAX_ARGS + 1);
    char *out = (char *)(argv + NODE_MAX_ARGS + 1);
    size_t argc = 0;
    const char *p = cmd;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (argc == NODE_MAX_ARGS) {
            *ret_why = "more than 64 words";
            goto bad;
        }
        argv[argc++] = out;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'') {
                const char *q = strchr(p + 1, '\'');
                if (!q) {
                    *ret_why = "unterminated '";
                    goto bad;
                }
                memcpy(out, p + 1, (size_t)(q - p - 1));
                out += q - p - 1;
                p = q + 1;
            } else if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    *out++ = *p++;
                }
                if (*p != '"') {
                    *ret_why = "unterminated \"";
                    goto bad;
                }
                p++;
            } else if (*p == '\\' && p[1]) {
                *out++ = p[1];
                p += 2;
            } else {
                *out++ = *p++;
            }
        }
        *out++ = '\0';
    }
    if (argc == 0) {
        *ret_why = "no program";
        goto bad;
    }
    argv[argc] = NULL;
    *ret_argv = argv;
    return 0;
bad:
    free(argv);
    return -EINVAL;
}

