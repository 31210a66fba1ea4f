/*
 * The dirty-page bitmap of the mprotect tracking fallback (DESIGN.md §4),
 * as the agent sees it: plain constants and one struct, nothing else, so
 * that dvs-node can include this header without any of libdvs's internals.
 * docs/control-protocol.md §5 describes the commands that use it.
 *
 * "track-start" answers with a sealed memfd (it can neither shrink nor
 * grow) laid out as:
 *
 *   [0, 64)                       struct dvs_track_hdr
 *   [64, 64 + W*8)                bitmap 0: W = ceil(pages / 64) u64 words
 *   [64 + W*8, 64 + 2*W*8)        bitmap 1
 *
 * Bit i of a bitmap (word i / 64, bit i % 64, little-endian words) stands
 * for arena page i, that is [arena_addr + i*page_size, +page_size). Bits
 * at or beyond `pages` are always zero.
 *
 * The service writes into the bitmap whose index is in `active`. The reply
 * to "track-collect" names the other one (`bitmap=K`): it holds every page
 * written since the previous collect (or since track-start) and stays
 * unchanged until the next collect, so the agent maps the memfd read-only
 * (or preads it) and must finish reading bitmap K before it sends the next
 * "track-collect". When the reply says overflow=1 the service has set every
 * bit of bitmap K: the agent needs no special case.
 */
#ifndef DVS_TRACK_LAYOUT_H
#define DVS_TRACK_LAYOUT_H

#include <stdint.h>

#define DVS_TRACK_MAGIC 0x42535644u /* "DVSB" as bytes in memory */
#define DVS_TRACK_VERSION 1
#define DVS_TRACK_HDR_SIZE 64

struct dvs_track_hdr {
    uint32_t magic;      /* DVS_TRACK_MAGIC */
    uint16_t version;    /* DVS_TRACK_VERSION */
    uint16_t hdr_size;   /* DVS_TRACK_HDR_SIZE: bitmap 0 starts here */
    uint32_t page_size;  /* bytes per bit */
    uint32_t flags;      /* 0; reserved */
    uint64_t pages;      /* pages in the arena = bits per bitmap */
    uint32_t active;     /* 0 or 1: the bitmap the service is writing into */
    uint32_t overflow;   /* live: 1 if the current round overflowed */
    uint64_t faults;     /* live: first-write faults since the last collect */
    uint8_t reserved[24];
};

_Static_assert(sizeof(struct dvs_track_hdr) == DVS_TRACK_HDR_SIZE,
               "the bitmap header is 64 bytes");

/* u64 words per bitmap, and the byte offset of bitmap k (0 or 1). */
#define DVS_TRACK_WORDS(pages) (((uint64_t)(pages) + 63) / 64)
#define DVS_TRACK_BITMAP_OFF(pages, k) \
    ((uint64_t)DVS_TRACK_HDR_SIZE + (uint64_t)(k) * DVS_TRACK_WORDS(pages) * 8)

#endif /* DVS_TRACK_LAYOUT_H */
