# bench/: benchmarks that print figures (never pass/fail). Built with `make bench`.
EXTRA_PROGRAMS += bench/mgr_bench
bench_mgr_bench_SOURCES = bench/mgr_bench.c
bench_mgr_bench_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(JANSSON_CFLAGS) $(CURL_CFLAGS)
bench_mgr_bench_LDADD = manager/libmgrcore.la api/libapi.la libdvs/libdvs.la common/libcommon.la -lpthread
DVS_BENCHES += bench/mgr_bench
bench: $(DVS_BENCHES)
.PHONY: bench
CLEANFILES += $(EXTRA_PROGRAMS)

EXTRA_PROGRAMS += bench/raft_bench
bench_raft_bench_SOURCES = bench/raft_bench.c
bench_raft_bench_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(UV_CFLAGS) $(JANSSON_CFLAGS)
bench_raft_bench_LDADD = manager/libmgrcore.la libdvs/libdvs.la common/libcommon.la $(RAFT_LIBS) $(UV_LIBS) $(JANSSON_LIBS)
DVS_BENCHES += bench/raft_bench

EXTRA_PROGRAMS += bench/call_bench
bench_call_bench_SOURCES = bench/call_bench.c
bench_call_bench_LDADD = libdvs/libdvs.la common/libcommon.la -lpthread
DVS_BENCHES += bench/call_bench

# The mprotect dirty-tracking fallback: cost of a first write, and of a collect.
EXTRA_PROGRAMS += bench/track_bench
bench_track_bench_SOURCES = bench/track_bench.c
bench_track_bench_CFLAGS = $(AM_CFLAGS) -DDVS_BUILDING $(UV_CFLAGS)
bench_track_bench_LDADD = libdvs/libdvs_core.la $(LIBDVS_LIBS)
DVS_BENCHES += bench/track_bench

EXTRA_PROGRAMS += bench/tcp_bw
bench_tcp_bw_SOURCES = bench/tcp_bw.c
DVS_BENCHES += bench/tcp_bw
