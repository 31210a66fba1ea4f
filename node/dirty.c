/* Dirty-page tracking for pre-copy (dirty.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"
#include "dvs.h"
#include "node/dirty.h"

/* Debian 12's kernel headers (6.1) predate these (6.7). */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
struct page_region {
    uint64_t start, end, categories;
};
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#define VEC_LEN 4096 /* regions per PAGEMAP_SCAN call */

/* ------------------------------------------------------------------------ */
/* Runs                                                                      */
/* ------------------------------------------------------------------------ */

void node_runs_add(struct node_runs *r, uint64_t off, uint64_t len)
{
    while (len > 0) {
        if (r->n > 0) {
            struct node_xfer_run *last = &r->v[r->n - 1];
            if (last->offset + last->len == off && last->len < NODE_XFER_MAX_RUN) {
                uint64_t take = NODE_XFER_MAX_RUN - last->len;
                if (take > len)
                    take = len;
                last->len += take;
                r->bytes += take;
                off += take;
                len -= take;
                continue;
            }
        }
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 256;
            r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
        }
        uint64_t take = len < NODE_XFER_MAX_RUN ? len : NODE_XFER_MAX_RUN;
        r->v[r->n].offset = off;
        r->v[r->n].len = take;
        r->n++;
        r->bytes += take;
        off += take;
        len -= take;
    }
}

void node_runs_clear(struct node_runs *r)
{
    r->n = 0;
    r->bytes = 0;
}

void node_runs_free(struct node_runs *r)
{
    free(r->v);
    memset(r, 0, sizeof(*r));
}

void node_runs_union(struct node_runs *a, const struct node_runs *b)
{
    if (b->n == 0)
        return;
    struct node_runs out = {0};
    size_t i = 0, j = 0;
    uint64_t end = 0; /* everything below end is already in out */
    while (i < a->n || j < b->n) {
        const struct node_xfer_run *x;
        if (j >= b->n || (i < a->n && a->v[i].offset <= b->v[j].offset))
            x = &a->v[i++];
        else
            x = &b->v[j++];
        uint64_t s = x->offset, e = x->offset + x->len;
        if (s < end)
            s = end;
        if (e > s)
            node_runs_add(&out, s, e - s);
        if (e > end)
            end = e;
    }
    free(a->v);
    *a = out;
}

/* ------------------------------------------------------------------------ */
/* userfaultfd write-protect, async, with PAGEMAP_SCAN                       */
/* ------------------------------------------------------------------------ */

static int uffd_open_wp_async(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0 && errno == EINVAL)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
                    UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
    };
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int wp_register(int uffd, uint64_t addr, uint64_t len)
{
    struct uffdio_register reg = {
        .range = {.start = addr, .len = len},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
        return -errno;
    struct uffdio_writeprotect wp = {
        .range = {.start = addr, .len = len},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
        int err = -errno;
        struct uffdio_range r = {.start = addr, .len = len};
        ioctl(uffd, UFFDIO_UNREGISTER, &r);
        return err;
    }
    return 0;
}

/* One pass of PAGEMAP_SCAN over [addr, addr + len): written pages are
 * appended (relative to addr) and write-protected again. */
static int scan_written(int pagemap, uint64_t addr, uint64_t len, struct page_region *vec,
                        size_t vec_len, struct node_runs *out)
{
    uint64_t pos = addr, end = addr + len;
    while (pos < end) {
        struct pm_scan_arg arg = {
            .size = sizeof(arg),
            .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = pos,
            .end = end,
            .vec = (uint64_t)(uintptr_t)vec,
            .vec_len = vec_len,
            .category_mask = PAGE_IS_WRITTEN,
            .return_mask = PAGE_IS_WRITTEN,
        };
        int n = ioctl(pagemap, PAGEMAP_SCAN, &arg);
        if (n < 0)
            return -errno;
        for (int i = 0; i < n; i++) {
            if (vec[i].start < addr || vec[i].end > end || vec[i].end <= vec[i].start)
                return -EIO; /* not what we asked for: do not trust it */
            node_runs_add(out, vec[i].start - addr, vec[i].end - vec[i].start);
        }
        if (arg.walk_end <= pos || arg.walk_end > end)
            return arg.walk_end == end ? 0 : -EIO;
        pos = arg.walk_end;
    }
    return 0;
}

bool node_dirty_probe_uffd(char *why, size_t why_len)
{
    const uint64_t len = 16 * NODE_XFER_PAGE;
    int uffd = -1, pagemap = -1, mfd = -1;
    uint8_t *p = MAP_FAILED;
    struct page_region vec[8];
    struct node_runs runs = {0};
    bool ok = false;
    int rv;

    uffd = uffd_open_wp_async();
    if (uffd < 0) {
        snprintf(why, why_len, "userfaultfd with async write-protect: %s", strerror(-uffd));
        goto out;
    }
    pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    mfd = memfd_create("dvs-probe", MFD_CLOEXEC);
    if (pagemap < 0 || mfd < 0 || ftruncate(mfd, (off_t)len) != 0) {
        snprintf(why, why_len, "pagemap or memfd: %s", strerror(errno));
        goto out;
    }
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (p == MAP_FAILED) {
        snprintf(why, why_len, "mmap: %s", strerror(errno));
        goto out;
    }
    p[0] = 1; /* one populated page, the others not: both must be tracked */
    if ((rv = wp_register(uffd, (uint64_t)(uintptr_t)p, len)) != 0) {
        snprintf(why, why_len, "write-protecting shared memory: %s", strerror(-rv));
        goto out;
    }
    if ((rv = scan_written(pagemap, (uint64_t)(uintptr_t)p, len, vec, 8, &runs)) != 0) {
        snprintf(why, why_len, "PAGEMAP_SCAN: %s", strerror(-rv));
        goto out;
    }
    if (runs.n != 0) {
        snprintf(why, why_len, "PAGEMAP_SCAN reports writes right after write-protect");
        goto out;
    }
    p[0] = 2;
    p[5 * NODE_XFER_PAGE] = 3;
    node_runs_clear(&runs);
    if ((rv = scan_written(pagemap, (uint64_t)(uintptr_t)p, len, vec, 8, &runs)) != 0 ||
        runs.n != 2 || runs.v[0].offset != 0 || runs.v[1].offset != 5 * NODE_XFER_PAGE) {
        snprintf(why, why_len, "PAGEMAP_SCAN does not see the writes it should");
        goto out;
    }
    p[0] = 4; /* re-protected by the scan: seen again */
    node_runs_clear(&runs);
    if (scan_written(pagemap, (uint64_t)(uintptr_t)p, len, vec, 8, &runs) != 0 || runs.n != 1) {
        snprintf(why, why_len, "PAGEMAP_SCAN does not re-protect");
        goto out;
    }
    ok = true;
out:
    node_runs_free(&runs);
    if (p != MAP_FAILED)
        munmap(p, len);
    if (mfd >= 0)
        close(mfd);
    if (pagemap >= 0)
        close(pagemap);
    if (uffd >= 0)
        close(uffd);
    return ok;
}

int node_dirty_uffd_start(struct node_dirty_uffd *t, int uffd, int pagemap, uint64_t addr,
                          uint64_t len)
{
    memset(t, 0, sizeof(*t));
    t->uffd = uffd;
    t->pagemap = pagemap;
    t->addr = addr;
    t->len = len;
    int rv = wp_register(uffd, addr, len);
    if (rv != 0) {
        node_dirty_uffd_stop(t);
        return rv;
    }
    t->registered = true;
    t->vec_len = VEC_LEN;
    t->vec = xcalloc(VEC_LEN, sizeof(struct page_region));
    return 0;
}

int node_dirty_uffd_collect(struct node_dirty_uffd *t, struct node_runs *out)
{
    if (!t->registered)
        return -EBADF;
    return scan_written(t->pagemap, t->addr, t->len, t->vec, t->vec_len, out);
}

void node_dirty_uffd_stop(struct node_dirty_uffd *t)
{
    if (t->registered) {
        /* Unregistering drops the write-protection: the service writes at
         * full speed again (an aborted migration must not slow it). */
        struct uffdio_range r = {.start = t->addr, .len = t->len};
        ioctl(t->uffd, UFFDIO_UNREGISTER, &r);
        t->registered = false;
    }
    if (t->uffd >= 0)
        close(t->uffd);
    if (t->pagemap >= 0)
        close(t->pagemap);
    t->uffd = t->pagemap = -1;
    free(t->vec);
    t->vec = NULL;
}

/* ------------------------------------------------------------------------ */
/* The mprotect bitmap                                                       */
/* ------------------------------------------------------------------------ */

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts only, like the arena itself */
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

int node_dirty_bitmap_check(const uint8_t *map, uint64_t file_size, uint64_t pages,
                            const char **why)
{
    uint64_t words = (pages + 63) / 64;
    const char *w = NULL;
    if (file_size < NODE_DIRTY_BITMAP_HEADER)
        w = "bitmap file shorter than its header";
    else if (rd32(map) != NODE_DIRTY_BITMAP_MAGIC)
        w = "bitmap file has a bad magic";
    else if ((rd32(map + 4) & 0xffff) != 1)
        w = "bitmap file version is not 1";
    else if ((rd32(map + 4) >> 16) != NODE_DIRTY_BITMAP_HEADER)
        w = "bitmap header size is not 64";
    else if (rd32(map + 8) != NODE_XFER_PAGE)
        w = "bitmap page size is not 4096";
    else if (rd64(map + 16) != pages)
        w = "bitmap page count differs from the arena's";
    else if (file_size < NODE_DIRTY_BITMAP_HEADER + 2 * words * 8)
        w = "bitmap file too short for two bitmaps";
    if (w) {
        *why = w;
        return DVS_EPROTO;
    }
    return 0;
}

void node_dirty_bitmap_runs(const uint8_t *map, uint64_t pages, unsigned which,
                            struct node_runs *out)
{
    uint64_t words = (pages + 63) / 64;
    const uint8_t *bm = map + NODE_DIRTY_BITMAP_HEADER + (which ? words * 8 : 0);
    for (uint64_t w = 0; w < words; w++) {
        uint64_t v = rd64(bm + w * 8);
        while (v) {
            unsigned b = (unsigned)__builtin_ctzll(v);
            uint64_t page = w * 64 + b;
            if (page >= pages)
                break;
            node_runs_add(out, page * NODE_XFER_PAGE, NODE_XFER_PAGE);
            v &= v - 1;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The stop rule                                                             */
/* ------------------------------------------------------------------------ */

enum node_precopy_next node_precopy_decide(const struct node_precopy_rule *rule,
                                           const struct node_precopy_state *st, uint64_t dirty,
                                           int *reason, double *est_ms)
{
    /* Before any measure, a modest guess; the first round measures. */
    double bw = st->bw > 0 ? st->bw : 100e6;
    double est = (double)dirty * 1e3 / bw + rule->overhead_ms;
    *est_ms = est;
    if (est <= rule->budget_ms) {
        *reason = NODE_XFER_S_BUDGET;
        return NODE_PC_FREEZE;
    }
    int stuck = 0;
    if (st->rounds >= rule->max_rounds)
        stuck = NODE_XFER_S_ROUND_CAP;
    else if (st->rounds >= 2 && dirty * 10 >= st->prev_dirty * 9)
        stuck = NODE_XFER_S_NO_PROGRESS; /* shrank by less than 10% */
    if (!stuck && st->throttle_step == 0)
        return NODE_PC_SEND;
    if (st->throttle_step >= rule->throttle_steps) {
        *reason = NODE_XFER_S_THROTTLE_CAP;
        return NODE_PC_FREEZE;
    }
    /* Once throttling, a step more every round until it fits. */
    *reason = stuck ? stuck : NODE_XFER_S_NO_PROGRESS;
    return NODE_PC_THROTTLE;
}
