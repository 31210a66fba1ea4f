#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "node/load.h"

int node_cpu_read(struct node_cpu_sample *ret)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -errno;
    uint64_t v[10] = {0};
    int n = fscanf(f, "cpu %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                      " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 4)
        return -EIO;
    /* user nice system idle iowait irq softirq steal guest guest_nice; guest
     * time is already counted in user/nice. */
    uint64_t idle = v[3] + v[4];
    uint64_t total = 0;
    for (int i = 0; i < 8 && i < n; i++)
        total += v[i];
    ret->busy = total - idle;
    ret->total = total;
    return 0;
}

double node_cpu_cores_used(const struct node_cpu_sample *a, const struct node_cpu_sample *b,
                           long ncpu)
{
    if (b->total <= a->total)
        return 0;
    double frac = (double)(b->busy - a->busy) / (double)(b->total - a->total);
    return frac * (double)ncpu;
}

int node_mem_read(uint64_t *ret_used, uint64_t *ret_total)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -errno;
    char line[256];
    uint64_t total = 0, avail = 0;
    while (fgets(line, sizeof(line), f)) {
        uint64_t kb;
        if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kb) == 1)
            total = kb * 1024;
        else if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kb) == 1)
            avail = kb * 1024;
    }
    fclose(f);
    if (total == 0)
        return -EIO;
    *ret_used = total > avail ? total - avail : 0;
    *ret_total = total;
    return 0;
}

int node_proc_read(pid_t pid, uint64_t *ret_ticks, uint64_t *ret_rss)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may contain spaces and parentheses: parse after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -EIO;
    unsigned long utime, stime;
    long rss;
    /* fields after ')': state(3) ... utime(14) stime(15) ... rss(24) */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
               "%*u %*u %ld",
               &utime, &stime, &rss) != 3)
        return -EIO;
    *ret_ticks = (uint64_t)utime + stime;
    *ret_rss = (uint64_t)(rss < 0 ? 0 : rss) * (uint64_t)sysconf(_SC_PAGESIZE);
    return 0;
}

int node_proc_start_time(pid_t pid, uint64_t *ret_start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? -ENOENT : -errno;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -EIO;
    /* Fields after ')': state(3) ... starttime(22). A zombie still has its
     * start time; the caller checks the state if it cares. */
    unsigned long long start;
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d "
               "%llu",
               &start) != 1)
        return -EIO;
    *ret_start = start;
    return 0;
}
