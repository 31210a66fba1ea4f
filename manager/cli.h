/*
 * The operator CLI of dvs-manager: every command but "serve".
 *
 * Exit codes (documented in --help and the man page; scripts rely on them):
 *   0 success, 1 the manager refused the request (4xx other than below) or
 *   an internal error, 2 usage error (bad flag or argument), 3 not found,
 *   4 conflict / already exists, 5 no manager reachable or no leader.
 */
#ifndef DVS_MANAGER_CLI_H
#define DVS_MANAGER_CLI_H

enum cli_exit {
    CLI_OK = 0,
    CLI_EFAIL = 1,
    CLI_EUSAGE = 2,
    CLI_ENOTFOUND = 3,
    CLI_ECONFLICT = 4,
    CLI_EUNAVAILABLE = 5,
};

/* argv[0] is the program name. Returns the process exit code. */
int mgr_cli_main(int argc, char **argv);

#endif
