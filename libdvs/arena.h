/*
 * The migratable arena, internal side (the public side is in dvs.h).
 *
 * Layout of an arena of S bytes mapped at B (all offsets are from B, so the
 * metadata means the same thing wherever it is read; the data itself relies
 * on B being the same on every node, DESIGN.md §4):
 *
 *   [0, 4096)          struct dvs__arena_hdr, then zeros
 *   [4096, S - 16)     the heap: a sequence of blocks
 *   [S - 16, S)        the end sentinel: a block header of size 0, in use
 *
 * Every block starts with a 16-byte header, so payloads are 16-byte aligned:
 *
 *   u64 prev_size    size of the previous block, valid only when it is free
 *                    (it acts as that block's footer, the "boundary tag")
 *   u64 size_flags   this block's size (a multiple of 16, >= 32, header
 *                    included) | BLK_INUSE | BLK_PREV_INUSE
 *
 * A free block keeps its free-list links in its payload (u64 next, u64 prev
 * offsets; 0 ends a list). Free blocks are never adjacent: free() merges a
 * block with free neighbours at once. Free lists are segregated by size:
 * one list per exact size from 32 to 512 bytes, then one per power of two,
 * with a bitmap of the non-empty ones, so an allocation looks at one list
 * (first fit inside it) and then takes any block of the next non-empty one.
 *
 * The page-sized header keeps the heap page-aligned and the header page
 * separate from data pages, which makes dirty tracking of the header cheap.
 */
#ifndef DVS_ARENA_H
#define DVS_ARENA_H

#include <stdbool.h>
#include <stdint.h>

#include "dvs.h"

#define DVS__ARENA_MAGIC 0x414e455241535644ull /* "DVSARENA" little-endian */
#define DVS__ARENA_VERSION 1
#define DVS__ARENA_HDR_SPACE 4096
#define DVS__ARENA_MIN_SIZE (64u * 1024)
#define DVS__ARENA_NBINS 64

struct dvs__arena_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;  /* sizeof(struct dvs__arena_hdr) when formatted */
    uint64_t base;      /* the address the arena was formatted for */
    uint64_t size;      /* bytes mapped */
    uint64_t heap_off;  /* first block */
    uint64_t heap_end;  /* the end sentinel */
    uint64_t root_off;  /* the service's root object, 0 = none */
    uint64_t lib_off;   /* libdvs's own root (the reply cache), 0 = none */
    uint64_t used;      /* bytes in allocated blocks */
    uint64_t used_blocks;
    uint64_t free_blocks;
    uint64_t bin_map;   /* bit i set iff bins[i] != 0 */
    uint64_t bins[DVS__ARENA_NBINS];
};

struct dvs_arena {
    uint8_t *base;
    size_t size;
    int fd;
    bool own_fd;
    struct dvs__arena_hdr *hdr;
};

/*
 * Walk every block and every free list and check the invariants above
 * (sizes, tags, no adjacent free blocks, lists consistent with the blocks,
 * the bitmap, the counters). O(blocks). Returns 0 or DVS_EPROTO. Used when
 * restoring an arena, and by the tests after every operation.
 */
int dvs__arena_check(const dvs_arena *arena);

/* libdvs's own root object (the reply cache lives there). */
void *dvs__arena_lib_root(const dvs_arena *arena);
void dvs__arena_set_lib_root(dvs_arena *arena, void *p);

/* Offsets <-> pointers. dvs__arena_ptr returns NULL for 0 or for an
 * [off, off+n) range outside the mapping, so that an offset read back from
 * a restored arena is never followed blindly. */
void *dvs__arena_ptr(const dvs_arena *arena, uint64_t off, size_t n);
uint64_t dvs__arena_off(const dvs_arena *arena, const void *p);

/* Whether p is the payload of an allocated block (used to validate roots). */
bool dvs__arena_is_block(const dvs_arena *arena, const void *p);

/* The usable size of an allocated block (>= the size asked for). */
size_t dvs__arena_usable_size(const dvs_arena *arena, const void *p);

#endif /* DVS_ARENA_H */
