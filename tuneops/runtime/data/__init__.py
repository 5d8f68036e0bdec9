"""The data pipeline: read, convert to chat messages, clean, validate, dedupe, split and version a dataset.

    from tuneops.runtime.data import prepare_dataset
    prepared = prepare_dataset(job.spec.dataset, out_dir=run_dir / "data", base_dir=spec_file.parent,
                               tokenizer=tokenizer, max_seq_length=job.spec.training.max_seq_length)
    prepared.train_path, prepared.validation_path, prepared.version   # "sha256:<64 hex>"

See docs/dev/contracts.md ("Data") for the output layout.
"""

from .errors import DataError, RowError
from .pipeline import PreparedDataset, prepare_dataset

__all__ = ["DataError", "PreparedDataset", "RowError", "prepare_dataset"]
