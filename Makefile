# hotagent: build, demo, test.
#
#   make            build libhotagent.so and hotctl (release)
#   make demo       build the demo server, client and both libgreet.so, then run the demo
#   make examples   run every example of the patch-author API (examples/*/run.sh)
#   make example-shadow  shadow variables: a patch adds a per-object counter (examples/shadow)
#   make example-rust    a Rust patch library made with the hotagent-api crate (examples/rust-patch)
#   make example-vtable  the seed's C++ nsIBase example: objects converted on their first call
#   make example-migrate a global struct that grows, carried over by migrate and handed back
#   make watch-demo a game loop's drawing library edited and rebuilt under `hotctl watch`
#   make ansible-test  the Ansible fleet role (contrib/ansible) against three local hosts
#   make test       build, run the whole test suite, lint, then run the demo as a smoke check
#   make bench      measure (minutes): reload against restart, latency, scaling, call cost, pause,
#                   hooks and C++ conversion, start-up and idle cost; report in
#                   target/bench/report.md, docs/PERFORMANCE.md (one section alone:
#                   BENCH_ONLY=WORD-OF-ITS-TITLE target/release/hotagent-bench)
#   make bench-compare  the same fixture under Frida (installed from PyPI into a venv) and hotagent
#   make soak       reload/rollback for long under load (SOAK_CYCLES, SOAK_THREADS); fails on any
#                   wrong answer or failed request
#   make fuzz       run each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 60) each; needs
#                   the nightly toolchain and cargo-fuzz (.ci/run installs them)
#   make realworld  the real-world suite: SQLite, zlib, nginx, redis-server and python3 as Debian
#                   ships them (tests/realworld; needs python3, nginx, redis-server and crates.io)
#   make lint       clippy (warnings are errors) and rustfmt --check
#   make fmt        format the Rust code
#   make install    install the release build under PREFIX (default /usr/local; DESTDIR= for
#                   staging): hotctl, libhotagent.so, hotagent.h, man pages, completions.
#                   Builds nothing: run `make` first
#   make uninstall  remove what make install put there
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
        bench-smoke bench-compare soak soak-smoke fuzz fuzz-smoke realworld examples example-shadow \
        example-rust install uninstall

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

# Examples of the patch-author API (include/hotagent.h, the hotagent-api crate), each built into
# $(TARGET_DIR)/examples/<name>/ and run by its run.sh. Each example appends itself here.
EXAMPLES_DIR := $(TARGET_DIR)/examples
examples: example-vtable example-migrate example-shadow example-rust

# Shadow variables: libconn.so v2 counts requests per connection without changing struct conn.
SHADOW_SRC := examples/shadow
SHADOW_DIR := $(EXAMPLES_DIR)/shadow

$(SHADOW_DIR)/v1/libconn.so: $(SHADOW_SRC)/conn_v1.c $(SHADOW_SRC)/conn.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libconn.so -o $@ $<

# The hotagent_shadow_* calls stay undefined here: the preloaded agent provides them.
$(SHADOW_DIR)/v2/libconn.so: $(SHADOW_SRC)/conn_v2.c $(SHADOW_SRC)/conn.h include/hotagent.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libconn.so -o $@ $<

$(SHADOW_DIR)/connd: $(SHADOW_SRC)/connd.c $(SHADOW_SRC)/conn.h $(SHADOW_DIR)/v1/libconn.so
	$(CC) $(CFLAGS) $(WARNFLAGS) -o $@ $< -L$(SHADOW_DIR)/v1 -lconn -Wl,-rpath,'$$ORIGIN/v1'

example-shadow: build $(SHADOW_DIR)/v1/libconn.so $(SHADOW_DIR)/v2/libconn.so $(SHADOW_DIR)/connd
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) EXAMPLE_DIR=$(SHADOW_DIR) bash $(SHADOW_SRC)/run.sh

# A Rust patch library (hotagent-api's hooks!): the C libcounter.so v1, and v2 in Rust
# (examples/rust-patch, a workspace member: `make build` builds it as target/release/libcounter_rs.so).
RUST_SRC := examples/rust-patch
RUST_DIR := $(EXAMPLES_DIR)/rust-patch

$(RUST_DIR)/v1/libcounter.so: $(RUST_SRC)/counter_v1.c $(RUST_SRC)/counter.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libcounter.so -o $@ $<

$(RUST_DIR)/counterd: $(RUST_SRC)/counterd.c $(RUST_SRC)/counter.h $(RUST_DIR)/v1/libcounter.so
	$(CC) $(CFLAGS) $(WARNFLAGS) -o $@ $< -L$(RUST_DIR)/v1 -lcounter -Wl,-rpath,'$$ORIGIN/v1'

example-rust: build $(RUST_DIR)/v1/libcounter.so $(RUST_DIR)/counterd
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) EXAMPLE_DIR=$(RUST_DIR) PATCH=$(RELEASE_DIR)/libcounter_rs.so \
		bash $(RUST_SRC)/run.sh

# Sequential on purpose (also under -j): tests, the real-world suite, then lint, then the demo, the bench and the fuzz
# targets as smoke checks.
test: build
	$(CARGO) test --release --workspace
	@$(MAKE) --no-print-directory realworld
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory demo
	@$(MAKE) --no-print-directory watch-demo
	@$(MAKE) --no-print-directory ansible-test
	@$(MAKE) --no-print-directory bench-smoke
	@$(MAKE) --no-print-directory soak-smoke
	@$(MAKE) --no-print-directory fuzz-smoke

# Libraries built from pinned crate sources, cached under $(TARGET_DIR)/realworld/: about 130 s
# of CPU (three SQLite builds) the first time, seconds afterwards.
realworld: build
	$(CARGO) test --release -p hotagent-tests --test realworld

bench: build demo-build
	@mkdir -p $(TARGET_DIR)/bench
	$(CARGO) bench -p hotagent --bench scan 2>&1 | tee $(TARGET_DIR)/bench/scan.txt
	$(RELEASE_DIR)/hotagent-bench --write-docs

# SOAK_CYCLES (default 500) reload + rollback cycles, SOAK_THREADS (default 8) hammering threads.
soak: build demo-build
	$(RELEASE_DIR)/hotagent-bench --soak

soak-smoke: build demo-build
	SOAK_CYCLES=20 SOAK_THREADS=2 $(RELEASE_DIR)/hotagent-bench --soak > /dev/null

BENCH_VENV := $(TARGET_DIR)/bench/venv

bench-compare: build
	$(RELEASE_DIR)/hotagent-bench --build-fixtures > /dev/null
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check frida
	$(BENCH_VENV)/bin/python tests/bench/frida_compare.py $(TARGET_DIR) | tee $(TARGET_DIR)/bench/compare.md

# Every section of the bench with tiny counts, so it cannot rot; its figures mean nothing.
bench-smoke: build demo-build
	BENCH_QUICK=1 $(RELEASE_DIR)/hotagent-bench > /dev/null

# Fuzzing: fuzz/ is its own cargo workspace, built by cargo-fuzz with the nightly toolchain (and
# AddressSanitizer) into $(TARGET_DIR)/fuzz. New inputs a run finds go to $(FUZZ_OUT)/corpus and are
# kept between runs; the seeds in fuzz/corpus stay as they are. A crash or a hang (an input taking
# over 10 s) stops the run and is written to fuzz/artifacts/<target>/.
FUZZ_TARGETS := framing patch_check image_reader
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_OUT := $(TARGET_DIR)/fuzz
CARGO_FUZZ = $(CARGO) +nightly fuzz
FUZZ_FLAGS = --fuzz-dir fuzz --target-dir $(FUZZ_OUT)/build

fuzz:
	$(CARGO_FUZZ) build $(FUZZ_FLAGS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_OUT)/corpus/$$t; \
		echo "=== fuzz $$t for $(FUZZ_SECONDS) s"; \
		$(CARGO_FUZZ) run $(FUZZ_FLAGS) $$t $(FUZZ_OUT)/corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1; \
	done

# Each target over its seeds, then a few seconds of fuzzing from them, so the targets cannot rot.
# An unoptimised build (--dev, about half the build time of the optimised one) keeps it short.
fuzz-smoke:
	$(CARGO_FUZZ) build --dev $(FUZZ_FLAGS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		rm -rf $(FUZZ_OUT)/smoke/$$t; mkdir -p $(FUZZ_OUT)/smoke/$$t; \
		log=$(FUZZ_OUT)/smoke/$$t.log; \
		if ! $(CARGO_FUZZ) run --dev $(FUZZ_FLAGS) $$t $(FUZZ_OUT)/smoke/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SMOKE_SECONDS) -timeout=10 > $$log 2>&1; then \
			tail -n 40 $$log; echo "fuzz-smoke: $$t failed (log: $$log)"; exit 1; \
		fi; \
		echo "fuzz-smoke $$t: $$(grep -E '^Done [0-9]+ runs' $$log)"; \
	done

lint: clippy fmt-check

# --all-targets leaves out test targets marked `test = false` (the real-world suite).
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p hotagent-tests --test realworld -- -D warnings

fmt-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

# The seed's nsIBase example (examples/vtable): libimp.so v1 and v2 (same soname), and the test
# program linked against v1. v2 leaves hotagent_convert_class undefined: the preloaded agent
# provides it at load time.
VTABLE_SRC := examples/vtable
VTABLE_DIR := $(TARGET_DIR)/examples/vtable
CXX ?= g++
ifeq ($(origin CXX),default)
CXX := g++
endif
VTABLE_CXXFLAGS := $(CFLAGS) $(WARNFLAGS) -Iinclude

$(VTABLE_DIR)/v1/libimp.so: $(VTABLE_SRC)/nsImp1.cpp $(VTABLE_SRC)/nsImp1.h $(VTABLE_SRC)/nsIBase.h
	@mkdir -p $(@D)
	$(CXX) $(VTABLE_CXXFLAGS) -fPIC -shared -Wl,-soname,libimp.so -o $@ $<

$(VTABLE_DIR)/v2/libimp.so: $(VTABLE_SRC)/nsImp2.cpp $(VTABLE_SRC)/nsImp2.h $(VTABLE_SRC)/nsIBase.h include/hotagent.h
	@mkdir -p $(@D)
	$(CXX) $(VTABLE_CXXFLAGS) -fPIC -shared -Wl,-soname,libimp.so -o $@ $<

$(VTABLE_DIR)/test: $(VTABLE_SRC)/test.cpp $(VTABLE_SRC)/nsIBase.h $(VTABLE_DIR)/v1/libimp.so
	$(CXX) $(VTABLE_CXXFLAGS) -o $@ $< -L$(VTABLE_DIR)/v1 -limp -Wl,-rpath,'$$ORIGIN/v1'

.PHONY: example-vtable
example-vtable: build $(VTABLE_DIR)/v1/libimp.so $(VTABLE_DIR)/v2/libimp.so $(VTABLE_DIR)/test
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) EXAMPLE_DIR=$(VTABLE_DIR) bash $(VTABLE_SRC)/run.sh

# A global struct that grows (examples/migrate): libstats.so v1 and v2 (same soname), the
# server linked against v1. v2's hooks leave hotagent_previous_symbol & co undefined: the
# preloaded agent provides them at load time.
MIGRATE_SRC := examples/migrate
MIGRATE_DIR := $(TARGET_DIR)/examples/migrate

$(MIGRATE_DIR)/v1/libstats.so: $(MIGRATE_SRC)/stats_v1.c $(MIGRATE_SRC)/stats.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libstats.so -o $@ $<

$(MIGRATE_DIR)/v2/libstats.so: $(MIGRATE_SRC)/stats_v2.c $(MIGRATE_SRC)/stats.h include/hotagent.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -Iinclude -fPIC -shared -Wl,-soname,libstats.so -o $@ $<

$(MIGRATE_DIR)/server: $(MIGRATE_SRC)/server.c $(MIGRATE_SRC)/stats.h $(MIGRATE_DIR)/v1/libstats.so
	$(CC) $(CFLAGS) $(WARNFLAGS) -o $@ $< -L$(MIGRATE_DIR)/v1 -lstats -Wl,-rpath,'$$ORIGIN/v1'

.PHONY: example-migrate
example-migrate: build $(MIGRATE_DIR)/v1/libstats.so $(MIGRATE_DIR)/v2/libstats.so $(MIGRATE_DIR)/server
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) EXAMPLE_DIR=$(MIGRATE_DIR) bash $(MIGRATE_SRC)/run.sh

# The developer loop (examples/watch-demo): the game is linked against the first build of
# libdraw.so; run.sh edits and rebuilds a copy while `hotctl watch` watches it.
WATCH_SRC := examples/watch-demo
WATCH_DIR := $(EXAMPLES_DIR)/watch-demo

$(WATCH_DIR)/v1/libdraw.so: $(WATCH_SRC)/draw.c $(WATCH_SRC)/draw.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -shared -Wl,-soname,libdraw.so -o $@ $<

$(WATCH_DIR)/game: $(WATCH_SRC)/game.c $(WATCH_SRC)/draw.h $(WATCH_DIR)/v1/libdraw.so
	$(CC) $(CFLAGS) $(WARNFLAGS) -o $@ $< -L$(WATCH_DIR)/v1 -ldraw -Wl,-rpath,'$$ORIGIN/v1'

# The fleet recipe (contrib/ansible): ansible-core, pinned, from PyPI into a venv under target/.
ANSIBLE_VENV := $(TARGET_DIR)/ansible/venv

.PHONY: ansible-test
ansible-test: build demo-build
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) DEMO_DIR=$(DEMO_DIR) VENV=$(ANSIBLE_VENV) \
		bash contrib/ansible/test/run.sh

.PHONY: watch-demo
watch-demo: build $(WATCH_DIR)/game
	AGENT=$(AGENT) HOTCTL=$(HOTCTL) EXAMPLE_DIR=$(WATCH_DIR) CC=$(CC) bash $(WATCH_SRC)/run.sh
# Install: where each part goes. Any of them may be given on the command line.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASH_COMPDIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPDIR ?= $(DATADIR)/zsh/site-functions
FISH_COMPDIR ?= $(DATADIR)/fish/vendor_completions.d
INSTALL ?= install

# No dependency on `build`: `sudo make install` must not run cargo as root in the tree. The man
# pages and completions come from the hotctl being installed, so they describe exactly it.
install:
	@for f in $(HOTCTL) $(AGENT); do \
		[ -f $$f ] || { echo "make install: $$f is missing: run make first"; exit 1; }; \
	done
	@set -e; gen=$$(mktemp -d); trap 'rm -rf "$$gen"' EXIT; \
	$(HOTCTL) man --dir "$$gen/man"; \
	$(HOTCTL) completions bash > "$$gen/hotctl.bash"; \
	$(HOTCTL) completions zsh > "$$gen/_hotctl"; \
	$(HOTCTL) completions fish > "$$gen/hotctl.fish"; \
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(INCLUDEDIR)" \
		"$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(BASH_COMPDIR)" "$(DESTDIR)$(ZSH_COMPDIR)" \
		"$(DESTDIR)$(FISH_COMPDIR)"; \
	$(INSTALL) -m 755 $(HOTCTL) "$(DESTDIR)$(BINDIR)/hotctl"; \
	$(INSTALL) -m 755 $(AGENT) "$(DESTDIR)$(LIBDIR)/libhotagent.so"; \
	$(INSTALL) -m 644 include/hotagent.h "$(DESTDIR)$(INCLUDEDIR)/hotagent.h"; \
	$(INSTALL) -m 644 "$$gen"/man/*.1 "$(DESTDIR)$(MANDIR)/man1/"; \
	$(INSTALL) -m 644 "$$gen/hotctl.bash" "$(DESTDIR)$(BASH_COMPDIR)/hotctl"; \
	$(INSTALL) -m 644 "$$gen/_hotctl" "$(DESTDIR)$(ZSH_COMPDIR)/_hotctl"; \
	$(INSTALL) -m 644 "$$gen/hotctl.fish" "$(DESTDIR)$(FISH_COMPDIR)/hotctl.fish"; \
	echo "installed hotctl, libhotagent.so, hotagent.h, man pages and completions under $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/hotctl" "$(DESTDIR)$(LIBDIR)/libhotagent.so" \
		"$(DESTDIR)$(INCLUDEDIR)/hotagent.h" "$(DESTDIR)$(MANDIR)/man1/hotctl.1" \
		"$(DESTDIR)$(MANDIR)"/man1/hotctl-*.1 "$(DESTDIR)$(BASH_COMPDIR)/hotctl" \
		"$(DESTDIR)$(ZSH_COMPDIR)/_hotctl" "$(DESTDIR)$(FISH_COMPDIR)/hotctl.fish"

clean:
	$(CARGO) clean

clean-demo:
	rm -rf $(DEMO_DIR)

help:
	@sed -n '3,/^$$/{/^$$/!p}' Makefile
