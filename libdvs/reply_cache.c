/*
 * The reply cache, inside the arena (see reply_cache.h for the rules).
 *
 * Layout: one struct dvs__rc (the arena's libdvs root), a hash table of
 * client-record offsets, and one record per client holding what it has had
 * executed (a floor and a bitmap window above it) and a fixed array of saved
 * replies. Records are also on a doubly linked LRU list
 * (head = most recently used). Reply bytes are separate arena allocations.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "reply_cache.h"

#define RC_MAGIC 0x4548434143525644ull /* "DVSRCACHE"-ish, little-endian */
#define RC_VERSION 1
#define RC_MAX_ENTRIES 4096u
#define RC_MAX_CLIENTS (1u << 20)

struct dvs__rc {
    uint64_t magic;
    uint32_t version;
    uint32_t max_clients;
    uint32_t max_entries;
    uint32_t n_clients;
    uint32_t n_buckets; /* a power of two >= max_clients */
    uint32_t pad;
    uint64_t max_bytes;
    uint64_t bytes;       /* saved reply bytes */
    uint64_t entries;     /* saved replies */
    uint64_t salt;        /* so clients cannot aim at one hash chain */
    uint64_t buckets_off; /* uint64_t[n_buckets], offsets of rc_client */
    uint64_t lru_head;
    uint64_t lru_tail;
    uint64_t replays;
    uint64_t evicted_clients;
    uint64_t dropped_replies;
};

struct rc_entry {
    uint64_t seq;
    uint64_t data_off; /* 0 when len == 0 */
    uint32_t len;
    uint8_t status;
    uint8_t pad[3];
};

/*
 * What a client has had executed is known exactly, independently of which
 * replies are still kept: every seq <= floor (acknowledged), and the seqs
 * floor+1 .. floor+RC_WINDOW whose bit is set in "executed". Dropping a
 * saved reply therefore never makes a request look new again, and never
 * makes a request that has not arrived yet look old: a client may have many
 * requests in flight on several threads, and they may arrive in any order.
 */
#define RC_WINDOW 1024u

struct rc_client {
    uint8_t id[DVS__CLIENT_ID_SIZE];
    uint64_t floor; /* every seq <= floor was acknowledged */
    uint64_t executed[RC_WINDOW / 64]; /* bit i: seq floor+1+i was executed */
    uint64_t hash_next;
    uint64_t lru_prev;
    uint64_t lru_next;
    uint32_t n_entries;
    uint32_t pad;
    struct rc_entry entries[];
};

/* ---------------------------------------------------------------------------
 * Helpers
 *
 * Offsets are turned into pointers without checks here: dvs__rc_open ran
 * dvs__rc_check on a restored cache, and from then on only this code writes
 * them.
 */

static void *at(const dvs_arena *a, uint64_t off)
{
    return off != 0 ? (uint8_t *)dvs_arena_base(a) + off : NULL;
}

static uint64_t *buckets(const dvs_arena *a, const struct dvs__rc *rc)
{
    return at(a, rc->buckets_off);
}

static size_t client_size(const struct dvs__rc *rc)
{
    return sizeof(struct rc_client) + (size_t)rc->max_entries * sizeof(struct rc_entry);
}

static uint32_t bucket_of(const struct dvs__rc *rc, const uint8_t id[DVS__CLIENT_ID_SIZE])
{
    uint64_t lo, hi;
    memcpy(&lo, id, 8);
    memcpy(&hi, id + 8, 8);
    uint64_t h = (lo ^ rc->salt) * 0x9e3779b97f4a7c15ull;
    h ^= hi + (h >> 29);
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h & (rc->n_buckets - 1);
}

static struct rc_client *find_client(const dvs_arena *a, const struct dvs__rc *rc,
                                     const uint8_t id[DVS__CLIENT_ID_SIZE])
{
    uint64_t off = buckets(a, rc)[bucket_of(rc, id)];
    while (off != 0) {
        struct rc_client *c = at(a, off);
        if (memcmp(c->id, id, DVS__CLIENT_ID_SIZE) == 0)
            return c;
        off = c->hash_next;
    }
    return NULL;
}

static void lru_unlink(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c)
{
    if (c->lru_prev != 0)
        ((struct rc_client *)at(a, c->lru_prev))->lru_next = c->lru_next;
    else
        rc->lru_head = c->lru_next;
    if (c->lru_next != 0)
        ((struct rc_client *)at(a, c->lru_next))->lru_prev = c->lru_prev;
    else
        rc->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = 0;
}

static void lru_push_head(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c)
{
    uint64_t off = dvs__arena_off(a, c);
    c->lru_prev = 0;
    c->lru_next = rc->lru_head;
    if (rc->lru_head != 0)
        ((struct rc_client *)at(a, rc->lru_head))->lru_prev = off;
    else
        rc->lru_tail = off;
    rc->lru_head = off;
}

static void touch(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c)
{
    if (rc->lru_head != dvs__arena_off(a, c)) {
        lru_unlink(a, rc, c);
        lru_push_head(a, rc, c);
    }
}

/* Drop entry i of c; the last entry takes its place (order is irrelevant). */
static void drop_entry(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c, uint32_t i)
{
    struct rc_entry *e = &c->entries[i];
    if (e->data_off != 0) {
        dvs_arena_free(a, at(a, e->data_off));
        rc->bytes -= e->len;
    }
    rc->entries--;
    c->entries[i] = c->entries[c->n_entries - 1];
    c->n_entries--;
}

/* Whether seq has been executed for c (or acknowledged, which implies it). */
static bool executed(const struct rc_client *c, uint64_t seq)
{
    if (seq <= c->floor)
        return true;
    uint64_t i = seq - c->floor - 1;
    if (i >= RC_WINDOW)
        return false;
    return (c->executed[i / 64] >> (i % 64)) & 1;
}

/* Move the window so that it starts after new_floor. */
static void raise_floor(struct rc_client *c, uint64_t new_floor)
{
    if (new_floor <= c->floor)
        return;
    uint64_t shift = new_floor - c->floor;
    enum { WORDS = RC_WINDOW / 64 };
    if (shift >= RC_WINDOW) {
        memset(c->executed, 0, sizeof c->executed);
    } else {
        unsigned words = (unsigned)(shift / 64), bits = (unsigned)(shift % 64);
        for (unsigned i = 0; i < WORDS; i++) {
            uint64_t lo = i + words < WORDS ? c->executed[i + words] : 0;
            uint64_t hi = i + words + 1 < WORDS ? c->executed[i + words + 1] : 0;
            c->executed[i] = bits == 0 ? lo : (lo >> bits) | (hi << (64 - bits));
        }
    }
    c->floor = new_floor;
}

/* The window must already cover seq (see dvs__rc_store). */
static void mark_executed(struct rc_client *c, uint64_t seq)
{
    uint64_t i = seq - c->floor - 1;
    c->executed[i / 64] |= 1ull << (i % 64);
}

/* Forget every reply of c up to seq: the client has them. */
static void drop_upto(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c, uint64_t seq)
{
    for (uint32_t i = 0; i < c->n_entries;) {
        if (c->entries[i].seq <= seq)
            drop_entry(a, rc, c, i);
        else
            i++;
    }
    raise_floor(c, seq);
}

/* Drop all of c's saved replies before they were acknowledged (they stay
 * marked executed: a resend will get DVS_EUNKNOWNOUTCOME, not a rerun). */
static void drop_all(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c)
{
    rc->dropped_replies += c->n_entries;
    while (c->n_entries > 0)
        drop_entry(a, rc, c, 0);
}

static void evict_client(dvs_arena *a, struct dvs__rc *rc, struct rc_client *c)
{
    uint64_t off = dvs__arena_off(a, c);

    while (c->n_entries > 0)
        drop_entry(a, rc, c, 0);
    uint64_t *link = &buckets(a, rc)[bucket_of(rc, c->id)];
    while (*link != off)
        link = &((struct rc_client *)at(a, *link))->hash_next;
    *link = c->hash_next;
    lru_unlink(a, rc, c);
    dvs_arena_free(a, c);
    rc->n_clients--;
    rc->evicted_clients++;
}

static int new_client(dvs_arena *a, struct dvs__rc *rc,
                      const uint8_t id[DVS__CLIENT_ID_SIZE], struct rc_client **ret)
{
    if (rc->n_clients >= rc->max_clients)
        evict_client(a, rc, at(a, rc->lru_tail));

    struct rc_client *c;
    while ((c = dvs_arena_alloc(a, client_size(rc))) == NULL) {
        /* The arena is full: older clients give way to the active one. */
        if (rc->lru_tail == 0)
            return -ENOMEM;
        evict_client(a, rc, at(a, rc->lru_tail));
    }
    memset(c, 0, sizeof(*c));
    memcpy(c->id, id, DVS__CLIENT_ID_SIZE);
    uint64_t *bucket = &buckets(a, rc)[bucket_of(rc, id)];
    c->hash_next = *bucket;
    *bucket = dvs__arena_off(a, c);
    lru_push_head(a, rc, c);
    rc->n_clients++;
    *ret = c;
    return 0;
}

/*
 * Make room for len more reply bytes by dropping the replies of the least
 * recently used clients other than self, one client at a time, until the
 * byte budget allows it and an allocation succeeds. Returns the allocation
 * or NULL.
 */
static void *alloc_reply(dvs_arena *a, struct dvs__rc *rc, struct rc_client *self,
                         uint32_t len)
{
    if (len > rc->max_bytes)
        return NULL;
    uint64_t off = rc->lru_tail;
    for (;;) {
        if (rc->bytes + len <= rc->max_bytes) {
            void *p = dvs_arena_alloc(a, len);
            if (p != NULL)
                return p;
        }
        /* Next victim, from the cold end, with something to drop. */
        while (off != 0) {
            struct rc_client *c = at(a, off);
            if (c != self && c->n_entries > 0)
                break;
            off = c->lru_prev;
        }
        if (off == 0)
            return NULL;
        struct rc_client *victim = at(a, off);
        off = victim->lru_prev;
        drop_all(a, rc, victim);
    }
}

/* ---------------------------------------------------------------------------
 * Interface
 */

int dvs__rc_open(dvs_arena *a, const struct dvs__rc_limits *lim, struct dvs__rc **ret_rc)
{
    struct dvs__rc *rc = dvs__arena_lib_root(a);
    if (rc != NULL) {
        int rv = dvs__rc_check(a, rc);
        if (rv != 0)
            return rv;
        *ret_rc = rc;
        return 0;
    }

    if (lim->max_clients < 1 || lim->max_clients > RC_MAX_CLIENTS ||
        lim->max_entries < 1 || lim->max_entries > RC_MAX_ENTRIES)
        return -EINVAL;
    uint32_t n_buckets = 1;
    while (n_buckets < lim->max_clients)
        n_buckets <<= 1;

    rc = dvs_arena_calloc(a, 1, sizeof(*rc));
    if (rc == NULL)
        return -ENOMEM;
    uint64_t *table = dvs_arena_calloc(a, n_buckets, sizeof(uint64_t));
    if (table == NULL) {
        dvs_arena_free(a, rc);
        return -ENOMEM;
    }
    rc->magic = RC_MAGIC;
    rc->version = RC_VERSION;
    rc->max_clients = lim->max_clients;
    rc->max_entries = lim->max_entries;
    rc->n_buckets = n_buckets;
    rc->max_bytes = lim->max_bytes;
    rc->buckets_off = dvs__arena_off(a, table);
    if (getrandom(&rc->salt, sizeof rc->salt, GRND_NONBLOCK) != sizeof rc->salt)
        rc->salt = (uint64_t)(uintptr_t)rc ^ 0x5bd1e995ull; /* weak but harmless */
    dvs__arena_set_lib_root(a, rc);
    *ret_rc = rc;
    return 0;
}

int dvs__rc_lookup(dvs_arena *a, struct dvs__rc *rc,
                   const uint8_t id[DVS__CLIENT_ID_SIZE], uint64_t seq,
                   uint64_t ack, struct dvs__rc_reply *ret_reply)
{
    struct rc_client *c = find_client(a, rc, id);
    if (c == NULL) {
        int rv = new_client(a, rc, id, &c);
        if (rv != 0)
            return rv;
    }
    touch(a, rc, c);
    if (ack > c->floor)
        drop_upto(a, rc, c, ack);

    for (uint32_t i = 0; i < c->n_entries; i++) {
        const struct rc_entry *e = &c->entries[i];
        if (e->seq != seq)
            continue;
        ret_reply->status = e->status;
        ret_reply->data = at(a, e->data_off);
        ret_reply->len = e->len;
        rc->replays++;
        return DVS__RC_REPLAY;
    }
    return executed(c, seq) ? DVS__RC_FORGOTTEN : DVS__RC_NEW;
}

int dvs__rc_store(dvs_arena *a, struct dvs__rc *rc,
                  const uint8_t id[DVS__CLIENT_ID_SIZE], uint64_t seq,
                  uint8_t status, const void *data, uint32_t len)
{
    struct rc_client *c = find_client(a, rc, id);
    if (c == NULL) {
        /* Only if the handler itself exhausted the arena and a lookup for
         * another client evicted this one in between; not in the server. */
        int rv = new_client(a, rc, id, &c);
        if (rv != 0)
            return rv;
    }
    touch(a, rc, c);

    if (seq <= c->floor)
        return 1; /* acknowledged meanwhile: nothing to keep it for */
    /* Over RC_WINDOW requests unacknowledged: only a broken client does
     * that; its oldest are then treated as acknowledged. */
    if (seq > c->floor + RC_WINDOW)
        drop_upto(a, rc, c, seq - RC_WINDOW);
    mark_executed(c, seq);

    if (c->n_entries == rc->max_entries) {
        uint32_t oldest = 0;
        for (uint32_t i = 1; i < c->n_entries; i++)
            if (c->entries[i].seq < c->entries[oldest].seq)
                oldest = i;
        drop_entry(a, rc, c, oldest);
        rc->dropped_replies++;
    }

    struct rc_entry e = {.seq = seq, .status = status, .len = len};
    if (len > 0) {
        void *p = alloc_reply(a, rc, c, len);
        if (p == NULL)
            return 1; /* executed, remembered as such, reply not kept */
        memcpy(p, data, len);
        e.data_off = dvs__arena_off(a, p);
        rc->bytes += len;
    }
    c->entries[c->n_entries++] = e;
    rc->entries++;
    return 0;
}

void dvs__rc_stats(const struct dvs__rc *rc, struct dvs__rc_stats *ret)
{
    *ret = (struct dvs__rc_stats){
        .clients = rc->n_clients,
        .entries = rc->entries,
        .bytes = rc->bytes,
        .replays = rc->replays,
        .evicted_clients = rc->evicted_clients,
        .dropped_replies = rc->dropped_replies,
    };
}

/* ---------------------------------------------------------------------------
 * Validation of a restored cache: every offset is checked before use.
 */

static const struct rc_client *checked_client(const dvs_arena *a, const struct dvs__rc *rc,
                                              uint64_t off)
{
    const void *p = dvs__arena_ptr(a, off, client_size(rc));
    if (p == NULL || !dvs__arena_is_block(a, p) || dvs__arena_usable_size(a, p) < client_size(rc))
        return NULL;
    return p;
}

static int check_client(const dvs_arena *a, const struct dvs__rc *rc,
                        const struct rc_client *c, uint64_t *bytes, uint64_t *entries)
{
    if (c->n_entries > rc->max_entries)
        return DVS_EPROTO;
    for (uint32_t i = 0; i < c->n_entries; i++) {
        const struct rc_entry *e = &c->entries[i];
        if (!executed(c, e->seq) || e->seq <= c->floor || e->status > DVS__STATUS_ERROR)
            return DVS_EPROTO;
        if (e->data_off == 0) {
            if (e->len != 0)
                return DVS_EPROTO;
        } else {
            const void *d = dvs__arena_ptr(a, e->data_off, e->len);
            if (e->len == 0 || d == NULL || !dvs__arena_is_block(a, d) ||
                dvs__arena_usable_size(a, d) < e->len)
                return DVS_EPROTO;
        }
        for (uint32_t j = 0; j < i; j++)
            if (c->entries[j].seq == e->seq)
                return DVS_EPROTO;
        *bytes += e->len;
    }
    *entries += c->n_entries;
    return 0;
}

int dvs__rc_check(const dvs_arena *a, const struct dvs__rc *rc)
{
    if (!dvs__arena_is_block(a, rc) || dvs__arena_usable_size(a, rc) < sizeof(*rc))
        return DVS_EPROTO;
    if (rc->magic != RC_MAGIC || rc->version != RC_VERSION || rc->max_clients < 1 ||
        rc->max_clients > RC_MAX_CLIENTS || rc->max_entries < 1 ||
        rc->max_entries > RC_MAX_ENTRIES || rc->n_clients > rc->max_clients ||
        rc->n_buckets < rc->max_clients || rc->n_buckets > 2 * RC_MAX_CLIENTS ||
        (rc->n_buckets & (rc->n_buckets - 1)) != 0)
        return DVS_EPROTO;
    const uint64_t *table = dvs__arena_ptr(a, rc->buckets_off, (size_t)rc->n_buckets * 8);
    if (table == NULL || !dvs__arena_is_block(a, table))
        return DVS_EPROTO;

    /* Every client is on exactly one chain, in the right bucket. */
    uint64_t seen = 0, bytes = 0, entries = 0;
    for (uint32_t b = 0; b < rc->n_buckets; b++) {
        for (uint64_t off = table[b]; off != 0;) {
            const struct rc_client *c = checked_client(a, rc, off);
            if (c == NULL || ++seen > rc->n_clients || bucket_of(rc, c->id) != b)
                return DVS_EPROTO;
            if (check_client(a, rc, c, &bytes, &entries) != 0)
                return DVS_EPROTO;
            off = c->hash_next;
        }
    }
    if (seen != rc->n_clients || bytes != rc->bytes || entries != rc->entries)
        return DVS_EPROTO;

    /* The LRU list holds the same clients (each found through its chain). */
    uint64_t prev = 0, count = 0;
    for (uint64_t off = rc->lru_head; off != 0;) {
        const struct rc_client *c = checked_client(a, rc, off);
        if (c == NULL || ++count > rc->n_clients || c->lru_prev != prev ||
            find_client(a, rc, c->id) != c)
            return DVS_EPROTO;
        prev = off;
        off = c->lru_next;
    }
    if (count != rc->n_clients || rc->lru_tail != prev)
        return DVS_EPROTO;
    return 0;
}
