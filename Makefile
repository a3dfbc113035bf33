# Spendpol: `make run` starts the stack, `make test` tests it.
#
# Builds go to build/ (plain) and build/san/ (ASan + UBSan). The nginx
# module is built against Debian's nginx source tree from nginx-dev and
# loaded into Debian's nginx binary.

SHELL     := /bin/bash
CC        ?= gcc
BUILD     ?= build
SAN       ?=

NGX_SRC   := /usr/share/nginx/src
ROOT      := $(CURDIR)

CFLAGS_BASE := -std=gnu11 -g -O2 -fPIC -Wall -Wextra -Wno-unused-parameter \
               -Wshadow -Werror=implicit-function-declaration -D_GNU_SOURCE \
               -Ilibspendpol -Icontrold -I/usr/include/postgresql
SAN_FLAGS   := -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=undefined

ifeq ($(SAN),1)
OUT       := $(BUILD)/san
CFLAGS    := $(CFLAGS_BASE) -O1 $(SAN_FLAGS)
LDFLAGS   := $(SAN_FLAGS)
else
OUT       := $(BUILD)
CFLAGS    := $(CFLAGS_BASE)
LDFLAGS   :=
endif

LIBS      := -lmicrohttpd -lpq -lhiredis -ljansson -lssl -lcrypto -lpthread -lm \
             -lpcre2-8

LIB_SRCS      := $(wildcard libspendpol/*.c)
LIB_OBJS      := $(patsubst %.c,$(OUT)/obj/%.o,$(LIB_SRCS)) \
                 $(OUT)/obj/gen/sp_tok_vocab.o
CONTROLD_SRCS := $(wildcard controld/*.c)
CONTROLD_OBJS := $(patsubst %.c,$(OUT)/obj/%.o,$(CONTROLD_SRCS)) \
                 $(OUT)/obj/gen/cd_openapi.o
# controld logic without main(), for unit tests
CONTROLD_LIB_OBJS := $(filter-out $(OUT)/obj/controld/main.o,$(CONTROLD_OBJS))
MODULE_SRCS   := $(wildcard ngx_spendpol_module/*.c ngx_spendpol_module/*.h) \
                 $(wildcard libspendpol/*.c libspendpol/*.h) config
UNIT_SRCS     := $(wildcard tests/unit/test_*.c)
UNIT_BINS     := $(patsubst tests/unit/%.c,$(OUT)/tests/%,$(UNIT_SRCS))

MODULE_SO := $(OUT)/nginx/objs/ngx_http_spendpol_module.so

.PHONY: all deps build module controld unit unit-san test test-integration \
        run clean bench bench-micro fuzz test-faults \
        tok-cases-check pii-quality

all: build

deps:
	@bash scripts/install-deps.sh

build: $(OUT)/controld $(MODULE_SO)

controld: $(OUT)/controld

module: $(MODULE_SO)

# The compiler writes each object's real header dependencies (-MMD) into
# a .d file beside it; -MP keeps a deleted header from breaking the build.
# Objects also depend on this Makefile: a changed flag rebuilds them, and
# objects built before the .d files existed are rebuilt once.
DEP_FLAGS := -MMD -MP

$(OUT)/obj/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEP_FLAGS) -c -o $@ $<

# The tokenizer's vocabularies (sp_tokenize.h), generated from the npm
# package js-tiktoken that `make deps` installs into tools/tokenizer/; one
# copy under $(BUILD)/gen for the plain and the sanitized builds.
TOK_DIR   := tools/tokenizer
TOK_VOCAB := $(BUILD)/gen/sp_tok_vocab.c

$(TOK_VOCAB): $(TOK_DIR)/gen-vocab.mjs $(TOK_DIR)/package-lock.json
	@mkdir -p $(dir $@)
	@test -d $(TOK_DIR)/node_modules/js-tiktoken \
	    || { echo "$(TOK_DIR)/node_modules is missing: run make deps"; exit 1; }
	node $(TOK_DIR)/gen-vocab.mjs $@

$(OUT)/obj/gen/sp_tok_vocab.o: $(TOK_VOCAB) libspendpol/sp_tokenize.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O0 -c -o $@ $<

# GET /openapi.json's document: controld/openapi.json, checked to be JSON
# (node, as above) and embedded as bytes (od, no other tool); the unit
# test test_controld_openapi holds the same bytes to the route table.
OPENAPI_SRC := controld/openapi.json
OPENAPI_C   := $(BUILD)/gen/cd_openapi.c

$(OPENAPI_C): $(OPENAPI_SRC)
	@mkdir -p $(dir $@)
	@node -e 'JSON.parse(require("fs").readFileSync(process.argv[1]))' $< \
	    || { echo "$<: not valid JSON"; exit 1; }
	@{ echo "/* generated from $< by the Makefile: do not edit */"; \
	   echo "#include <stddef.h>"; \
	   echo "const char cd_openapi_json[] = {"; \
	   od -An -v -tx1 $< | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	   echo "0x00 };"; \
	   echo "const size_t cd_openapi_json_len = sizeof(cd_openapi_json) - 1;"; \
	 } > $@.tmp && mv $@.tmp $@

$(OUT)/obj/gen/cd_openapi.o: $(OPENAPI_C)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O0 -c -o $@ $<

$(OUT)/libspendpol.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(OUT)/controld: $(CONTROLD_OBJS) $(OUT)/libspendpol.a
	$(CC) $(LDFLAGS) -o $@ $(CONTROLD_OBJS) $(OUT)/libspendpol.a $(LIBS)

# nginx's configure generates objs/ngx_auto_config.h for this exact binary
# (--with-compat plus Debian's flags); `make modules` then compiles only us.
# configure lists the module's sources: a file added to (or removed
# from) ngx_spendpol_module/ or libspendpol/ configures again
MODULE_C_SRCS := $(sort $(wildcard ngx_spendpol_module/*.c libspendpol/*.c))

$(OUT)/module-sources.txt: FORCE
	@mkdir -p $(dir $@)
	@echo "$(MODULE_C_SRCS)" | cmp -s - $@ || echo "$(MODULE_C_SRCS)" > $@

FORCE:

# The module links the vocabularies' object compiled above (see config).
$(OUT)/nginx/Makefile: config $(OUT)/module-sources.txt \
                       $(OUT)/obj/gen/sp_tok_vocab.o
	@rm -rf $(OUT)/nginx && mkdir -p $(OUT)/nginx
	cp -r $(NGX_SRC)/. $(OUT)/nginx/
	cd $(OUT)/nginx && . ./conf_flags \
	    && SPENDPOL_TOK_VOCAB_OBJ=$(ROOT)/$(OUT)/obj/gen/sp_tok_vocab.o \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="-g -O2 -fPIC $(if $(SAN),$(SAN_FLAGS) -O1)" \
	    --with-ld-opt="-fPIC $(if $(SAN),$(SAN_FLAGS))" \
	    --add-dynamic-module=$(ROOT) > configure.log 2>&1 \
	    || { tail -30 configure.log; exit 1; }

$(MODULE_SO): $(OUT)/nginx/Makefile $(MODULE_SRCS) $(OUT)/obj/gen/sp_tok_vocab.o
	$(MAKE) -C $(OUT)/nginx -f objs/Makefile modules

$(OUT)/tests/test_controld_%: tests/unit/test_controld_%.c $(CONTROLD_LIB_OBJS) $(OUT)/libspendpol.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEP_FLAGS) $(LDFLAGS) -o $@ $< $(CONTROLD_LIB_OBJS) \
	    $(OUT)/libspendpol.a -lcmocka $(LIBS)

$(OUT)/tests/test_%: tests/unit/test_%.c $(OUT)/libspendpol.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEP_FLAGS) $(LDFLAGS) -o $@ $< $(OUT)/libspendpol.a \
	    -lcmocka $(LIBS)

-include $(CONTROLD_OBJS:.o=.d) $(LIB_OBJS:.o=.d) $(UNIT_BINS:=.d)

# the tokenizer's reference counts must still be js-tiktoken's
$(OUT)/tests/test_lib_tokenize: tests/unit/tokenize_cases.h

tok-cases-check:
	@node $(TOK_DIR)/gen-cases.mjs --check tests/unit/tokenize_cases.h

unit: $(UNIT_BINS) tok-cases-check pii-quality
	@bash scripts/run-unit.sh $(UNIT_BINS)

# The PII scanner on its labelled corpus: precision and recall per type,
# F2 overall (docs/pii.md); fails below 0.98 on a structured type.
$(OUT)/pii-quality: tests/pii/quality.c $(OUT)/libspendpol.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(OUT)/libspendpol.a $(LIBS)

pii-quality: $(OUT)/pii-quality
	@node tools/pii-corpus/gen.mjs --check tests/pii/corpus.jsonl
	@node tools/pii-corpus/markup.mjs --check
	@$(OUT)/pii-quality --check tests/pii/corpus.jsonl
	@$(OUT)/pii-quality --check tests/pii/handwritten.jsonl

unit-san:
	$(MAKE) SAN=1 unit

test-integration: build
	@bash scripts/test-integration.sh $(OUT)

# The whole suite: plain and sanitized, unit and integration, a short
# fuzzing run of every libFuzzer target, and the fault suite (about a
# minute).
test: deps
	$(MAKE) build unit
	$(MAKE) SAN=1 build unit
	bash tests/fuzz/run.sh smoke
	bash scripts/test-integration.sh $(BUILD)
	bash scripts/test-integration.sh $(BUILD)/san
	bash scripts/test-integration.sh $(BUILD) tests/faults/*.test.mjs

# Faults under load: kill -9, restarts, reload, reopen, resets, disk full.
test-faults: deps build
	bash scripts/test-integration.sh $(BUILD) tests/faults/*.test.mjs

# Longer runs, not part of `make test`.
fuzz: deps
	bash tests/fuzz/run.sh long

bench: deps build
	bash bench/run.sh

# libspendpol alone: parsers in MB/s, key lookup in ns, a 1M-key snapshot.
bench-micro: $(OUT)/libspendpol.a
	$(CC) $(CFLAGS) -o $(OUT)/micro bench/micro/micro.c \
	    $(OUT)/libspendpol.a -ljansson -lcrypto -lpcre2-8 -lm
	$(OUT)/micro $(KEYS)

run: deps build
	@bash scripts/run.sh

clean:
	rm -rf $(BUILD)
