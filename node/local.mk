# node/: dvs-node, the node agent (DESIGN.md §1, docs/migration.md).
#
# The parts that read what other processes wrote (the transfer format, the
# control messages, command lines) are a convenience library of their own,
# so that the unit test links them without the daemon.
noinst_LTLIBRARIES += node/libnodecore.la
node_libnodecore_la_SOURCES = \
	node/transfer.c node/transfer.h \
	node/ctlmsg.c node/ctlmsg.h \
	node/argv.c node/argv.h \
	node/load.c node/load.h \
	node/dirty.c node/dirty.h
node_libnodecore_la_CFLAGS = $(AM_CFLAGS) $(XXHASH_CFLAGS)
node_libnodecore_la_LIBADD = $(XXHASH_LIBS)

bin_PROGRAMS += node/dvs-node
node_dvs_node_SOURCES = \
	node/main.c \
	node/agent.c node/agent.h \
	node/mgr.c \
	node/control.c \
	node/service.c \
	node/metrics.c \
	node/migrate.c
node_dvs_node_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) $(JANSSON_CFLAGS) $(CURL_CFLAGS)
node_dvs_node_LDADD = node/libnodecore.la api/libapi.la libdvs/libdvs.la common/libcommon.la \
	$(UV_LIBS) $(JANSSON_LIBS) $(CURL_LIBS) -lpthread

dist_man8_MANS = packaging/man/dvs-node.8

# Unit tests of the formats and parsers (node/test_node.c).
check_PROGRAMS += node/test_node
TESTS += node/test_node
node_test_node_SOURCES = node/test_node.c
node_test_node_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
node_test_node_LDADD = node/libnodecore.la libdvs/libdvs.la common/libcommon.la $(CMOCKA_LIBS)

# The transfer stream's MAC (node/xfer_mac.h, docs/security.md): HMAC-SHA256
# from GnuTLS, in a library of its own so that its test and bench link it alone.
noinst_LTLIBRARIES += node/libxfermac.la
node_libxfermac_la_SOURCES = node/xfer_mac.c node/xfer_mac.h
node_libxfermac_la_CFLAGS = $(AM_CFLAGS) $(GNUTLS_CFLAGS)
node_libxfermac_la_LIBADD = $(GNUTLS_LIBS)
node_dvs_node_LDADD += node/libxfermac.la

check_PROGRAMS += tests/unit/node/test_xfer_mac
TESTS += tests/unit/node/test_xfer_mac
tests_unit_node_test_xfer_mac_SOURCES = tests/unit/node/test_xfer_mac.c
tests_unit_node_test_xfer_mac_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_node_test_xfer_mac_LDADD = node/libxfermac.la libdvs/libdvs.la $(CMOCKA_LIBS)

EXTRA_PROGRAMS += bench/xfer_mac_bench
bench_xfer_mac_bench_SOURCES = bench/xfer_mac_bench.c
bench_xfer_mac_bench_CFLAGS = $(AM_CFLAGS) $(GNUTLS_CFLAGS)
bench_xfer_mac_bench_LDADD = node/libxfermac.la $(GNUTLS_LIBS)
DVS_BENCHES += bench/xfer_mac_bench
