"""Offline Data Docs: the CSS, JavaScript and fonts GX's pages load from CDNs, shipped in the repo.

GX 1.24's page templates (``great_expectations/render/view/templates/*.j2``) link Bootstrap, jQuery,
bootstrap-table, Font Awesome, Vega and the GX logo from public CDNs, so on a plant network without
internet access its pages render unstyled and its index (built by bootstrap-table in JavaScript) stays
empty. :func:`make_site_offline` copies the vendored files (``expectations/assets/``, the exact versions
the templates name, from the npm registry with their licences: ``assets/README.md``) into a built site
and rewrites those links to relative ones. Standard library only: the runner calls it once per run.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Final

__all__ = ["ASSETS_DIR", "CDN_ASSETS", "SITE_ASSETS", "make_site_offline", "remote_resources"]

logger = logging.getLogger(__name__)

ASSETS_DIR: Final = Path(__file__).with_name("assets")
#: Where a site carries its copy, next to GX's own ``static/`` files.
SITE_ASSETS: Final = "static/vendor"

_GX_WEB_ASSETS: Final = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"

#: Every remote resource GX 1.24's templates load -> its path in a built site. ``@5``/``@6`` (Vega) float
#: on jsDelivr; the copies pin the versions current when they were vendored (assets/README.md).
CDN_ASSETS: Final[dict[str, str]] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap@4.3.1/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap@4.3.1/js/bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark@1.1.0/css/bootstrap-prefers-dark.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker@1.9.0/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker@1.9.0/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free@6.6.0/css/all.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table@1.19.0/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table@1.19.0/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table@1.19.1/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table@1.19.1/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table@1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js@1.12.9/umd/popper.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/vega-embed.min.js",
}
_SITE_PATHS: Final = {url: f"{SITE_ASSETS}/{path}" for url, path in CDN_ASSETS.items()}
# The navbar logo: GX ships the same file in every site's static/images/.
_SITE_PATHS[_GX_WEB_ASSETS + "logo-long.png"] = "static/images/logo-long.png"

# A tag the browser fetches on load (an <a href> is a link, not a resource).
_RESOURCE_TAG: Final = re.compile(r"<(?:link|script|img)\b[^>]*>", re.IGNORECASE)
# Its remote URL (the query, e.g. GX's ?d=<timestamp> cache buster, apart).
_REMOTE_ATTRIBUTE: Final = re.compile(r'\b(src|href)="(https?://[^"?#]+)((?:[?#][^"]*)?)"')
# Subresource-integrity checks need a CORS fetch, which a page opened from file:// cannot make: Chromium then
# refuses the script. The copies are the very files those hashes name (the tests check them).
_CORS_ATTRIBUTES: Final = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"')
# A link into the site's static/ folder. GX 1.24 climbs one directory too few for the favicon of a validation
# page (a missing file, and a failed request); the depth is recomputed per page.
_STATIC_LINK: Final = re.compile(r'\b(src|href)="(?:\.\./)*static/')
# Tags whose src/href the browser fetches on load (an <a href> is a link, not a resource).
_REMOTE_RESOURCE: Final = re.compile(r'<(?:link|script|img)\b[^>]*?\b(?:src|href)="(https?://[^"]+)"', re.IGNORECASE)
# GX's stylesheet paints a dark-theme logo from its S3 bucket behind the navbar brand.
_CSS_LOGO: Final = re.compile(r"url\('" + re.escape(_GX_WEB_ASSETS) + r"[^']*'\)")
_GX_STYLES: Final = "static/styles/data_docs_default_styles.css"


def make_site_offline(site_dir: Path) -> int:
    """Copy the vendored assets into ``site_dir`` and point its pages at them; return the pages rewritten.

    Idempotent (a rebuilt site keeps its copy; pages already rewritten are left alone). A remote resource
    this table does not know (a GX upgrade added one) is logged, not guessed at.
    """
    _copy_assets(site_dir / SITE_ASSETS)
    styles = site_dir / _GX_STYLES
    if styles.is_file():
        css = styles.read_text(encoding="utf-8")
        offline = _CSS_LOGO.sub("url('../images/logo-long.png')", css)
        if offline != css:
            styles.write_text(offline, encoding="utf-8")
    rewritten = 0
    for page in site_dir.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        up = "../" * (len(page.relative_to(site_dir).parts) - 1)

        def local(tag: re.Match[str], up: str = up) -> str:
            found = _REMOTE_ATTRIBUTE.search(tag.group(0))
            path = _SITE_PATHS.get(found.group(2)) if found else None
            if found is None or path is None:
                return _STATIC_LINK.sub(lambda m: f'{m.group(1)}="{up}static/', tag.group(0))
            shipped = tag.group(0).replace(found.group(0), f'{found.group(1)}="{up}{path}"', 1)
            return _CORS_ATTRIBUTES.sub("", shipped)

        offline = _RESOURCE_TAG.sub(local, html)
        left = remote_resources(offline)
        if left:
            logger.warning("Data Docs: %s still loads %s from the internet (not vendored)", page.name, ", ".join(sorted(left)))
        if offline != html:
            page.write_text(offline, encoding="utf-8")
            rewritten += 1
    return rewritten


def remote_resources(html: str) -> set[str]:
    """URLs a page would fetch from the network on load (stylesheets, scripts, images)."""
    return set(_REMOTE_RESOURCE.findall(html))


def _copy_assets(target: Path) -> None:
    """Copy the vendored files into the site (~3.5 MB, a few ms); a rebuilt site keeps its copy.

    Copies, not hard links: a site is handed around (zipped, mailed) and must not share inodes with the repo.
    """
    for source in ASSETS_DIR.rglob("*"):
        if not source.is_file():
            continue
        destination = target / source.relative_to(ASSETS_DIR)
        if destination.is_file() and destination.stat().st_size == source.stat().st_size:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
