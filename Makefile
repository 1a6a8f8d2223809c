# kvsql - SQLite databases whose pages live in Redis.
#
#   make run     build, then start redis-server with the module (PORT=6379)
#   make test    build and run every test; ends with "N passed, N failed"
#   make slt     sqllogictest through every engine
#   make bench   benchmarks (QUICK=1 for a short run)
#   SANITIZE=1   build into build-asan/ with -fsanitize=address,undefined
#   BUILD=dir    build into another folder (several checkouts' builds side by side)

CC      ?= gcc
PYTHON  ?= /usr/bin/python3
PORT    ?= 6379
SLT_DIR ?= ../shared/slt

ifeq ($(SANITIZE),1)
BUILD   ?= build-asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# redis-server is not sanitized: the sanitizer runtime must be loaded first.
export KVSQL_PRELOAD := $(shell $(CC) -print-file-name=libasan.so)
OPT     := -O1
else
BUILD   ?= build
SANFLAGS :=
OPT     := -O2
endif

CFLAGS  += $(if $(SANFLAGS),-DKVSQL_SANITIZE)
CFLAGS  += -std=c11 -D_GNU_SOURCE -g $(OPT) -Wall -Wextra -Werror -fPIC -fvisibility=hidden $(SANFLAGS) -Iinclude -Isrc
LDFLAGS += $(SANFLAGS)

CORE_SRC   := src/blockpool.c src/format.c src/memfile.c src/pagemap.c src/dbfile.c src/vfs.c src/store_memory.c src/real_text.c src/change_entry.c src/change_log.c
MODULE_SRC := $(CORE_SRC) src/pcache.c $(wildcard src/module/*.c src/module/*/*.c)
HEADERS    := $(wildcard include/*.h src/*.h src/module/*.h src/module/*/*.h src/client/*.h src/client/*/*.h)

MODULE := $(BUILD)/kvsql.so
UNIT   := $(BUILD)/test_unit
TXN    := $(BUILD)/test_txn
SLT    := $(BUILD)/kvsql-slt
SLT_SRC := $(wildcard tools/slt*.c)
LIBRARY  := $(BUILD)/libkvsql.so
CONTRACT := $(BUILD)/test_contract
SCRIPTS_TEST := $(BUILD)/test_scripts
NET_PROBE := $(BUILD)/net_probe
CLIENT_SRC := $(filter-out src/client/preload.c,$(wildcard src/client/*.c src/client/*/*.c))
# libkvsql.so's objects: the same sources compiled again with -DKVSQL_EXTENSION
# (src/sqlite.h: SQLite reached only through the loading host's routines).
EXT_OBJS := $(addprefix $(BUILD)/ext/,$(CORE_SRC:%.c=%.o) $(CLIENT_SRC:%.c=%.o) src/client/preload.o)
CLI      := $(BUILD)/kvsql

.PHONY: all deps run test unit slt bench fuzz fuzz-build soak clean

all: $(MODULE) $(UNIT) $(TXN) $(SLT)
all: $(LIBRARY) $(CONTRACT) $(SCRIPTS_TEST) $(CLI) $(NET_PROBE)

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/ext/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DKVSQL_EXTENSION -c $< -o $@

# The module: our code hidden, only RedisModule_OnLoad exported.
$(MODULE): $(MODULE_SRC:%.c=$(BUILD)/%.o)
	$(CC) -shared $(LDFLAGS) -o $@ $^ -lsqlite3 -pthread

$(BUILD)/tests/unit.o: tests/check.h
$(UNIT): $(CORE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tests/unit.o
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3

$(BUILD)/tests/txn.o: tests/check.h
$(TXN): $(CORE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tests/txn.o
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3

# The library: the redis VFS as an SQLite extension, C library and
# LD_PRELOAD library (docs/LIBRARY.md); only sqlite3_kvsql_init, the
# KVSQL_EXPORT functions of kvsql.h and preload.c's sqlite3_open* exported.
# Not linked with libsqlite3: it serves whichever SQLite loads or calls it.
$(LIBRARY): $(EXT_OBJS)
	$(CC) -shared $(LDFLAGS) -o $@ $^ -lhiredis -lssl -lcrypto -ldl -pthread

# The store contract: the memory store, and a redis store (KVSQL_TEST_REDIS).
$(BUILD)/tests/contract.o: tests/check.h
$(CONTRACT): $(CORE_SRC:%.c=$(BUILD)/%.o) $(CLIENT_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tests/contract.o
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3 -lhiredis -lssl -lcrypto

# The one-hash scripts' text: keys by name, in the order they are sent.
$(BUILD)/tests/scripts.o: tests/check.h
$(SCRIPTS_TEST): $(BUILD)/src/client/hash/scripts.o $(BUILD)/tests/scripts.o
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3

# The network layer's driver (tests/test_net.py): not a test_* program,
# it runs only as a tests/test_net.py child against real servers.
$(NET_PROBE): $(CORE_SRC:%.c=$(BUILD)/%.o) $(CLIENT_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tests/net.o
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3 -lhiredis -lssl -lcrypto

# The kvsql command (import, export, check, shell, ls, rm, cp, mv): the library's objects linked in.
$(CLI): $(BUILD)/tools/kvsql.o $(BUILD)/tools/kvsql_keys.o $(CORE_SRC:%.c=$(BUILD)/%.o) $(CLIENT_SRC:%.c=$(BUILD)/%.o)
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3 -lhiredis -lssl -lcrypto

# The sqllogictest runner: native SQLite, our VFS in memory, the module, the redis VFS.
$(SLT_SRC:%.c=$(BUILD)/%.o): tools/slt.h
$(SLT): $(SLT_SRC:%.c=$(BUILD)/%.o) $(CORE_SRC:%.c=$(BUILD)/%.o) $(CLIENT_SRC:%.c=$(BUILD)/%.o)
	$(CC) $(LDFLAGS) -o $@ $^ -lsqlite3 -lhiredis -lssl -lcrypto

run: deps all
	@mkdir -p data
	@echo "kvsql: redis-server with the module on 127.0.0.1:$(PORT), data in ./data (AOF on)"
	@echo "kvsql: connect with: redis-cli -p $(PORT)    e.g.  SQL \"select sqlite_version()\""
	redis-server --port $(PORT) --bind 127.0.0.1 --dir "$(CURDIR)/data" --appendonly yes \
		--loadmodule "$(CURDIR)/$(MODULE)"

unit: $(UNIT)
	$(UNIT)

slt: deps all
	@tools/slt-all.sh $(BUILD) $(SLT_DIR)

test: deps all
	@BUILD=$(BUILD) PYTHON=$(PYTHON) tests/run

# The load generator of `make bench`.
$(BUILD)/kvsql-bench: bench/kvsql-bench.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lhiredis

# The library's figures of `make bench`: latency and round trips through the redis VFS.
$(BUILD)/kvsql-bench-lib: bench/kvsql-bench-lib.c $(LIBRARY)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(BUILD) -lkvsql -Wl,-rpath,$(CURDIR)/$(BUILD) -lsqlite3 -lhiredis

bench: deps $(MODULE) $(CORE_SRC:%.c=$(BUILD)/%.o) $(BUILD)/kvsql-bench $(BUILD)/kvsql-bench-lib
	@scripts/deps.sh gnuplot-nox valgrind
	@BUILD=$(BUILD) PYTHON=$(PYTHON) QUICK=$(QUICK) CORE_OBJS="$(CORE_SRC:%.c=$(BUILD)/%.o)" $(PYTHON) bench/run

# A bounded soak: SOAK_SECONDS (default 180) of mixed load with restarts.
# Then as long again of offloaded writes while Redis pauses writes
# (CLIENT PAUSE, FAILOVER, SHUTDOWN: tools/soak_pause.py), of the
# library under faults (tools/soak_library.py), and counted fault trials of
# a spread database on a cluster (tools/soak_spread.py: SOAK_KILLS,
# SOAK_STOPS, SOAK_FAILOVERS, SOAK_MIGRATIONS; about 10 minutes).
SOAK_SECONDS ?= 180
soak: deps all
	@BUILD=$(BUILD) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) tools/soak.py
	@BUILD=$(BUILD) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) tools/soak_pause.py
	@BUILD=$(BUILD) SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) tools/soak_library.py
	@BUILD=$(BUILD) $(PYTHON) tools/soak_spread.py

# libFuzzer targets (clang): SQL and damaged pages through the VFS.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := build-fuzz/fuzz_sql build-fuzz/fuzz_pages
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -Iinclude -Isrc

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(CORE_SRC) $(HEADERS)
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(CORE_SRC) -lsqlite3

fuzz-build: $(FUZZ_TARGETS)

fuzz: deps fuzz-build
	tools/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf build build-asan build-fuzz
