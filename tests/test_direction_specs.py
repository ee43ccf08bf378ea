"""The one direction-spec parser (edits.syntax.parse_direction): each kind becomes its typed spec, the early check
reads the same object, and errors below the CLI name settings ({beta}, {pca}, ...), never a flag: the CLI and the
page word them (tests/test_layer_words.py scans for flags). No model, no torch."""
from __future__ import annotations

from pathlib import Path

import pytest

from e4ecli.edits.prompts import TextOptions
from e4ecli.edits.syntax import (Channel, DirectionFile, GanSpace, NpzRow, Registered, Sefa, StyleFlow, StyleflowSpecError, Target, Text,
                                 direction_kind, parse_direction, parse_overrides)
from e4ecli.errors import worded
from e4ecli.hub.directions import DirectionError, lookup
from e4ecli.pipelines.directions import check

CLI = {"beta": "--beta", "pca": "--pca", "attribute": "--attribute", "direction": "--direction", "neutral": "--neutral"}


@pytest.mark.parametrize("spec, expected", [
    ("age", Registered("age", "age")),
    (" ganspace:54:7:8 ", GanSpace("ganspace:54:7:8", 54, 7, 8)),
    ("sefa:0", Sefa("sefa:0", 0, "all")),
    ("sefa:3:2-5", Sefa("sefa:3:2-5", 3, "2-5")),
    ("styleflow:Age", StyleFlow("styleflow:Age", Target("age"))),
    ("stylespace:6:501", Channel("stylespace:6:501", 6, 501)),
    ('text:"a face with a smile"', Text('text:"a face with a smile"', "a face with a smile")),
])
def test_each_kind_parses_to_its_typed_spec(spec, expected):
    parsed = parse_direction(spec)
    assert parsed == expected and direction_kind(spec) == expected.kind
    assert parse_direction(parsed.spec) == parsed  # the spec it keeps reads back to the same object


def test_labels_are_the_canonical_names():
    assert parse_direction("styleflow:AGE").label == "styleflow:age"
    assert parse_direction("text: 'a smile' ").label == "text:a smile"
    assert parse_direction("stylespace:06:0501").label == "stylespace:6:501"


def test_files_win_over_kinds_and_npz_rows_need_their_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ganspace:1:2:3.npy").write_bytes(b"")
    (tmp_path / "dirs.npz").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert parse_direction("ganspace:1:2:3.npy") == DirectionFile("ganspace:1:2:3.npy", Path("ganspace:1:2:3.npy"))
    assert parse_direction("dirs.npz:2") == NpzRow("dirs.npz:2", Path("dirs.npz"), 2)
    assert parse_direction("other.npz:2") == Registered("other.npz:2", "other.npz:2")  # no such file: a name, then unknown
    with pytest.raises(DirectionError, match="unknown direction 'other.npz:2'"):
        check("other.npz:2")
    with pytest.raises(DirectionError, match="a direction file must be .pt"):
        parse_direction("notes.txt")
    with pytest.raises(DirectionError, match="sub/x: no such direction file"):
        parse_direction("sub/x")


@pytest.mark.parametrize("spec, why", [
    ("ganspace:1:2", "use ganspace:COMP:START:END"), ("ganspace:1:5:3", "0 <= START < END"), ("ganspace:a:1:2", "use ganspace"),
    ("sefa:x", "use sefa:K"), ("sefa:0:9-x", "layers must be 'all' or indices"), ("styleflow:height", "unknown; use one of gender"),
    ("stylespace:1", "LAYER:CHANNEL"), ("stylespace:-1:2", "counted from 0"), ("text:  ", "the description is empty"),
    ("text:a\x1b[2J", "U\\+001B"),
])
def test_malformed_specs_say_what_to_write(spec, why):
    with pytest.raises(DirectionError, match=why) as e:
        parse_direction(spec)
    assert "\n" not in str(e.value)


def test_the_early_check_reads_the_parsed_spec():
    assert check("age") == check(parse_direction("age")) == lookup("age").strength
    assert check("sefa:1:2-3") == 10.0 and check("stylespace:1:2") is None and check("styleflow:age") is None
    with pytest.raises(DirectionError, match="is a PCA file, not an edit"):
        check(parse_direction("ffhq_pca"))


def test_errors_name_settings_and_each_interface_spells_them():
    with pytest.raises(DirectionError) as e:
        check("text:a smile", None, TextOptions(beta=2.0))
    assert str(e.value).startswith("`beta` 2: the threshold") and worded(e.value, CLI).startswith("--beta 2: the threshold")
    with pytest.raises(DirectionError) as e:
        check("ganspace:1:2:3", "{beta}")  # braces in a value stay as they are
    assert worded(e.value, CLI).startswith("--pca {beta}: neither an existing file nor a registered PCA (ffhq_pca")
    with pytest.raises(DirectionError) as e:
        check("ffhq_pca")
    assert worded(e.value, CLI).endswith("use --direction ganspace:COMP:START:END --pca ffhq_pca")
    with pytest.raises(DirectionError) as e:
        check("text:a smile", None, TextOptions(neutral=""))
    assert worded(e.value, CLI).startswith("--neutral: the description is empty")
    with pytest.raises(StyleflowSpecError) as e:
        parse_overrides(["height=3"])
    assert worded(e.value, CLI).startswith("--attribute 'height=3': use NAME=VALUE") and "--" not in str(e.value)


def test_a_styleflow_edit_knows_its_target_from_its_spec():
    from e4ecli.edits.specs import Edit

    spec = parse_direction("styleflow:light_front")
    assert Edit(spec.label, "styleflow", spec=spec).styleflow_target == Target("light_front")
    assert Edit("styleflow:age", "styleflow").styleflow_target.attribute == 6  # an Edit made by hand: from its label
    with pytest.raises(ValueError, match="not a StyleFlow edit"):
        _ = Edit("age", "interfacegan").styleflow_target
