# packaging/: man pages, the commented default configs, the systemd units and
# the Debian packaging (packaging/README.md).

dist_man1_MANS = packaging/man/dvs-manager.1
dist_man3_MANS = packaging/man/libdvs.3
# (dvs-node.8 is listed in node/local.mk.)

# The default configs are generated from the daemons' option tables by the
# daemons themselves ("serve --print-config"), so they never drift from the
# code. The data directories are the systemd units' StateDirectory=.
dvsconfdir = $(sysconfdir)/dvs
dvsconf_DATA = packaging/manager.conf packaging/node.conf
CLEANFILES += $(dvsconf_DATA)

packaging/manager.conf: manager/dvs-manager$(EXEEXT)
	$(AM_V_GEN)$(MKDIR_P) packaging && \
	manager/dvs-manager$(EXEEXT) serve --print-config \
		--data-dir $(localstatedir)/lib/dvs-manager >$@.tmp && mv $@.tmp $@

packaging/node.conf: node/dvs-node$(EXEEXT)
	$(AM_V_GEN)$(MKDIR_P) packaging && \
	node/dvs-node$(EXEEXT) serve --print-config \
		--data-dir $(localstatedir)/lib/dvs-node >$@.tmp && mv $@.tmp $@

# systemd units, with the configured paths filled in.
DVS_UNITS = packaging/systemd/dvs-manager.service packaging/systemd/dvs-node.service
noinst_DATA = $(DVS_UNITS)
CLEANFILES += $(DVS_UNITS)
if INSTALL_SYSTEMD_UNITS
systemdsystemunit_DATA = $(DVS_UNITS)
endif

packaging/systemd/%.service: $(srcdir)/packaging/systemd/%.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) packaging/systemd && \
	sed -e 's|@bindir[@]|$(bindir)|g' -e 's|@sysconfdir[@]|$(sysconfdir)|g' $< >$@.tmp && \
	mv $@.tmp $@

EXTRA_DIST += packaging/README.md packaging/build-deb.sh packaging/debian \
	packaging/systemd/dvs-manager.service.in packaging/systemd/dvs-node.service.in \
	packaging/systemd/dvs.sysusers

# The packages end to end (builds them: several minutes on 2 cores).
INTEGRATION_TESTS += tests/integration/packaging.sh
