/*
 * What the mprotect dirty-tracking fallback (libdvs/track.c, DESIGN.md §4)
 * costs a service: the time of the first write to a page while tracked
 * (fault, handler, one mprotect, return) against the same write to a
 * writable page, and the time of a collect. Prints figures, never fails.
 *
 *     bench/track_bench [pages per round (default 8192)] [rounds (default 5)]
 *
 * The region is a MAP_SHARED memfd like the arena. Two patterns: pages in
 * order (each unprotected page merges with its writable neighbour) and
 * every other page (each one becomes a mapping of its own, the case the
 * max_faults guard exists for).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "track.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, size_t n)
{
    qsort(ns, n, sizeof *ns, cmp_u64);
    printf("%-48s n=%-6zu median=%6.2f us  p99=%7.2f us  max=%8.2f us\n", what, n,
           ns[n / 2] / 1000.0, ns[n * 99 / 100] / 1000.0, ns[n - 1] / 1000.0);
}

/* One write per page of the pattern, each timed. */
static size_t time_writes(volatile uint8_t *base, size_t page, size_t pages, size_t stride,
                          uint64_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < pages; i += stride) {
        uint64_t t0 = now_ns();
        base[i * page] = (uint8_t)(base[i * page] + 1);
        out[n++] = now_ns() - t0;
    }
    return n;
}

int main(int argc, char **argv)
{
    size_t pages = argc > 1 ? strtoul(argv[1], NULL, 0) : 8192;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (pages == 0 || pages > DVS__TRACK_MAX_MAX_FAULTS || rounds <= 0) {
        fprintf(stderr, "usage: %s [pages 1..%u] [rounds >= 1]\n", argv[0],
                DVS__TRACK_MAX_MAX_FAULTS);
        return 2;
    }
    size_t size = pages * page;
    int fd = memfd_create("bench-arena", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        perror("memfd");
        return 1;
    }
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(base, 1, size); /* resident: measure tracking, not first touch */

    uint64_t *ns = malloc(sizeof *ns * pages * (size_t)rounds);
    uint64_t *col = malloc(sizeof *col * (size_t)rounds);
    if (ns == NULL || col == NULL)
        return 1;
    int owner, bfd;
    printf("track_bench: %zu pages of %zu bytes, %d rounds\n", pages, page, rounds);

    for (size_t stride = 1; stride <= 2; stride++) {
        const char *pattern = stride == 1 ? "in order" : "every other page";
        size_t n = 0;
        for (int r = 0; r < rounds; r++)
            n += time_writes(base, page, pages, stride, ns + n);
        char what[96];
        snprintf(what, sizeof what, "plain write, writable page (%s)", pattern);
        report(what, ns, n);

        int rv = dvs__track_start(&owner, base, size, DVS__TRACK_MAX_MAX_FAULTS, &bfd);
        if (rv != 0) {
            fprintf(stderr, "track start: %s\n", strerror(-rv));
            return 1;
        }
        n = 0;
        uint64_t dirty = 0, overflows = 0;
        for (int r = 0; r < rounds; r++) {
            n += time_writes(base, page, pages, stride, ns + n);
            struct dvs__track_report rep;
            uint64_t t0 = now_ns();
            rv = dvs__track_collect(&owner, &rep);
            col[r] = now_ns() - t0;
            if (rv != 0) {
                fprintf(stderr, "collect: %s\n", strerror(-rv));
                return 1;
            }
            dirty += rep.dirty;
            overflows += rep.overflow;
        }
        snprintf(what, sizeof what, "first write, tracked (%s)", pattern);
        report(what, ns, n);
        snprintf(what, sizeof what, "collect of %zu dirty pages (%s)", (size_t)(dirty / (uint64_t)rounds), pattern);
        report(what, col, (size_t)rounds);
        if (overflows > 0)
            printf("  (%llu rounds overflowed)\n", (unsigned long long)overflows);
        dvs__track_stop(&owner);
        close(bfd);
    }
    free(ns);
    free(col);
    munmap(base, size);
    close(fd);
    return 0;
}
