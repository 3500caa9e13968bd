"""Annotation tasks and the import of Label Studio exports: every judgement comes back, every
bad input is refused with the task named and nothing written, agreement is Krippendorff's."""

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
import torch

from reward.annotation.labelstudio_exports import ExportError, import_exports
from reward.annotation.labelstudio_tasks import (
    AnnotationConfig,
    label_config,
    make_tasks,
    select_pairs,
)
from reward.rollouts.rollout_dir import finish_sample, read_rollouts, sample_paths


@pytest.fixture
def rollouts(tmp_path):
    """Two checkpoints x two prompts x two samples (fake mp4 bytes: tasks only link to them)."""
    for ckpt in ("ck1", "ck2"):
        for prompt in ("drums", "waves"):
            for k in range(2):
                sid = f"{ckpt}-{prompt}-{k:02d}"
                mp4 = sample_paths(tmp_path / ckpt, sid)["mp4"]
                mp4.parent.mkdir(parents=True, exist_ok=True)
                mp4.write_bytes(b"mp4")
                finish_sample(tmp_path / ckpt, {"sample_id": sid, "group_id": f"{ckpt}-{prompt}", "prompt": f"{prompt}!",
                                                "prompt_id": prompt, "seed": k, "checkpoint": {"path": ckpt}},
                              {"video": torch.zeros(1)})
    return read_rollouts(tmp_path / "ck1", tmp_path / "ck2")


def test_label_configs_name_every_axis_once():
    pairwise = ET.fromstring(label_config(AnnotationConfig(pairwise_tag_axis="motion")))
    names = [e.get("name") for e in pairwise.iter() if e.tag in ("Choices", "Pairwise")]
    assert names == ["visual_quality", "motion", "audio_quality", "av_sync", "prompt_alignment"]
    assert [e.get("toName") for e in pairwise.iter("Choices")] == ["clip_a"] * 4  # one toName (LS saves empty results otherwise)
    assert next(pairwise.iter("Pairwise")).get("toName") == "clip_a,clip_b"
    # an empty submission is refused by the page: every Choices axis is required, saying what to choose
    assert all(e.get("required") == "true" and "A better, B better or Tie" in e.get("requiredMessage")
               for e in pairwise.iter("Choices"))
    # the Pairwise tag (which cannot be required) says what to click and shows the choice as a shaded panel
    headers = [e.get("value") for e in pairwise.iter("Header")]
    assert any(h.startswith("Motion: click the better clip's caption (Choose A / Choose B)") for h in headers)
    assert "outline" in next(pairwise.iter("Pairwise")).get("selectionStyle")
    rank = ET.fromstring(label_config(AnnotationConfig(mode="rank", rank_tiers=["good", "bad"])))
    assert [b.get("name") for b in rank.iter("Bucket")] == ["good", "bad"]
    assert next(rank.iter("Ranker")).get("toName") == "overall_clips"


def test_pair_budget_shows_every_clip_evenly():
    import random

    clips = [f"c{i}" for i in range(7)]
    assert len(select_pairs(clips, "all", random.Random(0))) == 21
    for n in (4, 5, 9):
        pairs = select_pairs(clips, n, random.Random(n))
        seen = Counter(c for p in pairs for c in p)
        assert len(pairs) == n and set(seen) == set(clips) and max(seen.values()) - min(seen.values()) <= 1
    with pytest.raises(ValueError, match="at least 4"):
        select_pairs(clips, 3, random.Random(0))


def test_tasks_pair_clips_of_one_prompt_across_checkpoints(rollouts, tmp_path):
    tasks = make_tasks(rollouts, AnnotationConfig())
    assert len(tasks) == 12  # 4 clips per prompt: 6 pairs, 2 prompts
    for task in tasks:
        a, b = task["data"]["tandem"]["items"]
        assert a.split("-")[1] == b.split("-")[1]  # same prompt
        assert f"/data/local-files/?d={tmp_path.name}/" in task["data"]["video_a"]
        assert "controls" in task["data"]["video_a"]
    cross = [t for t in tasks if len({i.split("-")[0] for i in t["data"]["tandem"]["items"]}) == 2]
    assert len(cross) == 8
    with pytest.raises(ValueError, match="not under media_root"):
        make_tasks(rollouts, AnnotationConfig(media_root="/somewhere/else"))
    [rank] = make_tasks(rollouts[:4], AnnotationConfig(mode="rank"))[:1]
    assert sorted(i["id"] for i in rank["data"]["items"]) == sorted(r.sample_id for r in rollouts[:2])


def _export(tasks, answers, project=7):
    """A Label Studio JSON export: ``answers`` maps task index -> [(annotation fields)]."""
    out = []
    ann_id = 100
    for i, task in enumerate(tasks):
        annotations = []
        for fields in answers.get(i, []):
            ann_id += 1
            annotations.append({"id": fields.pop("id", ann_id), "completed_by": fields.pop("by", 1),
                                "was_cancelled": False, "created_at": "2026-11-29T10:00:00Z",
                                "project": project, **fields})
        out.append({"id": 1000 + i, "project": project, "data": task["data"], "annotations": annotations})
    return out


def choice(axis, value):
    return {"from_name": axis, "to_name": "clip_a", "type": "choices", "value": {"choices": [value]}}


def test_import_returns_every_submitted_judgement(rollouts):
    cfg = AnnotationConfig(axes=["visual_quality", "overall"], pairwise_tag_axis="overall")
    tasks = make_tasks(rollouts, cfg)
    export = _export(tasks, {
        0: [{"result": [choice("visual_quality", "A better"),
                        {"from_name": "overall", "to_name": "overall", "type": "pairwise", "value": {"selected": "right"}}]},
            {"by": 2, "result": [choice("visual_quality", "Tie")]}],  # overall left unanswered
        1: [{"was_cancelled": True, "result": []}, {"by": 2, "result": []}],
    })
    result = import_exports({"e.json": export}, known_items={r.sample_id for r in rollouts})
    a, b = tasks[0]["data"]["tandem"]["items"]
    got = sorted((r["item_a"], r["item_b"], r["axis"], r["outcome"], r["annotator"]) for r in result.rows)
    assert got == sorted([(a, b, "visual_quality", "a", "user1"), (a, b, "overall", "b", "user1"),
                          (a, b, "visual_quality", "tie", "user2")])
    assert result.skipped == Counter(cancelled=1, empty=1, unanswered_axis=1)
    assert result.tasks == 12 and result.annotations == 2


def test_rankings_become_the_pairs_they_imply(rollouts):
    items = [r.sample_id for r in rollouts if r.meta["prompt_id"] == "drums"]
    total = make_tasks(rollouts, AnnotationConfig(mode="rank"))
    order = list(reversed(total[0]["data"]["tandem"]["items"]))
    rows = import_exports({"e": _export(total, {0: [{"result": [
        {"from_name": "overall", "to_name": "overall_clips", "type": "ranker", "value": {"ranker": {"overall_clips": order}}}]}]})}).rows
    assert len(rows) == 6 and all(r["outcome"] == "b" for r in rows)  # the list order reversed: later beats earlier
    assert {r["item_a"] for r in rows} | {r["item_b"] for r in rows} == set(items)

    # Submit on an untouched ranker saves the order shown: no judgement, counted
    shown_order = {"from_name": "overall", "to_name": "overall_clips", "type": "ranker",
                   "value": {"ranker": {"overall": total[0]["data"]["tandem"]["items"]}}}
    untouched = import_exports({"e": _export(total, {0: [{"result": [shown_order]}]})})
    assert untouched.rows == [] and untouched.skipped == Counter(order_unchanged=1)

    tiers = make_tasks(rollouts, AnnotationConfig(mode="rank", rank_tiers=["good", "bad"]))
    shown = tiers[0]["data"]["tandem"]["items"]
    value = {"good": [shown[0], shown[1]], "bad": [shown[2]], "overall_clips": [shown[3]]}  # shown[3] never sorted
    rows = import_exports({"e": _export(tiers, {0: [{"result": [
        {"from_name": "overall", "to_name": "overall_clips", "type": "ranker", "value": {"ranker": value}}]}]})}).rows
    assert sorted((r["item_a"], r["item_b"], r["outcome"]) for r in rows) == sorted(
        [(shown[0], shown[1], "tie"), (shown[0], shown[2], "a"), (shown[1], shown[2], "a")])


BAD = {  # name -> (how to break a valid two-task export, the error it must raise)
    "other project": (lambda e: e[1]["data"].pop("tandem"), "task 1001 is not a tandem task"),
    "edited config": (lambda e: e[0]["data"]["tandem"]["schema"]["axes"].append("smell"), "does not match its digest"),
    "unknown item ids": (lambda e: e[1]["data"]["tandem"]["items"].__setitem__(0, "ck9-x-00"), "unknown item id.*ck9-x-00"),
    "unknown axis": (lambda e: e[0]["annotations"][0]["result"].append(choice("smell", "Tie")), "'smell' is not an axis"),
    "unknown choice": (lambda e: e[0]["annotations"][0]["result"].__setitem__(0, choice("motion", "Both")), "expected one of"),
    "two choices": (lambda e: e[0]["annotations"][0]["result"][0]["value"]["choices"].append("Tie"), "expected one of"),
    "no value": (lambda e: e[0]["annotations"][0]["result"][0].pop("value"), "has no value"),
    "axis twice": (lambda e: e[0]["annotations"][0]["result"].append(choice("motion", "Tie")), "answered twice"),
    "wrong type": (lambda e: e[0]["annotations"][0]["result"][0].update(type="rating"), "expected one of"),
    "not a result": (lambda e: e[0]["annotations"][0]["result"].append("A better"), "malformed result"),
    "no created_at": (lambda e: e[0]["annotations"][0].pop("created_at"), "no created_at"),
    "same annotation twice": (lambda e: e[1]["annotations"].append(dict(e[0]["annotations"][0], by=3)),
                              "duplicated annotation \\(also in"),
    "annotator twice on a task": (lambda e: e[0]["annotations"].append(dict(e[0]["annotations"][0], id=999)),
                                  "user1 already annotated this task"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_export_is_refused_naming_the_task(rollouts, case):
    tasks = make_tasks(rollouts, AnnotationConfig(axes=["motion"]))[:2]
    export = _export(tasks, {0: [{"result": [choice("motion", "A better")]}], 1: [{"by": 2, "result": [choice("motion", "Tie")]}]})
    import_exports({"ok": json.loads(json.dumps(export))}, known_items={r.sample_id for r in rollouts})  # valid as made
    breaks, message = BAD[case]
    breaks(export)
    with pytest.raises(ExportError, match=message) as err:
        import_exports({"bad.json": export}, known_items={r.sample_id for r in rollouts})
    assert "nothing written" in str(err.value) and "bad.json: task 100" in str(err.value)


def test_exports_of_other_configs_are_refused(rollouts):
    one = _export(make_tasks(rollouts, AnnotationConfig(axes=["motion"]))[:1], {0: [{"result": [choice("motion", "Tie")]}]})
    other = _export(make_tasks(rollouts, AnnotationConfig(axes=["overall"]))[:1],
                    {0: [{"id": 5, "result": [choice("overall", "Tie")]}]})
    with pytest.raises(ExportError, match="mix annotation configs"):
        import_exports({"one": one, "other": other})
    with pytest.raises(ExportError, match="not 0123"):
        import_exports({"one": one}, expected_config="0123")


def test_krippendorff_alpha_of_the_reference_example():
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability', Sec. C: 4 observers,
    12 units, missing values; nominal alpha = 0.743."""
    from reward.annotation.agreement import krippendorff_alpha_nominal, pairwise_agreement

    nan = None
    table = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
             [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    units = [[row[u] for row in table if row[u] is not None] for u in range(12)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)
    assert pairwise_agreement([["a", "a", "b"], ["tie", "tie"]]) == pytest.approx(2 / 4)


def test_import_command_writes_all_or_nothing(rollouts, tmp_path):
    from pipelines.cli import main

    tasks = make_tasks(rollouts, AnnotationConfig(axes=["motion"]))
    good = _export(tasks[:2], {0: [{"result": [choice("motion", "A better")]}], 1: [{"result": [choice("motion", "Tie")]}]})
    bad = _export(tasks[2:3], {0: [{"id": 77, "result": [choice("motion", "Maybe")]}]})
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = tmp_path / "rankings"
    assert main(["annotate", "import", str(tmp_path / "good.json"), str(tmp_path / "bad.json"), "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["annotate", "import", str(tmp_path / "good.json"), "--out", str(out), "--rollouts",
                 *{str(r.mp4.parents[1]) for r in rollouts}]) == 0
    from reward.annotation.rankings import read_rankings

    assert len(read_rankings(out)) == 2 and json.loads((out / "import.json").read_text())["judgements"] == 2
    assert set(json.loads((out / "agreement.json").read_text())) == {"motion"}

    # The import is a run of its own: the export and the rollouts in, the rankings out (issue 25).
    import hashlib

    import mlflow

    from pipelines.lineage import logged, rollouts_digest

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the command's store, not an earlier test's global URI
    [run] = client.search_runs([client.get_experiment_by_name("tandem-annotate").experiment_id], max_results=1,
                               order_by=["attributes.start_time DESC"])
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]  # noqa: E731
    found = logged(client, run.info.run_id)
    assert {k: v for k, v in found.items() if not k.startswith("rollouts")} == {
        "annotation-export": ("input", sha(tmp_path / "good.json"), None),
        "rankings": ("output", sha(out / "rankings.parquet"), None)}
    # two rollouts folders (two checkpoints), simulated: no generate run made them
    assert sorted(found) == ["annotation-export", "rankings", "rollouts", "rollouts.2"]
    assert sorted(v for k, v in found.items() if k.startswith("rollouts")) == sorted(
        ("input", rollouts_digest(d), None) for d in {r.mp4.parents[1] for r in rollouts})
    assert run.data.tags["lineage.stage"] == "annotate import"

def test_pull_counts_tasks_and_annotations_apart_and_says_when_there_are_none():
    from pathlib import Path

    from pipelines.annotate import pull_summary

    def answer(**counts):
        return dict({"tasks": 0, "annotated": 0, "skipped_only": 0, "annotations": 0, "cancelled": 0, "total": 8},
                    **counts)

    out = Path("export.json")
    assert pull_summary(answer(), 3, out).startswith("no annotations yet: 0 of 8 tasks annotated")
    assert pull_summary(answer(tasks=1, skipped_only=1, cancelled=1), 3, out).startswith(
        "no annotations yet: 0 of 8 tasks annotated (1 skipped)")
    assert pull_summary(answer(tasks=3, annotated=2, skipped_only=1, annotations=4, cancelled=2), 3, out) == (
        "exported 3 of 8 tasks of project 3 to export.json: 2 annotated (4 annotations, 2 skipped), 1 only skipped")


def test_pairwise_tag_tasks_have_a_caption_to_click(rollouts):
    [tagged] = make_tasks(rollouts, AnnotationConfig(axes=["overall"], pairwise_tag_axis="overall", pairs="2"))[:1]
    assert "Choose A</div>" in tagged["data"]["video_a"] and "Choose B</div>" in tagged["data"]["video_b"]
    [plain] = make_tasks(rollouts, AnnotationConfig(axes=["overall"], pairs="2"))[:1]
    assert "Choose" not in plain["data"]["video_a"]  # Choices only: nothing to click on the clip
