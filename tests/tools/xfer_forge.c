/*
 * xfer_forge: a stray peer for the tests. Connects to a destination agent's
 * transfer port and sends a well-formed transfer stream for a migration
 * (hello with the published token, one reserved and filled page, FREEZE,
 * END) followed by a MAC tag made WITHOUT the migration's secret. The
 * destination must refuse it (docs/security.md, "The transfer stream").
 *
 * Usage: xfer_forge HOST:PORT MIGRATION_ID TOKEN_HEX ARENA_ADDR ARENA_SIZE GENERATION
 * Exit: 0 when the destination closed the connection after the stream
 * (it refused it), 1 on a usage or connection error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node/transfer.h"

static int send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: xfer_forge HOST:PORT MIGRATION_ID TOKEN_HEX ARENA_ADDR "
                        "ARENA_SIZE GENERATION\n");
        return 1;
    }
    char host[64];
    const char *colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof(host))
        return 1;
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        return 1;
    }
    struct node_xfer_hello h = {
        .migration_id = strtoull(argv[2], NULL, 10),
        .token = strtoull(argv[3], NULL, 16),
        .arena_addr = strtoull(argv[4], NULL, 0),
        .arena_size = strtoull(argv[5], NULL, 0),
        .generation = strtoull(argv[6], NULL, 10),
        .page_size = NODE_XFER_PAGE,
    };
    uint8_t buf[NODE_XFER_HELLO_SIZE], rec[NODE_XFER_REC_SIZE], page[NODE_XFER_PAGE];
    node_xfer_hello_encode(&h, buf);
    if (send_all(fd, buf, sizeof(buf)) != 0)
        return 1;
    node_xfer_rec_encode(NODE_XFER_RESERVE, 0, NODE_XFER_PAGE, 0, rec);
    send_all(fd, rec, sizeof(rec));
    node_xfer_rec_encode(NODE_XFER_SYNC, 1, 0, 0, rec);
    send_all(fd, rec, sizeof(rec));
    /* Wait for READY (32 bytes) before "freezing", as a source does. */
    size_t got = 0;
    while (got < sizeof(rec)) {
        ssize_t r = recv(fd, rec + got, sizeof(rec) - got, 0);
        if (r <= 0)
            return 0; /* refused already */
        got += (size_t)r;
    }
    node_xfer_rec_encode(NODE_XFER_FREEZE, NODE_XFER_M_NONE, NODE_XFER_S_NONE, 0, rec);
    send_all(fd, rec, sizeof(rec));
    memset(page, 0x66, sizeof(page)); /* the injected page */
    node_xfer_rec_encode(NODE_XFER_PAGES, 0, NODE_XFER_PAGE, 0, rec);
    send_all(fd, rec, sizeof(rec));
    send_all(fd, page, sizeof(page));
    node_xfer_rec_encode(NODE_XFER_ROUND, 0, 1, NODE_XFER_PAGE, rec);
    send_all(fd, rec, sizeof(rec));
    uint64_t sum = node_xfer_page_hash(0, page); /* a checksum that matches the page */
    node_xfer_rec_encode(NODE_XFER_END, NODE_XFER_PAGE, sum, 0, rec);
    send_all(fd, rec, sizeof(rec));
    uint8_t tag[32];
    memset(tag, 0xab, sizeof(tag)); /* no secret: a guess */
    send_all(fd, tag, sizeof(tag));
    /* The destination closes on us. */
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    close(fd);
    return 0;
}
