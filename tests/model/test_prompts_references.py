"""@-tags, reference routing and multi-shot time masks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from model_testkit import make_cond, make_latents, open_gates

from model.dit import DualDiT
from model.presets import get_preset
from model.prompts import (
    annotate_tokens,
    check_references,
    parse_prompt,
    reference_slot,
    text_time_mask,
)
from model.references import Reference


def char_offsets(text):
    return [(i, i + 1) for i in range(len(text))] + [(0, 0)]  # one token per char, then EOS


def test_tags_parse_to_slots_and_bad_tags_are_rejected():
    parsed = parse_prompt("a dog like @image2 barks like @audio1 in @video3 style @image9")
    assert [(t.kind, t.index, t.slot) for t in parsed.tags] == [
        ("image", 2, 2), ("audio", 1, 13), ("video", 3, 12), ("image", 9, 9)]
    assert parsed.text[parsed.tags[0].start:parsed.tags[0].end] == "@image2"
    assert len({reference_slot(k, i) for k, n in (("image", 9), ("video", 3), ("audio", 3))
                for i in range(1, n + 1)}) == 15
    for bad in ("@image10", "@video4", "@audio0"):
        with pytest.raises(ValueError, match="numbered"):
            parse_prompt(f"x {bad}")
    with pytest.raises(ValueError, match="@video1"):
        check_references(parse_prompt("like @video1"), available={("image", 1)})
    check_references(parse_prompt("like @image1"), available={("image", 1)})


def test_multi_shot_segments_and_token_annotation():
    text = "A rainy street. [0-3s] close-up of @image1 [3-6.5s] wide shot"
    parsed = parse_prompt(text)
    assert [(s.start_s, s.end_s) for s in parsed.shots] == [(0.0, 3.0), (3.0, 6.5)]
    spans, slots = annotate_tokens(parsed, char_offsets(text))
    assert spans[0].tolist() == [-math.inf, math.inf]  # the preamble is global
    close_up, wide = text.index("close-up"), text.index("wide")
    assert spans[close_up].tolist() == [0.0, 3.0] and spans[wide].tolist() == [3.0, 6.5]
    tag = text.index("@image1")
    assert slots[tag:tag + 7].tolist() == [1] * 7 and slots.sum() == 7
    assert spans[-1].tolist() == [-math.inf, math.inf] and slots[-1] == 0  # EOS


def test_time_mask_lets_each_token_see_its_shot_and_the_global_text():
    spans = torch.tensor([[[-math.inf, math.inf], [0.0, 1.0], [1.0, 2.0], [0.0, 2.0]]])
    valid = torch.tensor([[True, True, True, False]])
    times = torch.tensor([0.5, 1.5, math.nan])  # the last is a reference token
    mask = text_time_mask(times, spans, valid)[0, 0]
    assert mask.tolist() == [[True, True, False, False], [True, False, True, False],
                             [True, True, True, False]]


def _multishot_effect(model, cond, token, video, audio):
    tt = torch.full((2,), 0.5)
    base = model(video, audio, tt, tt, **cond.kwargs())
    emb = cond.text_emb.clone()
    emb[:, token] += 3.0
    moved = model(video, audio, tt, tt, **cond.replace(text_emb=emb).kwargs())
    return [(m - b).abs().amax(dim=(0, 1)) for m, b in zip(moved, base, strict=True)]


def test_a_shot_conditions_only_tokens_in_its_time_range():
    # One block, no fusion: no path other than text attention links times.
    torch.manual_seed(0)
    model = open_gates(DualDiT(dataclasses.replace(get_preset("debug"), depth=1, fusion_blocks=())))
    video, audio = make_latents()  # video frames at 0.02 .. 0.60 s, audio 0.02 .. 0.66 s
    cond = make_cond()
    spans = torch.full((2, 6, 2), math.inf)
    spans[..., 0] = -math.inf
    spans[:, 3] = torch.tensor([0.0, 0.3])  # text token 3 describes the first 0.3 s only
    cond = cond.replace(text_spans=spans)
    dv, da = _multishot_effect(model, cond, 3, video, audio)
    per_frame = dv.amax(dim=(1, 2))
    assert (per_frame[:3] > 1e-4).all() and (per_frame[3:] == 0).all()  # frames at .02,.12,.28 s
    assert (da[:7] > 1e-4).all() and (da[7:] == 0).all()  # audio latents at .02 .. .26 s
    dv, da = _multishot_effect(model, cond, 1, video, audio)  # a global token reaches all
    assert (dv.amax(dim=(1, 2)) > 1e-4).all() and (da > 1e-4).all()


def _refs(kind="image", index=1, keep=None, seed=3):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 8, 6) if kind == "audio" else (2, 8, 1, 4, 4)
    return [Reference(kind, index, torch.randn(shape, generator=g), keep)]


def test_references_route_to_their_branch_and_are_identified_by_index(live_model):
    video, audio = make_latents()
    tt = torch.full((2,), 0.5)
    cond = make_cond()

    def out(refs):
        return live_model(video, audio, tt, tt, **cond.replace(references=refs).kwargs())

    none, img1, img2 = out(None), out(_refs()), out(_refs(index=2))
    assert (img1[0] - none[0]).abs().max() > 1e-3
    assert (img1[0] - img2[0]).abs().max() > 1e-4  # same pixels, other name: other output
    dropped = out(_refs(keep=torch.tensor([False, True])))
    torch.testing.assert_close(dropped[0][0], none[0][0], rtol=0, atol=1e-5)  # hidden for sample 0
    assert (dropped[0][1] - none[0][1]).abs().max() > 1e-3
    # With fusion off, an audio reference reaches the audio branch only.
    torch.manual_seed(0)
    unfused = open_gates(DualDiT(dataclasses.replace(get_preset("debug"), fusion_blocks=())))
    a_none = unfused(video, audio, tt, tt, **cond.kwargs())
    a_ref = unfused(video, audio, tt, tt, **cond.replace(references=_refs("audio", 2)).kwargs())
    torch.testing.assert_close(a_ref[0], a_none[0], rtol=0, atol=0)
    assert (a_ref[1] - a_none[1]).abs().max() > 1e-3


def test_prompt_tags_mark_their_text_tokens(live_model):
    video, audio = make_latents()
    tt = torch.full((2,), 0.5)
    cond = make_cond()
    slots = torch.zeros(2, 6, dtype=torch.long)
    base = live_model(video, audio, tt, tt, **cond.replace(text_ref_slots=slots).kwargs())
    slots[:, 2] = reference_slot("image", 1)
    tagged = live_model(video, audio, tt, tt, **cond.replace(text_ref_slots=slots).kwargs())
    assert (tagged[0] - base[0]).abs().max() > 1e-4


def test_reference_validation():
    with pytest.raises(ValueError, match="numbered"):
        Reference("video", 4, torch.zeros(1, 8, 1, 4, 4))
    with pytest.raises(ValueError, match="dims"):
        Reference("audio", 1, torch.zeros(1, 8, 1, 4, 4))
