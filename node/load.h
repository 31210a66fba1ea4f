/* Load measurement from /proc (node CPU from /proc/stat, per-process CPU and RSS). */
#ifndef DVS_NODE_LOAD_H
#define DVS_NODE_LOAD_H

#include <stdint.h>
#include <sys/types.h>

struct node_cpu_sample {
    uint64_t busy; /* jiffies spent not idle, all CPUs */
    uint64_t total;
};

/* Read the aggregate "cpu" line of /proc/stat. 0 or -errno. */
int node_cpu_read(struct node_cpu_sample *ret);

/* Cores in use between two samples, given the number of online CPUs. */
double node_cpu_cores_used(const struct node_cpu_sample *a, const struct node_cpu_sample *b,
                           long ncpu);

/* Memory in use (MemTotal - MemAvailable) and MemTotal, in bytes. */
int node_mem_read(uint64_t *ret_used, uint64_t *ret_total);

/* utime+stime (clock ticks) and RSS (bytes) of PID from /proc/PID/stat. */
int node_proc_read(pid_t pid, uint64_t *ret_ticks, uint64_t *ret_rss);

/*
 * The start time of PID (field 22 of /proc/PID/stat, clock ticks after
 * boot). With the pid it names one process for good: a recycled pid has a
 * different start time. 0, -ENOENT (no such process) or -EIO.
 */
int node_proc_start_time(pid_t pid, uint64_t *ret_start);

#endif
