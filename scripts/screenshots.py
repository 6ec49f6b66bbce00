"""Screenshots of the Dagster UI over a fresh demo, for the README: docs/img/{lineage,partition,model}.png.

    python scripts/screenshots.py              # runs the demo in a temporary home, then the UI over it
    python scripts/screenshots.py --home .recsys   # the UI over an existing demo's state

The same browser as the tests: Debian's chromium driven by Playwright (scripts/setup.sh --browser).
Images are cropped to what matters and stored as small palette PNGs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402 (Pillow comes with matplotlib)

from recsys_platform.batch.source import SourceDatabase  # noqa: E402
from recsys_platform.settings import Settings  # noqa: E402
from tests.browser import (  # noqa: E402
    LINEAGE_VIEWPORT,
    browser_page,
    dagster_ui,
    open_ui,
    run_demo,
    scroll_to_top,
    show_whole_lineage,
)

OUT = REPO / "docs" / "img"


def save(raw: Path, target: Path, box: tuple[int, int, int, int] | None = None, width: int = 1200) -> None:
    """Crop, scale to `width` and store as an optimised palette PNG (a README-sized file)."""
    image = Image.open(raw).convert("RGB")
    if box:
        image = image.crop(box)
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(f"{target.relative_to(REPO)}: {image.width}x{image.height}, {target.stat().st_size // 1024} KiB")


def take(home: Path, work: Path) -> None:
    customer = str(SourceDatabase(Settings.build(home=str(home)).source_url).customer_numbers()[5])
    with dagster_ui(home) as port:
        width, height = LINEAGE_VIEWPORT
        with browser_page(width, height) as page:
            open_ui(page, port, "/asset-groups")
            show_whole_lineage(page, width, height)
            page.screenshot(path=work / "lineage.png")
        # The graph's canvas, without the navigation and the asset tree on its left.
        save(work / "lineage.png", OUT / "lineage.png", (560, 110, width - 70, height - 60), width=1600)
        with browser_page(1400, 900) as page:
            open_ui(page, port, f"/assets/ratings_ml_training?view=partitions&partition={customer}")
            page.locator("tr", has_text="dagster/row_count").first.wait_for()
            scroll_to_top(page, "extraction")  # the run's last rows, then the partition's own
            page.screenshot(path=work / "partition.png")
            open_ui(page, port, "/assets/recommender_model")
            page.get_by_text("evaluation_plot", exact=True).first.wait_for()
            scroll_to_top(page, "evaluation")
            time.sleep(1.5)  # the plot image
            page.screenshot(path=work / "model.png")
        save(work / "partition.png", OUT / "partition.png", (230, 0, 1400, 900))
        save(work / "model.png", OUT / "model.png", (230, 0, 1400, 900))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="an existing demo's RECSYS_HOME (default: run the demo in a temporary one)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-shots-") as tmp:
        work = Path(tmp)
        home = Path(args.home).resolve() if args.home else work / "home"
        if not args.home:
            home.mkdir()
            demo = run_demo(home)
            if demo.returncode:
                print(demo.stdout[-2000:] + demo.stderr[-2000:], file=sys.stderr)
                return 1
        try:
            take(home, work)
        finally:
            if not args.home:
                from recsys_platform.vectors.embedded import stop_embedded

                stop_embedded(home / "pgdata")
    return 0


if __name__ == "__main__":
    sys.exit(main())
