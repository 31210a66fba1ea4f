#!/bin/bash
# The Debian packages (packaging/README.md): build them with
# packaging/build-deb.sh, check what each one holds with dpkg-deb (binaries,
# units, man pages, conffiles, the library's soname link, the pkg-config
# file), lint the units with systemd-analyze verify, unpack everything into
# a clean root with dpkg -x (the real system is not touched), run the
# binaries from there, check that the shipped configs are what the shipped
# binaries generate, and build and run a small program against libdvs-dev
# through pkg-config.
#
# Skipped (with the reason) when dpkg-buildpackage or debhelper is missing;
# tools/deps.sh installs them. DVS_TEST_DEBS=DIR reuses packages built before
# into DIR instead of building (for quick reruns).
. "$(dirname "$0")/lib.sh"

for tool in dpkg-buildpackage dpkg-deb dh; do
    if ! command -v "$tool" >/dev/null; then
        echo "1..0 # SKIP $tool not found (install dpkg-dev and debhelper: . tools/deps.sh && dvs_install_deps)"
        exit 0
    fi
done

MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
VERSION=$(dpkg-parsechangelog -l "$DVS_SRCDIR/packaging/debian/changelog" -S Version)
DEBS=${DVS_TEST_DEBS:-$T/debs}

# --- Build -----------------------------------------------------------------

if [ -z "${DVS_TEST_DEBS:-}" ]; then
    start=$(now_ms)
    if DEB_BUILD_OPTIONS="parallel=$(nproc) nocheck noddebs" \
        bash "$DVS_SRCDIR/packaging/build-deb.sh" "$DEBS" >"$T/build.log" 2>&1; then
        ok "dpkg-buildpackage -us -uc -b builds (packaging/build-deb.sh)"
    else
        not_ok "dpkg-buildpackage -us -uc -b builds (packaging/build-deb.sh)"
        tail -n 30 "$T/build.log" | sed 's/^/# /'
        bail "no packages to check"
    fi
    diag "package build took $(( ($(now_ms) - start) / 1000 )) s"
fi

deb() { echo "$DEBS/${1}_${VERSION}_$ARCH.deb"; }
for p in dvs-manager dvs-node libdvs0 libdvs-dev dvs-examples; do
    check "package $p was built" test -f "$(deb "$p")"
done

# --- Contents --------------------------------------------------------------

# has PACKAGE PATH...: every PATH is in the package (dpkg-deb -c).
has() {
    local p=$1 f; shift
    dpkg-deb -c "$(deb "$p")" | awk '{print $6}' >"$T/$p.list" || return 1
    for f in "$@"; do
        grep -qxF "./$f" "$T/$p.list" || { diag "$p lacks $f"; return 1; }
    done
}
check "dvs-manager holds the binary, unit, config, man page and sysusers file" \
    has dvs-manager usr/bin/dvs-manager lib/systemd/system/dvs-manager.service \
    etc/dvs/manager.conf usr/share/man/man1/dvs-manager.1.gz \
    usr/lib/sysusers.d/dvs-manager.conf
check "dvs-node holds the binary, unit, config, man page and sysusers file" \
    has dvs-node usr/bin/dvs-node lib/systemd/system/dvs-node.service \
    etc/dvs/node.conf usr/share/man/man8/dvs-node.8.gz usr/lib/sysusers.d/dvs-node.conf
check "libdvs0 holds the shared library" has libdvs0 "usr/lib/$MA/libdvs.so.0.0.0"
check "libdvs-dev holds dvs.h, libdvs.so, libdvs.pc and libdvs(3)" \
    has libdvs-dev usr/include/dvs.h "usr/lib/$MA/libdvs.so" \
    "usr/lib/$MA/pkgconfig/libdvs.pc" usr/share/man/man3/libdvs.3.gz
check "dvs-examples holds dvs-kv and dvs-kv-client" \
    has dvs-examples usr/bin/dvs-kv usr/bin/dvs-kv-client

symlink_to() { dpkg-deb -c "$(deb "$1")" | grep -qE " \./$2 -> $3\$"; }
check "libdvs0 has the soname link libdvs.so.0 -> libdvs.so.0.0.0" \
    symlink_to libdvs0 "usr/lib/$MA/libdvs.so.0" libdvs.so.0.0.0
check "libdvs-dev has the link libdvs.so -> libdvs.so.0.0.0" \
    symlink_to libdvs-dev "usr/lib/$MA/libdvs.so" libdvs.so.0.0.0
no_la() { ! grep -q '\.la$' "$T/libdvs-dev.list" "$T/libdvs0.list"; }
check "no libtool archive is shipped" no_la

# ctl PACKAGE FILE: a control file of the package (conffiles, postinst...).
ctl() { dpkg-deb --ctrl-tarfile "$(deb "$1")" | tar -xOf - "./$2" 2>/dev/null; }
check "manager.conf is a conffile of dvs-manager" \
    quiet grep -qx /etc/dvs/manager.conf <(ctl dvs-manager conffiles)
check "node.conf is a conffile of dvs-node" \
    quiet grep -qx /etc/dvs/node.conf <(ctl dvs-node conffiles)
for p in dvs-manager dvs-node; do
    check "$p's postinst creates the dvs user (systemd-sysusers)" \
        grep -q "systemd-sysusers.*$p.conf" <(ctl "$p" postinst)
done
# dh_installsystemd --no-enable --no-start: the postinst starts nothing, and
# enables the unit again on upgrades only if the admin had enabled it.
not_started() {
    local s
    s=$(ctl "$1" postinst)
    ! grep -q "deb-systemd-invoke" <<<"$s" &&
        grep -q "if deb-systemd-helper debian-installed '$1.service'" <<<"$s"
}
for p in dvs-manager dvs-node; do
    check "$p's postinst neither enables nor starts the unit before it is configured" \
        not_started "$p"
done
check "the daemons depend on libdvs0 through shlibs" \
    grep -q 'libdvs0 (>= ' <(dpkg-deb -f "$(deb dvs-manager)" Depends; dpkg-deb -f "$(deb dvs-node)" Depends)
check "libdvs0 declares its shlibs" grep -q '^libdvs 0 libdvs0' <(ctl libdvs0 shlibs)

# --- A clean root ----------------------------------------------------------

ROOT=$T/root
mkdir -p "$ROOT"
for p in dvs-manager dvs-node libdvs0 libdvs-dev dvs-examples; do
    dpkg -x "$(deb "$p")" "$ROOT" || bail "dpkg -x $p failed"
done
LIBDIR=$ROOT/usr/lib/$MA
inroot() { LD_LIBRARY_PATH=$LIBDIR "$@"; }

uses_root_lib() { inroot ldd "$ROOT/usr/bin/$1" | grep -q "libdvs.so.0 => $LIBDIR/libdvs.so.0"; }
for b in dvs-manager dvs-node dvs-kv dvs-kv-client; do
    check "$b from the root loads the root's libdvs.so.0" uses_root_lib "$b"
done
check "dvs-manager --help runs from the root" \
    quiet grep -q "serve" <(inroot "$ROOT/usr/bin/dvs-manager" --help 2>&1)
check "dvs-node --version runs from the root" \
    grep -qx "dvs-node $VERSION" <(inroot "$ROOT/usr/bin/dvs-node" --version)

# The exported symbols are the public API, all of it in libdvs(3).
inroot nm -D --defined-only "$LIBDIR/libdvs.so.0" | awk '$2 == "T" {print $3}' | sort >"$T/exports"
check "libdvs.so.0 exports dvs_* functions only" \
    bash -c '[ -s "$1" ] && ! grep -qv "^dvs_" "$1"' _ "$T/exports"
grep -o 'DVS_API [^(]*(' "$DVS_SRCDIR/libdvs/dvs.h" | grep -o 'dvs_[a-z_]*(' | tr -d '(' |
    sort >"$T/declared"
check "the exported functions are exactly those dvs.h declares" diff "$T/declared" "$T/exports"
in_manpage() {
    local f missing=0
    zcat "$ROOT/usr/share/man/man3/libdvs.3.gz" >"$T/libdvs.3"
    while read -r f; do
        grep -q "$f" "$T/libdvs.3" || { diag "libdvs(3) does not mention $f"; missing=1; }
    done <"$T/exports"
    return $missing
}
check "libdvs(3) mentions every exported function" in_manpage
man_ok() { zcat "$1" | groff -man -Tutf8 -ww -z 2>&1 | { ! grep -q .; }; }
if command -v groff >/dev/null; then
    for m in man1/dvs-manager.1.gz man8/dvs-node.8.gz man3/libdvs.3.gz; do
        check "$m formats without groff warnings" man_ok "$ROOT/usr/share/man/$m"
    done
else
    ok "man pages format # SKIP groff not found"
fi

# The shipped configs are what the shipped binaries generate, and they load.
for d in manager node; do
    gen() { inroot "$ROOT/usr/bin/dvs-$d" serve --print-config --data-dir "/var/lib/dvs-$d"; }
    check "$d.conf is what 'dvs-$d serve --print-config' prints" \
        diff "$ROOT/etc/dvs/$d.conf" <(gen)
done
# With the shipped file alone, the daemons stop at the first required option
# it leaves to the operator: proof that every line of the file parsed.
stops_at_id() {
    local out
    out=$(inroot "$ROOT/usr/bin/$1" serve --config "$ROOT/etc/dvs/$2" 2>&1)
    [ $? -eq 2 ] && grep -q "missing required option --id" <<<"$out"
}
check "dvs-manager reads the shipped manager.conf" stops_at_id dvs-manager manager.conf
check "dvs-node reads the shipped node.conf" stops_at_id dvs-node node.conf
check "manager.conf puts the data directory in the unit's StateDirectory" \
    grep -qx "data-dir = /var/lib/dvs-manager" "$ROOT/etc/dvs/manager.conf"
check "node.conf puts the data directory in the unit's StateDirectory" \
    grep -qx "data-dir = /var/lib/dvs-node" "$ROOT/etc/dvs/node.conf"

# --- The units ---------------------------------------------------------------

for u in dvs-manager dvs-node; do
    check "$u.service runs the packaged binary with the packaged config" \
        grep -qx "ExecStart=/usr/bin/$u serve --config /etc/dvs/${u#dvs-}.conf" \
        "$ROOT/lib/systemd/system/$u.service"
done
check "dvs-node.service does not filter userfaultfd" \
    grep -qx "SystemCallFilter=@system-service userfaultfd" "$ROOT/lib/systemd/system/dvs-node.service"
if command -v systemd-analyze >/dev/null; then
    # The unit as installed, but with ExecStart= pointing into the root (verify
    # checks that the binary exists) and man pages looked up there
    # (Documentation=). verify exits 0 on mere warnings (unknown keys or
    # system call groups): any output counts as a failure.
    mkdir -p "$T/units"
    for u in dvs-manager dvs-node; do
        sed "s|^ExecStart=/usr/bin/|ExecStart=$ROOT/usr/bin/|" \
            "$ROOT/lib/systemd/system/$u.service" >"$T/units/$u.service"
        verify() {
            MANPATH=$ROOT/usr/share/man systemd-analyze verify "$T/units/$u.service" \
                >"$T/verify-$u.log" 2>&1 && ! grep -q . "$T/verify-$u.log"
        }
        if verify; then
            ok "systemd-analyze verify $u.service"
        else
            not_ok "systemd-analyze verify $u.service"
            sed 's/^/# /' "$T/verify-$u.log"
        fi
    done
else
    ok "systemd-analyze verify # SKIP systemd-analyze not found"
fi

# --- Building against libdvs-dev -------------------------------------------

cat >"$T/hello.c" <<'EOF'
#include <dvs.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } while (0)

int main(void)
{
    if (dvs_version() != DVS_VERSION_HEX)
        FAIL("linked version %x, header %x", dvs_version(), DVS_VERSION_HEX);
    if (strcmp(dvs_err_name(DVS_ENOTFOUND), "DVS_ENOTFOUND") != 0)
        FAIL("dvs_err_name: %s", dvs_err_name(DVS_ENOTFOUND));
    dvs_arena *a;
    int rv = dvs_arena_create((uintptr_t)0x7e5000000000ull, 1 << 20, &a);
    if (rv != 0)
        FAIL("dvs_arena_create: %s", dvs_strerror(rv));
    char *s = dvs_arena_alloc(a, 32);
    if (!s || !dvs_arena_contains(a, s, 32) || dvs_arena_set_root(a, s) != 0 ||
        dvs_arena_root(a) != s)
        FAIL("arena allocation or root");
    strcpy(s, "arena ok");
    dvs_client *c;
    rv = dvs_client_create("not a url", NULL, &c);
    if (rv != -EINVAL)
        FAIL("dvs_client_create(\"not a url\") = %d, want -EINVAL", rv);
    printf("%s, libdvs %u.%u.%u\n", s, dvs_version() >> 16, (dvs_version() >> 8) & 0xff,
           dvs_version() & 0xff);
    dvs_arena_close(a);
    return 0;
}
EOF
# PKG_CONFIG_SYSROOT_DIR maps the .pc's /usr paths into the root; the -I and
# -L for /usr are then no longer system paths, so keep them.
pcrun() {
    PKG_CONFIG_PATH=$LIBDIR/pkgconfig PKG_CONFIG_SYSROOT_DIR=$ROOT \
        PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1 pkg-config "$@"
}
check "pkg-config finds libdvs $VERSION in the root" grep -qx "$VERSION" <(pcrun --modversion libdvs)
build_hello() {
    # shellcheck disable=SC2046
    cc -std=c11 -Wall -Werror -o "$T/hello" "$T/hello.c" $(pcrun --cflags --libs libdvs) \
        >"$T/cc.log" 2>&1 || { sed 's/^/# /' "$T/cc.log"; return 1; }
}
check "a program builds against libdvs-dev with pkg-config --cflags --libs libdvs" build_hello
check "it runs against the root's libdvs.so.0" \
    grep -qx "arena ok, libdvs $VERSION" <(inroot "$T/hello")
check "it loads libdvs.so.0 from the root" \
    grep -q "libdvs.so.0 => $LIBDIR/libdvs.so.0" <(inroot ldd "$T/hello")

done_testing
