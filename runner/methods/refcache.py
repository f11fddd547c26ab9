"""Reference log-probs, computed once and kept: `<runs>/cache/reflogps/<key>.pt`.

With `precompute_ref_log_probs` trl runs the reference model over the training and
validation rows once, before training, instead of at every step and every evaluation.
Its own cache of that pass only works for datasets stored on disk (ftlab's rows are in
memory, so each run would compute them again), and with in-memory rows under DDP its
pass fails (the other ranks look for a cache file with a per-process random name). Here
the key is what the log-probs depend on — the reference weights (trl's hash of the model
it uses as the reference), the tokenized rows and the settings of the log-prob sum — so
DPO trials of a sweep that share their SFT stage and data, or a rerun of a recipe, read
them instead. `output.reuse: false` turns it off with the stage cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def rows_hash(dataset: Any) -> str:
    """Content hash of a (tokenized) datasets.Dataset, its `ref_*` columns aside."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    h = hashlib.sha256(str(len(dataset)).encode())
    for name in sorted(table.column_names):
        if name.startswith("ref_"):
            continue
        col = table.column(name)
        h.update(f"|{name}:{col.type}|".encode())
        if pa.types.is_list(col.type) and pa.types.is_integer(col.type.value_type):
            h.update(pc.list_value_length(col).to_numpy(zero_copy_only=False).tobytes())
            h.update(pc.list_flatten(col).to_numpy(zero_copy_only=False).tobytes())
        else:  # text, conversations: small next to the token ids
            h.update(repr(col.to_pylist()).encode())
    return h.hexdigest()


def _with_columns(dataset: Any, chosen: Any, rejected: Any) -> Any:
    from datasets import Dataset, concatenate_datasets

    logps = Dataset.from_dict(
        {"ref_chosen_logps": chosen.tolist(), "ref_rejected_logps": rejected.tolist()}
    )
    return concatenate_datasets([dataset, logps], axis=1)


def with_reference_cache(trainer_cls: type, cache_dir: Path | None) -> type:
    """`trainer_cls` (trl's DPOTrainer) whose precomputed reference log-probs are read from
    and written to `cache_dir` (None: computed each time). `source` on the trainer says
    what happened per split."""

    class ReferenceCached(trainer_cls):  # type: ignore[misc, valid-type]
        source: dict[str, str]

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            import torch
            import trl
            from accelerate.utils import broadcast_object_list

            if not hasattr(self, "source"):
                self.source = {}
            if cache_dir is None:
                self.source[name] = "computed"
                chosen, rejected = self._reference_pass(dataset, name, batch_size)
                return _with_columns(dataset, chosen, rejected)
            settings = (
                trl.__version__,
                self._precompute_model_hash,
                self.args.ld_alpha,
                self.args.padding_free,
                self.args.max_length,
                getattr(self.args, "truncation_mode", None),
            )
            key = hashlib.sha256(f"{settings}|{rows_hash(dataset)}".encode()).hexdigest()[:32]
            file = cache_dir / f"{key}.pt"
            found = [file.is_file()]
            broadcast_object_list(found, from_process=0)  # every rank takes the same path
            if found[0]:
                saved = torch.load(file, map_location="cpu")
                if len(saved["chosen"]) == len(dataset):
                    self.source[name] = "cached"
                    return _with_columns(dataset, saved["chosen"], saved["rejected"])
            chosen, rejected = self._reference_pass(dataset, name, batch_size)
            self.source[name] = "computed"
            if self.accelerator.is_main_process:
                cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
                torch.save({"chosen": chosen, "rejected": rejected}, tmp)
                os.replace(tmp, file)  # a reader never sees half a file
            return _with_columns(dataset, chosen, rejected)

        def _reference_pass(self, dataset: Any, name: str, batch_size: int) -> tuple[Any, Any]:
            """trl's reference pass (`_precompute_ref_logps`) without its detour through a
            datasets cache file, whose name is random per process for in-memory rows — so
            under DDP the other ranks look for a file that rank 0 never wrote."""
            import torch
            from torch.utils.data import DataLoader

            from ftlab.runner.progress import Bar

            loader = self.accelerator.prepare(
                DataLoader(
                    dataset,
                    batch_size=batch_size,
                    collate_fn=self.data_collator,
                    num_workers=self.args.dataloader_num_workers,
                    pin_memory=self.args.dataloader_pin_memory,
                    shuffle=False,
                )
            )
            if self.ref_model is None and self.is_deepspeed_enabled:
                from trl.models import prepare_deepspeed

                engine: Any = getattr(self, "_precompute_engine", None)
                if engine is None:  # one inference engine for every pass, as trl does
                    engine = prepare_deepspeed(self.model, self.accelerator)
                    self._precompute_engine = engine
                model = engine
            else:
                model = self.ref_model or self.model
            chosen, rejected = [], []
            quiet = not self.accelerator.is_main_process
            bar = Bar(len(loader), f"reference log-probs ({name})", unit="batch", quiet=quiet)
            for batch in loader:
                c, r = self.compute_ref_log_probs(model, batch)
                c, r = self.accelerator.gather_for_metrics((c, r))
                chosen.append(c.cpu())
                rejected.append(r.cpu())
                bar.update()
            bar.close()
            return torch.cat(chosen), torch.cat(rejected)

    ReferenceCached.__name__ = ReferenceCached.__qualname__ = trainer_cls.__name__
    return ReferenceCached
