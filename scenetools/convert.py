"""Stream a source's scenes into a scene file: selection, parallel decoding, sharding, resume.

Memory stays bounded: scenes are loaded in small batches, at most a few batches ahead of
the writer, and each scene is written as soon as it arrives.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py

from .errors import BadInput
from .interrupts import StopRequest, ignore_stop_signals
from .progress import note, progress
from .scenefile import SceneWriter, prepare_scene, write_index

#: Above this many bytes of raw pixels, ``codec="auto"`` stores PNG instead.
AUTO_PNG_BYTES = 32 * 2**30


def select(refs: list, splits=None, limit=None) -> list:
    """Keep the scenes of ``splits`` (all if None), then the first ``limit`` of each split."""
    if splits:
        unknown = set(splits) - {r.split for r in refs}
        if unknown:
            have = sorted({r.split for r in refs})
            raise BadInput(f"no scenes in split(s) {', '.join(sorted(unknown))} (the input has {', '.join(have)})")
        refs = [r for r in refs if r.split in splits]
    if limit is not None:
        taken = collections.Counter()
        kept = []
        for ref in refs:
            if taken[ref.split] < limit:
                taken[ref.split] += 1
                kept.append(ref)
        refs = kept
    return refs


def choose_codec(codec: str, info, num_scenes: int) -> str:
    """``auto`` stores raw pixels unless they would take more than AUTO_PNG_BYTES."""
    if codec != "auto":
        return codec
    raw_bytes = num_scenes * info.views_per_scene * info.height * info.width * 3
    return "png" if raw_bytes > AUTO_PNG_BYTES else "raw"


def convert(source, out, *, codec: str = "auto", splits=None, limit=None, workers: int = 1,
            shard_size: int | None = None) -> Path:
    """Convert every selected scene of ``source`` into ``out``.

    Re-running an interrupted conversion with the same arguments continues where it
    stopped. With ``shard_size``, scenes go to ``OUT-00000.h5``, ... of that many scenes
    each, joined by the index file ``out``. ``out`` appears only when everything is done.
    """
    out = Path(out)
    refs = select(source.scan(), splits, limit)
    if not refs:
        raise BadInput("found no scenes to convert")
    codec = choose_codec(codec, source.info, len(refs))
    key = _conversion_key(source.info, codec, refs)
    if not shard_size:
        _write_file(source, refs, out, codec, key, workers, desc=out.name)
        return out
    shards = []
    for k, start in enumerate(range(0, len(refs), shard_size)):
        part = refs[start:start + shard_size]
        shard = out.with_name(f"{out.stem}-{k:05d}{out.suffix}")
        if not _is_finished_shard(shard, part):
            _write_file(source, part, shard, codec, f"{key}-{k}", workers, desc=shard.name)
        shards.append(shard)
    return write_index(out, shards)


def _write_file(source, refs, path, codec, key, workers, desc):
    info = source.info
    writer = SceneWriter(path, height=info.height, width=info.width, source=info.source,
                         render_range=info.render_range, codec=codec, fields=info.fields,
                         attrs=info.attrs, resume_key=key)
    with writer:
        if writer.num_written:
            note(f"{path}: resuming an interrupted conversion after {writer.num_written} of {len(refs)} scenes")
        todo = refs[writer.num_written:]
        batches = [todo[i:i + source.batch_size] for i in range(0, len(todo), source.batch_size)]
        with progress(total=len(refs), desc=desc, unit="scenes", initial=writer.num_written) as bar, \
                StopRequest() as stop:
            load = functools.partial(_load_prepared, source, (info.height, info.width, writer.fields, codec))
            for scenes in _map_bounded(load, batches, workers):
                for scene in scenes:
                    writer.add(scene)
                bar.update(len(scenes))
                if stop.requested:  # the partial file keeps what is written, for a resume
                    raise KeyboardInterrupt


def _load_prepared(source, layout, refs):
    """Load scenes and validate and encode them for the output (the work of one worker)."""
    return [prepare_scene(scene, *layout) for scene in source.load(refs)]


def _map_bounded(function, batches, workers):
    """Yield ``function(batch)`` for each batch, in order, with ``workers`` processes
    keeping at most two batches per worker in flight."""
    if workers <= 1:
        yield from map(function, batches)
        return
    context = multiprocessing.get_context("spawn")  # no fork: torch and h5py state stay private
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.submit(function, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _worker_init(parent: int):
    """Worker processes are the parallelism: numeric libraries get one thread each. Stop
    signals are the main process's to handle, and workers end with it."""
    ignore_stop_signals()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    die_with_parent(parent)


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, every: float = 0.5) -> None:
    """End this process as soon as process ``parent`` ends, even by kill -9.

    A worker outlives a killed parent otherwise: it waits forever on the task pipe, which it
    holds open itself, and it ignores SIGTERM. Linux sends SIGKILL at the parent's death;
    elsewhere (and if the parent died before that was set up) a thread notices that this
    process was handed to another parent within ``every`` seconds.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent, every), daemon=True).start()


def _watch_parent(parent: int, every: float) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _conversion_key(info, codec, refs) -> str:
    """Identifies a conversion, so a rerun only resumes a partial file of the same one."""
    digest = hashlib.sha256(json.dumps([info.source, info.height, info.width, info.fields, codec,
                                        info.attrs], sort_keys=True, default=str).encode())
    for ref in refs:
        digest.update(f"{ref.name}\0{ref.split}\n".encode())
    return digest.hexdigest()[:32]


def _is_finished_shard(path: Path, refs) -> bool:
    """Whether ``path`` is a complete shard holding exactly these scenes."""
    try:
        with h5py.File(path, "r") as f:
            return "scenes_written" not in f.attrs and list(f["scenes/name"].asstr()[:]) == [r.name for r in refs]
    except (OSError, KeyError):
        return False
