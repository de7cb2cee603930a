# Vessel build, test and lab entry points. `make help` lists the targets.
#
# Variables (override on the command line, e.g. `make lab CMD='uname -r'`):
#   CMD            command run inside the lab by `make lab` (a shell string)
#   VESSEL_CACHE   kernel build cache, outside the repo (default /var/cache/vessel)
#   CARGO          cargo executable (default cargo)
#   PROFILE        cargo profile for the vessel binary and agent (default release)
#   LAB_TIMEOUT    seconds before a lab run is killed (default 900, see tests/lab/run.sh)
#   BENCH_RUNS     runs per side in `make bench` (default 5, see tests/bench/bench.sh)
#   FUZZ_SECONDS   seconds `make fuzz` runs each target (default 60)
#   FUZZ_TARGETS   fuzz targets `make fuzz` runs (default: all, see fuzz/Cargo.toml)
#   SOAK_CYCLES    cycles `make soak` runs (default 1000; `make test` runs 50), see tests/soak/soak.sh
#   SOAK_ROUND     cycles per lab boot of `make soak` (default 250, see tests/soak/rounds.sh)
#   SOAK_TIMEOUT   seconds before one round's lab is killed (default 5400)
#   PREFIX         where `make install` puts vessel and its guest artefacts (default /usr/local)
#   DESTDIR        staging root prepended to PREFIX by `make install` (packagers; default empty)

SHELL        := /bin/bash
CARGO        ?= cargo
PROFILE      ?= release
VESSEL_CACHE ?= /var/cache/vessel
export VESSEL_CACHE

TARGET       := x86_64-unknown-linux-gnu
BUILD        := build
SHARE        := $(BUILD)/share/vessel
BIN          := $(BUILD)/bin
AGENT_BIN    := target/$(TARGET)/$(PROFILE)/vessel-agent
CMD          ?= uname -a
SOAK_CYCLES  ?= 1000
SOAK_ROUND   ?= 250
SOAK_TIMEOUT ?= 5400
PREFIX       ?= /usr/local
DESTDIR      ?=

# Debian packages the build, the lab and the tests need (`make deps` installs the missing ones).
DEB_PACKAGES := qemu-system-x86 linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio xz-utils \
                busybox-static debootstrap iproute2 util-linux strace \
                containerd podman conmon runc docker.io containernetworking-plugins iptables iperf3 curl \
                python3-grpcio python3-grpc-tools

.PHONY: all help deps vessel agent kernel lab-kernel initramfs artefacts install lab test test-unit test-lab test-lab-runner \
        lint demo bench fuzz soak clean probe-initramfs fixtures

all: artefacts

help:
	@echo "make deps        install missing Debian packages (idempotent)"
	@echo "make             build vessel, the guest kernel and the agent initramfs into $(BUILD)/"
	@echo "make install     vessel to \$$DESTDIR\$$PREFIX/bin, its guest kernel and initramfs to .../share/vessel (PREFIX=$(PREFIX))"
	@echo "make kernel      guest kernel (cached under $(VESSEL_CACHE)/kernel)"
	@echo "make lab-kernel  lab-host kernel (cached)"
	@echo "make lab CMD=..  run CMD inside the nested KVM lab"
	@echo "make test        every test layer: unit/host tests natively, end-to-end tests in the lab"
	@echo "make lint        rustfmt and clippy with -D warnings"
	@echo "make bench       Vessel vs QEMU microvm (boot, overhead, setup) and vs runc (create+start, state); ratios"
	@echo "make soak        the fault soak in the lab: SOAK_CYCLES (1000) cycles with faults in rounds of SOAK_ROUND (250), a table, leaks must be 0"
	@echo "make fuzz        libFuzzer on the frame decoder, vsock packets, virtio-net queues and virtio-fs requests, FUZZ_SECONDS each (stable Rust)"

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all present"; fi

vessel:
	$(CARGO) build --profile $(PROFILE) -p vessel
	@mkdir -p $(BIN)
	@cmp -s target/$(PROFILE)/vessel $(BIN)/vessel || install -m 0755 target/$(PROFILE)/vessel $(BIN)/vessel

# The agent is PID 1 in the guest: a static binary (crt-static, no NSS). --target keeps the
# static flags off build scripts and proc macros.
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile $(PROFILE) --target $(TARGET) -p vessel-agent

kernel:
	@dir=$$(kernel-config/build.sh guest) && mkdir -p $(SHARE) && \
	  { cmp -s $$dir/vmlinux $(SHARE)/vmlinux || install -m 0644 $$dir/vmlinux $(SHARE)/vmlinux; } && \
	  { cmp -s $$dir/config kernel-config/guest.config || cp $$dir/config kernel-config/guest.config; }

lab-kernel:
	@dir=$$(kernel-config/build.sh lab) && \
	  { cmp -s $$dir/config kernel-config/lab.config || cp $$dir/config kernel-config/lab.config; }

initramfs: agent
	@strip -o $(AGENT_BIN).stripped $(AGENT_BIN)
	@tests/lab/mkinitramfs.sh $(SHARE)/initramfs.cpio /init=$(AGENT_BIN).stripped

artefacts: vessel kernel initramfs

# The layout vessel looks in without environment variables: <prefix>/bin/vessel and
# <prefix>/share/vessel/{vmlinux,initramfs.cpio} (vessel_vmm::artefacts).
install: artefacts
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/vessel
	install -m 0755 $(BIN)/vessel $(DESTDIR)$(PREFIX)/bin/vessel
	install -m 0644 $(SHARE)/vmlinux $(SHARE)/initramfs.cpio $(DESTDIR)$(PREFIX)/share/vessel/

# Test-only guest init (tests/guest-probe) packed as /init of its own initramfs, for the VMM's
# lab tests (VESSEL_PROBE_INITRAMFS).
PROBE_BIN    := target/$(TARGET)/$(PROFILE)/vessel-guest-probe
probe-initramfs:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile $(PROFILE) --target $(TARGET) -p vessel-guest-probe
	@strip -o $(PROBE_BIN).stripped $(PROBE_BIN)
	@tests/lab/mkinitramfs.sh $(BUILD)/share/vessel-test/probe-initramfs.cpio /init=$(PROBE_BIN).stripped

# Real root file systems for bundles (cached under $(VESSEL_CACHE)/rootfs): BusyBox, and Debian
# bookworm minbase (debootstrap from the apt mirror; the lab has no network, so it is built here),
# and their image archives for containerd and podman ($(VESSEL_CACHE)/images, tests/compat/archives.sh).
fixtures:
	@tests/compat/archives.sh busybox >/dev/null
	@tests/compat/archives.sh debian >/dev/null

export CMD
lab: lab-kernel
	tests/lab/run.sh bash -c "$$CMD"

demo: deps artefacts lab-kernel
	tests/demo.sh

bench: artefacts lab-kernel fixtures
	tests/bench/bench.sh

test: deps test-unit test-lab-runner test-lab

test-lab-runner: lab-kernel
	tests/lab/selftest.sh

# Tests that cannot run here (no KVM, not root) print `<name>: skipped: <why>`; --show-output
# lets those lines through libtest's capture and tests/count-skips.sh counts them at the end.
test-unit:
	set -o pipefail; $(CARGO) test --workspace -- --show-output 2>&1 | tests/count-skips.sh

test-lab: artefacts lab-kernel probe-initramfs fixtures
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/target/lab-install PREFIX=/usr/local
	tests/lab/e2e.sh

# The fault soak (docs/testing.md, "The fault soak"); `make test` runs 50 cycles of it in its lab.
soak: artefacts lab-kernel fixtures
	SOAK_CYCLES=$(SOAK_CYCLES) SOAK_ROUND=$(SOAK_ROUND) SOAK_TIMEOUT=$(SOAK_TIMEOUT) tests/soak/rounds.sh

# Fuzzing on the stable toolchain (docs/testing.md, "Fuzzing"): libfuzzer-sys links libFuzzer,
# and these flags give it SanitizerCoverage (8-bit counters, PC table, comparison tracing)
# without nightly's -Zsanitizer. --target keeps them off build scripts and proc macros. Each
# target runs over its checked-in seeds (fuzz/corpus/<target>, read only) plus a working corpus
# under fuzz/target/corpus/<target>; a crash lands in fuzz/artifacts/<target>/ and fails the run.
FUZZ_SECONDS  ?= 60
FUZZ_TARGETS  ?= frame_decoder vsock_packet net_queues fs_requests
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
                  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
                  -Cllvm-args=-sanitizer-coverage-pc-table \
                  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing
fuzz:
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release --target $(TARGET) \
	  $(addprefix --bin ,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus/$$t fuzz/artifacts/$$t || exit 1; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  fuzz/target/$(TARGET)/release/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -rss_limit_mb=2048 -malloc_limit_mb=64 -print_final_stats=1 \
	    -artifact_prefix=fuzz/artifacts/$$t/ fuzz/target/corpus/$$t fuzz/corpus/$$t || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf $(BUILD)
	$(CARGO) clean
