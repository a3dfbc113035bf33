# Builds the libFuzzer targets; driven by tests/fuzz/run.sh from the
# repository root: make -f tests/fuzz/fuzz.mk OUT=build/fuzz
#
# libspendpol is compiled once with coverage and sanitizer instrumentation
# (fuzzer-no-link) into $(OUT)/obj/, each target links it with libFuzzer's
# main. controld's sources (without main.c, as the unit tests link them)
# go the same way into $(OUT)/obj/controld/ for the fuzz_controld_*
# targets, which link them as an archive (only the objects a target needs
# are pulled in) with the daemon's libraries. Nothing is rebuilt when
# nothing changed.

FUZZ_CC     ?= clang
OUT         ?= build/fuzz

FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
               -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter \
               -Werror=implicit-function-declaration -D_GNU_SOURCE \
               -Ilibspendpol $(FUZZ_SAN)
FUZZ_LIBS   := -ljansson -lcrypto -lpcre2-8 -lm
CD_CFLAGS   := -Icontrold -I/usr/include/postgresql
CD_LIBS     := -lpq -lmicrohttpd -lhiredis -ljansson -lssl -lcrypto \
               -lpcre2-8 -lpthread -lm

LIB_SRCS    := $(wildcard libspendpol/*.c)
LIB_HDRS    := $(wildcard libspendpol/*.h)
LIB_OBJS    := $(patsubst libspendpol/%.c,$(OUT)/obj/%.o,$(LIB_SRCS)) \
               $(OUT)/obj/gen/sp_tok_vocab.o
CD_SRCS     := $(filter-out controld/main.c,$(wildcard controld/*.c))
CD_HDRS     := $(wildcard controld/*.h)
CD_OBJS     := $(patsubst controld/%.c,$(OUT)/obj/controld/%.o,$(CD_SRCS)) \
               $(OUT)/obj/gen/cd_openapi.o
TARGET_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
TARGETS     := $(patsubst tests/fuzz/%.c,$(OUT)/%,$(TARGET_SRCS))

.PHONY: all seeds
all: $(TARGETS) $(OUT)/gen_seeds

$(OUT)/obj/%.o: libspendpol/%.c $(LIB_HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(OUT)/libspendpol_fuzz.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/obj/controld/%.o: controld/%.c $(CD_HDRS) $(LIB_HDRS) \
                         tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(CD_CFLAGS) -fsanitize=fuzzer-no-link \
	    -c -o $@ $<

$(OUT)/libcontrold_fuzz.a: $(CD_OBJS)
	@rm -f $@
	ar rcs $@ $^

# controld's targets (the more specific pattern wins over fuzz_%)
$(OUT)/fuzz_controld_%: tests/fuzz/fuzz_controld_%.c \
                        tests/fuzz/fuzz_common.h $(CD_HDRS) $(LIB_HDRS) \
                        $(OUT)/libcontrold_fuzz.a $(OUT)/libspendpol_fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(CD_CFLAGS) -fsanitize=fuzzer -o $@ $< \
	    $(OUT)/libcontrold_fuzz.a $(OUT)/libspendpol_fuzz.a $(CD_LIBS)

# the tokenizer's target also links the generated vocabularies (the main
# Makefile writes them from js-tiktoken; data only, so no instrumentation)
TOK_VOCAB   := build/gen/sp_tok_vocab.c

$(TOK_VOCAB): tools/tokenizer/gen-vocab.mjs
	$(MAKE) -f Makefile $@

$(OUT)/obj/gen/sp_tok_vocab.o: $(TOK_VOCAB) libspendpol/sp_tokenize.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -O0 -Ilibspendpol -c -o $@ $<

# GET /openapi.json's bytes, which api_openapi.c serves (the main
# Makefile writes them from controld/openapi.json; data only)
OPENAPI_C   := build/gen/cd_openapi.c

$(OPENAPI_C): controld/openapi.json
	$(MAKE) -f Makefile $@

$(OUT)/obj/gen/cd_openapi.o: $(OPENAPI_C)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -O0 -c -o $@ $<

$(OUT)/fuzz_tokenize: tests/fuzz/fuzz_tokenize.c tests/fuzz/fuzz_common.h \
                      $(LIB_HDRS) $(OUT)/libspendpol_fuzz.a \
                      $(OUT)/obj/gen/sp_tok_vocab.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< \
	    $(OUT)/obj/gen/sp_tok_vocab.o $(OUT)/libspendpol_fuzz.a \
	    $(FUZZ_LIBS)

$(OUT)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(LIB_HDRS) \
               $(OUT)/libspendpol_fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< \
	    $(OUT)/libspendpol_fuzz.a $(FUZZ_LIBS)

# the seed generator: plain, sanitized, no libFuzzer main
$(OUT)/gen_seeds: tests/fuzz/gen_seeds.c $(OUT)/libspendpol_fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -o $@ $< \
	    $(OUT)/libspendpol_fuzz.a $(FUZZ_LIBS)
