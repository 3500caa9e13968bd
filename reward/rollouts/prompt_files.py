"""Prompt files, read by one function for every command that takes them (``tandem generate
--prompts``, alignment's ``prompts_file`` and ``eval.prompts_file``).

A prompt file has one prompt per line (``#`` comments and blank lines skipped; multi-shot time
markers like ``[0-2s] ...`` are part of the text), or is JSONL with ``prompt``, an optional
``id`` and optional ``references`` (``{"image1": "dog.png", "audio1": "bark.wav"}`` for the
prompt's @-tags, paths relative to the file) per line; other fields are kept in ``extra``. A
prompt without an ``id`` gets a digest of its text (and its references' contents), so the same
prompt has the same id wherever it runs; the same id twice in one file is an error.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from model.config import ConfigError
from reward.rollouts.rollout_generator import Prompt


def read_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of ``path``: one a line, or JSONL (see the module docstring); each checked
    (time markers, @-tags against its references) and given its id."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt file {path} does not exist")
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    jsonl = path.suffix == ".jsonl" or (lines and all(line.startswith("{") for _, line in lines))
    prompts, seen = [], {}
    for n, line in lines:
        references = {}
        if jsonl:
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
                raise ConfigError(f"{path}:{n}: each JSONL line needs a non-empty \"prompt\"")
            text, pid = record.pop("prompt").strip(), str(record.pop("id", "") or "")
            references = _references(record.pop("references", {}), path, n)
        else:
            text, pid, record = line, "", {}
        if pid and not re.fullmatch(r"[A-Za-z0-9_.]+", pid):
            raise ConfigError(f"{path}:{n}: id {pid!r} may hold letters, digits, '_' and '.' only")
        _check_prompt(text, references, f"{path}:{n}")
        pid = pid or _prompt_digest(text, references)
        if pid in seen:
            raise ConfigError(f"{path}:{n}: the same prompt (id {pid}) as line {seen[pid]}; "
                              "use --group-size for more samples of one prompt")
        seen[pid] = n
        prompts.append(Prompt(pid, text, record, references))
    if not prompts:
        raise ConfigError(f"prompt file {path} holds no prompt")
    return prompts


def _prompt_digest(text: str, references: dict[str, str]) -> str:
    """The prompt id: the same for the same prompt (and reference files' contents) wherever it runs."""
    from reward.rollouts.reference_media import file_digest

    key = text if not references else json.dumps([text, {t: file_digest(Path(p)) for t, p in sorted(references.items())}])
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def _references(spec, path: Path, n: int) -> dict[str, str]:
    """A JSONL line's ``references`` ({"image1": "dog.png", ...}, relative to the prompts file)."""
    from reward.rollouts.reference_media import parse_tag

    if not isinstance(spec, dict):
        raise ConfigError(f"{path}:{n}: references must map tags (image1, video1, audio1) to files")
    out = {}
    for tag, file in spec.items():
        try:
            parse_tag(tag)
        except ValueError as exc:
            raise ConfigError(f"{path}:{n}: {exc}") from None
        media = (path.parent / str(file)).resolve()
        if not media.is_file():
            raise ConfigError(f"{path}:{n}: reference {tag}: no such file {media}")
        out[tag] = str(media)
    return out


def _check_prompt(text: str, references: dict[str, str], where: str) -> None:
    from model.prompts import check_references, parse_prompt
    from reward.rollouts.reference_media import parse_tag

    try:
        check_references(parse_prompt(text), {parse_tag(tag) for tag in references})
    except ValueError as exc:
        hint = "" if references else " (give reference clips in a JSONL prompts file: \"references\": {\"image1\": \"dog.png\"})"
        raise ConfigError(f"{where}: {exc}{hint}") from None
