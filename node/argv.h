/*
 * An endpoint's command line into an argv for execve, without a shell: the
 * operator gives one string (dvs-manager endpoint create --command "PATH
 * ARGS"), and nothing in it may be expanded, globbed or redirected.
 */
#ifndef DVS_NODE_ARGV_H
#define DVS_NODE_ARGV_H

#define NODE_MAX_ARGS 64
#define NODE_MAX_COMMAND 4096

/*
 * Words are separated by blanks (space, tab); '...' quotes literally,
 * "..." quotes with \" and \\ as the only escapes, and a backslash outside
 * quotes takes the next character literally. Control characters are
 * refused. Returns 0 and a NULL-terminated argv in one allocation (free()
 * it; the strings live inside it), or -EINVAL with *ret_why a static phrase
 * (empty, too long, more than NODE_MAX_ARGS words, an unterminated quote, a
 * control character). *ret_argv is untouched on failure.
 */
int node_split_command(const char *cmd, char ***ret_argv, const char **ret_why);

#endif
