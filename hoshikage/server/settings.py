"""Server settings: environment variables and ``.env`` files, through pydantic-settings.

Every field's name is its variable (``DIFFUSION_STEPS`` -> ``diffusion_steps``); the
descriptions double as the reference in ``.env.example`` and docs/server.md. Loading
settings never touches the native library.

``.env`` files are read from ``$HOSHIKAGE_HOME/.env`` and then ``./.env`` (the later wins);
real environment variables win over both.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..sampling.params import DIFFUSION_PARAMS, SHARED_PARAMS
from .param_fields import settings_fields

DEFAULT_HOME = "~/.config/hoshikage"


def default_memory_budget_mb() -> int:
    """Half of the machine's physical memory, in MiB (4096 when it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 4096
    return max(256, total // 2 // 2**20)


def host_name(value: str) -> str:
    """A Host header (or ALLOWED_HOSTS entry) as the bare lowercase name: no port, no IPv6 brackets,
    no trailing dot. '' when there is no name."""
    text = value.strip().lower()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text.rstrip(".")


# TEMPERATURE, TOP_P, TOP_K, REPEAT_PENALTY, REPEAT_LAST_N and DIFFUSION_STEPS, DIFFUSION_ALGORITHM,
# DIFFUSION_SCHEDULE, DIFFUSION_EPS, DIFFUSION_BLOCK_LENGTH, DIFFUSION_ALG_TEMP, DIFFUSION_CFG_SCALE:
# declared with the library's parameters (sampling/params.py), with the same ranges as the requests.
_Declared = create_model("_Declared", __base__=BaseSettings, **settings_fields((*SHARED_PARAMS, *DIFFUSION_PARAMS)))


class Settings(_Declared):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=False)

    # --- network and access ------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(3030, ge=1, le=65535, description="TCP port.")
    api_key: str | None = Field(None, description="When set, every endpoint except /v1/status needs "
                                "'Authorization: Bearer <API_KEY>' (or X-API-Key), the admin endpoints too "
                                "unless ADMIN_API_KEY is set. When no key is set, the API is open and the admin "
                                "endpoints accept local clients only (see TRUSTED_PROXIES).")
    admin_api_key: str | None = Field(None, description="When set, the admin endpoints need this key instead "
                                      "of API_KEY (neither API_KEY nor a local client opens them); it also opens "
                                      "every other endpoint. Must differ from API_KEY.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Names the server answers to in the Host header besides HOST, "
        "localhost, 127.0.0.1 and [::1] (JSON list or comma-separated; any port). Other names get 400 "
        "host_not_allowed, which stops DNS rebinding. '*' allows any name (turns the check off).")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-For / X-Forwarded-Proto are believed (JSON list or comma-separated). Empty: those headers "
        "are ignored and the client is the socket's peer. A request carrying a forwarding header never "
        "counts as a local admin client.")
    read_timeout: float = Field(20, gt=0, description="Seconds a client has to send a whole request, headers "
                                "and body, counted from the connection's opening or the request's first "
                                "byte; then 408 request_timeout and the connection is closed (slowloris).")
    max_connections: int = Field(200, ge=1, description="Open HTTP connections, idle keep-alive ones "
                                 "included. One more closes the connection idle longest (no request in "
                                 "progress); when every one has a request in progress, a request on the new "
                                 "connection gets 429 server_busy.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"],
        description="Web origins whose pages may call the API (/v1/...) from a browser (CORS; JSON list or "
        "comma-separated): 'scheme://host', 'scheme://host:port', 'scheme://host:*' (any port) or '*' (any "
        "origin). The admin endpoints are never opened to other origins.")

    # --- files ---------------------------------------------------------------------------
    hoshikage_home: Path = Field(Path(DEFAULT_HOME), description="Folder of model_map.json (the registry) "
                                 "and models/ (GGUF files dropped there are served under their file name).")
    log_file_path: Path | None = Field(None, description="Append logs to this file, rotated daily to "
                                       "LOG_FILE_PATH.YYYY-MM-DD. Unset: log to stdout.")
    log_level: str = Field("INFO", description="Python log level of the server's log.")

    # --- generation defaults (a request's own fields win; the others are declared above) ----
    max_tokens: int = Field(1024, ge=1, description="Answer length when a request gives none. For a "
                            "diffusion model it sets the canvas (prompt + max_tokens), bounded by the context.")
    default_stop: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["<|im_end|>", "</s>"],
        description="Stop strings merged with each model's own (JSON list or comma-separated).")

    # --- llama.cpp ------------------------------------------------------------------------
    n_ctx: int = Field(4096, ge=0, description="Largest context (autoregressive) or canvas (diffusion) "
                       "in tokens; 0 = the model's training length. Contexts are sized per request in "
                       "buckets up to this.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1 = all, 0 = CPU only).")
    n_threads: int = Field(0, ge=0, description="CPU threads for generation; 0 = all available.")
    rpc_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="RPC servers (llama.cpp's rpc-server, HOST:PORT; JSON list or "
        "comma-separated) to split every model across, unless its registry entry names its own \"rpc\". "
        "rpc-server has no authentication: use it on trusted networks only (docs/rpc.md). Hoshikage never "
        "starts one. A model on RPC servers runs in a child process of the server.")
    tensor_split: Annotated[list[float], NoDecode] = Field(
        default_factory=list, description="Proportions of the offloaded layers per device: the RPC servers' "
        "devices, then the GPUs (llama.cpp's --tensor-split, e.g. 3,1). Empty: by free memory.")
    device_memory_limit_mb: int = Field(0, ge=0, description="Memory per device (GPU, RPC server) the "
                                        "diffusion memory check may plan for, when less than what the device "
                                        "reports free (rpc-server has no limit of its own); 0 = what it reports.")
    prompt_cache: bool = Field(True, description="Keep an autoregressive model's KV cache between requests "
                               "and decode only what is new after the longest common prefix (whole 64-token "
                               "chunks), as llama-server's cache_prompt does; answers are bit-identical to "
                               "an uncached run. Freed with the model on idle unload.")

    # --- diffusion bounds (the defaults are declared above; per model in the registry) -----
    max_diffusion_steps: int = Field(1024, ge=1, description="Most denoising steps one request may ask for "
                                     "(request, registry entry or DIFFUSION_STEPS); more get 400 naming "
                                     "diffusion_steps. Each step is a forward pass over the whole canvas.")
    diffusion_timeout_cap: float = Field(1800, gt=0, description="Longest timeout of a diffusion request, in "
                                         "seconds: REQUEST_TIMEOUT scaled by its steps is cut to this (never "
                                         "below REQUEST_TIMEOUT), so no request holds the worker longer.")
    diffusion_memory_budget_mb: int = Field(default_factory=default_memory_budget_mb, ge=1,
                                            description="Largest estimated memory of one diffusion request "
                                            "(logits + compute buffer + sampler); above it the request is "
                                            "refused. Default: half the physical memory.")

    # --- quiet intelligence: use resources only while needed (server/residency.py) ---------
    # IDLE_TIMEOUT unloads the model; GREAT_TIMEOUT, the longer ("great") one, also deletes the
    # RAM-disk copy that lets an unloaded model come back fast.
    idle_timeout: float = Field(300, ge=0, description="Seconds without requests before the model is "
                                "unloaded and its contexts freed; 0 = never.")
    great_timeout: float = Field(3600, ge=0, description="Seconds of complete inactivity before the RAM-disk "
                                 "copy of the model is deleted (the longer of the two idle timers; until "
                                 "then an unloaded model reloads from RAM).")
    ramdisk_path: Path | None = Field(Path("/dev/shm"), description="Copy models here and load them from the "
                                      "copy (Linux; faster reloads). Empty: off.")
    request_timeout: float = Field(300, gt=0, description="Seconds one generation may run; a diffusion request "
                                   "gets REQUEST_TIMEOUT * steps / DIFFUSION_STEPS when that is longer, at most "
                                   "DIFFUSION_TIMEOUT_CAP.")
    queue_timeout: float = Field(120, gt=0, description="Seconds a request may wait for its turn; then 503.")
    load_timeout: float = Field(300, gt=0, description="Seconds a model may take to be made ready: the "
                                "child-process probe, the RAM-disk copy and the load together; past them the "
                                "request gets model_load_failed.")
    max_queue: int = Field(16, ge=0, description="Requests that may wait while one runs; one more gets 429.")

    # --- embeddings (POST /v1/embeddings) ---------------------------------------------------
    embedding_max_inputs: int = Field(2048, ge=1, description="Most inputs one embeddings request may "
                                      "carry (OpenAI's limit); more get 400 naming input.")
    embedding_max_tokens: int = Field(300_000, ge=1, description="Most tokens of all inputs of one embeddings "
                                      "request together (OpenAI's limit); more get 400 naming input. Each input "
                                      "must also fit the context (N_CTX / the model's training length).")

    # --- hardening ------------------------------------------------------------------------
    probe_models: bool = Field(True, description="Load each new model file once in a child process before "
                               "loading it in the server, so a malformed GGUF on which llama.cpp aborts is "
                               "refused instead of killing the server (about a second per new file).")
    max_request_bytes: int = Field(4 * 2**20, ge=1024, description="Largest request body in bytes; a larger "
                                   "one gets 413 request_too_large.")
    admin_model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders from which POST /admin/models may register files (JSON "
        "list or comma-separated); subfolders included, symlinks resolved. Empty: HOSHIKAGE_HOME, the "
        "Hoshikage cache (test models) and the user's home folder.")

    @field_validator("default_stop", "admin_model_dirs", "allowed_hosts", "trusted_proxies", "cors_origins",
                     "rpc_servers", "tensor_split", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """A JSON list, or comma-separated text, as .env files write lists."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [s for s in (p.strip() for p in text.split(",")) if s]
        return value

    @field_validator("rpc_servers", mode="after")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        from ..rpc_endpoints import parse_endpoints

        return parse_endpoints(value, "RPC_SERVERS")

    @field_validator("tensor_split", mode="after")
    @classmethod
    def _split(cls, value: list[float]) -> list[float]:
        from ..rpc_endpoints import parse_tensor_split

        return parse_tensor_split(value, "TENSOR_SPLIT")

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for entry in value:
            if any(c in entry for c in "/@ ") or not host_name(entry):
                raise ValueError(f"ALLOWED_HOSTS entries are host names or addresses (no scheme, path or "
                                 f"spaces), not {entry!r}")
        return [host_name(entry) for entry in value]

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        from .cors import parse_rule

        for entry in value:
            parse_rule(entry)  # ValueError naming the entry
        return [entry.strip() for entry in value]

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for entry in (e for e in value if e != "*"):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES entries are IP addresses or networks (CIDR), or '*', "
                                 f"not {entry!r}") from None
        return value

    @model_validator(mode="after")
    def _distinct_keys(self) -> Settings:
        if self.admin_api_key and self.admin_api_key == self.api_key:
            raise ValueError("ADMIN_API_KEY must differ from API_KEY (with the same value, every API user "
                             "would be an admin); unset it to let API_KEY open the admin endpoints")
        return self

    def served_hosts(self) -> set[str]:
        """Host-header names (see host_name) the server answers to; '*' means any."""
        return {host_name(self.host), "localhost", "127.0.0.1", "::1", *self.allowed_hosts}

    def allowed_model_dirs(self) -> list[Path]:
        """Where POST /admin/models may register files from (resolved)."""
        dirs = self.admin_model_dirs
        if not dirs:
            from .._ffi._loader import cache_dir  # the native library is not opened

            dirs = [self.hoshikage_home, cache_dir(), Path.home()]
        return [Path(d).expanduser().resolve() for d in dirs]

    @field_validator("ramdisk_path", "log_file_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("hoshikage_home", "ramdisk_path", "log_file_path", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("default_stop", mode="after")
    @classmethod
    def _stop_strings(cls, value: list[str]) -> list[str]:
        from .text_rules import surrogate_problem

        problem = surrogate_problem(value)
        if problem is not None:  # e.g. undecodable bytes in the environment: no response could echo them
            raise ValueError(f"DEFAULT_STOP{problem}")
        return value

    @model_validator(mode="after")
    def _look_back_within_the_context(self) -> Settings:
        if self.n_ctx and self.repeat_last_n > self.n_ctx:  # else every request would be refused for it
            raise ValueError(f"REPEAT_LAST_N={self.repeat_last_n} looks back further than N_CTX={self.n_ctx} "
                             "tokens hold; use at most N_CTX, or -1 for the whole context")
        return self

    @property
    def registry_path(self) -> Path:
        return self.hoshikage_home / "model_map.json"

    @property
    def models_dir(self) -> Path:
        return self.hoshikage_home / "models"


def load_settings(**overrides: object) -> Settings:
    """Settings from ``$HOSHIKAGE_HOME/.env``, ``./.env`` and the environment; ``overrides`` win."""
    home = Path(os.environ.get("HOSHIKAGE_HOME", DEFAULT_HOME)).expanduser()
    return Settings(_env_file=(home / ".env", Path(".env")), **overrides)
