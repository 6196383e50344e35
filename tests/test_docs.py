"""The front door and the docs tell the truth: the README's links resolve, and what docs/apis.md says each API
answers for bad input is what the gateway's OpenAPI schema declares, route by route."""

from __future__ import annotations

import re

from fake_pb_utils import REPO

from bge_m3_gateway.app import create_app
from bge_m3_gateway.errors import style_for
from bge_m3_gateway.settings import GatewaySettings

LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_is_a_front_door() -> None:
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 350
    first_screen = "\n".join(lines[:30])
    assert "scripts/serve.sh" in first_screen and "scripts/test.sh" in first_screen
    for target, _ in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def test_the_bad_input_table_matches_the_schema() -> None:
    page = (REPO / "docs" / "apis.md").read_text()
    table = page[page.index("| what is wrong |"):].split("\n\n")[0].splitlines()
    styles = ["openai", "tei", "cohere", "sketch"]  # the table's columns, in order
    documented: dict[str, set[int]] = {style: set() for style in styles}
    for row in table[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        for style, cell in zip(styles, cells):
            documented[style].add(int(cell.split()[0]))
    schema = create_app(GatewaySettings()).openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method != "post":
                continue
            declared = {int(status) for status in operation["responses"] if status != "200"}
            style = style_for(path)
            assert declared == documented[style], (path, style, declared, documented[style])
