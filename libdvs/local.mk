# libdvs: the installed client/server library. Sources are added as they land.
lib_LTLIBRARIES += libdvs/libdvs.la
include_HEADERS += libdvs/dvs.h
pkgconfig_DATA += libdvs/libdvs.pc
libdvs_libdvs_la_SOURCES = \
	libdvs/errors.c
libdvs_libdvs_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden -DDVS_BUILDING $(UV_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
libdvs_libdvs_la_LIBADD = $(UV_LIBS) $(CURL_LIBS) $(JANSSON_LIBS)
libdvs_libdvs_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0
