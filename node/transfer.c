/* The transfer stream format (transfer.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dvs.h"
#include "node/transfer.h"
#include <xxhash.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------ */
/* Hello and records                                                         */
/* ------------------------------------------------------------------------ */

void node_xfer_hello_encode(const struct node_xfer_hello *h, uint8_t *out)
{
    memset(out, 0, NODE_XFER_HELLO_SIZE);
    put32(out, NODE_XFER_MAGIC);
    put16(out + 4, NODE_XFER_VERSION);
    put16(out + 6, NODE_XFER_HELLO_SIZE);
    put64(out + 8, h->migration_id);
    put64(out + 16, h->token);
    put64(out + 24, h->arena_addr);
    put64(out + 32, h->arena_size);
    put64(out + 40, h->generation);
    put32(out + 48, h->page_size);
    put32(out + 52, h->flags);
    put64(out + 56, XXH64(out, 56, 0));
}

int node_xfer_hello_decode(const uint8_t *in, struct node_xfer_hello *ret, const char **ret_why)
{
    const char *why = NULL;
    struct node_xfer_hello h;

    if (get32(in) != NODE_XFER_MAGIC)
        why = "bad magic (not a DVS transfer stream)";
    else if (get16(in + 4) != NODE_XFER_VERSION)
        why = "unsupported version";
    else if (get16(in + 6) != NODE_XFER_HELLO_SIZE)
        why = "bad hello size";
    else if (get64(in + 56) != XXH64(in, 56, 0))
        why = "hello check sum mismatch";
    if (why)
        goto bad;

    h.migration_id = get64(in + 8);
    h.token = get64(in + 16);
    h.arena_addr = get64(in + 24);
    h.arena_size = get64(in + 32);
    h.generation = get64(in + 40);
    h.page_size = get32(in + 48);
    h.flags = get32(in + 52);
    if (h.migration_id == 0 || h.migration_id > INT64_MAX)
        why = "migration id out of range";
    else if (h.page_size != NODE_XFER_PAGE)
        why = "page size is not 4096";
    else if (h.flags != 0)
        why = "unknown flags";
    else if (h.arena_size < NODE_XFER_MIN_ARENA || h.arena_size > NODE_XFER_MAX_ARENA ||
             h.arena_size % NODE_XFER_PAGE != 0)
        why = "arena size out of range or not page-aligned";
    else if (h.arena_addr == 0 || h.arena_addr % NODE_XFER_PAGE != 0)
        why = "arena address not page-aligned";
    else if (h.generation == 0 || h.generation > INT64_MAX)
        why = "generation out of range";
    if (why)
        goto bad;
    *ret = h;
    return 0;
bad:
    if (ret_why)
        *ret_why = why;
    return DVS_EPROTO;
}

static uint32_t rec_check(uint16_t type, const uint8_t *rec)
{
    return (uint32_t)XXH64(rec + 8, NODE_XFER_REC_SIZE - 8, type);
}

void node_xfer_rec_encode(uint16_t type, uint64_t a, uint64_t b, uint64_t c, uint8_t *out)
{
    memset(out, 0, NODE_XFER_REC_SIZE);
    put16(out, type);
    put64(out + 8, a);
    put64(out + 16, b);
    put64(out + 24, c);
    put32(out + 4, rec_check(type, out));
}

int node_xfer_rec_decode(const uint8_t *in, uint64_t arena_size, struct node_xfer_rec *ret,
                         const char **ret_why)
{
    const char *why = NULL;
    struct node_xfer_rec r = {
        .type = get16(in),
        .a = get64(in + 8),
        .b = get64(in + 16),
        .c = get64(in + 24),
    };
    if (get32(in + 4) != rec_check(r.type, in))
        why = "record check sum mismatch (stream out of sync)";
    else if (get16(in + 2) != 0)
        why = "unknown record flags";
    else if (r.type != NODE_XFER_PAGES && r.type != NODE_XFER_ROUND && r.type != NODE_XFER_END &&
             r.type != NODE_XFER_RESERVE && r.type != NODE_XFER_SYNC &&
             r.type != NODE_XFER_FREEZE && r.type != NODE_XFER_THROTTLE &&
             r.type != NODE_XFER_RESULT &&
             r.type != NODE_XFER_READY)
        why = "unknown record type";
    else if (r.type == NODE_XFER_PAGES || r.type == NODE_XFER_RESERVE) {
        if (r.a % NODE_XFER_PAGE != 0 || r.b % NODE_XFER_PAGE != 0)
            why = "page range not page-aligned";
        else if (r.b == 0 || (r.type == NODE_XFER_PAGES && r.b > NODE_XFER_MAX_RUN))
            why = "page range length out of bounds";
        else if (r.a > arena_size || r.b > arena_size - r.a)
            why = "page range outside the arena";
    } else if (r.type == NODE_XFER_FREEZE &&
               (r.a > NODE_XFER_M_MAX || r.b > NODE_XFER_S_MAX)) {
        why = "unknown tracking method or stop reason in FREEZE";
    } else if (r.type == NODE_XFER_THROTTLE && (r.a > 10000000 || r.b > NODE_XFER_S_MAX)) {
        why = "throttle record out of range";
    }
    if (why) {
        if (ret_why)
            *ret_why = why;
        return DVS_EPROTO;
    }
    *ret = r;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Scanning the image                                                        */
/* ------------------------------------------------------------------------ */

bool node_xfer_page_is_zero(const uint8_t *p)
{
    /* Word loads OR-ed together: the compiler vectorises this, and a page
     * that is not zero usually shows it in its first words anyway. */
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t acc = 0;
    for (size_t i = 0; i < NODE_XFER_PAGE / 8; i += 8) {
        acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
               w[i + 7];
        if (acc)
            return false;
    }
    return true;
}

uint64_t node_xfer_page_hash(uint64_t off, const uint8_t *p)
{
    if (node_xfer_page_is_zero(p))
        return 0;
    /* XXH3 of 4 KiB runs at memory speed; the offset as the seed ties the
     * content to its place, so two swapped pages change the sum. */
    return XXH3_64bits_withSeed(p, NODE_XFER_PAGE, off);
}

static int add_run(struct node_xfer_scan *s, size_t *cap, uint64_t off)
{
    if (s->nruns > 0) {
        struct node_xfer_run *last = &s->runs[s->nruns - 1];
        if (last->offset + last->len == off && last->len < NODE_XFER_MAX_RUN) {
            last->len += NODE_XFER_PAGE;
            return 0;
        }
    }
    if (s->nruns == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct node_xfer_run *r = realloc(s->runs, ncap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        s->runs = r;
        *cap = ncap;
    }
    s->runs[s->nruns].offset = off;
    s->runs[s->nruns].len = NODE_XFER_PAGE;
    s->nruns++;
    return 0;
}

int node_xfer_scan(int fd, const uint8_t *map, uint64_t size, bool want_runs,
                   struct node_xfer_scan *ret)
{
    return node_xfer_scan_range(fd, map, 0, size, want_runs, ret);
}

int node_xfer_scan_range(int fd, const uint8_t *map, uint64_t from, uint64_t size,
                         bool want_runs, struct node_xfer_scan *ret)
{
    struct node_xfer_scan s = {0};
    size_t cap = 0;
    uint64_t pos = from;
    int rv = 0;

    while (pos < size) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) /* no data after pos */
                break;
            rv = -errno;
            goto err;
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            rv = -errno;
            goto err;
        }
        uint64_t start = (uint64_t)data & ~(uint64_t)(NODE_XFER_PAGE - 1);
        uint64_t end = ((uint64_t)hole + NODE_XFER_PAGE - 1) & ~(uint64_t)(NODE_XFER_PAGE - 1);
        if (end > size)
            end = size;
        for (uint64_t off = start; off < end; off += NODE_XFER_PAGE) {
            uint64_t h = node_xfer_page_hash(off, map + off);
            if (h == 0)
                continue;
            s.checksum += h;
            s.pages++;
            if (want_runs && (rv = add_run(&s, &cap, off)) != 0)
                goto err;
        }
        pos = end > pos ? end : pos + NODE_XFER_PAGE;
    }
    *ret = s;
    return 0;
err:
    free(s.runs);
    return rv;
}

int node_xfer_extents(int fd, uint64_t size, uint64_t merge_gap, size_t max_runs,
                      struct node_xfer_run **ret_runs, size_t *ret_nruns)
{
    struct node_xfer_run *runs = NULL;
    size_t n = 0, cap = 0;
    uint64_t pos = 0;
    int rv = 0;

    if (max_runs == 0)
        return -EINVAL;
    while (pos < size) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                break;
            rv = -errno;
            goto err;
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            rv = -errno;
            goto err;
        }
        uint64_t start = (uint64_t)data & ~(uint64_t)(NODE_XFER_PAGE - 1);
        uint64_t end = ((uint64_t)hole + NODE_XFER_PAGE - 1) & ~(uint64_t)(NODE_XFER_PAGE - 1);
        if (end > size)
            end = size;
        if (end <= start)
            break;
        if (n > 0 && start - (runs[n - 1].offset + runs[n - 1].len) <= merge_gap) {
            runs[n - 1].len = end - runs[n - 1].offset;
        } else {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct node_xfer_run *r = realloc(runs, ncap * sizeof(*r));
                if (!r) {
                    rv = -ENOMEM;
                    goto err;
                }
                runs = r;
                cap = ncap;
            }
            runs[n].offset = start;
            runs[n].len = end - start;
            n++;
        }
        pos = end;
    }
    /* Too many: merge neighbours pairwise until they fit (the reservation
     * then covers some holes, which costs memory, not correctness). */
    while (n > max_runs) {
        size_t k = 0;
        for (size_t i = 0; i < n; i += 2) {
            runs[k] = runs[i];
            if (i + 1 < n)
                runs[k].len = runs[i + 1].offset + runs[i + 1].len - runs[k].offset;
            k++;
        }
        n = k;
    }
    *ret_runs = runs;
    *ret_nruns = n;
    return 0;
err:
    free(runs);
    return rv;
}

const char *node_xfer_method_name(uint64_t m)
{
    switch (m) {
    case NODE_XFER_M_NONE: return "stop-and-copy";
    case NODE_XFER_M_UFFD: return "uffd-wp";
    case NODE_XFER_M_MPROTECT: return "mprotect";
    }
    return "unknown";
}

const char *node_xfer_stop_name(uint64_t s)
{
    switch (s) {
    case NODE_XFER_S_NONE: return "no-precopy";
    case NODE_XFER_S_BUDGET: return "fits-budget";
    case NODE_XFER_S_NO_PROGRESS: return "not-converging";
    case NODE_XFER_S_ROUND_CAP: return "round-cap";
    case NODE_XFER_S_THROTTLE_CAP: return "forced-after-throttle";
    case NODE_XFER_S_TRACKING_LOST: return "tracking-lost";
    }
    return "unknown";
}
