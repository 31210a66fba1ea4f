# tests/: unit tests of common/, and the integration tests (real daemons).
check_PROGRAMS += tests/unit/common/test_opts
TESTS += tests/unit/common/test_opts
tests_unit_common_test_opts_SOURCES = tests/unit/common/test_opts.c
tests_unit_common_test_opts_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_common_test_opts_LDADD = common/libcommon.la $(CMOCKA_LIBS)

# dvs-lincheck: the linearizability checker's command line (the checker is
# examples/kv/lincheck.c), for the integration tests; and its unit tests.
noinst_PROGRAMS += tests/tools/dvs-lincheck
tests_tools_dvs_lincheck_SOURCES = tests/tools/dvs-lincheck.c
tests_tools_dvs_lincheck_LDADD = examples/libkv.la libdvs/libdvs.la common/libcommon.la

check_PROGRAMS += tests/unit/lincheck/test_lincheck
TESTS += tests/unit/lincheck/test_lincheck
tests_unit_lincheck_test_lincheck_SOURCES = tests/unit/lincheck/test_lincheck.c
tests_unit_lincheck_test_lincheck_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_lincheck_test_lincheck_LDADD = examples/libkv.la libdvs/libdvs.la \
	common/libcommon.la $(CMOCKA_LIBS)

# Integration tests: bash scripts that start real processes on loopback and
# speak TAP. They share tests/integration/lib.sh.
INTEGRATION_TESTS = \
	tests/integration/manager_cluster.sh \
	tests/integration/manager_api.sh \
	tests/integration/manager_membership.sh \
	tests/integration/node_agent.sh \
	tests/integration/node_migrate.sh \
	tests/integration/node_precopy.sh \
	tests/integration/node_forged_stream.sh \
	tests/integration/node_faults.sh \
	tests/integration/node_failover.sh \
	tests/integration/sched_overload.sh \
	tests/integration/sched_energy.sh \
	tests/integration/sched_drain.sh \
	tests/integration/sched_automation.sh \
	tests/integration/observability.sh \
	tests/integration/security.sh \
	tests/integration/sched_drain_kv.sh \
	tests/integration/sched_overload_kv.sh \
	tests/integration/fault_migrations.sh \
	tests/integration/fault_kills.sh \
	tests/integration/fault_partitions.sh
TESTS += $(INTEGRATION_TESTS)
EXTRA_DIST += tests/integration

# The unit-test binaries alone (tools/check.sh runs them under ASan).
print-unit-tests:
	@echo $(filter-out $(INTEGRATION_TESTS),$(TESTS))
.PHONY: print-unit-tests

# A stray peer that sends a forged transfer stream (security.sh).
check_PROGRAMS += tests/tools/xfer_forge
tests_tools_xfer_forge_SOURCES = tests/tools/xfer_forge.c
tests_tools_xfer_forge_LDADD = node/libnodecore.la common/libcommon.la
