"""SPEC 9.1 rule 9, caches are disposable: whatever is under `.git/reconciler/` may be damaged in any way
(truncated, bytes flipped, replaced with garbage, made a folder, a FIFO, a symlink, unreadable) and
`status`, `plan` and `reconcile` give exactly the answers of a clean run, never exit 3.

Runs in-process through `main(argv)` (fast and deterministic: a seeded random choice of file and damage),
plus real passes that run new jobs after damage.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import run_main
from tests.support.repos import commit_all, write

MakeRepo = Callable[..., Path]
TRIALS = 60
DONE = "blocks:\n  - {definition: app, server: srv, users: all, content_tokens: {greeting: hi}}\n"


def answers(repo: Path) -> list[tuple[str, int, str]]:
    found = []
    for args in (["status", "--format", "json"], ["plan", "--format", "json"], ["reconcile"],
                 ["status", "--format", "json"]):
        result = run_main(*args, "--repo", str(repo))
        assert "internal error" not in result.stderr, f"{args}: {result.stderr}"
        found.append((" ".join(args), result.returncode, result.stdout))
    return found


def damage(path: Path, rng: random.Random) -> str:
    """Damage one file (or the folder) at random; returns what was done."""
    data = path.read_bytes() if path.is_file() else b""
    kind = rng.choice(["truncate", "flip", "garbage", "empty", "folder", "fifo", "symlink", "unreadable",
                       "append", "dangling"])
    if kind in ("folder", "fifo", "symlink", "dangling"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        if kind == "folder":
            (path / "inner").mkdir(parents=True)
            (path / "inner" / "x").write_bytes(b"x")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            path.symlink_to("/dev/zero")
        else:
            path.symlink_to(path.with_name("no-such-file"))
        return kind
    if path.is_dir():  # the folder itself: its files damaged at once
        for child in path.rglob("*"):
            if child.is_file():
                child.write_bytes(rng.randbytes(rng.randint(0, 64)))
        return "every file garbage"
    if kind == "truncate":
        path.write_bytes(data[: rng.randint(0, max(0, len(data) - 1))])
    elif kind == "flip":
        raw = bytearray(data or b"\0")
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    elif kind == "garbage":
        path.write_bytes(rng.randbytes(rng.randint(1, 4096)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "append":
        path.write_bytes(data + rng.randbytes(rng.randint(1, 64)))
    else:
        path.chmod(0)
    return kind


def restore(state: Path, pristine: Path) -> None:
    with contextlib.suppress(OSError):
        for child in state.rglob("*"):
            with contextlib.suppress(OSError):
                if not child.is_symlink():
                    child.chmod(stat.S_IRWXU)
    if state.is_symlink() or state.is_file() or (state.exists() and not state.is_dir()):
        state.unlink()
    elif state.exists():
        for child in state.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        state.rmdir()
    shutil.copytree(pristine, state, symlinks=True)


def test_random_damage_never_changes_an_answer(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = make_repo(jobs={"done": DONE, "later": DONE.replace("blocks", "run_at: '2999-01-01T00:00:00Z'\nblocks"),
                           "draft": "suspend: true\n" + DONE})
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0  # a quiet pass: its note is written
    state = repo / ".git" / "reconciler"
    clean = answers(repo)
    assert clean == answers(repo)  # the answers are stable with intact files
    assert {p.name for p in state.iterdir()} >= {"cache-v1.bin", "quiet.json", "lock"}
    pristine = tmp_path / "pristine"
    shutil.copytree(state, pristine, symlinks=True)
    rng = random.Random(20261201)
    damaged: list[str] = []
    for trial in range(TRIALS):
        restore(state, pristine)
        targets = [*sorted(p for p in state.rglob("*") if p.is_file()), state]
        target = rng.choice(targets)
        kind = damage(target, rng)
        what = f"trial {trial}: {target.relative_to(repo)} {kind}"
        damaged.append(what)
        assert answers(repo) == clean, what
        assert answers(repo) == clean, what + " (after the rebuild)"
    for name in ("cache-v1.bin", "quiet.json", "lock"):
        assert any(name in d for d in damaged), name


def test_damaged_cache_and_notes_before_real_work(make_repo: MakeRepo) -> None:
    """A pass with work to do after each kind of damage: the new job runs, exactly as without damage."""
    repo = make_repo(jobs={"first": DONE})
    assert run_main("reconcile", "--repo", str(repo)).returncode == 0
    state = repo / ".git" / "reconciler"
    rng = random.Random(7)
    for i, kind in enumerate(["flip", "truncate", "garbage", "folder", "fifo"]):
        for name in ("cache-v1.bin", "quiet.json"):
            path = state / name
            if path.exists() or path.is_symlink():
                if kind == "flip":
                    raw = bytearray(path.read_bytes() or b"\0")
                    raw[rng.randrange(len(raw))] ^= 0x40
                    path.write_bytes(bytes(raw))
                elif kind == "truncate":
                    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
                elif kind == "garbage":
                    path.write_bytes(rng.randbytes(300))
                else:
                    path.unlink() if not path.is_dir() else shutil.rmtree(path)
                    path.mkdir() if kind == "folder" else os.mkfifo(path)
        write(repo, f"jobs/new-{i}.yaml", DONE)
        commit_all(repo, f"job new-{i}")
        result = run_main("reconcile", "--repo", str(repo))
        assert result.returncode == 0, f"{kind}: {result.stdout}{result.stderr}"
        assert f"new-{i}: SUCCESS" in result.stdout, kind
        again = run_main("reconcile", "--repo", str(repo))
        assert again.returncode == 0 and "nothing to do: " + str(i + 2) in again.stdout, kind
