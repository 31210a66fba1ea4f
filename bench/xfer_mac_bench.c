/*
 * Throughput of the transfer MAC (node/xfer_mac.h) and of the faster MACs
 * GnuTLS offers, over 1 GiB (or $DVS_BENCH_MIB MiB) fed in 64 KiB chunks, as
 * the transfer stream would. Prints one line per MAC in MB/s (10^6 bytes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "node/xfer_mac.h"

#define CHUNK (64 * 1024)

/*
 * Wall-clock and CPU time: on a shared machine the CPU figure is the one to
 * trust (it is what the MAC costs), the wall figure what one run got.
 */
static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double t0_wall, t0_cpu;
static void start(void)
{
    t0_wall = wall_s();
    t0_cpu = cpu_s();
}

static void report(const char *name, uint64_t bytes)
{
    double w = wall_s() - t0_wall, c = cpu_s() - t0_cpu;
    printf("%-26s %6.0f MB/s per CPU-second  %6.0f MB/s wall  (%.2f GiB)\n", name,
           (double)bytes / c / 1e6, (double)bytes / w / 1e6, (double)bytes / (1u << 30));
}

/* A GnuTLS MAC that takes a nonce (UMAC, GMAC). */
static int bench_gnutls(const char *name, gnutls_mac_algorithm_t alg, size_t keylen,
                        size_t noncelen, const uint8_t *buf, uint64_t total)
{
    uint8_t key[32], nonce[16], tag[64];
    memset(key, 0x42, sizeof(key));
    memset(nonce, 0x24, sizeof(nonce));
    gnutls_hmac_hd_t h;
    start();
    if (gnutls_hmac_init(&h, alg, key, keylen) < 0) {
        printf("%-28s not available in this GnuTLS\n", name);
        return 0;
    }
    if (noncelen)
        gnutls_hmac_set_nonce(h, nonce, noncelen);
    for (uint64_t done = 0; done < total; done += CHUNK)
        if (gnutls_hmac(h, buf, CHUNK) < 0)
            return 1;
    gnutls_hmac_deinit(h, tag);
    report(name, total);
    return 0;
}

int main(void)
{
    uint64_t mib = 1024;
    const char *env = getenv("DVS_BENCH_MIB");
    if (env && atoi(env) > 0)
        mib = (uint64_t)atoi(env);
    uint64_t total = mib << 20;
    uint8_t *buf = malloc(CHUNK);
    if (!buf)
        return 1;
    for (size_t i = 0; i < CHUNK; i++)
        buf[i] = (uint8_t)(i * 131 + 7);

    uint8_t key[XFER_MAC_KEY_LEN], tag[XFER_MAC_LEN];
    memset(key, 0x42, sizeof(key));
    struct xfer_mac m = {0};
    start();
    if (xfer_mac_init(&m, key, sizeof(key), 1) != 0)
        return 1;
    for (uint64_t done = 0; done < total; done += CHUNK)
        if (xfer_mac_update(&m, buf, CHUNK) != 0)
            return 1;
    xfer_mac_final(&m, tag);
    report("xfer_mac (HMAC-SHA256)", total);

    int rc = 0;
    rc |= bench_gnutls("UMAC-128 (gnutls)", GNUTLS_MAC_UMAC_128, 16, 8, buf, total);
    rc |= bench_gnutls("AES-256-GMAC (gnutls)", GNUTLS_MAC_AES_GMAC_256, 32, 12, buf, total);
    rc |= bench_gnutls("HMAC-SHA512 (gnutls)", GNUTLS_MAC_SHA512, 32, 0, buf, total);
    free(buf);
    return rc;
}
