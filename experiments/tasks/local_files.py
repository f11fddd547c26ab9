"""Loads a task's local data files relative to this folder, for lm-eval's `custom_dataset`.

lm-eval hands `dataset_kwargs.data_files` to `datasets.load_dataset`, which resolves a
relative path against the current directory, so a task YAML naming `../data/x.jsonl`
would work only from one folder. With

    custom_dataset: !function local_files.load_json
    dataset_kwargs: {data_files: {test: ../data/x.jsonl}}

the path is resolved against the folder of this file (the task YAMLs' folder), and
`lm_eval --include_path experiments/tasks` works from any directory. Copy this file next
to your own task YAMLs to do the same. Absolute paths are used as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_json(data_files: dict[str, str], **_metadata: Any) -> Any:
    """A DatasetDict with one split per entry of `data_files` (JSON/JSON Lines files).
    lm-eval also passes the task's metadata (and the CLI's model_args) as keywords:
    they are not needed here."""
    import datasets

    files = {split: str(HERE / path) for split, path in data_files.items()}
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"task data file(s) not found: {', '.join(missing)} (data_files in a task YAML "
            f"are relative to {HERE})"
        )
    return datasets.load_dataset("json", data_files=files)
