/*
 * The migratable arena: a memfd mapped at a fixed address, and an allocator
 * whose whole state lives inside it (DESIGN.md §4; layout in arena.h).
 *
 * Why an allocator of our own: the arena's contents are copied page by page
 * to another node and mapped there by a fresh process, so the allocator's
 * free lists must be in the arena too, and must mean the same thing there.
 * They are offsets from the base, and every offset read back from a restored
 * arena is checked before it is followed (dvs__arena_check).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"

#define BLK_HDR 16u
#define BLK_MIN 32u
#define BLK_ALIGN 16u
#define BLK_INUSE 1u
#define BLK_PREV_INUSE 2u
#define BLK_FLAGS 15u
#define SMALL_BINS 31u /* exact sizes 32, 48, ..., 512 */
#define SMALL_MAX 512u

struct blk {
    uint64_t prev_size;  /* the previous block's size, when it is free */
    uint64_t size_flags; /* size | BLK_INUSE | BLK_PREV_INUSE */
    uint64_t next;       /* free blocks only: free-list links */
    uint64_t prev;
};

/*
 * An allocator bug or a caller freeing a foreign pointer would corrupt state
 * that outlives this process and travels to other nodes; stopping at once is
 * the only safe answer (the same reasoning as glibc's "double free" abort).
 */
#define ARENA_REQUIRE(cond) \
    do {                    \
        if (!(cond))        \
            abort();        \
    } while (0)

/* ---------------------------------------------------------------------------
 * Block helpers
 */

static struct blk *blk_at(const dvs_arena *a, uint64_t off)
{
    return (struct blk *)(a->base + off);
}

static uint64_t blk_size(const struct blk *b)
{
    return b->size_flags & ~(uint64_t)BLK_FLAGS;
}

static bool blk_inuse(const struct blk *b)
{
    return (b->size_flags & BLK_INUSE) != 0;
}

static bool blk_prev_inuse(const struct blk *b)
{
    return (b->size_flags & BLK_PREV_INUSE) != 0;
}

static unsigned bin_of(uint64_t size)
{
    if (size <= SMALL_MAX)
        return (unsigned)((size - BLK_MIN) / BLK_ALIGN);
    unsigned lg = 63u - (unsigned)__builtin_clzll(size); /* >= 9 */
    unsigned bin = SMALL_BINS + (lg - 9);
    return bin < DVS__ARENA_NBINS ? bin : DVS__ARENA_NBINS - 1;
}

/* The block size that holds n payload bytes, or 0 if n is absurd. */
static uint64_t need_for(const dvs_arena *a, size_t n)
{
    if (n == 0 || n > a->size)
        return 0;
    uint64_t need = ((uint64_t)n + BLK_HDR + BLK_ALIGN - 1) & ~(uint64_t)(BLK_ALIGN - 1);
    return need < BLK_MIN ? BLK_MIN : need;
}

static void list_push(dvs_arena *a, uint64_t off)
{
    struct dvs__arena_hdr *h = a->hdr;
    struct blk *b = blk_at(a, off);
    unsigned bin = bin_of(blk_size(b));

    b->prev = 0;
    b->next = h->bins[bin];
    if (b->next != 0)
        blk_at(a, b->next)->prev = off;
    h->bins[bin] = off;
    h->bin_map |= 1ull << bin;
    h->free_blocks++;
}

static void list_remove(dvs_arena *a, uint64_t off)
{
    struct dvs__arena_hdr *h = a->hdr;
    struct blk *b = blk_at(a, off);
    unsigned bin = bin_of(blk_size(b));

    if (b->prev != 0)
        blk_at(a, b->prev)->next = b->next;
    else
        h->bins[bin] = b->next;
    if (b->next != 0)
        blk_at(a, b->next)->prev = b->prev;
    if (h->bins[bin] == 0)
        h->bin_map &= ~(1ull << bin);
    h->free_blocks--;
}

/* Write a free block's header and its boundary tag in the next block. */
static void mark_free(dvs_arena *a, uint64_t off, uint64_t size, bool prev_inuse)
{
    struct blk *b = blk_at(a, off);
    struct blk *next = blk_at(a, off + size);

    b->size_flags = size | (prev_inuse ? BLK_PREV_INUSE : 0);
    next->prev_size = size;
    next->size_flags &= ~(uint64_t)BLK_PREV_INUSE;
}

static void mark_used(dvs_arena *a, uint64_t off, uint64_t size, bool prev_inuse)
{
    blk_at(a, off)->size_flags = size | BLK_INUSE | (prev_inuse ? BLK_PREV_INUSE : 0);
    blk_at(a, off + size)->size_flags |= BLK_PREV_INUSE;
}

/*
 * Make the region [off, off+size), which is on no free list, an allocated
 * block of need bytes. A remainder big enough to be a block goes back to the
 * free lists, merged with the next block if that one is free.
 */
static void carve(dvs_arena *a, uint64_t off, uint64_t size, uint64_t need,
                  bool prev_inuse)
{
    if (size - need < BLK_MIN) {
        mark_used(a, off, size, prev_inuse);
        a->hdr->used += size;
        return;
    }
    uint64_t rem = off + need;
    uint64_t rem_size = size - need;
    struct blk *next = blk_at(a, off + size);
    if (!blk_inuse(next)) {
        list_remove(a, off + size);
        rem_size += blk_size(next);
    }
    blk_at(a, off)->size_flags = need | BLK_INUSE | (prev_inuse ? BLK_PREV_INUSE : 0);
    mark_free(a, rem, rem_size, true);
    list_push(a, rem);
    a->hdr->used += need;
}

/*
 * The offset of the block whose payload is p, after checking that p really
 * is the payload of an allocated block of this arena. Returns 0 if not.
 */
static uint64_t block_of(const dvs_arena *a, const void *p)
{
    const struct dvs__arena_hdr *h = a->hdr;
    uintptr_t addr = (uintptr_t)p;
    uintptr_t base = (uintptr_t)a->base;

    if (addr < base + h->heap_off + BLK_HDR || addr >= base + h->heap_end)
        return 0;
    uint64_t off = addr - base - BLK_HDR;
    if (off % BLK_ALIGN != 0)
        return 0;
    const struct blk *b = blk_at(a, off);
    uint64_t size = blk_size(b);
    if (!blk_inuse(b) || size < BLK_MIN || size > h->heap_end - off)
        return 0;
    return off;
}

/* ---------------------------------------------------------------------------
 * Allocation
 */

/* Find a free block of at least need bytes and take it off its list. */
static uint64_t take_free(dvs_arena *a, uint64_t need)
{
    struct dvs__arena_hdr *h = a->hdr;
    unsigned bin = bin_of(need);

    if (h->bin_map & (1ull << bin)) {
        /* Small bins hold one exact size; larger ones need a first-fit scan. */
        for (uint64_t off = h->bins[bin]; off != 0; off = blk_at(a, off)->next) {
            if (blk_size(blk_at(a, off)) >= need) {
                list_remove(a, off);
                return off;
            }
        }
    }
    /* Any block of a larger class fits. */
    uint64_t above = bin + 1 < 64 ? h->bin_map & ~((2ull << bin) - 1) : 0;
    if (above == 0)
        return 0;
    uint64_t off = h->bins[__builtin_ctzll(above)];
    list_remove(a, off);
    return off;
}

DVS_API void *dvs_arena_alloc(dvs_arena *a, size_t n)
{
    uint64_t need = need_for(a, n);
    if (need == 0)
        return NULL;
    uint64_t off = take_free(a, need);
    if (off == 0)
        return NULL;
    struct blk *b = blk_at(a, off);
    carve(a, off, blk_size(b), need, blk_prev_inuse(b));
    a->hdr->used_blocks++;
    return a->base + off + BLK_HDR;
}

DVS_API void *dvs_arena_calloc(dvs_arena *a, size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n))
        return NULL;
    void *p = dvs_arena_alloc(a, n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

DVS_API void dvs_arena_free(dvs_arena *a, void *p)
{
    if (p == NULL)
        return;
    uint64_t off = block_of(a, p);
    ARENA_REQUIRE(off != 0);

    struct dvs__arena_hdr *h = a->hdr;
    struct blk *b = blk_at(a, off);
    uint64_t size = blk_size(b);
    bool prev_inuse = blk_prev_inuse(b);

    h->used -= size;
    h->used_blocks--;

    /* Merge with the neighbours now, so free blocks are never adjacent. */
    struct blk *next = blk_at(a, off + size);
    if (!blk_inuse(next)) {
        list_remove(a, off + size);
        size += blk_size(next);
    }
    if (!prev_inuse) {
        uint64_t prev_off = off - b->prev_size;
        list_remove(a, prev_off);
        size += b->prev_size;
        off = prev_off;
        prev_inuse = blk_prev_inuse(blk_at(a, off));
    }
    mark_free(a, off, size, prev_inuse);
    list_push(a, off);
}

DVS_API void *dvs_arena_realloc(dvs_arena *a, void *p, size_t n)
{
    if (p == NULL)
        return dvs_arena_alloc(a, n);
    if (n == 0) {
        dvs_arena_free(a, p);
        return NULL;
    }
    uint64_t off = block_of(a, p);
    ARENA_REQUIRE(off != 0);
    uint64_t need = need_for(a, n);
    if (need == 0)
        return NULL;

    struct blk *b = blk_at(a, off);
    uint64_t size = blk_size(b);
    bool prev_inuse = blk_prev_inuse(b);
    struct blk *next = blk_at(a, off + size);
    uint64_t room = size;
    if (!blk_inuse(next))
        room += blk_size(next);

    if (need <= room) {
        /* In place: shrink, or grow into the free block that follows. */
        if (room > size)
            list_remove(a, off + size);
        a->hdr->used -= size;
        carve(a, off, room, need, prev_inuse);
        return p;
    }

    void *q = dvs_arena_alloc(a, n);
    if (q == NULL)
        return NULL;
    memcpy(q, p, size - BLK_HDR);
    dvs_arena_free(a, p);
    return q;
}

/* ---------------------------------------------------------------------------
 * Roots, accessors, statistics
 */

DVS_API void *dvs_arena_root(const dvs_arena *a)
{
    return a->hdr->root_off != 0 ? a->base + a->hdr->root_off : NULL;
}

DVS_API int dvs_arena_set_root(dvs_arena *a, void *p)
{
    if (p != NULL && block_of(a, p) == 0)
        return -EINVAL;
    a->hdr->root_off = p != NULL ? dvs__arena_off(a, p) : 0;
    return 0;
}

void *dvs__arena_lib_root(const dvs_arena *a)
{
    return a->hdr->lib_off != 0 ? a->base + a->hdr->lib_off : NULL;
}

void dvs__arena_set_lib_root(dvs_arena *a, void *p)
{
    ARENA_REQUIRE(p == NULL || block_of(a, p) != 0);
    a->hdr->lib_off = p != NULL ? dvs__arena_off(a, p) : 0;
}

bool dvs__arena_is_block(const dvs_arena *a, const void *p)
{
    return block_of(a, p) != 0;
}

size_t dvs__arena_usable_size(const dvs_arena *a, const void *p)
{
    uint64_t off = block_of(a, p);
    ARENA_REQUIRE(off != 0);
    return blk_size(blk_at(a, off)) - BLK_HDR;
}

void *dvs__arena_ptr(const dvs_arena *a, uint64_t off, size_t n)
{
    if (off == 0 || off > a->size || n > a->size - off)
        return NULL;
    return a->base + off;
}

uint64_t dvs__arena_off(const dvs_arena *a, const void *p)
{
    return p != NULL ? (uint64_t)((const uint8_t *)p - a->base) : 0;
}

DVS_API int dvs_arena_fd(const dvs_arena *a)
{
    return a->fd;
}

DVS_API void *dvs_arena_base(const dvs_arena *a)
{
    return a->base;
}

DVS_API size_t dvs_arena_size(const dvs_arena *a)
{
    return a->size;
}

DVS_API bool dvs_arena_contains(const dvs_arena *a, const void *p, size_t n)
{
    uintptr_t addr = (uintptr_t)p;
    uintptr_t base = (uintptr_t)a->base;
    return addr >= base && addr - base <= a->size && n <= a->size - (addr - base);
}

DVS_API void dvs_arena_stats(const dvs_arena *a, struct dvs_arena_stats *ret)
{
    const struct dvs__arena_hdr *h = a->hdr;
    size_t heap = h->heap_end - h->heap_off;
    uint64_t largest = 0;

    if (h->bin_map != 0) {
        unsigned bin = 63u - (unsigned)__builtin_clzll(h->bin_map);
        for (uint64_t off = h->bins[bin]; off != 0; off = blk_at(a, off)->next)
            if (blk_size(blk_at(a, off)) > largest)
                largest = blk_size(blk_at(a, off));
    }
    *ret = (struct dvs_arena_stats){
        .size = a->size,
        .heap_size = heap,
        .used = h->used,
        .free = heap - h->used,
        .largest_free = largest > BLK_HDR ? largest - BLK_HDR : 0,
        .used_blocks = h->used_blocks,
        .free_blocks = h->free_blocks,
    };
}

/* ---------------------------------------------------------------------------
 * Validation of a restored arena
 */

static int check_header(const dvs_arena *a)
{
    const struct dvs__arena_hdr *h = a->hdr;

    if (h->magic != DVS__ARENA_MAGIC || h->version != DVS__ARENA_VERSION ||
        h->hdr_size != sizeof(*h))
        return DVS_EPROTO;
    /* Pointers inside the arena are only meaningful at the same address. */
    if (h->base != (uintptr_t)a->base || h->size != a->size)
        return DVS_EPROTO;
    if (h->heap_off != DVS__ARENA_HDR_SPACE || h->heap_end != a->size - BLK_HDR)
        return DVS_EPROTO;
    if (h->used > h->heap_end - h->heap_off)
        return DVS_EPROTO;
    if (h->root_off != 0 && block_of(a, a->base + h->root_off) == 0)
        return DVS_EPROTO;
    if (h->lib_off != 0 && block_of(a, a->base + h->lib_off) == 0)
        return DVS_EPROTO;
    for (unsigned i = 0; i < DVS__ARENA_NBINS; i++)
        if ((h->bins[i] != 0) != ((h->bin_map >> i) & 1))
            return DVS_EPROTO;
    return 0;
}

/* Walk the blocks in address order. */
static int check_blocks(const dvs_arena *a, uint64_t *ret_free_bytes)
{
    const struct dvs__arena_hdr *h = a->hdr;
    uint64_t used = 0, used_blocks = 0, free_bytes = 0, free_blocks = 0;
    bool prev_free = false;
    uint64_t off = h->heap_off;

    while (off < h->heap_end) {
        const struct blk *b = blk_at(a, off);
        uint64_t size = blk_size(b);
        if (size < BLK_MIN || size > h->heap_end - off)
            return DVS_EPROTO;
        if (blk_prev_inuse(b) == prev_free)
            return DVS_EPROTO;
        if (blk_inuse(b)) {
            used += size;
            used_blocks++;
            prev_free = false;
        } else {
            if (prev_free) /* two adjacent free blocks: a merge was missed */
                return DVS_EPROTO;
            if (blk_at(a, off + size)->prev_size != size)
                return DVS_EPROTO;
            free_bytes += size;
            free_blocks++;
            prev_free = true;
        }
        off += size;
    }
    const struct blk *end = blk_at(a, h->heap_end);
    if (off != h->heap_end || end->size_flags != (BLK_INUSE | (prev_free ? 0 : BLK_PREV_INUSE)))
        return DVS_EPROTO;
    if (used != h->used || used_blocks != h->used_blocks || free_blocks != h->free_blocks)
        return DVS_EPROTO;
    *ret_free_bytes = free_bytes;
    return 0;
}

/* Walk the free lists: each must hold free blocks of its class, doubly linked. */
static int check_lists(const dvs_arena *a, uint64_t free_bytes)
{
    const struct dvs__arena_hdr *h = a->hdr;
    uint64_t seen = 0, seen_bytes = 0;

    for (unsigned i = 0; i < DVS__ARENA_NBINS; i++) {
        uint64_t prev = 0;
        for (uint64_t off = h->bins[i]; off != 0; off = blk_at(a, off)->next) {
            /* The bound on seen stops a cycle. */
            if (++seen > h->free_blocks || off % BLK_ALIGN != 0 ||
                off < h->heap_off || off > h->heap_end - BLK_MIN)
                return DVS_EPROTO;
            const struct blk *b = blk_at(a, off);
            uint64_t size = blk_size(b);
            if (blk_inuse(b) || size < BLK_MIN || size > h->heap_end - off ||
                bin_of(size) != i || b->prev != prev)
                return DVS_EPROTO;
            seen_bytes += size;
            prev = off;
        }
    }
    if (seen != h->free_blocks || seen_bytes != free_bytes)
        return DVS_EPROTO;
    return 0;
}

int dvs__arena_check(const dvs_arena *a)
{
    uint64_t free_bytes;
    int rv = check_header(a);
    if (rv == 0)
        rv = check_blocks(a, &free_bytes);
    if (rv == 0)
        rv = check_lists(a, free_bytes);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Creating and opening
 */

static void format(dvs_arena *a)
{
    struct dvs__arena_hdr *h = a->hdr;

    memset(a->base, 0, DVS__ARENA_HDR_SPACE);
    h->magic = DVS__ARENA_MAGIC;
    h->version = DVS__ARENA_VERSION;
    h->hdr_size = sizeof(*h);
    h->base = (uintptr_t)a->base;
    h->size = a->size;
    h->heap_off = DVS__ARENA_HDR_SPACE;
    h->heap_end = a->size - BLK_HDR;

    /* One free block spans the heap; the sentinel stops merges at the end. */
    struct blk *end = blk_at(a, h->heap_end);
    end->size_flags = BLK_INUSE;
    mark_free(a, h->heap_off, h->heap_end - h->heap_off, true);
    list_push(a, h->heap_off);
}

static bool range_valid(uintptr_t addr, size_t size)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || addr == 0 || addr % (uintptr_t)page != 0 ||
        size % (size_t)page != 0 || size < DVS__ARENA_MIN_SIZE)
        return false;
    return addr <= UINTPTR_MAX - size;
}

DVS_API int dvs_arena_open(int fd, uintptr_t addr, size_t size, unsigned flags,
                           dvs_arena **ret_arena)
{
    struct stat st;
    int rv;

    if (fd < 0 || !range_valid(addr, size) ||
        (flags & ~(unsigned)(DVS_ARENA_INIT | DVS_ARENA_NOCHECK | DVS_ARENA_MAPONLY)) != 0)
        return -EINVAL;
    if (fstat(fd, &st) != 0)
        return -errno;
    if ((flags & DVS_ARENA_INIT) && st.st_size == 0) {
        if (ftruncate(fd, (off_t)size) != 0)
            return -errno;
    } else if ((uint64_t)st.st_size != size) {
        return -EINVAL;
    }
    if (flags & DVS_ARENA_INIT) {
        /* Discard old contents so their pages are neither kept nor copied
         * by a migration (which skips zero pages). Best effort: without hole
         * punching, format() still makes the old data unreachable. */
        (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size);
    }

    dvs_arena *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;

    /* NOREPLACE: silently replacing someone's mapping would be a disaster;
     * the manager assigns disjoint ranges, so a collision is a bug to report. */
    void *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED) {
        rv = -errno;
        goto err_free;
    }
    if (p != (void *)addr) {
        /* Kernels before 4.17 treat the flag as a hint. */
        rv = -EEXIST;
        goto err_unmap;
    }
    /* A fork must not share or copy-on-write the arena: see the dirty
     * tracking fallback in DESIGN.md §4. */
    if (madvise(p, size, MADV_DONTFORK) != 0) {
        rv = -errno;
        goto err_unmap;
    }

    a->base = p;
    a->size = size;
    a->fd = fd;
    a->hdr = p;
    if (flags & DVS_ARENA_INIT) {
        format(a);
    } else if (!(flags & DVS_ARENA_MAPONLY)) {
        rv = dvs_arena_check(a, flags);
        if (rv != 0)
            goto err_unmap;
    }
    *ret_arena = a;
    return 0;

err_unmap:
    munmap(p, size);
err_free:
    free(a);
    return rv;
}

DVS_API int dvs_arena_check(dvs_arena *a, unsigned flags)
{
    int rv = check_header(a);
    if (rv == 0 && !(flags & DVS_ARENA_NOCHECK))
        rv = dvs__arena_check(a);
    return rv;
}

DVS_API int dvs_arena_create(uintptr_t addr, size_t size, dvs_arena **ret_arena)
{
    dvs_arena *a;
    int rv;

    if (!range_valid(addr, size))
        return -EINVAL;
    int fd = memfd_create("dvs-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        rv = -errno;
        goto err_close;
    }
    /* A truncated memfd turns every access past its end into SIGBUS. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        rv = -errno;
        goto err_close;
    }
    rv = dvs_arena_open(fd, addr, size, DVS_ARENA_INIT, &a);
    if (rv != 0)
        goto err_close;
    a->own_fd = true;
    *ret_arena = a;
    return 0;

err_close:
    close(fd);
    return rv;
}

DVS_API void dvs_arena_close(dvs_arena *a)
{
    if (a == NULL)
        return;
    munmap(a->base, a->size);
    if (a->own_fd)
        close(a->fd);
    free(a);
}
