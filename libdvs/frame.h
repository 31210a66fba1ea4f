/*
 * The DVS wire protocol: versioned, length-prefixed frames (internal).
 *
 * Every request a client sends to a service, and every reply, is one frame:
 *
 *   offset size  field
 *    0      4    magic        0x44565346 ("DVSF")
 *    4      1    version      DVS__FRAME_VERSION (1)
 *    5      1    type         1 request, 2 reply
 *    6      1    status       requests: 0; replies: 0 ok, 1 error,
 *                             2 migrating, 3 moved
 *    7      1    flags        bit 0 (replies only): replayed from the reply
 *                             cache; every other bit must be zero
 *    8      2    name_len     endpoint name length: requests 1..63,
 *                             replies 0..63
 *   10      2    reserved     must be zero
 *   12      4    payload_len  0..DVS_MAX_PAYLOAD (the receiver may set a
 *                             lower bound)
 *   16      8    generation   requests: the generation the client believes
 *                             serves the endpoint; replies: the generation of
 *                             the answering instance (moved: the NEW one)
 *   24     16    client id    random 128-bit identity of the client handle
 *   40      8    seq          request sequence number, >= 1, echoed in the reply
 *   48      8    ack          requests: every reply with seq <= ack has been
 *                             received (so the service may forget it); < seq.
 *                             Replies: zero.
 *   56    name_len      endpoint name, [a-z0-9_.-], first a letter or digit
 *   ...   payload_len   payload
 *
 * All integers are big-endian. The header is fixed so that a reader knows
 * after 56 bytes exactly how much more to read, and every length is checked
 * against its bound before anything is allocated for it (DESIGN.md §8).
 *
 * Payloads by status:
 *   ok         the handler's reply bytes
 *   error      i32 error code (a DVS_E* or negated errno), then up to
 *              DVS__FRAME_MAX_TEXT bytes of human-readable text
 *   migrating  empty: the instance is frozen for a migration; retry shortly
 *   moved      "host:port" of the instance that now serves the endpoint
 *              (1..DVS__FRAME_MAX_TEXT printable bytes); the header's
 *              generation is the new one
 *
 * This module only encodes and decodes; it does no I/O.
 */
#ifndef DVS_FRAME_H
#define DVS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dvs.h"

#define DVS__FRAME_MAGIC 0x44565346u
#define DVS__FRAME_VERSION 1
#define DVS__FRAME_HEADER_SIZE 56
#define DVS__FRAME_MAX_NAME 63
#define DVS__FRAME_MAX_TEXT 255
#define DVS__CLIENT_ID_SIZE 16

/* The largest frame that can ever be valid. */
#define DVS__FRAME_MAX_SIZE \
    (DVS__FRAME_HEADER_SIZE + DVS__FRAME_MAX_NAME + (size_t)DVS_MAX_PAYLOAD)

enum dvs__frame_type {
    DVS__FRAME_REQUEST = 1,
    DVS__FRAME_REPLY = 2,
};

enum dvs__frame_status {
    DVS__STATUS_OK = 0,
    DVS__STATUS_ERROR = 1,
    DVS__STATUS_MIGRATING = 2,
    DVS__STATUS_MOVED = 3,
};

/* The reply was not produced now but replayed from the reply cache. */
#define DVS__FRAME_F_REPLAYED 0x01u

/*
 * A frame in memory. name and payload are borrowed: after a decode they point
 * into the decoded buffer, before an encode they belong to the caller.
 */
struct dvs__frame {
    uint8_t type;
    uint8_t status;
    uint8_t flags;
    uint8_t name_len;
    uint32_t payload_len;
    uint64_t generation;
    uint8_t client_id[DVS__CLIENT_ID_SIZE];
    uint64_t seq;
    uint64_t ack;
    const char *name;
    const void *payload;
};

/* The encoded size of f: header + name + payload. */
size_t dvs__frame_size(const struct dvs__frame *f);

/*
 * Check f against every rule of the format above, as both encoder and decoder
 * do. Returns 0, -EINVAL (a field is out of its range) or DVS_ETOOBIG
 * (payload_len > max_payload).
 */
int dvs__frame_check(const struct dvs__frame *f, uint32_t max_payload);

/*
 * Encode the 56-byte header of f into hdr (for writev with the caller's name
 * and payload buffers). Returns 0, -EINVAL or DVS_ETOOBIG (dvs__frame_check);
 * hdr is untouched on failure.
 */
int dvs__frame_encode_header(const struct dvs__frame *f,
                             uint8_t hdr[DVS__FRAME_HEADER_SIZE]);

/*
 * Encode all of f into buf (cap bytes). On success *ret_len is the number of
 * bytes written. Returns 0, -EINVAL, DVS_ETOOBIG, or -ENOBUFS if cap is
 * smaller than dvs__frame_size(f); buf and *ret_len are untouched on failure.
 */
int dvs__frame_encode(const struct dvs__frame *f, void *buf, size_t cap,
                      size_t *ret_len);

/*
 * Incremental decoder for stream reads. buf holds the len bytes received so
 * far from the start of a frame. Returns:
 *
 *   0           a whole frame is in buf; *ret_frame describes it (name and
 *               payload point into buf) and *ret_size is its encoded size,
 *               so the next frame starts at buf + *ret_size.
 *   -EAGAIN     every byte so far is valid but the frame is incomplete;
 *               *ret_size is the total size needed (the header size until
 *               the header is complete, then the whole frame's size).
 *   DVS_EPROTO  garbage: bad magic, version, type, status, flags, reserved
 *               bits, name, seq/ack. Detected as soon as the offending byte
 *               has arrived, so a reader never waits on a garbage stream.
 *   DVS_ETOOBIG payload_len exceeds max_payload (which must not exceed
 *               DVS_MAX_PAYLOAD).
 *
 * Never reads buf beyond len. *ret_frame is written only when 0 is returned;
 * *ret_size only on 0 and -EAGAIN. After DVS_EPROTO/DVS_ETOOBIG the stream
 * cannot be resynchronised and the connection must be closed.
 */
int dvs__frame_decode(const void *buf, size_t len, uint32_t max_payload,
                      struct dvs__frame *ret_frame, size_t *ret_size);

/* Whether s[0..len) is a valid endpoint name (1..63 of [a-z0-9_.-]). */
bool dvs__name_valid(const char *s, size_t len);

/*
 * Payload helpers for the error and moved statuses. The encoders write into
 * buf (cap >= 4 + DVS__FRAME_MAX_TEXT is always enough) and return the
 * length; text longer than the bound is truncated.
 */
size_t dvs__error_payload_encode(int code, const char *text, void *buf,
                                 size_t cap);

/*
 * Parse an error payload. Returns 0 and the code (always negative: a
 * non-negative code on the wire is reported as DVS_EPROTO), or DVS_EPROTO if
 * the payload is shorter than 4 bytes or its text is too long.
 */
int dvs__error_payload_decode(const void *payload, size_t len, int *ret_code);

/*
 * Parse a moved payload into ret_addr (NUL-terminated, cap bytes, at least
 * DVS__FRAME_MAX_TEXT + 1). Returns 0, or DVS_EPROTO if it is empty, too long
 * or not printable ASCII.
 */
int dvs__moved_payload_decode(const void *payload, size_t len, char *ret_addr,
                              size_t cap);

#endif /* DVS_FRAME_H */
