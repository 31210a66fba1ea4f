# common/: internal helpers for the daemons (static, not installed).
noinst_LTLIBRARIES += common/libcommon.la
common_libcommon_la_SOURCES = \
	common/log.c common/log.h \
	common/opts.c common/opts.h \
	common/promtext.c common/promtext.h \
	common/util.c common/util.h
common_libcommon_la_LIBADD = -lm
