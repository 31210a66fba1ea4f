# tests/: unit tests of common/, and the integration tests (real daemons).
check_PROGRAMS += tests/unit/common/test_opts
TESTS += tests/unit/common/test_opts
tests_unit_common_test_opts_SOURCES = tests/unit/common/test_opts.c
tests_unit_common_test_opts_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_common_test_opts_LDADD = common/libcommon.la $(CMOCKA_LIBS)

# Integration tests: bash scripts that start real processes on loopback and
# speak TAP. They share tests/integration/lib.sh.
INTEGRATION_TESTS = \
	tests/integration/manager_cluster.sh \
	tests/integration/manager_api.sh \
	tests/integration/manager_membership.sh \
	tests/integration/node_agent.sh \
	tests/integration/node_migrate.sh \
	tests/integration/node_faults.sh \
	tests/integration/node_failover.sh \
	tests/integration/sched_overload.sh \
	tests/integration/sched_energy.sh \
	tests/integration/sched_drain.sh \
	tests/integration/sched_automation.sh \
	tests/integration/fault_migrations.sh \
	tests/integration/fault_kills.sh \
	tests/integration/fault_partitions.sh
TESTS += $(INTEGRATION_TESTS)
EXTRA_DIST += tests/integration

# The unit-test binaries alone (tools/check.sh runs them under ASan).
print-unit-tests:
	@echo $(filter-out $(INTEGRATION_TESTS),$(TESTS))
.PHONY: print-unit-tests
