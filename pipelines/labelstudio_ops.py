"""Label Studio operations through ``label-studio-sdk``, run by Label Studio's own interpreter.

    echo '{"op": "setup", ...}' | LABEL_STUDIO_URL=... LABEL_STUDIO_API_KEY=... \\
        ~/.cache/tandem/label-studio-1.23.2/bin/python pipelines/labelstudio_ops.py

The SDK lives in Label Studio's virtual environment (scripts/install_labelstudio.sh): its
pins (an OpenCV with GUI, pydantic, ...) do not belong in the training stack's. So this file
imports nothing from tandem, reads one JSON request on stdin and writes one JSON answer on
stdout; the token comes from the environment, never from arguments (which ``ps`` shows).
``pipelines/labelstudio_server.py`` runs it.

Requests:
- ``{"op": "setup", "title", "label_config", "tasks", "media_folder" | null}``: create the
  project, a Local Files storage for ``media_folder`` (when the media are local files, below
  the server's document root), import the tasks -> ``{"project", "tasks"}``; on failure the
  project is deleted again.
- ``{"op": "export", "project", "out"}``: the JSON export of the project's tasks that have an
  annotation, every annotation included (cancelled ones too, so the importer counts the skips),
  annotators named by their email -> ``{"tasks", "annotated", "skipped_only", "annotations",
  "cancelled", "total", "out"}``. The ``annotated: only`` export filter is ignored by the
  Community edition, so the whole project comes back and is filtered here.
"""

from __future__ import annotations

import json
import os
import sys


def client():
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=os.environ["LABEL_STUDIO_URL"], api_key=os.environ["LABEL_STUDIO_API_KEY"],
                       timeout=300)


def setup(ls, req: dict) -> dict:
    project = ls.projects.create(title=req["title"], label_config=req["label_config"],
                                 description=req.get("description", ""), show_skip_button=True)
    try:
        if req.get("media_folder"):  # lets the server answer /data/local-files/ under this folder
            ls.import_storage.local.create(project=project.id, path=req["media_folder"], title="tandem rollouts",
                                           use_blob_urls=False)
        tasks = req["tasks"]
        for i in range(0, len(tasks), 500):  # bounded request bodies for large rollouts
            ls.projects.import_tasks(project.id, request=tasks[i:i + 500])
    except Exception:
        ls.projects.delete(project.id)  # no half-made project left behind
        raise
    return {"project": project.id, "tasks": len(tasks)}


def export(ls, req: dict) -> dict:
    # every task, every annotation: the server's own filter is not honoured everywhere
    data = ls.projects.exports.as_json(req["project"])
    every = data if isinstance(data, list) else json.loads(data)
    tasks = [t for t in every if t.get("annotations")]
    done = [[a for a in t["annotations"] if not a.get("was_cancelled")] for t in tasks]
    # the export names annotators by user id only; the email is what people recognise
    emails = {u.id: u.email for u in ls.users.list()}
    for task in tasks:
        for annotation in task.get("annotations") or []:
            who = annotation.get("completed_by")
            if isinstance(who, int) and who in emails:
                annotation["completed_by"] = {"id": who, "email": emails[who]}
    tmp = req["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(tasks, f)
    os.replace(tmp, req["out"])
    return {"tasks": len(tasks), "annotated": sum(1 for d in done if d), "skipped_only": sum(1 for d in done if not d),
            "annotations": sum(map(len, done)), "cancelled": sum(len(t["annotations"]) for t in tasks) - sum(map(len, done)),
            "total": len(every), "out": req["out"]}


def main() -> int:
    req = json.load(sys.stdin)
    try:
        answer = {"setup": setup, "export": export}[req["op"]](client(), req)
    except Exception as exc:  # reported to the caller as data: it names what the server said
        body = getattr(exc, "body", None)
        json.dump({"error": f"{type(exc).__name__}: {body or exc}"}, sys.stdout)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
