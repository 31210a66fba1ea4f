# libdvs: the installed client/server library (DESIGN.md §1).
#
# Everything but the error table is built into a convenience library, which
# libdvs.la includes whole and the unit tests link directly, so that tests can
# reach internal (dvs__, hidden) symbols without a second compilation.
lib_LTLIBRARIES += libdvs/libdvs.la
include_HEADERS += libdvs/dvs.h
pkgconfig_DATA += libdvs/libdvs.pc
noinst_LTLIBRARIES += libdvs/libdvs_core.la

LIBDVS_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden -DDVS_BUILDING $(UV_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
LIBDVS_LIBS = $(UV_LIBS) $(CURL_LIBS) $(JANSSON_LIBS)

libdvs_libdvs_core_la_SOURCES = \
	libdvs/frame.c libdvs/frame.h \
	libdvs/arena.c libdvs/arena.h \
	libdvs/reply_cache.c libdvs/reply_cache.h \
	libdvs/control.c libdvs/control.h \
	libdvs/server.c \
	libdvs/track.c libdvs/track.h libdvs/dvs_track.h \
	libdvs/net.c libdvs/net.h \
	libdvs/directory.c libdvs/directory.h \
	libdvs/client.c libdvs/client.h
libdvs_libdvs_core_la_CFLAGS = $(LIBDVS_CFLAGS)

libdvs_libdvs_la_SOURCES = \
	libdvs/errors.c
libdvs_libdvs_la_CFLAGS = $(LIBDVS_CFLAGS)
libdvs_libdvs_la_LIBADD = libdvs/libdvs_core.la $(LIBDVS_LIBS)
libdvs_libdvs_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0

EXTRA_DIST += libdvs/README.md

# Unit tests (tests/unit/libdvs): one binary per subsystem. The error table
# (errors.c) is in libdvs.la only, so tests that need it compile it in.
LIBDVS_TEST_CFLAGS = $(AM_CFLAGS) -DDVS_BUILDING $(CMOCKA_CFLAGS) $(UV_CFLAGS) $(CURL_CFLAGS)
LIBDVS_TEST_LIBS = libdvs/libdvs_core.la $(LIBDVS_LIBS) $(CMOCKA_LIBS)

check_PROGRAMS += tests/unit/libdvs/test_frame
TESTS += tests/unit/libdvs/test_frame
tests_unit_libdvs_test_frame_SOURCES = tests/unit/libdvs/test_frame.c
tests_unit_libdvs_test_frame_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_frame_LDADD = $(LIBDVS_TEST_LIBS)

check_PROGRAMS += tests/unit/libdvs/test_arena
TESTS += tests/unit/libdvs/test_arena
tests_unit_libdvs_test_arena_SOURCES = tests/unit/libdvs/test_arena.c
tests_unit_libdvs_test_arena_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_arena_LDADD = $(LIBDVS_TEST_LIBS)

check_PROGRAMS += tests/unit/libdvs/test_reply_cache
TESTS += tests/unit/libdvs/test_reply_cache
tests_unit_libdvs_test_reply_cache_SOURCES = tests/unit/libdvs/test_reply_cache.c
tests_unit_libdvs_test_reply_cache_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_reply_cache_LDADD = $(LIBDVS_TEST_LIBS)

check_PROGRAMS += tests/unit/libdvs/test_control
TESTS += tests/unit/libdvs/test_control
tests_unit_libdvs_test_control_SOURCES = tests/unit/libdvs/test_control.c
tests_unit_libdvs_test_control_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_control_LDADD = $(LIBDVS_TEST_LIBS)

check_PROGRAMS += tests/unit/libdvs/test_client
TESTS += tests/unit/libdvs/test_client
tests_unit_libdvs_test_client_SOURCES = tests/unit/libdvs/test_client.c libdvs/errors.c
tests_unit_libdvs_test_client_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_client_LDADD = $(LIBDVS_TEST_LIBS)

# The end-to-end test: a real service process (test_service), a stub HTTP
# directory (dirstub), the real client, and the test as the agent.
check_PROGRAMS += tests/unit/libdvs/test_service tests/unit/libdvs/test_server
TESTS += tests/unit/libdvs/test_server
tests_unit_libdvs_test_service_SOURCES = tests/unit/libdvs/test_service.c libdvs/errors.c
tests_unit_libdvs_test_service_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_service_LDADD = $(LIBDVS_TEST_LIBS)
tests_unit_libdvs_test_server_SOURCES = tests/unit/libdvs/test_server.c \
	tests/unit/libdvs/dirstub.c tests/unit/libdvs/dirstub.h libdvs/errors.c
tests_unit_libdvs_test_server_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_server_LDADD = $(LIBDVS_TEST_LIBS)

# Dirty tracking (mprotect fallback) and the throttle, against test_service.
check_PROGRAMS += tests/unit/libdvs/test_track
TESTS += tests/unit/libdvs/test_track
tests_unit_libdvs_test_track_SOURCES = tests/unit/libdvs/test_track.c libdvs/errors.c
tests_unit_libdvs_test_track_CFLAGS = $(LIBDVS_TEST_CFLAGS)
tests_unit_libdvs_test_track_LDADD = $(LIBDVS_TEST_LIBS)
