#!/usr/bin/env bash
# Builds the book in docs/ with mdbook (installed once from crates.io into the cache when
# missing), then fails on a broken internal link: in the built book every relative link must
# reach a page and every #anchor an id on it; in README.md every relative link must reach a file
# of the checkout and every #anchor a heading of the page it names.
#   scripts/book.sh             build into a temporary directory, check, remove it
#   BOOK_DIR=DIR scripts/book.sh  build into DIR and keep it (to read: open DIR/index.html)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# 0.4.52: the newest mdbook whose rust-version (1.82) is within this crate's (1.85); 0.5 needs
# 1.88. Default features off: they are `serve`, `watch` and `search`; `build` needs none of them.
MDBOOK_VERSION=0.4.52
root="${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/mdbook"
mdbook="$root/bin/mdbook"
if ! { [ -x "$mdbook" ] && "$mdbook" --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; }; then
  log "installing mdbook $MDBOOK_VERSION into $root (once; a few minutes)"
  # Not into the project's CARGO_TARGET_DIR: cargo install then builds in a temporary one.
  env -u CARGO_TARGET_DIR cargo install --locked --quiet mdbook --version "$MDBOOK_VERSION" \
    --no-default-features --root "$root"
fi

if [ -n "${BOOK_DIR:-}" ]; then
  out="$BOOK_DIR"
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
log "mdbook build docs -> $out"
"$mdbook" build docs --dest-dir "$(realpath "$out")"

broken=0
fail() { printf 'broken link: %s\n' "$*" >&2; broken=$((broken + 1)); }

# The ids a built page offers (headings, and anything else with an id).
ids_of() { grep -o ' id="[^"]*"' "$1" | sed 's/^ id="//; s/"$//'; }

# The anchor GitHub and mdbook give a markdown heading: its text without markup, lower-case,
# spaces to '-', punctuation other than '-' and '_' dropped.
md_anchors() {
  grep -E '^#{1,6} ' "$1" | sed -E 's/^#+ +//; s/\[([^]]*)\]\([^)]*\)/\1/g; s/`//g' |
    tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9 _-]//g; s/ /-/g'
}

# 1. The built book: every href that is not absolute (scheme, //) must reach a file of the book,
# and its #fragment an id there. print.html (links rewritten into one page) and 404.html (served
# from the site root) are generated from the same pages and are not checked again.
while IFS= read -r page; do
  dir=$(dirname "$page")
  for href in $(grep -o ' href="[^"]*"' "$page" | sed 's/^ href="//; s/"$//' | sort -u); do
    case "$href" in
      *:* | //*) continue ;;
    esac
    path=${href%%#*}
    path=${path%%\?*}
    frag=
    [ "$href" != "${href#*#}" ] && frag=${href#*#}
    if [ -z "$path" ]; then target=$page; else target="$dir/$path"; fi
    [ -d "$target" ] && target="$target/index.html"
    if [ ! -f "$target" ]; then
      fail "${page#"$out"/}: $href (not a page of the built book)"
    elif [ -n "$frag" ] && ! ids_of "$target" | grep -qxF "$frag"; then
      fail "${page#"$out"/}: $href (no id \"$frag\" on ${target#"$out"/})"
    fi
  done
done < <(find "$out" -name '*.html' ! -name print.html ! -name 404.html ! -name toc.html)

# 2. README.md, as a forge renders it: relative links to files of the checkout; anchors into a
# book page are checked against the built page's ids, anchors into the README against its headings.
for link in $(grep -oE '\]\([^) ]+\)' README.md | sed -E 's/^\]\(//; s/\)$//' | sort -u); do
  case "$link" in
    *:* | //*) continue ;;
  esac
  path=${link%%#*}
  frag=
  [ "$link" != "${link#*#}" ] && frag=${link#*#}
  if [ -n "$path" ] && [ ! -e "$path" ]; then
    fail "README.md: $link (no such file)"
  elif [ -n "$frag" ]; then
    case "$path" in
      '') md_anchors README.md | grep -qxF "$frag" || fail "README.md: $link (no such heading)" ;;
      docs/src/*.md)
        page="$out/${path#docs/src/}"
        page="${page%.md}.html"
        [ "${path##*/}" = README.md ] && page="$(dirname "$page")/index.html"
        ids_of "$page" | grep -qxF "$frag" || fail "README.md: $link (no id \"$frag\" in the built page)"
        ;;
      *.md) md_anchors "$path" | grep -qxF "$frag" || fail "README.md: $link (no such heading)" ;;
    esac
  fi
done

if [ "$broken" -gt 0 ]; then
  log "$broken broken link(s)"
  exit 1
fi
log "book built, every internal link resolves"
