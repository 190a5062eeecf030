"""Reading each row's arm out of a training dataset, for the adapters' samplers (no heavy imports)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def dataset_arms(dataset: Any, arm_column: str) -> list[str]:
    """The arm of each row of a map-style dataset (a `datasets.Dataset` or any indexable of dicts).

    Args:
        dataset: the training dataset, indexed as the sampler's indices are.
        arm_column: the column holding each row's arm.
    """
    names = getattr(dataset, "column_names", None)
    if names is not None:
        if arm_column not in names:
            raise ConfigError(f"the training dataset has no {arm_column!r} column (columns: {', '.join(names)}); "
                              "name the arm column, and keep it (TRL: GRPOConfig(remove_unused_columns=False))")
        # One columnar read: a row-by-row read of a million-row Arrow table takes minutes.
        return [str(a) for a in dataset[arm_column]]
    try:
        return [str(dataset[i][arm_column]) for i in range(len(dataset))]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"cannot read column {arm_column!r} from the rows of the training dataset") from e
