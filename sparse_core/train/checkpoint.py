"""Atomic, verified checkpoints of a dict of Stateful objects (model, optimizer, scaler, controller,
data position, RNG) plus plain data; exact resume.

    ckpt = CheckpointManager(out_dir / "ckpt", keep_last=3)
    state = {"model": model, "optimizer": opt, "sparse": ctl, "step": step}
    rngs = gather_rng_states()                     # every rank (a collective under DDP)
    if is_main: ckpt.save(step, {**state, "rng": rngs})   # rank 0 writes
    found = ckpt.load_latest()                     # every rank
    if found:
        step, loaded = found
        restore(state, loaded)
        restore_rng_states(loaded["rng"], rank, world_size, reseed=seed + rank + 7919 * step)

Files: `ckpt_<step:08d>.pt` (torch.save of {"format", "step", "state"}) and `manifest.json` listing
each file's step and sha256. A run resumed from an earlier checkpoint that saves moves the later ones, the one at
its own step included (the branch it left; all of them when it was resumed from a file outside the folder), to
`abandoned/branch_<k>/`, so that pruning and `load_latest` follow it and nothing is deleted. Every write goes temp file -> fsync -> os.replace -> fsync(dir), so a
crash leaves either the old or the new file, never half of one. Everything loads with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from sparse_core.train.faults import at_checkpoint_write

__all__ = ["CheckpointManager", "CheckpointError", "RNGState", "gather_rng_states", "restore_rng_states", "restore",
           "load_checkpoint"]

_FORMAT = 1
_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")
_MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp_"
ABANDONED = "abandoned"  # holds branch_<k>/: the checkpoints of a branch a resumed run left behind
# Leaf types torch.load(weights_only=True) accepts; anything else fails at save time, not at resume.
_LEAVES = (torch.Tensor, str, bytes, int, float, bool, complex, type(None), torch.Size, torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a checkpoint does not match the state it should restore."""


def _is_stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Any, before_replace: Any = None) -> None:
    """Call `write(fileobj)` on a temp file beside `path`, fsync it, rename it over `path`, fsync the dir.
    `before_replace(tmp_path)`, if given, runs just before the rename (the fault-injection point)."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, I/O error: say which file, and that nothing was replaced
        Path(tmp).unlink(missing_ok=True)
        full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        hint = " (free disk space or lower keep_last)" if full else ""
        raise OSError(e.errno, f"writing {path} failed: {e.strerror or e}; {path.name} was not replaced and "
                      f"earlier checkpoints are intact{hint}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError naming the first value that weights_only loading would refuse."""
    if isinstance(value, (dict, OrderedDict)):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None), tuple)):
                raise TypeError(f"checkpoint key {where}[{k!r}] has type {type(k).__name__}; use str/int keys")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _LEAVES):
        raise TypeError(
            f"checkpoint value {where} has type {type(value).__name__}, which torch.load(weights_only=True) "
            "cannot read; convert it to tensors, numbers, strings, lists or dicts"
        )


def _read_checkpoint(path: Path, expected_sha: str | None, map_location: Any) -> tuple[int, dict[str, Any]]:
    """Load and verify one checkpoint file; raise CheckpointError with the reason."""
    if expected_sha is not None:
        actual = _sha256(path)
        if actual != expected_sha:
            raise CheckpointError(f"sha256 {actual[:12]}... does not match the manifest's {expected_sha[:12]}...")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt zips
        raise CheckpointError(f"torch.load failed: {type(e).__name__}: {e}") from e
    if not (isinstance(payload, dict) and payload.get("format") == _FORMAT and isinstance(payload.get("state"), dict)
            and isinstance(payload.get("step"), int)):
        keys = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"not a sparse_core checkpoint (format {_FORMAT} with an int 'step' and a dict "
                              f"'state'); it has {keys}")
    return int(payload["step"]), payload["state"]


def _read_manifest(directory: Path) -> tuple[dict[str, dict[str, Any]] | None, dict[str, Any] | None]:
    """(file name -> entry, pending set-aside) from manifest.json; (None, None) (with a warning) when it is missing
    or unreadable. The pending set-aside names checkpoints of a left branch that a save decided to move."""
    path = directory / _MANIFEST
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text())
        entries = {e["file"]: e for e in data["checkpoints"]}
        for name, e in entries.items():
            if not (isinstance(name, str) and isinstance(e.get("sha256"), str) and len(e["sha256"]) == 64):
                raise ValueError(f"entry {e!r} lacks a file name or a sha256")
        pending = data.get("set_aside")
        if pending is not None and not (isinstance(pending.get("to"), str) and isinstance(pending.get("files"), list)):
            raise ValueError(f"set_aside {pending!r} lacks a folder or a file list")
        return entries, pending
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(f"{path}: unreadable manifest ({e}); checkpoints will be loaded without sha256 checks")
        return None, None


def _manifest_entries(directory: Path) -> dict[str, dict[str, Any]] | None:
    """file name -> entry from manifest.json; None (with a warning) when it is missing or unreadable."""
    return _read_manifest(directory)[0]


def _write_manifest(directory: Path, entries: Any, pending: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {"format": _FORMAT, "checkpoints": sorted(entries, key=lambda e: e["step"])}
    if pending is not None:
        data["set_aside"] = pending
    text = json.dumps(data, indent=1)
    _atomic_write(directory / _MANIFEST, lambda f: f.write(text.encode()))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> tuple[int, dict[str, Any]]:
    """Load one checkpoint file (eval tools); sha256-checked when its directory's manifest lists it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    entries = _manifest_entries(path.parent) or {}
    sha = entries.get(path.name, {}).get("sha256")
    try:
        return _read_checkpoint(path, sha, map_location)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e


class CheckpointManager:
    """Saves `ckpt_<step>.pt` atomically, keeps the newest `keep_last`, loads the newest good one."""

    def __init__(self, directory: str | Path, keep_last: int = 3) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an int >= 1, got {keep_last!r}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        # where the run continues from (set by load / load_latest, cleared by the next save): (path, step, inside this
        # folder); a save sets aside the folder's checkpoints after that step, or all of them when it was outside
        self._resumed_from: tuple[Path, int, bool] | None = None

    def path_for(self, step: int) -> Path:
        return self.directory / f"ckpt_{step:08d}.pt"

    def require_empty(self, how_to_resume: str) -> None:
        """Refuse to start a fresh run over a directory that holds checkpoints: keep_last would delete the new
        run's low-step checkpoints in favour of the old run's higher steps. `how_to_resume` names the option."""
        if self._on_disk():
            raise CheckpointError(f"{self.directory} already holds checkpoints; use {how_to_resume} to continue, "
                                  "or another run_name / out_dir")

    def _on_disk(self) -> dict[str, int]:
        """file name -> step for every checkpoint file in the directory."""
        if not self.directory.is_dir():
            return {}
        found = {}
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_file():
                found[p.name] = int(m.group(1))
        return found

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write the checkpoint of `state` at `step`. Call on rank 0 only (then `barrier()` if other ranks
        read it next); with DDP, pass the bare model. Returns the file's path."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if not isinstance(state, dict) or not state:
            raise TypeError(f"state must be a non-empty dict of name -> Stateful or plain data, got {state!r}")
        payload = {}
        for name, obj in state.items():
            if not isinstance(name, str):
                raise TypeError(f"state keys must be strings, got {name!r}")
            payload[name] = obj.state_dict() if _is_stateful(obj) else obj
            _check_plain(payload[name], name)

        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f"{_TMP_PREFIX}*"):  # left by a crash mid-save
            stale.unlink(missing_ok=True)
        entries, pending = _read_manifest(self.directory)
        entries = entries or {}
        if pending is not None:  # a crash left a decided set-aside unfinished
            self._set_aside(pending, entries)
        later = self._left_branch(step)
        resumed, self._resumed_from = self._resumed_from, None
        if later:  # decided in the manifest before anything moves: from here on a crash leaves them ignored, and a
            # run with nothing else to resume from goes back to where this one started
            pending = {"to": self._new_branch(), "files": sorted(later)}
            if resumed is not None:
                pending["resumed_from"] = str(resumed[0])
            _write_manifest(self.directory, entries.values(), pending)
            self._set_aside(pending, entries)  # before the write: the left branch may hold a file at this very step
        path = self.path_for(step)
        _atomic_write(path, lambda f: torch.save({"format": _FORMAT, "step": step, "state": payload}, f),
                      lambda tmp: at_checkpoint_write(step, "file", tmp))
        at_checkpoint_write(step, "manifest")

        entries[path.name] = {"file": path.name, "step": step, "sha256": _sha256(path), "bytes": path.stat().st_size}
        steps = self._on_disk()
        keep = sorted(steps, key=lambda n: steps[n])[-self.keep_last :]
        _write_manifest(self.directory, (entries[n] for n in keep if n in entries))
        for name in steps:
            if name not in keep:
                (self.directory / name).unlink(missing_ok=True)
        return path

    def _left_branch(self, step: int) -> dict[str, int]:
        """The folder's checkpoints (name -> step) that belong to a branch this run left: those after the step it
        was resumed from in this folder (the one at the saved step included), all of them when it was resumed
        from elsewhere, and without a load only those after `step`."""
        on_disk = self._on_disk()
        if self._resumed_from is None:
            return {n: s for n, s in on_disk.items() if s > step}
        _, start, inside = self._resumed_from
        return {n: s for n, s in on_disk.items() if not inside or s > start}

    def _new_branch(self) -> str:
        """`abandoned/branch_<k>` for the first k not taken."""
        k = 0
        while (self.directory / ABANDONED / f"branch_{k}").exists():
            k += 1
        return f"{ABANDONED}/branch_{k}"

    def _set_aside(self, pending: dict[str, Any], entries: dict[str, dict[str, Any]]) -> None:
        """Move the checkpoints `pending` names (a branch a resumed run left) into its folder, manifest entries
        first: keep_last and load_latest then follow this run, and the other branch stays loadable by path.
        Safe to repeat after a crash part-way (files already moved are skipped, entries merged)."""
        aside = self.directory / pending["to"]
        aside.mkdir(parents=True, exist_ok=True)
        moved = _manifest_entries(aside) or {}
        moved.update({name: entries.pop(name) for name in pending["files"] if name in entries})
        _write_manifest(aside, moved.values())
        for name in pending["files"]:
            if (self.directory / name).exists():
                os.replace(self.directory / name, aside / name)
        _fsync_dir(self.directory)
        steps = sorted(int(m.group(1)) for m in map(_NAME.match, pending["files"]) if m)
        warnings.warn(f"{self.directory}: this run went back to an earlier step; the checkpoints of the run it left, "
                      f"steps {steps}, were moved to {aside}")

    def load_latest(self, map_location: Any = "cpu") -> tuple[int, dict[str, Any]] | None:
        """(step, state) of the newest checkpoint that verifies; bad ones are skipped with a warning. Checkpoints a
        save has decided to set aside (a left branch; a crash stopped the move) are not candidates."""
        entries, pending = _read_manifest(self.directory)
        steps = self._on_disk()
        for name in (pending or {}).get("files", []):
            steps.pop(name, None)
        if not steps:
            origin = (pending or {}).get("resumed_from")
            if origin is None or not Path(origin).is_file():
                return None
            warnings.warn(f"{self.directory}: a save of a run resumed from {origin} was interrupted before its first "
                          f"checkpoint; resuming from {origin} again")
            return self.load(origin, map_location)
        failures = []
        for name in sorted(steps, key=lambda n: steps[n], reverse=True):
            path = self.directory / name
            sha = None
            if entries is not None:
                if name not in entries:
                    warnings.warn(f"{path}: not listed in {_MANIFEST} (crash before the manifest update?); "
                                  "loading it without a sha256 check")
                else:
                    sha = entries[name]["sha256"]
            try:
                step, state = _read_checkpoint(path, sha, map_location)
            except CheckpointError as e:
                warnings.warn(f"skipping checkpoint {path}: {e}")
                failures.append(f"{name}: {e}")
                continue
            if step != steps[name]:
                reason = f"file name says step {steps[name]} but it holds step {step}"
                warnings.warn(f"skipping checkpoint {path}: {reason}")
                failures.append(f"{name}: {reason}")
                continue
            self._resumed_from = (path, step, True)
            return step, state
        raise CheckpointError(f"no usable checkpoint in {self.directory}; every one failed:\n  " + "\n  ".join(failures))

    def load(self, path: str | Path, map_location: Any = "cpu") -> tuple[int, dict[str, Any]]:
        """(step, state) of one file, a path or a name inside this directory; raises CheckpointError."""
        path = Path(path)
        if not path.exists() and (self.directory / path).exists():
            path = self.directory / path
        step, state = load_checkpoint(path, map_location)
        pending = _read_manifest(self.directory)[1] if self.directory.is_dir() else None
        inside = (path.resolve().parent == self.directory.resolve()
                  and path.name not in (pending or {}).get("files", []))  # a file being set aside is elsewhere
        self._resumed_from = (path.resolve(), step, inside)
        return step, state


def restore(state: dict[str, Any], loaded: dict[str, Any], optional: tuple[str, ...] = ()) -> None:
    """Call `load_state_dict` on each Stateful object of `state` with its entry in `loaded`.

    Plain-data entries of `state` are left alone: read them from `loaded` yourself. Pass the bare
    model (not the DDP / torch.compile wrapper) both when saving and restoring. Entries named in
    `optional` may be missing from `loaded` (checkpoints written before they existed): left as they are.
    """
    for name, obj in state.items():
        if not _is_stateful(obj) or (name in optional and name not in loaded):
            continue
        if name not in loaded:
            raise CheckpointError(f"checkpoint has no entry {name!r} to restore; it has {sorted(loaded)}")
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"state[{name!r}] ({type(obj).__name__}) has state_dict() but no load_state_dict()")
        try:
            obj.load_state_dict(loaded[name])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:  # missing/unexpected keys, shapes
            raise CheckpointError(f"checkpoint entry {name!r} does not fit this {type(obj).__name__}: "
                                  f"{type(e).__name__}: {e}") from e


class RNGState:
    """Stateful view of this process's python `random`, numpy global, torch CPU and all CUDA generators.

    It captures the calling process only; a multi-rank run checkpoints every rank's streams with
    `gather_rng_states` / `restore_rng_states`. Numpy `Generator` objects you create yourself are not
    covered; seed them from the step instead.
    """

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {
            "python": [version, list(internal), gauss],
            "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": list(cuda),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        missing = {"python", "numpy", "torch", "cuda"} - set(sd)
        if missing:
            raise CheckpointError(f"RNG state lacks {sorted(missing)}")
        version, internal, gauss = sd["python"]
        random.setstate((int(version), tuple(int(x) for x in internal), gauss))
        name, keys, pos, has_gauss, cached = sd["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
        torch.set_rng_state(sd["torch"].cpu())
        cuda = sd["cuda"]
        if cuda and torch.cuda.is_available():
            n = torch.cuda.device_count()
            if len(cuda) != n:
                warnings.warn(f"checkpoint has {len(cuda)} CUDA RNG states, this machine {n} devices; restoring "
                              f"the first {min(n, len(cuda))}")
            for i, s in enumerate(cuda[:n]):
                torch.cuda.set_rng_state(s.cpu(), i)
        elif cuda:
            warnings.warn("checkpoint holds CUDA RNG states but CUDA is not available; they are not restored")


def gather_rng_states() -> list[dict[str, Any]]:
    """Every process's `RNGState().state_dict()`, indexed by rank: a collective under torch.distributed
    with more than one process (every rank must call it), a one-element list otherwise."""
    mine = RNGState().state_dict()
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world_size == 1:
        return [mine]
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def restore_rng_states(saved: list[dict[str, Any]] | dict[str, Any], rank: int, world_size: int, reseed: int) -> bool:
    """Continue this rank's random streams from `saved` (a checkpoint's `gather_rng_states()`); True if done.

    The rule: the states of N processes continue only on a run of N processes, rank r taking entry r.
    A single dict (checkpoints written before every rank's state was kept: rank 0's alone) counts as the
    state of one process. When the counts differ, rank 0 warns with both, and every rank seeds python,
    numpy and torch (CPU and CUDA) from `reseed` (make it differ per rank) and gets False.
    """
    for name, value in (("rank", rank), ("world_size", world_size), ("reseed", reseed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    states = [saved] if isinstance(saved, dict) else saved
    if not isinstance(states, list) or not states or not all(isinstance(s, dict) for s in states):
        raise CheckpointError(f"checkpoint RNG entry must be a non-empty list of per-rank state dicts (or one "
                              f"dict), got {type(saved).__name__}: {str(saved)[:80]}")
    if len(states) == world_size:
        RNGState().load_state_dict(states[rank])
        return True
    if rank == 0:
        warnings.warn(f"checkpoint holds the RNG states of {len(states)} process(es), this run has {world_size}: "
                      "random streams are reseeded, not continued")
    random.seed(reseed)
    np.random.seed(reseed % 2**32)
    torch.manual_seed(reseed)  # CUDA generators too
    return False
