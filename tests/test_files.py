"""Output naming, discovery, atomic writes and the manifest."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from e4ecli.files.batch import Manifest, Record, atomic_output, collisions, discover, make_key, output_path, save_npy, shard
from e4ecli.files.images import IMAGE_EXTENSIONS


def touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_file_inputs_map_to_their_stem_and_folders_mirror_the_tree(tmp_path):
    a = touch(tmp_path / "photos" / "a.jpg")
    touch(tmp_path / "photos" / "sub" / "b.png")
    touch(tmp_path / "photos" / "manifest.jsonl")
    touch(tmp_path / "photos" / ".hidden.png")
    items, problems = discover([a], IMAGE_EXTENSIONS)
    assert [i.key for i in items] == ["a"] and not problems
    items, _ = discover([tmp_path / "photos"], IMAGE_EXTENSIONS)
    assert sorted(i.key for i in items) == ["a", "sub/b"]
    assert output_path(tmp_path / "out", "sub/b", ".npy") == tmp_path / "out" / "sub" / "b.npy"


def test_missing_inputs_are_problems_not_crashes(tmp_path):
    items, problems = discover([tmp_path / "nope.jpg"], IMAGE_EXTENSIONS)
    assert not items and problems[0][1] == "no such file or folder"


def test_same_stem_different_extension_collides(tmp_path):
    touch(tmp_path / "p" / "a.jpg")
    touch(tmp_path / "p" / "a.png")
    items, _ = discover([tmp_path / "p"], IMAGE_EXTENSIONS)
    clash = collisions(items)
    assert list(clash) == ["a"] and len(clash["a"]) == 2


def test_same_file_twice_is_not_a_collision(tmp_path):
    a = touch(tmp_path / "p" / "a.jpg")
    items, _ = discover([a, tmp_path / "p"], IMAGE_EXTENSIONS)
    assert len(items) == 1 and not collisions(items)


def test_symlink_loops_terminate(tmp_path):
    touch(tmp_path / "p" / "a.jpg")
    os.symlink(tmp_path / "p", tmp_path / "p" / "loop")
    items, _ = discover([tmp_path / "p"], IMAGE_EXTENSIONS)
    assert [i.key for i in items] == ["a"]


def test_dotdot_inputs_and_long_unicode_names_stay_inside_out(tmp_path):
    inner = tmp_path / "x" / "y"
    inner.mkdir(parents=True)
    a = touch(tmp_path / "x" / "é a.jpg")
    items, _ = discover([inner / ".." / "é a.jpg"], IMAGE_EXTENSIONS)
    assert items[0].key == "é a" and items[0].source.resolve() == a.resolve()
    long = "ü" * 200
    k1, k2 = make_key(long + "1.jpg"), make_key(long + "2.jpg")
    assert k1 != k2 and len(k1.encode()) <= 200
    with pytest.raises(ValueError):
        output_path(tmp_path / "out", "../escape", ".npy")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "o" / "a.npy"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    save_npy(target, np.ones((2, 3), np.float32))
    assert np.load(target).shape == (2, 3) and [p.name for p in target.parent.iterdir()] == ["a.npy"]


def test_manifest_keeps_one_line_per_output_and_survives_torn_lines(tmp_path):
    with Manifest(tmp_path) as m:
        m.add(Record("a.jpg", "a.npy", "failed", "bad"))
        m.add(Record("a.jpg", "a.npy", "ok"))
    (tmp_path / "manifest.jsonl").open("a").write('{"source": "torn')
    with Manifest(tmp_path) as m:
        m.add(Record("a.jpg", "a.npy", "skipped"))
        m.add(Record("b.jpg", "b.npy", "ok", checkpoint="c:1"))
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [(r["output"], r["status"]) for r in lines] == [("a.npy", "ok"), ("b.npy", "ok")]
    assert lines[1]["checkpoint"] == "c:1"


def test_shards_partition_the_items(tmp_path):
    items, _ = discover([touch(tmp_path / f"{i}.png") for i in range(7)], IMAGE_EXTENSIONS)
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(i.key for p in parts for i in p) == sorted(i.key for i in items)


def test_base_record_names_the_zoo_entry_only_when_given_by_name(tmp_path):
    """What a tuned generator records of its base (cli invert and the page both use files.provenance.base_record)."""
    from e4ecli.files.provenance import base_record, ident_hash

    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"x")
    assert ident_hash("e4e_ffhq_encode.pt:ab:cd12") == "cd12"
    assert base_record(ck, "ck.pt:cd12", "e4e_ffhq_encode") == {"path": str(ck.resolve()), "id": "cd12", "name": "e4e_ffhq_encode"}
    assert base_record(ck, "ck.pt:cd12", str(ck))["name"] is None  # a file path is no zoo name
    assert base_record(ck, "ck.pt:cd12")["name"] is None  # the page records none
