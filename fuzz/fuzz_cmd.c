/*
 * The manager's Raft log command decoder (manager/cmd.h): every member
 * decodes every log entry, so an entry that crashes the decoder would crash
 * the whole cluster, on every restart, for ever.
 *
 * Properties: the result is one of the documented codes, with a message on
 * failure; a decoded command has a known type, a non-zero request id and an
 * object body; encoding it and decoding that gives the same command; and
 * the encoding is canonical (encoding the re-decoded command gives the same
 * bytes).
 */
#include <errno.h>
#include <string.h>

#include <raft.h>

#include "dvs.h"
#include "fuzz/fuzz.h"
#include "manager/cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mgr_cmd cmd = {0}, again = {0}, third = {0};
    char err[256] = "";
    int rv = mgr_cmd_decode(data, size, &cmd, err, sizeof(err));
    FUZZ_CHECK(rv == 0 || rv == DVS_EPROTO || rv == DVS_ETOOBIG || rv == -EPROTONOSUPPORT);
    if (rv != 0) {
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_CHECK(cmd.body == NULL);
        return 0;
    }
    FUZZ_CHECK(cmd.type >= 1 && cmd.type <= MGR_CMD_TYPE_MAX);
    FUZZ_CHECK(cmd.request_id != 0);
    FUZZ_CHECK(json_is_object(cmd.body));
    FUZZ_CHECK(strcmp(mgr_cmd_type_name(cmd.type), "unknown") != 0);

    void *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    FUZZ_CHECK(mgr_cmd_encode(&cmd, &buf, &len) == 0);
    FUZZ_CHECK(len % 8 == 0 && len >= MGR_CMD_HEADER_SIZE);
    FUZZ_CHECK(mgr_cmd_decode(buf, len, &again, err, sizeof(err)) == 0);
    FUZZ_CHECK(again.type == cmd.type && again.request_id == cmd.request_id &&
               again.time_ms == cmd.time_ms && json_equal(again.body, cmd.body));
    FUZZ_CHECK(mgr_cmd_encode(&again, &buf2, &len2) == 0);
    FUZZ_CHECK(len2 == len && memcmp(buf, buf2, len) == 0);
    FUZZ_CHECK(mgr_cmd_decode(buf2, len2, &third, err, sizeof(err)) == 0);
    raft_free(buf);
    raft_free(buf2);
    mgr_cmd_clear(&cmd);
    mgr_cmd_clear(&again);
    mgr_cmd_clear(&third);
    return 0;
}
