"""`e4e ui`'s command box: the view -> `e4e invert/edit/video` lines -> the same view (no model, no browser)."""
from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e4ecli.ui.command import CommandError, View, parse_command, to_command

# names with spaces, quotes, shell characters and non-ASCII letters; no leading '-' (the page's upload names never have one)
names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\x00/\\"), min_size=1, max_size=20) \
    .filter(lambda s: not s.startswith("-") and s.strip() == s and s not in (".", ".."))
slider_specs = st.sampled_from(["age", "smile", "pose", "sefa:0", "sefa:3:2-5", "ganspace:54:7:8", "eye_openness"])
specs = st.one_of(slider_specs, names.map(lambda s: f"text:{s}"))
strengths = st.floats(-50, 50, allow_nan=False, allow_infinity=False).filter(lambda v: v != 0.0)


@st.composite
def views(draw) -> View:
    photo = draw(st.booleans())
    source = draw(names) + draw(st.sampled_from([".jpg", ".png", ".npy", ""]))
    edits = draw(st.lists(st.tuples(slider_specs, strengths), max_size=4, unique_by=lambda e: e[0]))
    text = draw(st.one_of(st.none(), st.tuples(names.map(lambda s: f"text:{s}"), strengths)))  # one text edit, composed last
    text_options = {} if text is None else {
        "neutral": draw(st.one_of(st.none(), names)), "beta": draw(st.sampled_from([0.15, 0.0, 0.05, 0.3])),
        "clip_weights": draw(st.one_of(st.none(), names.map(lambda s: f"clip/{s}.pt"))), "relevance": draw(st.one_of(st.none(), names))}
    refine = draw(st.sampled_from([None, "w+", "w", "pti"])) if photo else None
    sweep = draw(st.one_of(st.none(), st.tuples(specs, strengths, strengths, st.integers(2, 120))))
    return View(
        source=source if photo else f"some dir/{source}",
        photo=photo,
        checkpoint=draw(st.one_of(st.none(), st.just("e4e_cars_encode"), names.map(lambda s: f"ck/{s}.pt"))),
        stage=draw(st.one_of(st.none(), st.integers(0, 17))) if photo else None,
        refine=refine,
        refine_steps=draw(st.integers(0, 500)) if refine else 30,
        align=(align := draw(st.booleans()) if photo else False),
        detector=draw(st.sampled_from([None, "dlib", "face-alignment"])) if align else None,  # --detector goes with --align
        edits=tuple(edits) + ((text,) if text else ()),
        **text_options,
        paste_back=(paste := draw(st.booleans())),
        feather=draw(st.sampled_from([0.1, 0.0, 0.25, 0.5])) if paste else 0.1,  # the feather only matters with paste-back
        sweep=sweep,
    )


@settings(max_examples=300, deadline=None)
@given(views())
def test_every_view_reads_back_from_its_command(view):
    assert parse_command(to_command(view), View()) == view


def test_the_command_is_what_a_shell_runs():
    view = View(source='my "best" photo €.jpg', stage=3, edits=(("age", 2.0), ("text:a man's smile", -1.5)), paste_back=True)
    lines = to_command(view).splitlines()
    assert shlex.split(lines[0]) == ["e4e", "invert", 'my "best" photo €.jpg', "-o", "latents/", "--align", "--stage", "3"]
    assert shlex.split(lines[1]) == ["e4e", "edit", 'latents/my "best" photo €.npy', "-o", "edited/", "-d", "age", "-s", "2",
                                     "-d", "text:a man's smile", "-s", "-1.5", "--beta", "0.15", "--paste-back", "--aligned", "latents/"]


@pytest.mark.parametrize("name", [";", "a && b.jpg", "x; rm -rf ~ || y.png", "it's \\ \"here\".jpg", "#1.jpg", "$HOME.jpg"])
def test_shell_characters_in_names_stay_in_the_name(name):
    view = View(source=name, edits=(("age", 1.0),))
    assert parse_command(to_command(view)) == view


def test_pti_edits_render_with_the_tuned_generator():
    lines = to_command(View(source="face.jpg", refine="pti", refine_steps=5, edits=(("age", 1.0),))).splitlines()
    assert "--refine pti --refine-steps 5" in lines[0]
    assert "--checkpoint latents/face.pti.safetensors" in lines[1]


def test_a_view_without_edits_still_writes_a_runnable_edit():
    line = to_command(View(source="a.npy", photo=False)).splitlines()[-1]
    assert shlex.split(line)[-4:] == ["-d", "sefa:0", "-s", "0"]
    assert parse_command(line).edits == ()


def test_text_edits_compose_last_with_their_options():
    text = 'e4e edit a.npy -o o/ -d "text:a smile" -s 3 -d age -s 1 --neutral "a face" --beta 0.1 --clip-weights c.pt --relevance r.npz'
    view = parse_command(text)
    assert view.edits == (("age", 1.0), ("text:a smile", 3.0)) and view.text == ("text:a smile", 3.0)
    assert (view.neutral, view.beta, view.clip_weights, view.relevance) == ("a face", 0.1, "c.pt", "r.npz")
    assert shlex.split(to_command(view))[-10:] == ["-s", "3", "--neutral", "a face", "--beta", "0.1", "--clip-weights", "c.pt",
                                                   "--relevance", "r.npz"]


def test_pasted_text_may_carry_prompts_continuations_and_other_order():
    text = "$ e4e edit lat/x.npy -o out/ \\\n  --strength 2 --direction age -s=-1 -d smile --paste-back  # a comment\n"
    view = parse_command(text)
    assert view.source == "lat/x.npy" and not view.photo
    assert view.edits == (("age", 2.0), ("smile", -1.0)) and view.paste_back
    both = parse_command("e4e invert p.png -o l/ --align --stage 0 && e4e edit l/p.npy -o e/ -d pose -s 4")
    assert both.photo and both.stage == 0 and both.source == "p.png" and both.edits == (("pose", 4.0),)


@pytest.mark.parametrize("text, reason", [
    ("ls -la", "no e4e command"),
    ("e4e edit a.npy -o o/ -d age -s -3:3:7", "not a sweep"),
    ("e4e edit a.npy -o o/ -d age -d smile -s 1", "2 --direction but 1 --strength"),
    ("e4e edit a.npy -o o/ -d age -s lots", "'lots' is not a number"),
    ("e4e edit a.npy -o o/ -d age -s nan", "must be finite"),
    ("e4e invert a.jpg -o o/ --refine sgd", "use w+, w or pti"),
    ("e4e invert a.jpg -o o/ --stage two", "not a whole number"),
    ("e4e train -o run/", "reads `e4e invert`"),
    ("e4e edit 'a.npy -o o/", "cannot read the command"),
    ("e4e edit a.npy -o o/ -d text:a -s 1 -d text:b -s 2", "one text direction"),
    ("e4e edit a.npy -o o/ -d text:a -s 1 --beta high", "'high' is not a number"),
])
def test_commands_the_page_cannot_show_say_why_in_one_line(text, reason):
    with pytest.raises(CommandError) as e:
        parse_command(text)
    assert reason in str(e.value) and "\n" not in str(e.value)
