# hotagent: build, demo, test.
#
#   make            build libhotagent.so and hotctl (release)
#   make demo       build the demo server, client and both libgreet.so, then run the demo
#   make test       build, run the whole test suite, lint, then run the demo as a smoke check
#   make bench      measure (minutes): reload against restart, latency, scaling, call cost, pause,
#                   start-up and idle cost; report in target/bench/report.md, docs/PERFORMANCE.md
#   make lint       clippy (warnings are errors) and rustfmt --check
#   make fmt        format the Rust code
#   make clean      remove every build output

CARGO ?= cargo
CC ?= gcc
# make predefines CC=cc, which `?=` does not override: prefer gcc unless CC was set by the user.
ifeq ($(origin CC),default)
CC := gcc
endif
CFLAGS ?= -O2 -g
WARNFLAGS := -Wall -Wextra

# cargo honours CARGO_TARGET_DIR; follow it so the paths below stay right.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release
AGENT := $(RELEASE_DIR)/libhotagent.so
HOTCTL := $(RELEASE_DIR)/hotctl

DEMO_SRC := examples/demo
DEMO_DIR := $(TARGET_DIR)/demo
DEMO_BINS := $(DEMO_DIR)/v1/libgreet.so $(DEMO_DIR)/v2/libgreet.so \
             $(DEMO_DIR)/server $(DEMO_DIR)/client

.PHONY: all build demo demo-build test lint clippy fmt-check fmt clean clean-demo help bench \
        bench-smoke

all: build

build:
	$(CARGO) build --release

demo-build: $(DEMO_BINS)

# Two builds of the same library: same soname, different behaviour.
$(DEMO_DIR)/v1/libgreet.so: $(DEMO_SRC)/greet_v1.c $(DEMO_SRC)/greet.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libgreet.so -o $@ $<

$(DEMO_DIR)/v2/libgreet.so: $(DEMO_SRC)/greet_v2.c $(DEMO_SRC)/greet.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libgreet.so -o $@ $<

# The server is linked against v1 and finds it through its rpath ($ORIGIN/v1), so it runs
# from any working directory. It calls greet() through its PLT/GOT, which a reload rewrites.
$(DEMO_DIR)/server: $(DEMO_SRC)/server.c $(DEMO_SRC)/greet.h $(DEMO_DIR)/v1/libgreet.so
	$(CC) $(CFLAGS) $(WARNFLAGS) -o $@ $< -L$(DEMO_DIR)/v1 -lgreet -Wl,-rpath,'$$ORIGIN/v1'

$(DEMO_DIR)/client: $(DEMO_SRC)/client.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -o $@ $<

demo: build demo-build
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) DEMO_DIR=$(DEMO_DIR) bash $(DEMO_SRC)/run.sh

# Sequential on purpose (also under -j): tests, then lint, then the demo and the bench as smoke
# checks.
test: build
	$(CARGO) test --release --workspace
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory demo
	@$(MAKE) --no-print-directory bench-smoke

bench: build demo-build
	$(RELEASE_DIR)/hotagent-bench --write-docs

# Every section of the bench with tiny counts, so it cannot rot; its figures mean nothing.
bench-smoke: build demo-build
	BENCH_QUICK=1 $(RELEASE_DIR)/hotagent-bench > /dev/null

lint: clippy fmt-check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt-check:
	$(CARGO) fmt --all -- --check

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

clean-demo:
	rm -rf $(DEMO_DIR)

help:
	@sed -n '3,11p' Makefile
