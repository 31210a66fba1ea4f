/* dvs-manager: "serve" runs the Raft member daemon; anything else is the CLI. */
#include <string.h>

#include "manager/cli.h"
#include "manager/daemon.h"

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return mgr_serve_main(argc - 2, argv + 2);
    return mgr_cli_main(argc, argv);
}
