/* The dvs-manager daemon ("dvs-manager serve"). */
#ifndef DVS_MANAGER_DAEMON_H
#define DVS_MANAGER_DAEMON_H

/* ARGV holds the flags after "serve". Returns the process exit code. */
int mgr_serve_main(int argc, char **argv);

#endif
