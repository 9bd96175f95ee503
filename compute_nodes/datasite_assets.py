"""The errors of ``compute_nodes.datasite``, and a datasite's datasets as executions read
them: each dataset one asset (private table + mock) whose summary holds its private file's
SHA-256; :class:`Inputs`, what a node keeps of them. Compute venv only."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pandas as pd

from compute_nodes.syft_support import quiet

ASSET_NAME = "data"
SUMMARY_PREFIX = "sha256:"

Client = Any  # syft.client.datasite_client.DatasiteClient


class ComputeNodeError(Exception):
    """Root of the errors ``compute_nodes.datasite`` raises."""


class DatasiteUnavailableError(ComputeNodeError):
    """The datasite did not start or does not answer."""


class CodeSourceError(ComputeNodeError):
    """The registered code is not one plain function of one argument per input."""


class DatasetError(ComputeNodeError):
    """A dataset is missing, or its files do not fit (schema, or another file already)."""


class DatasetMissingError(DatasetError):
    """No dataset of that id is on this datasite (not loaded yet, or removed)."""


class ComputationError(ComputeNodeError):
    """The datasite holds no usable result of a request (the code itself runs in the
    sandbox, whose errors are ``compute_nodes.sandbox``'s)."""


#: the private tables an :class:`Inputs` keeps, at most (a larger table is read each time)
INPUT_CACHE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Asset:
    """What an execution needs of a dataset's asset: its action id (the code request's
    input policy binds it) and its private file's SHA-256 (the input hash reported)."""

    action_id: Any  # syft UID
    sha256: str


class Inputs:
    """The datasets of the node's own datasite as its executions read them, each looked up
    once: its :class:`Asset`, and its private table (kept up to ``max_bytes`` in all, least
    recently used dropped first).

    A dataset id names one private file for ever (:func:`load_dataset` refuses another
    under the same id) and the datasite is the node's own (in its process, or its uvicorn
    child), so what was read holds until the node loads a dataset again or removes it: it
    calls :meth:`forget` then. The tables never leave the node's process but to the sandbox,
    which gets a copy of the columns the product names."""

    def __init__(self, max_bytes: int = INPUT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._assets: dict[str, Asset] = {}
        self._tables: OrderedDict[str, tuple[pd.DataFrame, int]] = OrderedDict()

    def asset(self, client: Client, dataset_id: str) -> Asset:
        with self._lock:
            known = self._assets.get(dataset_id)
        if known is not None:
            return known
        dataset = find_dataset(client, dataset_id)
        if dataset is None:
            raise DatasetMissingError(f"no dataset {dataset_id} on this datasite")
        summary = str(dataset.summary or "")
        if not summary.startswith(SUMMARY_PREFIX):
            raise DatasetError(f"dataset {dataset_id} was not loaded by dataledger "
                               f"(summary {summary!r})")
        with quiet():
            action_id = dataset.assets[ASSET_NAME].action_id
        found = Asset(action_id, summary.removeprefix(SUMMARY_PREFIX))
        with self._lock:
            self._assets[dataset_id] = found
        return found

    def table(self, admin: Client, dataset_id: str) -> pd.DataFrame:
        """The dataset's private table (read through the admin's client)."""
        with self._lock:
            kept = self._tables.get(dataset_id)
            if kept is not None:
                self._tables.move_to_end(dataset_id)
                return kept[0]
        table = table_of(asset_of(admin, dataset_id).data, dataset_id)
        size = int(table.memory_usage(deep=True).sum())
        with self._lock:
            if size <= self.max_bytes:
                self._tables[dataset_id] = (table, size)
                while sum(n for _, n in self._tables.values()) > self.max_bytes:
                    self._tables.popitem(last=False)
        return table

    def forget(self, dataset_id: str) -> None:
        with self._lock:
            self._assets.pop(dataset_id, None)
            self._tables.pop(dataset_id, None)


def find_dataset(client: Client, dataset_id: str) -> Any | None:
    with quiet():
        datasets = client.api.services.dataset.get_all()
    for dataset in datasets:
        if dataset.name == dataset_id and not dataset.to_be_deleted:
            return dataset
    return None


def asset_of(client: Client, dataset_id: str) -> Any:
    dataset = find_dataset(client, dataset_id)
    if dataset is None:
        raise DatasetMissingError(f"no dataset {dataset_id} on this datasite")
    with quiet():
        return dataset.assets[ASSET_NAME]


def table_of(value: Any, dataset_id: str) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise DatasetError(f"{dataset_id} holds a {type(value).__name__}, not a table")
    return value
