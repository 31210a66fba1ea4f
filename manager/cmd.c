/*
 * The codec of the manager's Raft log commands (layout in cmd.h).
 *
 * Every member decodes every entry it applies, including entries written by
 * other members and, after an upgrade, by other versions of this code. The
 * decoder therefore trusts nothing: each length is checked against the buffer
 * before it is used, every byte of the entry is accounted for (header, body,
 * zero padding), and a failure says which part was wrong (DESIGN.md §8).
 *
 * Encoding is deterministic (compact JSON with sorted keys) so that the same
 * command always produces the same bytes; tests rely on it and it makes log
 * dumps comparable between members.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <raft.h>

#include "dvs.h"
#include "manager/cmd.h"

/* Byte offsets of the header fields (RAFT.md item 1: all little endian). */
#define OFF_MAGIC 0
#define OFF_VERSION 4
#define OFF_TYPE 6
#define OFF_REQUEST_ID 8
#define OFF_TIME 16
#define OFF_BODY_LEN 24
#define OFF_RESERVED 28

#define JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

static const char *const type_names[MGR_CMD_TYPE_MAX + 1] = {
    [MGR_CMD_MEMBER_SET] = "member_set",
    [MGR_CMD_MEMBER_DEL] = "member_del",
    [MGR_CMD_NODE_REGISTER] = "node_register",
    [MGR_CMD_NODE_STATE] = "node_state",
    [MGR_CMD_LOAD_SUMMARY] = "load_summary",
    [MGR_CMD_ENDPOINT_CREATE] = "endpoint_create",
    [MGR_CMD_ENDPOINT_UPDATE] = "endpoint_update",
    [MGR_CMD_ENDPOINT_DELETE] = "endpoint_delete",
    [MGR_CMD_MIGRATION_CREATE] = "migration_create",
    [MGR_CMD_MIGRATION_UPDATE] = "migration_update",
    [MGR_CMD_SETTINGS] = "settings",
};

const char *mgr_cmd_type_name(unsigned type)
{
    if (type == 0 || type > MGR_CMD_TYPE_MAX)
        return "unknown";
    return type_names[type];
}

/* ---- little-endian access, independent of the host's byte order ---- */

static void put_le(unsigned char *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static size_t padded_len(size_t body_len)
{
    return (MGR_CMD_HEADER_SIZE + body_len + 7) & ~(size_t)7;
}

/* ---- encoding ---- */

int mgr_cmd_encode(const struct mgr_cmd *cmd, void **ret_buf, size_t *ret_len)
{
    if (!cmd || cmd->type == 0 || cmd->type > MGR_CMD_TYPE_MAX || cmd->request_id == 0 ||
        !json_is_object(cmd->body))
        return -EINVAL;

    /* json_dumpb with no buffer returns the size it needs; 0 means failure
     * (an object always needs at least "{}"). */
    size_t body_len = json_dumpb(cmd->body, NULL, 0, JSON_FLAGS);
    if (body_len == 0)
        return -ENOMEM;
    if (body_len > MGR_CMD_MAX_BODY)
        return DVS_ETOOBIG;

    size_t len = padded_len(body_len);
    unsigned char *buf = raft_malloc(len);
    if (!buf)
        return -ENOMEM;

    put_le(buf + OFF_MAGIC, MGR_CMD_MAGIC, 4);
    put_le(buf + OFF_VERSION, MGR_CMD_VERSION, 2);
    put_le(buf + OFF_TYPE, cmd->type, 2);
    put_le(buf + OFF_REQUEST_ID, cmd->request_id, 8);
    put_le(buf + OFF_TIME, (uint64_t)cmd->time_ms, 8);
    put_le(buf + OFF_BODY_LEN, body_len, 4);
    put_le(buf + OFF_RESERVED, 0, 4);

    /* The second dump must produce exactly the bytes measured above: the body
     * is not ours to change and dumping is deterministic. */
    size_t written = json_dumpb(cmd->body, (char *)buf + MGR_CMD_HEADER_SIZE, body_len,
                                JSON_FLAGS);
    if (written != body_len) {
        raft_free(buf);
        return -ENOMEM;
    }
    /* Zero padding: raft checksums the whole buffer (RAFT.md item 1), and
     * the decoder insists on zeros so every byte of an entry is defined. */
    memset(buf + MGR_CMD_HEADER_SIZE + body_len, 0, len - MGR_CMD_HEADER_SIZE - body_len);

    *ret_buf = buf;
    *ret_len = len;
    return 0;
}

/* ---- decoding ---- */

static int decode_error(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int decode_error(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown JSON value";
}

int mgr_cmd_decode(const void *data, size_t len, struct mgr_cmd *ret_cmd, char *err,
                   size_t errlen)
{
    const unsigned char *p = data;

    if (!p || len < MGR_CMD_HEADER_SIZE)
        return decode_error(err, errlen, DVS_EPROTO,
                            "command truncated: %zu bytes, the header alone is %d", len,
                            MGR_CMD_HEADER_SIZE);

    uint32_t magic = (uint32_t)get_le(p + OFF_MAGIC, 4);
    if (magic != MGR_CMD_MAGIC)
        return decode_error(err, errlen, DVS_EPROTO,
                            "bad command magic 0x%08x (expected 0x%08x, \"DVSC\")",
                            (unsigned)magic, (unsigned)MGR_CMD_MAGIC);

    unsigned version = (unsigned)get_le(p + OFF_VERSION, 2);
    if (version > MGR_CMD_VERSION)
        return decode_error(err, errlen, -EPROTONOSUPPORT,
                            "command version %u is newer than this manager understands "
                            "(up to %d): upgrade this member",
                            version, MGR_CMD_VERSION);
    if (version == 0)
        return decode_error(err, errlen, DVS_EPROTO, "bad command version 0 (expected 1..%d)",
                            MGR_CMD_VERSION);

    unsigned type = (unsigned)get_le(p + OFF_TYPE, 2);
    if (type == 0 || type > MGR_CMD_TYPE_MAX)
        return decode_error(err, errlen, DVS_EPROTO, "unknown command type %u (expected 1..%d)",
                            type, MGR_CMD_TYPE_MAX);

    uint32_t reserved = (uint32_t)get_le(p + OFF_RESERVED, 4);
    if (reserved != 0)
        return decode_error(err, errlen, DVS_EPROTO,
                            "reserved header field is 0x%08x, expected 0", (unsigned)reserved);

    uint64_t request_id = get_le(p + OFF_REQUEST_ID, 8);
    if (request_id == 0)
        return decode_error(err, errlen, DVS_EPROTO, "request id is 0 (ids are never 0)");

    size_t body_len = (size_t)get_le(p + OFF_BODY_LEN, 4);
    if (body_len > MGR_CMD_MAX_BODY)
        return decode_error(err, errlen, DVS_ETOOBIG,
                            "command body of %zu bytes is over the limit of %u", body_len,
                            MGR_CMD_MAX_BODY);

    size_t expect = padded_len(body_len);
    if (len != expect)
        return decode_error(err, errlen, DVS_EPROTO,
                            "command is %zu bytes but its header says %zu (%d header + %zu "
                            "body, padded to 8)",
                            len, expect, MGR_CMD_HEADER_SIZE, body_len);

    for (size_t i = MGR_CMD_HEADER_SIZE + body_len; i < len; i++)
        if (p[i] != 0)
            return decode_error(err, errlen, DVS_EPROTO,
                                "padding byte at offset %zu is 0x%02x, expected 0", i, p[i]);

    /* JSON_DECODE_ANY only so that a scalar body is reported as such below. */
    json_error_t jerr;
    json_t *body = json_loadb((const char *)p + MGR_CMD_HEADER_SIZE, body_len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!body)
        return decode_error(err, errlen, DVS_EPROTO, "command body is not valid JSON: %s "
                            "(at byte %d)", jerr.text, jerr.position);
    if (!json_is_object(body)) {
        int rv = decode_error(err, errlen, DVS_EPROTO,
                              "command body is %s, expected an object", json_type_name(body));
        json_decref(body);
        return rv;
    }

    int64_t time_ms;
    uint64_t raw_time = get_le(p + OFF_TIME, 8);
    memcpy(&time_ms, &raw_time, sizeof(time_ms));

    ret_cmd->type = (uint16_t)type;
    ret_cmd->request_id = request_id;
    ret_cmd->time_ms = time_ms;
    ret_cmd->body = body;
    return 0;
}

void mgr_cmd_clear(struct mgr_cmd *cmd)
{
    if (!cmd)
        return;
    json_decref(cmd->body);
    cmd->body = NULL;
}
