# The C library (libshmem, libshmem_compat) and the `shmem` command, built and installed the
# GNU way:
#
#   make                      release build of everything below
#   sudo make install         into PREFIX (default /usr/local), then run `sudo ldconfig`
#   make install PREFIX=$HOME/.local DESTDIR=/tmp/stage
#   make uninstall            removes what `make install` installed (same variables)
#   make check                runs the tests (`cargo test --workspace`)
#   make clean                removes what this Makefile made (cargo's own output stays)
#
# Installs INCLUDEDIR/shmem.h and shmem_compat.h; LIBDIR/libshmem.so.MAJOR.MINOR.PATCH (SONAME
# libshmem.so.MAJOR) with the libshmem.so.MAJOR and libshmem.so symlinks, libshmem.a, the same
# for libshmem_compat, and LIBDIR/pkgconfig/shmem.pc and shmem-compat.pc; BINDIR/shmem.
#
# Variables: PREFIX, DESTDIR, BINDIR, LIBDIR, INCLUDEDIR, PKGCONFIGDIR; PROFILE (cargo profile,
# default release); CARGO, CC, AR, CFLAGS, INSTALL. Cargo's target directory is whatever cargo
# uses (CARGO_TARGET_DIR, a .cargo/config.toml), so builds with CARGO_TARGET_DIR set work.
#
# What is built where: cargo builds libshmem.so/.a (crates/shmem-ffi, SONAME set by its
# build.rs) and the command; this Makefile copies the library into $(BUILD) under its versioned
# name with the symlinks a program needs at run time, records the static library's link flags
# (`cargo rustc -- --print native-static-libs`, for Libs.private), and compiles libshmem_compat
# (compat/shmem_compat.c) against it. `make install` does not build again what `make` built, so
# it can run under sudo without cargo.

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
FFI  := $(ROOT)/crates/shmem-ffi

PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR      ?=

PROFILE ?= release
CARGO   ?= cargo
INSTALL ?= install
CFLAGS  ?= -O2 -g

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(FFI)/Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))

# Cargo's target directory, as cargo itself resolves it.
TARGET_DIR ?= $(shell cd $(ROOT) && $(CARGO) metadata --format-version 1 --no-deps \
                | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
ifeq ($(TARGET_DIR),)
$(error could not ask cargo for its target directory: is cargo installed?)
endif
PROFILE_DIR := $(if $(filter dev test,$(PROFILE)),debug,$(if $(filter bench,$(PROFILE)),release,$(PROFILE)))
CARGO_OUT   := $(TARGET_DIR)/$(PROFILE_DIR)
BUILD       := $(CARGO_OUT)/capi

SO        := libshmem.so.$(VERSION)
COMPAT_SO := libshmem_compat.so.$(VERSION)
HEADERS   := $(FFI)/include/shmem.h $(FFI)/include/shmem_compat.h
COMPAT_CFLAGS := -std=c11 -Wall -Wextra -fPIC -pthread -I$(FFI)/include

LIB_FILES := $(BUILD)/$(SO) $(BUILD)/libshmem.so.$(MAJOR) $(BUILD)/libshmem.so \
             $(BUILD)/libshmem.a $(BUILD)/native-static-libs \
             $(BUILD)/$(COMPAT_SO) $(BUILD)/libshmem_compat.so.$(MAJOR) \
             $(BUILD)/libshmem_compat.so $(BUILD)/libshmem_compat.a

all: lib cli

# Cargo decides what is out of date, so it always runs; files are replaced only when they
# changed (and by rename, never rewritten under a program that has them mapped).
lib:
	@mkdir -p $(BUILD)
	cd $(ROOT) && $(CARGO) rustc --lib -p shmem-ffi --profile $(PROFILE) \
	    --target-dir $(TARGET_DIR) -- --print native-static-libs 2> $(BUILD)/rustc.log \
	    || { cat $(BUILD)/rustc.log >&2; exit 1; }
	sed -n 's/^note: native-static-libs: //p' $(BUILD)/rustc.log > $(BUILD)/native-static-libs.new
	@test -s $(BUILD)/native-static-libs.new \
	    || { echo "cargo printed no native-static-libs line:" >&2; cat $(BUILD)/rustc.log >&2; exit 1; }
	@$(call replace,$(BUILD)/native-static-libs.new,$(BUILD)/native-static-libs)
	@$(call update,$(CARGO_OUT)/libshmem.so,$(BUILD)/$(SO))
	@$(call update,$(CARGO_OUT)/libshmem.a,$(BUILD)/libshmem.a)
	@$(MAKE) --no-print-directory -f $(ROOT)/Makefile TARGET_DIR=$(TARGET_DIR) PROFILE=$(PROFILE) lib-files

# replace NEW OLD: move NEW over OLD unless they are the same; update SRC DST: copy.
replace = if cmp -s $(1) $(2); then rm -f $(1); else mv -f $(1) $(2); fi
update  = cp -f $(1) $(2).new && $(call replace,$(2).new,$(2))

lib-files: $(LIB_FILES)

$(BUILD)/libshmem.so.$(MAJOR): $(BUILD)/$(SO)
	ln -sfn $(SO) $@
$(BUILD)/libshmem.so: $(BUILD)/libshmem.so.$(MAJOR)
	ln -sfn libshmem.so.$(MAJOR) $@

$(BUILD)/shmem_compat.o: $(FFI)/compat/shmem_compat.c $(HEADERS)
	$(CC) $(COMPAT_CFLAGS) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# Linked with libshmem (NEEDED libshmem.so.MAJOR), found next to it at run time ($ORIGIN).
$(BUILD)/$(COMPAT_SO): $(BUILD)/shmem_compat.o $(BUILD)/libshmem.so
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -pthread -Wl,-soname,libshmem_compat.so.$(MAJOR) \
	    -Wl,-rpath,'$$ORIGIN' -o $@.new $< -L$(BUILD) -lshmem
	mv -f $@.new $@
$(BUILD)/libshmem_compat.so.$(MAJOR): $(BUILD)/$(COMPAT_SO)
	ln -sfn $(COMPAT_SO) $@
$(BUILD)/libshmem_compat.so: $(BUILD)/libshmem_compat.so.$(MAJOR)
	ln -sfn libshmem_compat.so.$(MAJOR) $@
$(BUILD)/libshmem_compat.a: $(BUILD)/shmem_compat.o
	rm -f $@.new && $(AR) rcs $@.new $< && mv -f $@.new $@

cli:
	cd $(ROOT) && $(CARGO) build -p shmem-cli --profile $(PROFILE) --target-dir $(TARGET_DIR)

# Fill in a pkg-config template: $(call pc,TEMPLATE,OUTPUT).
pc = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
         -e 's|@VERSION@|$(VERSION)|' -e "s|@NATIVE_STATIC_LIBS@|$$(cat $(BUILD)/native-static-libs)|" \
         $(1) > $(2)

INSTALLED := $(INCLUDEDIR)/shmem.h $(INCLUDEDIR)/shmem_compat.h \
             $(LIBDIR)/$(SO) $(LIBDIR)/libshmem.so.$(MAJOR) $(LIBDIR)/libshmem.so $(LIBDIR)/libshmem.a \
             $(LIBDIR)/$(COMPAT_SO) $(LIBDIR)/libshmem_compat.so.$(MAJOR) $(LIBDIR)/libshmem_compat.so \
             $(LIBDIR)/libshmem_compat.a $(PKGCONFIGDIR)/shmem.pc $(PKGCONFIGDIR)/shmem-compat.pc \
             $(BINDIR)/shmem

# Builds only what is missing (run `make` first after a change).
install: | $(if $(filter-out $(wildcard $(LIB_FILES)),$(LIB_FILES)),lib) $(if $(wildcard $(CARGO_OUT)/shmem),,cli)
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 644 $(HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 755 $(BUILD)/$(SO) $(BUILD)/$(COMPAT_SO) $(DESTDIR)$(LIBDIR)/
	ln -sfn $(SO) $(DESTDIR)$(LIBDIR)/libshmem.so.$(MAJOR)
	ln -sfn libshmem.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libshmem.so
	ln -sfn $(COMPAT_SO) $(DESTDIR)$(LIBDIR)/libshmem_compat.so.$(MAJOR)
	ln -sfn libshmem_compat.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libshmem_compat.so
	$(INSTALL) -m 644 $(BUILD)/libshmem.a $(BUILD)/libshmem_compat.a $(DESTDIR)$(LIBDIR)/
	$(call pc,$(FFI)/shmem.pc.in,$(DESTDIR)$(PKGCONFIGDIR)/shmem.pc)
	$(call pc,$(FFI)/shmem-compat.pc.in,$(DESTDIR)$(PKGCONFIGDIR)/shmem-compat.pc)
	$(INSTALL) -m 755 $(CARGO_OUT)/shmem $(DESTDIR)$(BINDIR)/shmem

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

check:
	cd $(ROOT) && $(CARGO) test --workspace

clean:
	rm -rf $(BUILD)

# Where the built libraries are, for examples/c/Makefile.
print-build:
	@echo $(BUILD)

.PHONY: all lib lib-files cli install uninstall check clean print-build
