# api/: REST glue shared by the daemons (HTTP server on libuv, JSON, libcurl client).
noinst_LTLIBRARIES += api/libapi.la
api_libapi_la_SOURCES = \
	api/http.c api/http.h \
	api/client.c api/client.h \
	api/auth.c api/auth.h
api_libapi_la_CFLAGS = $(AM_CFLAGS) $(MHD_CFLAGS) $(UV_CFLAGS) $(JANSSON_CFLAGS) $(CURL_CFLAGS)
api_libapi_la_LIBADD = $(MHD_LIBS) $(UV_LIBS) $(JANSSON_LIBS) $(CURL_LIBS)

check_PROGRAMS += tests/unit/api/test_api
TESTS += tests/unit/api/test_api
tests_unit_api_test_api_SOURCES = tests/unit/api/test_api.c
tests_unit_api_test_api_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(MHD_CFLAGS) $(UV_CFLAGS) $(JANSSON_CFLAGS) $(CURL_CFLAGS)
tests_unit_api_test_api_LDADD = api/libapi.la libdvs/libdvs.la common/libcommon.la $(CMOCKA_LIBS)

check_PROGRAMS += tests/unit/api/test_auth
TESTS += tests/unit/api/test_auth
tests_unit_api_test_auth_SOURCES = tests/unit/api/test_auth.c
tests_unit_api_test_auth_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_api_test_auth_LDADD = api/libapi.la libdvs/libdvs.la common/libcommon.la $(CMOCKA_LIBS)
