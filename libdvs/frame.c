/*
 * Frame codec: see frame.h for the layout. The decoder is written for a
 * hostile peer: it validates each field as soon as its bytes have arrived and
 * computes sizes only from fields it has already checked, so a garbage stream
 * is rejected after a few bytes and no length is trusted before its bound.
 */
#include <errno.h>
#include <string.h>

#include "frame.h"

/* ---------------------------------------------------------------------------
 * Big-endian integers
 */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
    return ((uint64_t)get_u32(p) << 32) | get_u32(p + 4);
}

/* ---------------------------------------------------------------------------
 * Validation shared by encoder and decoder
 */

static bool name_char_valid(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return !first && (c == '_' || c == '.' || c == '-');
}

bool dvs__name_valid(const char *s, size_t len)
{
    if (len == 0 || len > DVS__FRAME_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char_valid(s[i], i == 0))
            return false;
    return true;
}

static bool type_valid(uint8_t type)
{
    return type == DVS__FRAME_REQUEST || type == DVS__FRAME_REPLY;
}

/* Status and flags depend on the type: requests carry neither. */
static bool status_valid(uint8_t type, uint8_t status)
{
    if (type == DVS__FRAME_REQUEST)
        return status == DVS__STATUS_OK;
    return status <= DVS__STATUS_MOVED;
}

static bool flags_valid(uint8_t type, uint8_t flags)
{
    if (type == DVS__FRAME_REQUEST)
        return flags == 0;
    return (flags & ~DVS__FRAME_F_REPLAYED) == 0;
}

static bool name_len_valid(uint8_t type, size_t len)
{
    if (len > DVS__FRAME_MAX_NAME)
        return false;
    return type == DVS__FRAME_REPLY || len > 0;
}

/*
 * Sequence numbers start at 1, and a request can only acknowledge replies to
 * earlier requests; anything else is a broken client.
 */
static bool seq_valid(uint8_t type, uint64_t seq, uint64_t ack)
{
    if (seq == 0)
        return false;
    if (type == DVS__FRAME_REQUEST)
        return ack < seq;
    return ack == 0;
}

int dvs__frame_check(const struct dvs__frame *f, uint32_t max_payload)
{
    if (!type_valid(f->type) || !status_valid(f->type, f->status) ||
        !flags_valid(f->type, f->flags) || !name_len_valid(f->type, f->name_len) ||
        !seq_valid(f->type, f->seq, f->ack))
        return -EINVAL;
    if (f->name_len > 0 && (f->name == NULL || !dvs__name_valid(f->name, f->name_len)))
        return -EINVAL;
    if (f->payload_len > 0 && f->payload == NULL)
        return -EINVAL;
    if (max_payload > DVS_MAX_PAYLOAD)
        max_payload = DVS_MAX_PAYLOAD;
    if (f->payload_len > max_payload)
        return DVS_ETOOBIG;
    return 0;
}

size_t dvs__frame_size(const struct dvs__frame *f)
{
    return DVS__FRAME_HEADER_SIZE + (size_t)f->name_len + (size_t)f->payload_len;
}

/* ---------------------------------------------------------------------------
 * Encoding
 */

int dvs__frame_encode_header(const struct dvs__frame *f,
                             uint8_t hdr[DVS__FRAME_HEADER_SIZE])
{
    int rv = dvs__frame_check(f, DVS_MAX_PAYLOAD);
    if (rv != 0)
        return rv;
    put_u32(hdr + 0, DVS__FRAME_MAGIC);
    hdr[4] = DVS__FRAME_VERSION;
    hdr[5] = f->type;
    hdr[6] = f->status;
    hdr[7] = f->flags;
    put_u16(hdr + 8, f->name_len);
    put_u16(hdr + 10, 0);
    put_u32(hdr + 12, f->payload_len);
    put_u64(hdr + 16, f->generation);
    memcpy(hdr + 24, f->client_id, DVS__CLIENT_ID_SIZE);
    put_u64(hdr + 40, f->seq);
    put_u64(hdr + 48, f->ack);
    return 0;
}

int dvs__frame_encode(const struct dvs__frame *f, void *buf, size_t cap,
                      size_t *ret_len)
{
    uint8_t hdr[DVS__FRAME_HEADER_SIZE];
    int rv = dvs__frame_encode_header(f, hdr);
    if (rv != 0)
        return rv;
    size_t size = dvs__frame_size(f);
    if (cap < size)
        return -ENOBUFS;
    uint8_t *p = buf;
    memcpy(p, hdr, sizeof hdr);
    if (f->name_len > 0)
        memcpy(p + DVS__FRAME_HEADER_SIZE, f->name, f->name_len);
    if (f->payload_len > 0)
        memcpy(p + DVS__FRAME_HEADER_SIZE + f->name_len, f->payload, f->payload_len);
    *ret_len = size;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Decoding
 */

/*
 * Check the header prefix that has arrived (n < 56 bytes possible). Each
 * field is looked at only once all of its bytes are present, and fields that
 * depend on the type are checked after the type byte has been checked.
 */
static int check_prefix(const uint8_t *p, size_t n, uint32_t max_payload)
{
    static const uint8_t magic[4] = {
        (uint8_t)(DVS__FRAME_MAGIC >> 24), (uint8_t)(DVS__FRAME_MAGIC >> 16),
        (uint8_t)(DVS__FRAME_MAGIC >> 8), (uint8_t)DVS__FRAME_MAGIC};

    if (n == 0) /* p may be NULL: a reader's buffer before its first read */
        return 0;
    /* Even a partial magic is compared, so one wrong byte is enough. */
    if (memcmp(p, magic, n < 4 ? n : 4) != 0)
        return DVS_EPROTO;
    if (n > 4 && p[4] != DVS__FRAME_VERSION)
        return DVS_EPROTO;
    if (n > 5 && !type_valid(p[5]))
        return DVS_EPROTO;
    if (n > 6 && !status_valid(p[5], p[6]))
        return DVS_EPROTO;
    if (n > 7 && !flags_valid(p[5], p[7]))
        return DVS_EPROTO;
    if (n >= 10 && !name_len_valid(p[5], get_u16(p + 8)))
        return DVS_EPROTO;
    /* A partial reserved field is checked byte by byte. */
    if (n > 10 && p[10] != 0)
        return DVS_EPROTO;
    if (n > 11 && p[11] != 0)
        return DVS_EPROTO;
    if (n >= 16 && get_u32(p + 12) > max_payload)
        return DVS_ETOOBIG;
    if (n >= 56 && !seq_valid(p[5], get_u64(p + 40), get_u64(p + 48)))
        return DVS_EPROTO;
    return 0;
}

int dvs__frame_decode(const void *buf, size_t len, uint32_t max_payload,
                      struct dvs__frame *ret_frame, size_t *ret_size)
{
    const uint8_t *p = buf;
    size_t n = len < DVS__FRAME_HEADER_SIZE ? len : DVS__FRAME_HEADER_SIZE;

    if (max_payload > DVS_MAX_PAYLOAD)
        max_payload = DVS_MAX_PAYLOAD;
    int rv = check_prefix(p, n, max_payload);
    if (rv != 0)
        return rv;
    if (len < DVS__FRAME_HEADER_SIZE) {
        *ret_size = DVS__FRAME_HEADER_SIZE;
        return -EAGAIN;
    }

    /* The header is complete and checked: its lengths are now bounded. */
    uint16_t name_len = get_u16(p + 8);
    uint32_t payload_len = get_u32(p + 12);
    size_t size = DVS__FRAME_HEADER_SIZE + (size_t)name_len + payload_len;

    /* Check the name as far as it has arrived. */
    const char *name = (const char *)p + DVS__FRAME_HEADER_SIZE;
    size_t have = len - DVS__FRAME_HEADER_SIZE;
    size_t check = have < name_len ? have : name_len;
    for (size_t i = 0; i < check; i++)
        if (!name_char_valid(name[i], i == 0))
            return DVS_EPROTO;

    if (len < size) {
        *ret_size = size;
        return -EAGAIN;
    }

    struct dvs__frame f = {
        .type = p[5],
        .status = p[6],
        .flags = p[7],
        .name_len = (uint8_t)name_len,
        .payload_len = payload_len,
        .generation = get_u64(p + 16),
        .seq = get_u64(p + 40),
        .ack = get_u64(p + 48),
        .name = name_len > 0 ? name : NULL,
        .payload = payload_len > 0 ? p + DVS__FRAME_HEADER_SIZE + name_len : NULL,
    };
    memcpy(f.client_id, p + 24, DVS__CLIENT_ID_SIZE);
    *ret_frame = f;
    *ret_size = size;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Status payloads
 */

size_t dvs__error_payload_encode(int code, const char *text, void *buf,
                                 size_t cap)
{
    uint8_t *p = buf;
    size_t tlen = text != NULL ? strlen(text) : 0;

    if (cap < 4)
        return 0;
    if (tlen > DVS__FRAME_MAX_TEXT)
        tlen = DVS__FRAME_MAX_TEXT;
    if (tlen > cap - 4)
        tlen = cap - 4;
    put_u32(p, (uint32_t)code);
    if (tlen > 0)
        memcpy(p + 4, text, tlen);
    return 4 + tlen;
}

int dvs__error_payload_decode(const void *payload, size_t len, int *ret_code)
{
    if (len < 4 || len > 4 + DVS__FRAME_MAX_TEXT)
        return DVS_EPROTO;
    int32_t code = (int32_t)get_u32(payload);
    if (code >= 0)
        return DVS_EPROTO;
    *ret_code = code;
    return 0;
}

int dvs__moved_payload_decode(const void *payload, size_t len, char *ret_addr,
                              size_t cap)
{
    const char *s = payload;

    if (len == 0 || len > DVS__FRAME_MAX_TEXT || len >= cap)
        return DVS_EPROTO;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return DVS_EPROTO;
    memcpy(ret_addr, s, len);
    ret_addr[len] = '\0';
    return 0;
}
