#!/bin/sh
# Remove what install.sh added: the app folder, the menu entry, the icons and the hearth command.
# Your models, conversations and settings (~/.local/share/Hearth, ~/.config/Hearth) are kept.
set -eu

if [ "$(id -u)" = 0 ] && [ -n "${PREFIX:-}" ]; then
    apps_dir=${PREFIX}/Hearth
    share=/usr/share
    bin_dir=/usr/local/bin
else
    apps_dir=${PREFIX:-${HOME}/.local/opt}/Hearth
    share=${XDG_DATA_HOME:-${HOME}/.local/share}
    bin_dir=${HOME}/.local/bin
fi
# The copy install.sh leaves inside the installed app knows where it is, whatever PREFIX was.
self_dir=$(cd "$(dirname "$0")" && pwd)
if [ -x "${self_dir}/hearth" ]; then
    apps_dir=${self_dir}
fi

rm -f "${share}/applications/hearth.desktop"
rm -f "${share}"/icons/hicolor/*/apps/hearth.png "${share}/icons/hicolor/scalable/apps/hearth.svg"
if [ -L "${bin_dir}/hearth" ] && [ "$(readlink "${bin_dir}/hearth")" = "${apps_dir}/hearth" ]; then
    rm -f "${bin_dir}/hearth"
fi
if [ -x "${apps_dir}/hearth" ]; then
    rm -rf "${apps_dir}"
fi
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "${share}/applications" || true
echo "Hearth was removed. Your models and conversations are still in ~/.local/share/Hearth."
