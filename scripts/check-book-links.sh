#!/usr/bin/env bash
# Checks every relative link and `#anchor` in the mdBook's HTML output (default: book/book, run
# `mdbook build book` first): each linked file must exist in the output, and each anchor must be
# an `id` (or `name`) in the page it points into. External links (http:, https:, mailto:, ...)
# are not fetched. Exits non-zero, listing every broken link, when one is found.
#
# Before checking, it checks itself on a tiny generated site with one good link, one missing
# page and one missing anchor: if it does not report exactly the broken two, it fails, so the
# check cannot silently pass everything.
#
#   bash scripts/check-book-links.sh [html-dir]
set -euo pipefail
cd "$(dirname "$0")/.."

check() {
  python3 - "$1" <<'PY'
import html.parser
import os
import sys
import urllib.parse

root = os.path.realpath(sys.argv[1])
if not os.path.isfile(os.path.join(root, "index.html")):
    sys.exit(f"{root}: no index.html; build the book first")

SKIP_SCHEMES = ("http:", "https:", "mailto:", "ftp:", "data:", "javascript:", "tel:")


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []  # (line, url)
        self.base = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "base" and attrs.get("href"):
            self.base = attrs["href"]
        for key in ("href", "src"):
            if tag in ("a", "link", "img", "script", "iframe") and attrs.get(key) is not None:
                self.links.append((self.getpos()[0], attrs[key]))


pages = {}
for dirpath, _, files in os.walk(root):
    for name in files:
        if name.endswith(".html"):
            path = os.path.join(dirpath, name)
            page = Page()
            with open(path, encoding="utf-8") as f:
                page.feed(f.read())
            pages[path] = page

broken = []
checked = 0
for path, page in sorted(pages.items()):
    here = os.path.dirname(path)
    if page.base is not None:
        # mdBook's 404 page sets `<base href="/">` (the site root) so its links work anywhere.
        base = page.base
        here = root if base.startswith("/") else os.path.normpath(os.path.join(here, base))
    for line, url in page.links:
        url = url.strip()
        if not url or url.lower().startswith(SKIP_SCHEMES) or url.startswith("//"):
            continue
        checked += 1
        parts = urllib.parse.urlsplit(url)
        target_path = urllib.parse.unquote(parts.path)
        fragment = urllib.parse.unquote(parts.fragment)
        if target_path == "":
            target = path
        elif target_path.startswith("/"):
            target = os.path.join(root, target_path.lstrip("/"))
        else:
            target = os.path.normpath(os.path.join(here, target_path))
        if os.path.isdir(target):
            target = os.path.join(target, "index.html")
        where = f"{os.path.relpath(path, root)}:{line}: {url}"
        if not os.path.realpath(target).startswith(root + os.sep):
            broken.append(f"{where}: points outside the book")
        elif not os.path.isfile(target):
            broken.append(f"{where}: no file {os.path.relpath(target, root)}")
        elif fragment and target.endswith(".html"):
            ids = pages[os.path.realpath(target)].ids if os.path.realpath(target) in pages else set()
            if fragment not in ids:
                broken.append(f"{where}: no anchor #{fragment} in {os.path.relpath(target, root)}")

for line in broken:
    print(f"broken link: {line}")
if broken:
    sys.exit(f"{len(broken)} broken link(s) in {root}")
print(f"{checked} links in {len(pages)} pages checked, none broken")
PY
}

# The self-test: a good link and a good anchor pass; a missing page and a missing anchor fail.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
mkdir -p "$site/sub"
cat > "$site/index.html" <<'HTML'
<html><body><h1 id="top">Top</h1>
<a href="sub/page.html#here">good</a> <a href="#top">good</a> <a href="https://example.com/x">external</a>
</body></html>
HTML
cat > "$site/sub/page.html" <<'HTML'
<html><body><h2 id="here">Here</h2><a href="../index.html">good</a></body></html>
HTML
check "$site" > /dev/null || { echo "self-test failed: a site without broken links did not pass" >&2; exit 1; }
echo '<a href="missing.html">bad</a> <a href="sub/page.html#nowhere">bad</a>' >> "$site/index.html"
if output=$(check "$site" 2>&1); then
  echo "self-test failed: broken links were not reported" >&2
  exit 1
fi
for expected in "no file missing.html" "no anchor #nowhere in sub/page.html"; do
  grep -qF "$expected" <<< "$output" || { echo "self-test failed: missing '$expected' in: $output" >&2; exit 1; }
done

check "${1:-book/book}"
