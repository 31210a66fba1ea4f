/*
 * Dirty-page tracking by write protection (DESIGN.md §4, the fallback for
 * kernels without userfaultfd WP-async; the interface is in track.h).
 *
 * The tracker lives in static storage because a signal handler can reach
 * nothing else: one tracked arena per process. The state the handler and
 * "collect" share is all atomic; the handler calls only atomics, mprotect
 * and sigaction, which are async-signal-safe.
 *
 * Epochs. The two bitmaps alternate: the handler writes into the "active"
 * one (epoch k), collect switches writers to the other one (epoch k') and
 * reports k. Each epoch has its own in-flight counter, which a handler
 * enters before it looks at anything and leaves when it has made its page
 * writable again. The handler enters like this:
 *
 *     k = active; inflight[k]++; if (active != k) { inflight[k]--; retry; }
 *
 * and collect does "active = k'; wait until inflight[k] == 0". All of these
 * are sequentially consistent, so (the Dekker argument) a handler either
 * saw active == k' and writes into k', or its increment of inflight[k] is
 * seen by collect, which waits for it. Per-epoch counters mean collect
 * never waits for handlers of the new epoch, which threads writing without
 * pause could otherwise keep non-zero forever.
 *
 * Why no write is lost (the property the migration needs: every page
 * written after the agent copied it is reported by a later collect):
 *
 *  - A write to a protected page faults first. Its handler sets the page's
 *    bit in the epoch it entered, makes the page writable, and only then
 *    does the write happen (the faulting instruction restarts). If that
 *    epoch is k and collect is running, collect waits for this handler
 *    before it write-protects the pages of k, so the page cannot stay
 *    writable while its bit is in a bitmap already reported: either the
 *    write lands before collect re-protects the page (then before the reply,
 *    so the agent, which copies after the reply, copies it), or it faults
 *    again and lands in k'.
 *  - A write to a page that is writable needs no fault. A page is writable
 *    only because a handler set its bit in some epoch after the page was
 *    last protected. If that epoch is the active one, the next collect
 *    reports it and the agent copies the page after that, so after the
 *    write. If it is the epoch a running collect has just swapped out
 *    (bitmap K), collect has not re-protected the page yet, so the write
 *    comes before the reply and before the agent's copy. An epoch reported
 *    by a collect that has finished cannot be the reason: that collect
 *    write-protected every page of it.
 *  - Overflow: the handler that reaches max_faults in epoch k makes the
 *    whole arena writable and marks k overflowed; collect reports every
 *    page for k and write-protects the whole arena. Writes between the two
 *    precede the reply. A later epoch's handler overflowing concurrently
 *    marks its own epoch, so the next collect reports everything again.
 *
 * Protecting more than needed (a page of k' caught by a whole-arena
 * re-protect) costs one more fault and loses nothing: the bit is set again.
 *
 * Limits (docs/control-protocol.md §5): a write into the arena by a system
 * call (read(2) into an arena buffer) fails with EFAULT instead of faulting;
 * a SIGSEGV handler that the service installs after track-start replaces
 * this one, and the next first write then kills the process. On x86-64 the
 * handler takes only write faults; elsewhere it cannot tell, and treats any
 * protection fault in the arena as a write.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <sched.h>

#include "track.h"

#define SPIN_BEFORE_YIELD 1000
#define INFLIGHT_TIMEOUT_NS 1000000000ull
/* More runs than this and one mprotect of the whole arena is cheaper than
 * one call per run (each call walks the VMA tree and may split and merge). */
#define MAX_RUNS 64

struct tracker {
    /* Set by start before "on", read by handlers only after they see "on". */
    const void *owner;
    uintptr_t base;
    size_t size;
    size_t page;
    uint64_t pages;
    uint64_t words;
    uint32_t max_faults;
    void *map;
    size_t map_size;
    struct dvs_track_hdr *hdr;
    uint64_t *bitmap[2];
    bool broken;

    atomic_bool on;
    atomic_uint active;
    atomic_uint inflight[2];
    atomic_uint_fast64_t faults[2];
    atomic_bool overflow[2];

    /* The range tracked last, for a fault taken just before track-stop
     * made it writable and delivered just after (see stale_fault). */
    atomic_uintptr_t last_base;
    atomic_size_t last_size;
};

static struct tracker g;
static struct sigaction g_prev; /* the disposition found at install time */
static atomic_bool g_installed;

/* The last address this thread retried as a stale fault. */
static __thread uintptr_t tls_stale_addr __attribute__((tls_model("initial-exec")));

/* ---------------------------------------------------------------------------
 * The handler
 */

static bool is_write_fault(const void *uc)
{
#if defined(__x86_64__) && defined(REG_ERR)
    /* The page-fault error code: bit 1 is set for a write access. */
    const ucontext_t *u = uc;
    return (u->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)uc;
    return true;
#endif
}

/* Give the signal to whoever had SIGSEGV before us, so that a real crash
 * crashes the way it would have without tracking. */
static void chain(int sig, siginfo_t *si, void *uc)
{
    const struct sigaction *p = &g_prev;
    if ((p->sa_flags & SA_SIGINFO) && p->sa_sigaction != NULL) {
        p->sa_sigaction(sig, si, uc);
        return;
    }
    if (p->sa_handler == SIG_IGN && si->si_code <= 0)
        return; /* sent by kill() and ignored before: still ignored */
    if (p->sa_handler == SIG_DFL || p->sa_handler == SIG_IGN) {
        /* Restore the default and let the fault happen again (or, for a
         * signal that was sent, be delivered again once we return): the
         * process dies of SIGSEGV with the faulting context intact. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        if (si->si_code <= 0)
            raise(sig);
        return;
    }
    p->sa_handler(sig);
}

/*
 * A write fault in the range tracked last, with tracking off: the fault was
 * taken while the page was protected, and delivered after track-stop made
 * the arena writable. Retrying the write is right, once: the same address
 * faulting again from the same thread is a real fault.
 */
static bool stale_fault(uintptr_t addr)
{
    uintptr_t b = atomic_load(&g.last_base);
    size_t n = atomic_load(&g.last_size);
    if (b == 0 || addr < b || addr - b >= n || tls_stale_addr == addr)
        return false;
    tls_stale_addr = addr;
    return true;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    int saved_errno = errno;
    uintptr_t addr = (uintptr_t)si->si_addr;
    unsigned k;

    if (si->si_code != SEGV_ACCERR || !is_write_fault(uc))
        goto chain;

    for (;;) {
        k = atomic_load(&g.active);
        atomic_fetch_add(&g.inflight[k], 1);
        if (atomic_load(&g.active) == k)
            break;
        atomic_fetch_sub(&g.inflight[k], 1);
    }
    if (!atomic_load(&g.on) || addr < g.base || addr - g.base >= g.size) {
        atomic_fetch_sub(&g.inflight[k], 1);
        if (stale_fault(addr))
            goto out;
        goto chain;
    }

    uint64_t i = (addr - g.base) / g.page;
    __atomic_fetch_or(&g.bitmap[k][i / 64], 1ull << (i % 64), __ATOMIC_RELAXED);
    uint64_t n = atomic_fetch_add(&g.faults[k], 1) + 1;
    __atomic_fetch_add(&g.hdr->faults, 1, __ATOMIC_RELAXED);
    bool whole = n >= g.max_faults;
    if (!whole && mprotect((void *)(g.base + i * g.page), g.page, PROT_READ | PROT_WRITE) != 0)
        whole = true; /* ENOMEM: out of mappings; one range needs none */
    if (whole) {
        atomic_store(&g.overflow[k], true);
        __atomic_store_n(&g.hdr->overflow, 1, __ATOMIC_RELAXED);
        if (mprotect((void *)g.base, g.size, PROT_READ | PROT_WRITE) != 0) {
            atomic_fetch_sub(&g.inflight[k], 1);
            goto chain; /* cannot make progress: crash rather than spin */
        }
    }
    atomic_fetch_sub(&g.inflight[k], 1);
    tls_stale_addr = 0;
out:
    errno = saved_errno;
    return;
chain:
    errno = saved_errno;
    chain(sig, si, uc);
}

/* ---------------------------------------------------------------------------
 * The owner's side
 */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wait until no handler is inside epoch k. Handlers are a few system calls
 * long, so this spins briefly, then yields; a second means a thread stopped
 * inside a handler, and the caller gives up. */
static int wait_epoch(unsigned k)
{
    uint64_t deadline = 0;
    for (unsigned i = 0; atomic_load(&g.inflight[k]) != 0; i++) {
        if (i < SPIN_BEFORE_YIELD) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        sched_yield();
        if (deadline == 0)
            deadline = now_ns() + INFLIGHT_TIMEOUT_NS;
        else if ((i & 63) == 0 && now_ns() > deadline)
            return -ETIMEDOUT;
    }
    return 0;
}

static int install_handler(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old) != 0)
        return -errno;
    /* Once installed, the handler stays for the life of the process; with
     * tracking off it passes everything on (see dvs__track_stop). Found it
     * replaced since: remember the newcomer as the one to chain to. */
    if (!((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_segv))
        g_prev = old;
    atomic_store(&g_installed, true);
    return 0;
}

int dvs__track_start(const void *owner, void *base, size_t size, uint32_t max_faults,
                     int *ret_fd)
{
    long page = sysconf(_SC_PAGESIZE);
    int rv;

    if (owner == NULL || base == NULL || page <= 0 || size == 0 ||
        (uintptr_t)base % (size_t)page != 0 || size % (size_t)page != 0 || max_faults == 0 ||
        max_faults > DVS__TRACK_MAX_MAX_FAULTS)
        return -EINVAL;
    if (atomic_load(&g.on))
        return g.owner == owner ? -EALREADY : -EBUSY;

    uint64_t pages = size / (size_t)page;
    uint64_t words = DVS_TRACK_WORDS(pages);
    size_t map_size = (size_t)DVS_TRACK_BITMAP_OFF(pages, 2);
    map_size = (map_size + (size_t)page - 1) / (size_t)page * (size_t)page;

    int fd = memfd_create("dvs-track", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)map_size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        rv = -errno;
        goto close_fd;
    }
    void *map = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        rv = -errno;
        goto close_fd;
    }
    /* A child of the service must not write into the agent's bitmap, and
     * must not inherit a write-protected arena (the arena is DONTFORK
     * already; saying it again costs nothing). */
    madvise(map, map_size, MADV_DONTFORK);
    madvise(base, size, MADV_DONTFORK);

    struct dvs_track_hdr *hdr = map;
    hdr->magic = DVS_TRACK_MAGIC;
    hdr->version = DVS_TRACK_VERSION;
    hdr->hdr_size = DVS_TRACK_HDR_SIZE;
    hdr->page_size = (uint32_t)page;
    hdr->pages = pages;

    g.owner = owner;
    g.base = (uintptr_t)base;
    g.size = size;
    g.page = (size_t)page;
    g.pages = pages;
    g.words = words;
    g.max_faults = max_faults;
    g.map = map;
    g.map_size = map_size;
    g.hdr = hdr;
    g.bitmap[0] = (uint64_t *)((char *)map + DVS_TRACK_BITMAP_OFF(pages, 0));
    g.bitmap[1] = (uint64_t *)((char *)map + DVS_TRACK_BITMAP_OFF(pages, 1));
    g.broken = false;
    atomic_store(&g.active, 0);
    for (unsigned k = 0; k < 2; k++) {
        atomic_store(&g.faults[k], 0);
        atomic_store(&g.overflow[k], false);
    }

    if ((rv = install_handler()) != 0)
        goto unmap;
    atomic_store(&g.on, true);
    /* From here a write faults and is recorded: the first round covers
     * everything written after this call. */
    if (mprotect(base, size, PROT_READ) != 0) {
        rv = -errno;
        atomic_store(&g.on, false);
        mprotect(base, size, PROT_READ | PROT_WRITE);
        wait_epoch(0);
        goto unmap;
    }
    *ret_fd = fd;
    return 0;

unmap:
    g.owner = NULL;
    munmap(map, map_size);
close_fd:
    close(fd);
    return rv;
}

/* Write-protect the pages set in bitmap k, in runs; returns 0 or -errno. */
static int protect_runs(unsigned k, uint64_t *ret_dirty)
{
    const uint64_t *bm = g.bitmap[k];
    uint64_t dirty = 0, runs = 0;
    for (uint64_t w = 0; w < g.words; w++) {
        dirty += (uint64_t)__builtin_popcountll(bm[w]);
        /* A run starts at each set bit whose predecessor is clear. */
        uint64_t prev_top = w > 0 ? bm[w - 1] >> 63 : 0;
        runs += (uint64_t)__builtin_popcountll(bm[w] & ~((bm[w] << 1) | prev_top));
    }
    *ret_dirty = dirty;
    if (dirty == 0)
        return 0;
    if (runs > MAX_RUNS)
        return mprotect((void *)g.base, g.size, PROT_READ) == 0 ? 0 : -errno;

    uint64_t i = 0;
    while (i < g.pages) {
        uint64_t w = bm[i / 64] >> (i % 64);
        if (w == 0) {
            i = (i / 64 + 1) * 64;
            continue;
        }
        i += (uint64_t)__builtin_ctzll(w);
        uint64_t start = i;
        while (i < g.pages && (bm[i / 64] >> (i % 64) & 1))
            i++;
        if (mprotect((void *)(g.base + start * g.page), (i - start) * g.page, PROT_READ) != 0)
            return -errno;
    }
    return 0;
}

int dvs__track_collect(const void *owner, struct dvs__track_report *ret)
{
    if (!atomic_load(&g.on) || g.owner != owner)
        return -ENOENT;
    if (g.broken)
        return -ETIMEDOUT;

    unsigned k = atomic_load(&g.active), next = 1 - k;
    /* Nobody writes into "next": its handlers finished before the previous
     * collect returned, and new ones enter only the active epoch. */
    memset(g.bitmap[next], 0, g.words * 8);
    atomic_store(&g.faults[next], 0);
    atomic_store(&g.overflow[next], false);
    atomic_store(&g.active, next);
    __atomic_store_n(&g.hdr->active, next, __ATOMIC_SEQ_CST);
    __atomic_store_n(&g.hdr->faults, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&g.hdr->overflow, 0, __ATOMIC_RELAXED);

    int rv = wait_epoch(k);
    if (rv != 0) {
        /* A handler of k may still make its page writable after we
         * re-protect it: k can no longer be trusted, nor anything after. */
        g.broken = true;
        return rv;
    }

    ret->bitmap = k;
    ret->faults = atomic_load(&g.faults[k]);
    ret->overflow = atomic_load(&g.overflow[k]);
    if (ret->overflow) {
        memset(g.bitmap[k], 0xff, g.words * 8);
        if (g.pages % 64 != 0)
            g.bitmap[k][g.words - 1] = (1ull << (g.pages % 64)) - 1;
        ret->dirty = g.pages;
        rv = mprotect((void *)g.base, g.size, PROT_READ) == 0 ? 0 : -errno;
    } else {
        rv = protect_runs(k, &ret->dirty);
    }
    if (rv != 0)
        g.broken = true; /* pages of k may stay writable: untracked */
    return rv;
}

int dvs__track_stop(const void *owner)
{
    if (!atomic_load(&g.on) || g.owner != owner)
        return -ENOENT;
    atomic_store(&g.last_base, g.base);
    atomic_store(&g.last_size, g.size);
    /* Writable first, then "off": a handler that still sees "on" does
     * harmless work; one that sees "off" retries its write (stale_fault). */
    mprotect((void *)g.base, g.size, PROT_READ | PROT_WRITE);
    atomic_store(&g.on, false);
    /* Handlers that saw "on" may still touch the bitmap; they are short.
     * If one never finishes, keep the mapping (a leak, not a crash). */
    bool idle = wait_epoch(0) == 0 && wait_epoch(1) == 0;
    if (idle)
        munmap(g.map, g.map_size);
    g.map = NULL;
    g.hdr = NULL;
    g.bitmap[0] = g.bitmap[1] = NULL;
    g.owner = NULL;
    /*
     * The handler stays installed and passes every signal on. Putting the
     * previous disposition back here would race with a fault that another
     * thread took before the mprotect above but has not been delivered yet:
     * delivered to SIG_DFL, it would kill a healthy process.
     */
    return 0;
}

bool dvs__track_active(const void *owner)
{
    return atomic_load(&g.on) && g.owner == owner;
}
