# fuzz/: libFuzzer targets, built only with ./configure --enable-fuzz (clang;
# fuzz/run.sh does it in a build directory of its own). Each target links
# the module it fuzzes, instrumented like everything else in that build.
EXTRA_DIST += fuzz

if FUZZ
FUZZ_TARGETS = fuzz/fuzz_frame fuzz/fuzz_control fuzz/fuzz_xfer fuzz/fuzz_cmd \
	fuzz/fuzz_fsm fuzz/fuzz_kv fuzz/fuzz_history
noinst_PROGRAMS += $(FUZZ_TARGETS) fuzz/fuzz-gen-corpus
LIBFUZZER_FLAGS = -fsanitize=fuzzer

fuzz_fuzz_frame_SOURCES = fuzz/fuzz_frame.c fuzz/fuzz.h
fuzz_fuzz_frame_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_frame_LDADD = libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_control_SOURCES = fuzz/fuzz_control.c fuzz/fuzz.h
fuzz_fuzz_control_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_control_LDADD = node/libnodecore.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_xfer_SOURCES = fuzz/fuzz_xfer.c fuzz/fuzz.h
fuzz_fuzz_xfer_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_xfer_LDADD = node/libnodecore.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_cmd_SOURCES = fuzz/fuzz_cmd.c fuzz/fuzz.h
fuzz_fuzz_cmd_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(JANSSON_CFLAGS)
fuzz_fuzz_cmd_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_cmd_LDADD = manager/libmgrcore.la common/libcommon.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_fsm_SOURCES = fuzz/fuzz_fsm.c fuzz/fuzz.h
fuzz_fuzz_fsm_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(SQLITE_CFLAGS) $(JANSSON_CFLAGS)
fuzz_fuzz_fsm_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_fsm_LDADD = manager/libmgrcore.la common/libcommon.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_kv_SOURCES = fuzz/fuzz_kv.c fuzz/fuzz.h
fuzz_fuzz_kv_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_kv_LDADD = examples/libkv.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_history_SOURCES = fuzz/fuzz_history.c fuzz/fuzz.h
fuzz_fuzz_history_LDFLAGS = $(LIBFUZZER_FLAGS)
fuzz_fuzz_history_LDADD = examples/libkv.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

fuzz_fuzz_gen_corpus_SOURCES = fuzz/gen_corpus.c
fuzz_fuzz_gen_corpus_CFLAGS = $(AM_CFLAGS) $(RAFT_CFLAGS) $(JANSSON_CFLAGS)
fuzz_fuzz_gen_corpus_LDADD = manager/libmgrcore.la node/libnodecore.la examples/libkv.la \
	common/libcommon.la libdvs/libdvs_core.la $(LIBDVS_LIBS)

# Only the fuzz targets (fuzz/run.sh): not the daemons or the tests.
fuzz-targets: $(FUZZ_TARGETS) fuzz/fuzz-gen-corpus
else
fuzz-targets:
	@echo "fuzz-targets: configure with CC=clang --enable-fuzz (fuzz/run.sh does)" >&2; exit 1
endif
.PHONY: fuzz-targets
