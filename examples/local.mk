# examples/: dvs-kv, a key-value service whose whole state lives in the
# migratable arena (DESIGN.md §4), and dvs-kv-client, its one-shot client,
# load generator and post-migration checker. See examples/kv/README.md.

# The parts the two programs and the unit tests share: the wire format, the
# arena-resident table, the request handler, the history format and checker.
noinst_LTLIBRARIES += examples/libkv.la
examples_libkv_la_SOURCES = \
	examples/kv/proto.c examples/kv/proto.h \
	examples/kv/siphash.c examples/kv/siphash.h \
	examples/kv/table.c examples/kv/table.h \
	examples/kv/service.c examples/kv/service.h \
	examples/kv/history.c examples/kv/history.h \
	examples/kv/lincheck.c examples/kv/lincheck.h

bin_PROGRAMS += examples/dvs-kv examples/dvs-kv-client

examples_dvs_kv_SOURCES = examples/kv/server.c
examples_dvs_kv_LDADD = examples/libkv.la libdvs/libdvs.la common/libcommon.la

examples_dvs_kv_client_SOURCES = \
	examples/kv/client.c examples/kv/client.h \
	examples/kv/load.c \
	examples/kv/verify.c
examples_dvs_kv_client_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
examples_dvs_kv_client_LDADD = examples/libkv.la libdvs/libdvs.la common/libcommon.la \
	$(JANSSON_LIBS) -lpthread -lm

EXTRA_DIST += examples/kv/README.md

# Unit tests (tests/unit/examples): the table in a real arena, the wire
# format, the handler and the history checker.
check_PROGRAMS += tests/unit/examples/test_kv
TESTS += tests/unit/examples/test_kv
tests_unit_examples_test_kv_SOURCES = tests/unit/examples/test_kv.c
tests_unit_examples_test_kv_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_examples_test_kv_LDADD = examples/libkv.la libdvs/libdvs.la common/libcommon.la \
	$(CMOCKA_LIBS)
