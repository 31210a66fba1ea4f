# manager/: dvs-manager, the Raft member daemon and the operator CLI.

# The FSM and its command codec: a library of their own so unit tests link them
# without the daemon.
noinst_LTLIBRARIES += manager/libmgrcore.la
manager_libmgrcore_la_SOURCES = \
	manager/cmd.c manager/cmd.h \
	manager/fsm.c manager/fsm.h
manager_libmgrcore_la_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(SQLITE_CFLAGS) $(JANSSON_CFLAGS)
manager_libmgrcore_la_LIBADD = $(RAFT_LIBS) $(SQLITE_LIBS) $(JANSSON_LIBS)

bin_PROGRAMS += manager/dvs-manager
manager_dvs_manager_SOURCES = \
	manager/main.c \
	manager/daemon.c manager/daemon.h \
	manager/watch.c \
	manager/leader.c \
	manager/rest.c manager/rest.h \
	manager/rest_members.c \
	manager/rest_nodes.c \
	manager/rest_endpoints.c \
	manager/rest_migrations.c \
	manager/rest_metrics.c \
	manager/rest_events.c \
	manager/rest_plan.c \
	manager/sched_glue.c manager/sched_glue.h \
	manager/cli.c manager/cli.h manager/cli_internal.h \
	manager/cli_status.c \
	manager/cli_member.c \
	manager/cli_node.c \
	manager/cli_endpoint.c \
	manager/cli_migration.c \
	manager/cli_events.c
manager_dvs_manager_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(UV_CFLAGS) $(SQLITE_CFLAGS) \
	$(JANSSON_CFLAGS) $(MHD_CFLAGS) $(CURL_CFLAGS) $(GNUTLS_CFLAGS)
manager_dvs_manager_LDADD = manager/libmgrcore.la scheduler/libsched.la api/libapi.la \
	libdvs/libdvs.la common/libcommon.la $(RAFT_LIBS) $(UV_LIBS) $(SQLITE_LIBS) $(JANSSON_LIBS) \
	$(MHD_LIBS) $(CURL_LIBS) $(GNUTLS_LIBS)

check_PROGRAMS += tests/unit/manager/test_cmd tests/unit/manager/test_fsm
TESTS += tests/unit/manager/test_cmd tests/unit/manager/test_fsm
tests_unit_manager_test_cmd_SOURCES = tests/unit/manager/test_cmd.c
tests_unit_manager_test_cmd_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(RAFT_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_manager_test_cmd_LDADD = manager/libmgrcore.la libdvs/libdvs.la common/libcommon.la $(CMOCKA_LIBS)
tests_unit_manager_test_fsm_SOURCES = tests/unit/manager/test_fsm.c
tests_unit_manager_test_fsm_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(RAFT_CFLAGS) $(SQLITE_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_manager_test_fsm_LDADD = manager/libmgrcore.la libdvs/libdvs.la common/libcommon.la $(CMOCKA_LIBS)
