"""The noise state on disk (shadow.pipeline keeps it; docs/noise.md): read, and written atomically."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import orjson

from shadowproxy.engine.noise import NoiseState, NoiseStateError
from shadowproxy.engine.record import iso_ts
from shadowproxy.errors import ConfigError


def load_noise_state(path: str | os.PathLike[str]) -> NoiseState:
    """The noise state saved at `path`; an empty one when the file does not exist yet."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return NoiseState()
    except OSError as e:
        msg = f"noise state {p}: cannot read it: {e.strerror or e}"
        raise ConfigError(msg) from None
    try:
        return NoiseState.from_dict(orjson.loads(data))
    except (orjson.JSONDecodeError, NoiseStateError) as e:
        msg = f"noise state {p}: {e}"
        raise ConfigError(msg) from None


def save_noise_state(path: str | os.PathLike[str], state: NoiseState) -> None:
    """Write the state atomically: a reader (or a restart after a crash) sees the old file
    or the new one, never half of one."""
    p = Path(path)
    data = orjson.dumps(state.to_dict(iso_ts(time.time())), option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
