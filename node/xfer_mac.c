/* HMAC-SHA256 over a migration's transfer stream (xfer_mac.h). */
#include <errno.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "dvs.h"
#include "node/xfer_mac.h"

#define CONTEXT "dvs-xfer-v1"

int xfer_mac_init_raw(struct xfer_mac *m, const void *key, size_t keylen)
{
    if (!m || !key || keylen == 0)
        return -EINVAL;
    gnutls_hmac_hd_t h;
    int rc = gnutls_hmac_init(&h, GNUTLS_MAC_SHA256, key, keylen);
    if (rc < 0)
        return rc == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : DVS_EINTERNAL;
    m->h = h;
    m->bytes = 0;
    return 0;
}

int xfer_mac_init(struct xfer_mac *m, const void *key, size_t keylen, uint64_t migration_id)
{
    if (keylen < 16)
        return -EINVAL;
    int rv = xfer_mac_init_raw(m, key, keylen);
    if (rv)
        return rv;
    unsigned char ctx[sizeof(CONTEXT) - 1 + 8];
    memcpy(ctx, CONTEXT, sizeof(CONTEXT) - 1);
    for (int i = 0; i < 8; i++)
        ctx[sizeof(CONTEXT) - 1 + i] = (unsigned char)(migration_id >> (8 * i));
    if (gnutls_hmac(m->h, ctx, sizeof(ctx)) < 0) {
        xfer_mac_close(m);
        return DVS_EINTERNAL;
    }
    return 0;
}

int xfer_mac_update(struct xfer_mac *m, const void *buf, size_t len)
{
    if (!m || !m->h || (!buf && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    if (gnutls_hmac(m->h, buf, len) < 0)
        return DVS_EINTERNAL;
    m->bytes += len;
    return 0;
}

int xfer_mac_final(struct xfer_mac *m, uint8_t out[XFER_MAC_LEN])
{
    if (!m || !m->h || !out)
        return -EINVAL;
    gnutls_hmac_deinit(m->h, out);
    m->h = NULL;
    return 0;
}

void xfer_mac_close(struct xfer_mac *m)
{
    if (!m || !m->h)
        return;
    gnutls_hmac_deinit(m->h, NULL);
    m->h = NULL;
}

bool xfer_mac_equal(const uint8_t a[XFER_MAC_LEN], const uint8_t b[XFER_MAC_LEN])
{
    /* gnutls_memcmp runs in time independent of the contents. */
    return gnutls_memcmp(a, b, XFER_MAC_LEN) == 0;
}

bool xfer_mac_verify(struct xfer_mac *m, const uint8_t tag[XFER_MAC_LEN])
{
    uint8_t mine[XFER_MAC_LEN];
    if (!tag || xfer_mac_final(m, mine) != 0) {
        xfer_mac_close(m);
        return false;
    }
    bool ok = xfer_mac_equal(mine, tag);
    memset(mine, 0, sizeof(mine));
    return ok;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int xfer_mac_key_from_hex(const char *hex, uint8_t out[XFER_MAC_KEY_LEN])
{
    if (!hex || strlen(hex) != 2 * XFER_MAC_KEY_LEN)
        return -EINVAL;
    uint8_t tmp[XFER_MAC_KEY_LEN];
    for (size_t i = 0; i < XFER_MAC_KEY_LEN; i++) {
        int h = hexval(hex[2 * i]), l = hexval(hex[2 * i + 1]);
        if (h < 0 || l < 0)
            return -EINVAL;
        tmp[i] = (uint8_t)(h << 4 | l);
    }
    memcpy(out, tmp, sizeof(tmp));
    memset(tmp, 0, sizeof(tmp));
    return 0;
}
