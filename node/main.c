/* dvs-node: the node agent (dvs-node(8)). "serve" runs it. */
#include <stdio.h>
#include <string.h>

#include "dvs.h"
#include "node/agent.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: dvs-node serve --id NODE --manager URL[,URL] --listen IP:PORT "
                 "--data-dir DIR [options]\n"
                 "       dvs-node serve --help\n"
                 "       dvs-node --version\n");
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return node_serve_main(argc - 2, argv + 2);
    if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        unsigned v = dvs_version();
        printf("dvs-node %u.%u.%u\n", v >> 16, (v >> 8) & 0xff, v & 0xff);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
