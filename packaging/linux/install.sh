#!/bin/sh
# Install Hearth for the current user: no root, no system files touched.
#   ./install.sh            copies Hearth to ~/.local/opt/Hearth, adds the menu entry, icons and ~/.local/bin/hearth
#   PREFIX=/opt ./install.sh (as root) installs for every user: /opt/Hearth, /usr/share/applications, ...
# Run ./uninstall.sh (kept next to the installed app) to remove everything again.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" = 0 ] && [ -n "${PREFIX:-}" ]; then
    apps_dir=${PREFIX}/Hearth
    share=/usr/share
    bin_dir=/usr/local/bin
else
    apps_dir=${PREFIX:-${HOME}/.local/opt}/Hearth
    share=${XDG_DATA_HOME:-${HOME}/.local/share}
    bin_dir=${HOME}/.local/bin
fi

if [ ! -x "${here}/Hearth/hearth" ]; then
    echo "install.sh: ${here}/Hearth/hearth is missing; unpack the whole archive first" >&2
    exit 1
fi

echo "Installing Hearth to ${apps_dir}"
mkdir -p "$(dirname "${apps_dir}")"
rm -rf "${apps_dir}.new"
cp -a "${here}/Hearth" "${apps_dir}.new"
cp "${here}/uninstall.sh" "${apps_dir}.new/uninstall.sh"
rm -rf "${apps_dir}"
mv "${apps_dir}.new" "${apps_dir}"

for png in "${here}"/icons/hearth-*.png; do
    size=$(basename "${png}" .png | sed 's/^hearth-//')
    mkdir -p "${share}/icons/hicolor/${size}x${size}/apps"
    cp "${png}" "${share}/icons/hicolor/${size}x${size}/apps/hearth.png"
done
mkdir -p "${share}/icons/hicolor/scalable/apps"
cp "${here}/icons/hearth.svg" "${share}/icons/hicolor/scalable/apps/hearth.svg"

mkdir -p "${share}/applications"
sed "s|@EXEC@|${apps_dir}/hearth|g" "${here}/hearth.desktop" > "${share}/applications/hearth.desktop"
chmod 644 "${share}/applications/hearth.desktop"

mkdir -p "${bin_dir}"
ln -sf "${apps_dir}/hearth" "${bin_dir}/hearth"

# Refresh the menu and icon caches where the tools exist (desktops also notice on their own).
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "${share}/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "${share}/icons/hicolor" || true

echo "Hearth is in your applications menu. From a terminal: ${bin_dir}/hearth (hearth --self-test checks it)."
