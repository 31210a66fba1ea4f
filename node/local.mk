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
