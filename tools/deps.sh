# Sourced by tools/check.sh and tools/demo.sh: install what a fresh Debian 12
# machine lacks to build and test DVS. Needs root or sudo; does nothing when
# everything is already there.
DVS_DEB_PACKAGES="build-essential autoconf automake libtool pkg-config
 libraft-dev libuv1-dev libsqlite3-dev libcurl4-openssl-dev libcmocka-dev
 libmicrohttpd-dev libjansson-dev libxxhash-dev libgnutls28-dev jq curl iproute2 procps openssl nftables util-linux
 clang libclang-rt-14-dev"

# Packaging (packaging/README.md, tests/integration/packaging.sh): debhelper
# and dpkg-dev build the .deb files; systemd brings systemd-analyze.
DVS_DEB_PACKAGES+=" debhelper dpkg-dev fakeroot systemd"

dvs_install_deps() {
    local missing=()
    for p in $DVS_DEB_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install ${missing[*]}" >&2; return 1; }
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Configure and build in DIR with extra configure flags; prints progress.
dvs_build() {
    local dir=$1; shift
    local top; top=$(pwd)
    [ -x configure ] || autoreconf -fi >/dev/null
    mkdir -p "$dir"
    ( cd "$dir" && { [ -f Makefile ] || "$top/configure" -q "$@"; } && make -j"$(nproc)" >/dev/null )
}
