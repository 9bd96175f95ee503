"""Settings: every one an environment variable ``DATALEDGER_*`` (listed in the README)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.subjects import DEFAULT_PREFIX, DEFAULT_STREAM

#: the repository: the compute environment's default place
ROOT = Path(__file__).resolve().parent.parent
WEAK_TOKENS = {"admin", "changeme", "change-me", "secret", "password", "token", "test"}


class Settings(BaseSettings):
    """Read once per process (``cli`` reads them; serve's child gets a copy); never a module global."""

    model_config = SettingsConfigDict(env_prefix="DATALEDGER_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="where the embedded default keeps its files")
    database_url: str = Field(default="", description="sqlite:///path or postgresql://user@host:port/db[?schema=s]; empty = SQLite in data_dir")
    keystore_url: str = Field(default="", description="where the keys of sealed personal fields live (docs/PRIVACY.md, Erasure): sqlite:///path or postgresql://user@host:port/db[?schema=s], a database of its own; empty = beside the log (data_dir/subject_keys.db, or the log's PostgreSQL schema)")
    admin_token: str | None = Field(default=None, description="the platform admin's bearer token; if unset, one is made and printed once at first start")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535, description="where serve listens")
    group_commit: bool = Field(default=True, description="group the commits of concurrent commands in one transaction")
    read_wait_seconds: float = Field(default=5.0, description="how long a query waits for the read models to reach the last write")
    platform_name: str = "Platform operator"
    log_origin: str = Field(default="dataledger.local/log", description="the log's origin line in checkpoints (and the name of its signing key)")
    log_key_file: Path | None = Field(default=None, description="the platform's Ed25519 checkpoint key; default data_dir/log.key, made at first start")
    checkpoint_every_leaves: int = Field(default=1000, ge=1, description="cut a checkpoint after this many new events")
    checkpoint_every_seconds: float = Field(default=5.0, gt=0, description="or after this many seconds, whichever first")
    actor_index: bool = Field(default=True, description="keep the per-actor index and put its root in each checkpoint (the index line); false: checkpoints without it, and no self-proofs")
    witness_urls: str = Field(default="", description="comma-separated URLs of witnesses (dataledger witness); empty = two in-process witnesses")
    witness_quorum: int | None = Field(default=None, ge=0, description="co-signatures needed to anchor a checkpoint; default all witnesses")
    switch_interval_ms: float = Field(default=1.0, gt=0, description="CPython's GIL switch interval for serve (default 1 ms; CPython's own is 5 ms)")
    nats_url: str = Field(default="", description="NATS JetStream server to publish every event to (e.g. nats://127.0.0.1:4222); empty = the in-process dispatcher only")
    nats_stream: str = Field(default=DEFAULT_STREAM, description="the JetStream stream")
    nats_subject_prefix: str = Field(default=DEFAULT_PREFIX,
                                     description="events go to <prefix>.<type>")
    access_log: bool = Field(default=False, description="log every HTTP request (uvicorn access log)")
    chain: bool = Field(default=True, description="integrate the Merkle tree and checkpoint in this process")
    compute_node: Literal["auto", "true", "false"] = Field(default="auto", description="serve starts the embedded compute node from .venv-compute: auto = if that environment exists")
    compute_venv: Path = Field(default=ROOT / ".venv-compute", description="where compute_nodes/setup-env makes the compute environment and serve finds it")
    background_process: bool = Field(default=True, description="serve applies the projections and integrates the chain in a child process (both only need the store), not in threads competing with the requests for the GIL")
    allow_unsigned_decisions: bool = Field(default=False, description="development only: let a decision (an admission, an opinion, a grant, a contract step, …) without a signature through, recorded with signature null; serve warns at start and /health says so. Default: every decision is signed by a registered key of its member")
    max_result_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="the largest body of a result post (POST /computations/{id}/result) in bytes; a larger one is answered 413 and nothing is stored")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="the largest request body in bytes (a result post's is max_result_bytes); a larger one is answered 413 unread and nothing is stored")
    body_read_timeout: float = Field(default=15.0, gt=0, description="the longest wait in seconds for the next part of a request body; then 408 and the connection is closed")
    header_read_timeout: float = Field(default=10.0, gt=0, description="the longest a request's head (request line and headers) may take to arrive, from the connection or the previous answer, in seconds; then the connection is closed")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, description="the largest request head (request line and headers) in bytes; a larger one is answered 431 and the connection closed")
    aggregation_sweep_seconds: float = Field(default=2.0, gt=0, description="how often the aggregation node (in serve's API process) fails joint executions past their deadline with a part missing and finishes those whose parts are all in but that were not published")
    keep_alive_timeout: float = Field(default=5.0, gt=0, description="how long an idle connection is kept open for the next request, in seconds")

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: str | None) -> str | None:
        if value is not None and (len(value) < 16 or value.lower() in WEAK_TOKENS):
            raise ValueError("must be at least 16 characters and not a default")
        return value

    @model_validator(mode="after")
    def _quorum_of_witnesses(self) -> Settings:
        witnesses = len(self.witness_url_list) or 2
        if self.witness_quorum is not None and self.witness_quorum > witnesses:
            raise ValueError(f"DATALEDGER_WITNESS_QUORUM: {self.witness_quorum} is more than "
                             f"the {witnesses} witnesses")
        return self

    @property
    def witness_url_list(self) -> list[str]:
        """``witness_urls`` as a list: each URL stripped, empty ones left out."""
        return [url.strip() for url in self.witness_urls.split(",") if url.strip()]

    @property
    def compute_python(self) -> Path:
        """The compute environment's interpreter (it may not exist yet)."""
        return self.compute_venv / "bin" / "python"

    def resolved_database_url(self) -> str:
        """The event store's URL (SQLite file under data_dir unless set)."""
        return self.database_url or f"sqlite:///{self.data_dir.absolute() / 'ledger.db'}"

    def views_path(self) -> str:
        """The SQLite file of the read models in the embedded default."""
        return os.fspath(self.data_dir.absolute() / "views.db")
