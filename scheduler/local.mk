# scheduler/: the pure scheduling library (DESIGN.md §6): no I/O, no clock, no
# globals, libc (and libm) only. The manager links it; so do its unit tests,
# the simulator and the benchmark.
noinst_LTLIBRARIES += scheduler/libsched.la
scheduler_libsched_la_SOURCES = \
	scheduler/sched.h scheduler/internal.h \
	scheduler/config.c \
	scheduler/cost.c \
	scheduler/view.c \
	scheduler/place.c \
	scheduler/explain.c \
	scheduler/plan.c \
	scheduler/evaluate.c \
	scheduler/maintenance.c \
	scheduler/overload.c \
	scheduler/energy.c
scheduler_libsched_la_LIBADD = -lm

# Unit tests (cmocka, table-driven). Allocation is wrapped so that the tests
# can make any allocation fail (STYLE.md 11).
check_PROGRAMS += tests/unit/scheduler/test_sched
TESTS += tests/unit/scheduler/test_sched
tests_unit_scheduler_test_sched_SOURCES = tests/unit/scheduler/test_sched.c
tests_unit_scheduler_test_sched_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_scheduler_test_sched_LDFLAGS = $(AM_LDFLAGS) \
	-Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc
tests_unit_scheduler_test_sched_LDADD = scheduler/libsched.la $(CMOCKA_LIBS)

# The simulator: replays a load trace on 100 simulated nodes and checks for
# oscillation. Without arguments it runs its short mode and speaks TAP, which
# is how `make check` runs it; `bench/sched_sim --help` for longer runs.
noinst_PROGRAMS += bench/sched_sim
TESTS += bench/sched_sim
bench_sched_sim_SOURCES = bench/sched_sim.c
bench_sched_sim_LDADD = scheduler/libsched.la

# Decision time for 10k nodes / 100k endpoints: figures, never pass/fail.
noinst_PROGRAMS += bench/sched_bench
DVS_BENCHES += bench/sched_bench
bench_sched_bench_SOURCES = bench/sched_bench.c
bench_sched_bench_LDADD = scheduler/libsched.la
