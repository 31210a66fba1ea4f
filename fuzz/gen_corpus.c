/*
 * Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) with
 * the code's own encoders, so the seeds are valid inputs of the current
 * formats: `fuzz/run.sh --seeds` runs it; the output is committed.
 *
 *   fuzz-gen-corpus DIR
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <raft.h>

#include "examples/kv/proto.h"
#include "libdvs/frame.h"
#include "manager/cmd.h"
#include "node/transfer.h"

static const char *top;

static void put(const char *target, const char *name, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", top, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", top, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void put_text(const char *target, const char *name, const char *text)
{
    put(target, name, text, strlen(text));
}

/* ---- frames ---- */

static size_t frame(uint8_t *buf, size_t cap, uint8_t type, uint8_t status, uint8_t flags,
                    const char *name, const void *payload, uint32_t plen, uint64_t seq)
{
    struct dvs__frame f = {.type = type, .status = status, .flags = flags,
                           .name_len = (uint8_t)strlen(name), .payload_len = plen,
                           .generation = 2, .seq = seq, .ack = seq - 1, .name = name,
                           .payload = payload};
    if (type == DVS__FRAME_REPLY)
        f.ack = 0;
    memcpy(f.client_id, "0123456789abcdef", 16);
    size_t len = 0;
    if (dvs__frame_encode(&f, buf, cap, &len) != 0) {
        fprintf(stderr, "frame encode failed\n");
        exit(1);
    }
    return len;
}

static void frames(void)
{
    uint8_t buf[4096], req[256], pl[300];
    size_t rlen = 0, n, m;
    struct kv_request put_req = {.op = KV_OP_PUT, .key = (const uint8_t *)"greeting",
                                 .key_len = 8, .a = (const uint8_t *)"hello", .a_len = 5};
    kv_request_encode(&put_req, req, sizeof(req), &rlen);

    n = frame(buf, sizeof(buf), DVS__FRAME_REQUEST, 0, 0, "kv", req, (uint32_t)rlen, 1);
    put("frame", "request-put", buf, n);
    n = frame(buf, sizeof(buf), DVS__FRAME_REPLY, DVS__STATUS_OK, 0, "kv", "\1\0\0\0\0\0\0\0", 8, 1);
    put("frame", "reply-ok", buf, n);
    n = frame(buf, sizeof(buf), DVS__FRAME_REPLY, DVS__STATUS_OK, DVS__FRAME_F_REPLAYED, "", "", 0, 7);
    put("frame", "reply-replayed-empty", buf, n);
    m = dvs__error_payload_encode(DVS_EBADREQUEST, "key length 0", pl, sizeof(pl));
    n = frame(buf, sizeof(buf), DVS__FRAME_REPLY, DVS__STATUS_ERROR, 0, "kv", pl, (uint32_t)m, 2);
    put("frame", "reply-error", buf, n);
    n = frame(buf, sizeof(buf), DVS__FRAME_REPLY, DVS__STATUS_MOVED, 0, "kv", "10.0.0.2:9000", 13, 3);
    put("frame", "reply-moved", buf, n);
    n = frame(buf, sizeof(buf), DVS__FRAME_REPLY, DVS__STATUS_MIGRATING, 0, "kv", "", 0, 4);
    put("frame", "reply-migrating", buf, n);
    /* Two requests back to back, as a stream carries them. */
    n = frame(buf, sizeof(buf), DVS__FRAME_REQUEST, 0, 0, "kv", req, (uint32_t)rlen, 5);
    n += frame(buf + n, sizeof(buf) - n, DVS__FRAME_REQUEST, 0, 0, "kv.v2", "", 0, 6);
    put("frame", "stream-two-requests", buf, n);
}

/* ---- control messages ---- */

static void control(void)
{
    static const char *const msgs[] = {
        "hello version=1 endpoint=kv pid=4242 generation=1 mode=fresh state=serving "
        "arena_addr=0x200000000000 arena_size=67108864 address=127.0.0.1:9000",
        "hello version=1 endpoint=kv pid=4243 generation=0 mode=restore state=restoring "
        "arena_addr=0x200000000000 arena_size=67108864 address=[::1]:9001",
        "status id=1",
        "freeze id=2 hold_ms=1000\n",
        "unfreeze id=3",
        "moved id=4 generation=3 address=10.0.0.2:9000 linger_ms=5000",
        "start id=5 generation=3",
        "stop id=6",
        "ok id=2 state=frozen generation=2",
        "error id=7 code=DVS_EBADREQUEST state=serving message=unknown verb: hop, try status",
        "serving generation=3 address=127.0.0.1:9000",
        "exiting reason=error code=DVS_ENOSPACE message=arena unusable",
    };
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "msg-%02zu", i);
        put_text("control", name, msgs[i]);
    }
}

/* ---- the transfer stream ---- */

static void xfer(void)
{
    uint8_t buf[NODE_XFER_HELLO_SIZE + 16 * NODE_XFER_REC_SIZE];
    struct node_xfer_hello h = {.migration_id = 7, .token = 0x1234567890abcdefull,
                                .arena_addr = 0x200000000000ull, .arena_size = 64u << 20,
                                .generation = 2, .page_size = NODE_XFER_PAGE};
    node_xfer_hello_encode(&h, buf);
    size_t n = NODE_XFER_HELLO_SIZE;
    put("xfer", "hello", buf, n);
    const struct { uint16_t type; uint64_t a, b, c; } recs[] = {
        {NODE_XFER_RESERVE, 0, 1u << 20, 0},
        {NODE_XFER_PAGES, 0, 8192, 0},
        {NODE_XFER_PAGES, 65536, 4096, 0},
        {NODE_XFER_ROUND, 1, 12288, 0},
        {NODE_XFER_FREEZE, 0, 0, 0},
        {NODE_XFER_SYNC, 0, 0, 0},
        {NODE_XFER_END, 3, 0xfeedfacecafebeefull, 0},
        {NODE_XFER_READY, 0, 0, 0},
        {NODE_XFER_RESULT, NODE_XFER_COMMITTED, 0, 0},
    };
    for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
        node_xfer_rec_encode(recs[i].type, recs[i].a, recs[i].b, recs[i].c, buf + n);
        n += NODE_XFER_REC_SIZE;
    }
    put("xfer", "stream", buf, n);
}

/* ---- manager commands, binary and as FSM input lines ---- */

static const struct {
    unsigned type;
    const char *json;
} cmds[] = {
    {1, "{\"id\":\"m2\",\"raft_addr\":\"127.0.0.1:7102\",\"http_addr\":\"127.0.0.1:7002\"}"},
    {2, "{\"id\":\"m2\"}"},
    {3, "{\"id\":\"n3\",\"address\":\"10.0.0.3:7100\",\"cpu\":8,\"mem\":17179869184}"},
    {4, "{\"id\":\"n2\",\"state\":\"drained\",\"reason\":\"maintenance\"}"},
    {4, "{\"id\":\"n1\",\"state\":\"down\",\"eligible\":false}"},
    {5, "{\"nodes\":[{\"id\":\"n1\",\"cpu\":0.5,\"mem\":2048,\"rps\":100},{\"id\":\"n2\",\"cpu\":0,\"mem\":0,\"rps\":0}]}"},
    {6, "{\"name\":\"web\",\"command\":\"/usr/bin/dvs-kv\",\"cpu\":0.5,\"mem\":1048576,\"arena\":67108864}"},
    {6, "{\"name\":\"web2\",\"command\":\"/bin/svc\",\"cpu\":1,\"mem\":1048576,\"node\":\"n2\"}"},
    {7, "{\"name\":\"db\",\"state\":\"running\",\"address\":\"10.0.0.2:9001\",\"generation\":1}"},
    {7, "{\"name\":\"kv\",\"node\":\"n2\",\"generation\":2}"},
    {8, "{\"name\":\"db\"}"},
    {9, "{\"endpoint\":\"db\",\"destination\":\"n1\",\"reason\":\"manual\",\"explanation\":\"test\"}"},
    {10, "{\"id\":1,\"phase\":\"precopy\",\"bytes\":4096,\"rounds\":1}"},
    {10, "{\"id\":1,\"phase\":\"committed\",\"bytes\":8192,\"rounds\":3,\"downtime_ms\":12}"},
    {10, "{\"id\":1,\"phase\":\"aborted\",\"error\":\"source died\"}"},
};

static void manager(void)
{
    char name[32];
    char *all = calloc(1, 16384);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        json_error_t jerr;
        struct mgr_cmd c = {.type = (uint16_t)cmds[i].type, .request_id = 0x1000 + i,
                            .time_ms = 1700000000000 + (int64_t)i,
                            .body = json_loads(cmds[i].json, 0, &jerr)};
        void *buf = NULL;
        size_t len = 0;
        if (c.body == NULL || mgr_cmd_encode(&c, &buf, &len) != 0) {
            fprintf(stderr, "cannot encode command %zu\n", i);
            exit(1);
        }
        snprintf(name, sizeof(name), "%s-%02zu", mgr_cmd_type_name(c.type), i);
        put("cmd", name, buf, len);
        raft_free(buf);
        json_decref(c.body);

        char line[1024];
        snprintf(line, sizeof(line), "%u %s\n", cmds[i].type, cmds[i].json);
        put_text("fsm", name, line);
        strcat(all, line);
    }
    /* A sequence, and a retry of its last command. */
    strcat(all, "=10 {\"id\":1,\"phase\":\"aborted\",\"error\":\"source died\"}\n");
    put_text("fsm", "sequence", all);
    free(all);
}

/* ---- dvs-kv requests ---- */

static void kv(void)
{
    uint8_t buf[512];
    size_t len;
    const struct kv_request reqs[] = {
        {.op = KV_OP_PUT, .key = (const uint8_t *)"k", .key_len = 1, .a = (const uint8_t *)"v", .a_len = 1},
        {.op = KV_OP_GET, .key = (const uint8_t *)"greeting", .key_len = 8},
        {.op = KV_OP_DELETE, .key = (const uint8_t *)"k", .key_len = 1},
        {.op = KV_OP_INCR, .key = (const uint8_t *)"c0", .key_len = 2, .delta = -3},
        {.op = KV_OP_CAS, .key = (const uint8_t *)"k", .key_len = 1, .a = (const uint8_t *)"old", .a_len = 3, .b = (const uint8_t *)"new", .b_len = 3},
        {.op = KV_OP_SPIN, .ms = 5},
        {.op = KV_OP_STATS},
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        if (kv_request_encode(&reqs[i], buf, sizeof(buf), &len) != 0) {
            fprintf(stderr, "cannot encode kv request %zu\n", i);
            exit(1);
        }
        char name[32];
        snprintf(name, sizeof(name), "request-%s", kv_op_name(reqs[i].op));
        put("kv", name, buf, len);
    }
    kv_reply_header(buf, KV_OK, 5);
    memcpy(buf + KV_REPLY_HDR, "hello", 5);
    put("kv", "reply-ok", buf, KV_REPLY_HDR + 5);
}

/* ---- histories ---- */

static void history(void)
{
    put_text("history", "registers-and-counters",
             "# dvs-kv history v1 endpoint=kv threads=2 keys=1 incr_keys=1 prefix=r- rate=100\n"
             "invoke 0 put r-k0 t0-1 100\n"
             "invoke 1 get r-k0 nil 110\n"
             "ok 0 put r-k0 t0-1 200\n"
             "ok 1 get r-k0 t0-1 210\n"
             "invoke 0 incr r-c0 1 300\n"
             "invoke 1 incr r-c0 1 310\n"
             "ok 0 incr r-c0 1 400\n"
             "info 1 incr r-c0 1 900 DVS_ETIMEOUT\n"
             "invoke 3 delete r-k0 nil 950\n"
             "fail 3 delete r-k0 nil 960 DVS_ENOSPACE\n"
             "invoke 0 get r-c0 nil 1000\n"
             "ok 0 get r-c0 2 1100\n");
    put_text("history", "stale-read",
             "invoke 0 put k a 1\nok 0 put k a 2\ninvoke 0 put k b 3\nok 0 put k b 4\n"
             "invoke 1 get k nil 5\nok 1 get k a 6\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-gen-corpus DIR\n");
        return 2;
    }
    top = argv[1];
    if (mkdir(top, 0755) != 0 && errno != EEXIST) {
        perror(top);
        return 1;
    }
    frames();
    control();
    xfer();
    manager();
    kv();
    history();
    return 0;
}
