"""Plan pictures (`plan.picture(dst_rank)`, `kvplan plan --svg`): the SVG parses, and its
rectangles cover exactly the plan's byte ranges: for every layer of a drawn class, the
layer's reads are the class's rectangles (source and destination side of each row, at
the page scale), and every layer the decode rank reads is drawn in exactly one class."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import EngineSpec, get_model, plan
from kvplan.cli import main
from kvplan.report.picture import LEFT_PX, PAGE_PX
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs

SVG = "{http://www.w3.org/2000/svg}"


def drawn_rows(svg: str, p) -> dict[int, Counter]:
    """Per layer, the rows the picture draws: (src rank, src region name, src block, src
    offset, dst region name, dst block, dst offset, bytes), read from the rectangles."""
    root = ET.fromstring(svg)
    out = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") != "layer-class":
            continue
        sides = {"src": {}, "dst": {}}
        for rect in group.iter(f"{SVG}rect"):
            if rect.get("class") != "copy":
                continue
            side, row = rect.get("data-side"), int(rect.get("data-row"))
            regions = p.src_regions if side == "src" else p.dst_regions
            region, offset, nbytes = (int(rect.get(k)) for k in ("data-region", "data-offset", "data-nbytes"))
            page = regions[region].block_bytes
            # drawn at scale: the rectangle is the byte range
            assert abs(float(rect.get("x")) - (LEFT_PX + PAGE_PX * offset / page)) < 0.01
            assert abs(float(rect.get("width")) - max(PAGE_PX * nbytes / page, 0.5)) < 0.01
            sides[side][row] = (int(rect.get("data-src-rank")), region, int(rect.get("data-block")), offset, nbytes)
        assert sides["src"].keys() == sides["dst"].keys()  # every row drawn on both sides
        rep = Counter()
        for row, (rank, sreg, sblk, soff, n) in sides["src"].items():
            _, dreg, dblk, doff, m = sides["dst"][row]
            assert n == m
            rep[(rank, p.src_regions[sreg].slot, sblk, soff, p.dst_regions[dreg].slot, dblk, doff, n)] += 1
        for layer in map(int, group.get("data-layers").split(",")):
            assert layer not in out  # one class per layer
            out[layer] = rep
    return out


def table_rows(p, dst_rank: int) -> dict[int, Counter]:
    t = p.reads(dst_rank)
    out = {}
    for i in range(len(t)):
        key = (int(t.src_rank[i]), p.src_regions[int(t.src_region[i])].slot, int(t.src_block[i]),
               int(t.src_offset[i]), p.dst_regions[int(t.dst_region[i])].slot, int(t.dst_block[i]),
               int(t.dst_offset[i]), int(t.nbytes[i]))
        out.setdefault(int(t.layer[i]), Counter())[key] += 1
    return out


@settings(max_examples=25)
@given(pair=st.one_of(engine_pairs(max_layers=3), hybrid_engine_pairs(max_layers=3)), data=st.data())
def test_the_picture_covers_exactly_the_reads(pair, data):
    p = plan(*pair)
    dst_rank = data.draw(st.integers(0, p.dst.world_size - 1), label="dst_rank")
    assert drawn_rows(p.picture(dst_rank), p) == table_rows(p, dst_rank)


# the pictures docs/ and the README show, and the commands that draw them
DOCS = Path(__file__).resolve().parents[2] / "docs" / "pictures"
PICTURES = {
    "dense-llama-3.1-8b-nhd-tp2-to-hnd-tp8.svg": ["--model", "llama-3.1-8b", "--src-tp", "2", "--dst-tp", "8",
                                                  "--src-layout", "NHD", "--rank", "3"],
    "mla-deepseek-v3-tp8-to-tp2.svg": ["--model", "deepseek-v3", "--src-tp", "8", "--dst-tp", "2", "--rank", "1"],
    "sliding-gemma-3-27b-tp2-to-tp4.svg": ["--model", "gemma-3-27b", "--src-tp", "2", "--dst-tp", "4",
                                           "--src-block", "32", "--rank", "1"],
    "hybrid-nemotron-3-nano-tp2-to-tp1.svg": ["--model", "nemotron-3-nano-30b-a3b", "--src-tp", "2", "--dst-tp", "1"],
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_the_docs_pictures_are_what_the_cli_draws_and_cover_their_plans(name, tmp_path, capsys):
    assert main(["plan", *PICTURES[name], "--svg", str(tmp_path / name)]) == 0
    capsys.readouterr()
    drawn = (tmp_path / name).read_text()
    assert drawn == (DOCS / name).read_text(), f"docs/pictures/{name} is stale: redraw it with `kvplan plan ...`"
    args = PICTURES[name]
    value = dict(zip(args[::2], args[1::2]))
    model = get_model(value["--model"])
    src = EngineSpec(model=model, tp=int(value["--src-tp"]), kv_layout=value.get("--src-layout", "HND"),
                     block_tokens=int(value.get("--src-block", 16)))
    p = plan(src, EngineSpec(model=model, tp=int(value["--dst-tp"])))
    rank = int(value.get("--rank", 0))
    assert drawn_rows(drawn, p) == table_rows(p, rank)
