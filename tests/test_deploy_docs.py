"""The two READMEs stay in step, and their deploy buttons point at the repository in the form each host needs."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.relay_server import ROOT

READMES = ("README.md", "README.zh-CN.md")
FENCE = re.compile(r"^```[^\n]*\n.*?^```", flags=re.S | re.M)


def outline(text: str) -> tuple[list[int], list[int], list[str]]:
    """(heading levels, the number of cells on each table line, the code blocks), in order."""
    prose = FENCE.sub("", text).splitlines()
    headings = [len(line) - len(line.lstrip("#")) for line in prose if re.match(r"#+ ", line)]
    tables = [line.count("|") for line in prose if line.startswith("|")]
    return headings, tables, FENCE.findall(text)


def test_the_chinese_readme_has_the_same_headings_tables_and_code_blocks():
    english, chinese = (outline((ROOT / name).read_text()) for name in READMES)
    assert english[0] == chinese[0], "headings"
    assert english[1] == chinese[1], "table lines"
    assert english[2] == chinese[2], "code blocks"


@pytest.mark.parametrize("name", READMES)
def test_deploy_buttons_name_the_fork_as_each_host_expects(name):
    links = dict(re.findall(r"\[!\[([^\]]+)\]\([^)]*\)\]\(([^)]+)\)", (ROOT / name).read_text()))
    repository = "https://github.com/OWNER/openai-relay"
    vercel, heroku, render = (urlsplit(links[f"Deploy {to}"]) for to in ("with Vercel", "to Heroku", "to Render"))
    assert vercel.netloc == "vercel.com" and parse_qs(vercel.query)["repository-url"] == [repository]
    # Heroku no longer reads the referrer: the repository goes in `template`.
    assert (heroku.netloc, heroku.path) == ("www.heroku.com", "/deploy")
    assert unquote(parse_qs(heroku.query)["template"][0]) == repository
    assert render.netloc == "render.com" and parse_qs(render.query)["repo"] == [repository]
