"""Every git call lives here. Plain `git` subprocesses: fast to start, no shell, explicit env.

Status commits are built with plumbing on a private index under `.git/reconciler/`, so the
user's index and working tree are never touched except for the ledger paths we wrote.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.files import Entry, blob_id
from reconciler.errors import UserError
from reconciler.ledger.statefile import clear_path

TRAILER = "Reconciler-Build:"
_BASE_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
# Every git child runs in a session of its own: a signal to the reconciler's process group (Ctrl-C, a kill of
# the group) does not cut a ref update, an index write or a push short and leave a stale lock file behind;
# the child finishes its one short step, and the reconciler's fences decide what it means.


class GitError(Exception):
    def __init__(self, args: list[str], code: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} failed ({code}): {stderr.strip()[:500]}")
        self.code = code
        self.stderr = stderr


@dataclass(frozen=True)
class Repo:
    git_dir: Path
    top: Path | None  # working tree, None when bare

    @property
    def root(self) -> Path:
        """The folder relative driver paths are resolved against."""
        return self.top if self.top is not None else self.git_dir

    @property
    def state_dir(self) -> Path:
        """Where the reconciler keeps its lock, cache and temporary files (never the working tree)."""
        path = self.git_dir / "reconciler"
        if path.is_symlink() or (path.exists() and not path.is_dir()):  # disposable (rule 9): it goes
            clear_path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {path}: {exc.strerror}; the reconciler keeps its lock and caches "
                            "there: make the repository writable, then try again") from None
        return path

    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> bytes:
        return run(["--git-dir", str(self.git_dir), *(["--work-tree", str(self.top)] if self.top else []),
                    *args], input=input, env=env, check=check, cwd=self.top or self.git_dir)


def run(args: list[str], *, input: bytes | None = None, env: dict[str, str] | None = None, check: bool = True,
        cwd: Path | None = None) -> bytes:
    full_env = {**os.environ, **_BASE_ENV, **(env or {})}
    try:
        proc = subprocess.run(["git", *args], input=input, capture_output=True, env=full_env, cwd=cwd,
                              check=False, start_new_session=True)
    except FileNotFoundError:
        raise UserError("git is not installed or not on PATH; install git and try again") from None
    if check and proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def open_repo(path: Path) -> Repo:
    if not path.exists():
        raise UserError(f"{path}: no such directory")
    try:
        out = run(["rev-parse", "--absolute-git-dir", "--is-bare-repository", "--show-toplevel"], cwd=path,
                  check=False)
    except NotADirectoryError:
        raise UserError(f"{path}: not a directory") from None
    lines = out.decode().splitlines()
    if len(lines) < 2:
        raise UserError(f"{path} is not a git repository (run `git init` or `reconciler init DIR`)")
    git_dir = Path(lines[0])
    bare = lines[1] == "true"
    top = None if bare or len(lines) < 3 else Path(lines[2])
    return Repo(git_dir=git_dir, top=top)


def resolve(repo: Repo, ref: str) -> str | None:
    out = repo.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).decode().strip()
    return out or None


def head_branch(repo: Repo) -> str | None:
    out = repo.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).decode().strip()
    return out or None


def is_ancestor(repo: Repo, older: str, newer: str) -> bool:
    return _returncode(repo, "merge-base", "--is-ancestor", older, newer) == 0


def _returncode(repo: Repo, *args: str) -> int:
    proc = subprocess.run(["git", "--git-dir", str(repo.git_dir), *args], capture_output=True,
                          env={**os.environ, **_BASE_ENV}, check=False, start_new_session=True)
    return proc.returncode


class GitTree:
    """The files of one commit (a RepoFiles), read in bulk with one `git cat-file --batch`."""

    def __init__(self, repo: Repo, commit: str, paths: tuple[str, ...]) -> None:
        self.repo = repo
        self.commit = commit
        self.paths = paths
        self._entries: dict[str, Entry] | None = None

    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            out = self.repo.git("-c", "core.quotePath=false", "ls-tree", "-r", "-z", "--full-tree", self.commit,
                                "--", *self.paths)
            found: dict[str, Entry] = {}
            for item in out.decode("utf-8", "surrogateescape").split("\0"):  # one decode: 10,000s of files
                if not item:
                    continue
                meta, _, name = item.partition("\t")
                mode, kind, blob = meta.split(" ")
                if kind == "blob":
                    found[name] = Entry(name, mode, blob)
            self._entries = found
        return self._entries

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        entries = self.entries()
        blobs = read_blobs(self.repo, [entries[p].blob for p in paths])
        return {p: blobs[entries[p].blob] for p in paths}


def read_blobs(repo: Repo, blob_ids: list[str]) -> dict[str, bytes]:
    """Read many objects with one `git cat-file --batch` process."""
    unique = list(dict.fromkeys(blob_ids))
    if not unique:
        return {}
    out = repo.git("cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    result: dict[str, bytes] = {}
    pos = 0
    for blob in unique:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode()
        parts = header.split()
        if len(parts) < 3 or parts[1] == "missing":
            raise GitError(["cat-file", "--batch"], 1, f"object {blob} is missing")
        size = int(parts[2])
        result[blob] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return result


def read_file(repo: Repo, commit: str, path: str) -> bytes | None:
    if _returncode(repo, "cat-file", "-e", f"{commit}:{path}") != 0:
        return None
    return repo.git("cat-file", "blob", f"{commit}:{path}")


@dataclass(frozen=True)
class Change:
    commit: str
    time: int
    status: str  # A, M, D
    path: str
    by_reconciler: bool


def changes(repo: Repo, head: str, paths: tuple[str, ...], since: str | None = None) -> list[Change]:
    """File changes under `paths`, oldest first, reachable from head (and not from `since`)."""
    rev = f"{since}..{head}" if since else head
    out = repo.git("-c", "core.quotePath=false", "log", "--reverse", "--topo-order", "--no-renames",
                   "--format=%x1e%H %ct%n%B%x1d", "--name-status", rev, "--", *paths)
    found: list[Change] = []
    for chunk in out.decode("utf-8", "surrogateescape").split("\x1e"):
        if not chunk.strip():
            continue
        head_line, _, rest = chunk.partition("\n")
        body, _, files = rest.partition("\x1d")
        sha, _, when = head_line.partition(" ")
        ours = any(line.startswith(TRAILER) for line in body.splitlines())
        for line in files.splitlines():
            if "\t" not in line:
                continue
            status, _, path = line.partition("\t")
            found.append(Change(sha, int(when), status[:1], path, ours))
    return found


def update_ref(repo: Repo, ref: str, new: str, old: str) -> bool:
    """Move `ref` from `old` to `new` atomically; False when someone else moved it first. Raises GitError
    when it could not be moved for another reason (a stale lock file, a full disk): not a race."""
    proc = subprocess.run(["git", "--git-dir", str(repo.git_dir), "update-ref", "-m", "reconciler: status", ref, new,
                           old], capture_output=True, env={**os.environ, **_BASE_ENV}, check=False,
                          start_new_session=True)
    if proc.returncode == 0:
        return True
    now = resolve(repo, ref) or ZERO
    if now != old:
        return False
    stderr = proc.stderr.decode("utf-8", "replace")
    locked = _LOCK.search(stderr)
    if locked:
        raise GitError(["update-ref", ref], proc.returncode, f"the lock file {locked.group(1)} keeps {ref} from "
                       "moving (a git process is running here, or one crashed); if none runs, remove that file")
    raise GitError(["update-ref", ref], proc.returncode, stderr)


def sync_worktree(repo: Repo, commit: str, paths: list[str]) -> None:
    """Make the index and working tree match `commit` for `paths` (the ledger files we wrote)."""
    if repo.top is None or not paths:
        return
    for start in range(0, len(paths), 500):
        repo.git("checkout", commit, "--", *paths[start:start + 500])


def init_repo(path: Path, branch: str = "main") -> Repo:
    run(["init", "-q", "-b", branch, str(path)])
    return open_repo(path)


def commit_all(repo: Repo, message: str) -> str:
    """Commit everything in the working tree (for `init` and `retry --commit`), as the user when configured."""
    repo.git("add", "-A")
    configured = repo.git("config", "user.email", check=False).strip()
    identity = [] if configured else ["-c", "user.name=reconciler", "-c", "user.email=reconciler@localhost"]
    repo.git(*identity, "commit", "-q", "-m", message)
    return repo.git("rev-parse", "HEAD").decode().strip()


def commit_paths(repo: Repo, paths: list[str], message: str) -> str:
    repo.git("add", "--", *paths)
    configured = repo.git("config", "user.email", check=False).strip()
    identity = [] if configured else ["-c", "user.name=reconciler", "-c", "user.email=reconciler@localhost"]
    repo.git(*identity, "commit", "-q", "-m", message, "--", *paths)
    return repo.git("rev-parse", "HEAD").decode().strip()


# -- remotes ---------------------------------------------------------------------------------------

class RemoteUnreachable(Exception):
    """The remote could not be reached (network, auth, missing repo); not a rejection."""


def upstream_remote(repo: Repo, branch: str) -> str | None:
    out = repo.git("config", "--get", f"branch.{branch}.remote", check=False).decode().strip()
    return out if out and out != "." else None


def fetch(repo: Repo, remote: str, branch: str) -> str | None:
    """Fetch the remote branch into refs/remotes/<remote>/<branch>; its tip, or None if it has none."""
    tracking = f"refs/remotes/{remote}/{branch}"
    try:
        repo.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                 f"+refs/heads/{branch}:{tracking}")
    except GitError as exc:
        if "couldn't find remote ref" in exc.stderr:
            return None
        raise RemoteUnreachable(f"cannot fetch {branch} from {remote}: {exc.stderr.strip()[:300]}") from None
    return resolve(repo, tracking)


class RemoteLocked(UserError):
    """A lock file left in the remote keeps every push out: an environment error, not a race."""


_LOCK = re.compile(r"Unable to create '([^']+\.lock)': File exists")
LOCK_RETRIES = 6  # a lock held for a moment by another pusher goes away; a stale one stays


def push(repo: Repo, remote: str, commit: str, branch: str) -> bool:
    """Push `commit` to the remote branch without force: a compare-and-swap of the remote's ref.

    True when it landed, False when rejected because someone pushed first. Raises RemoteLocked for a
    stale lock file in the remote and RemoteUnreachable when the remote cannot be reached.
    """
    for attempt in range(LOCK_RETRIES):
        proc = subprocess.run(["git", "--git-dir", str(repo.git_dir), "push", "--porcelain", "--quiet", remote,
                               f"{commit}:refs/heads/{branch}"], capture_output=True,
                              env={**os.environ, **_BASE_ENV}, check=False, start_new_session=True)
        if proc.returncode == 0:
            return True
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        locked = _LOCK.search(text)
        if locked:
            if attempt + 1 < LOCK_RETRIES:
                time.sleep(0.25 * (attempt + 1))
                continue
            raise RemoteLocked(f"cannot push to {remote}: the lock file {locked.group(1)} in the remote keeps every "
                               "update out (a git process there crashed, or is stuck); if no git process runs "
                               "there, remove that file, then reconcile again")
        rejected = ("[rejected]", "non-fast-forward", "fetch first", "stale info", "but expected",
                    "incorrect old value")
        if any(marker in text for marker in rejected):
            return False
        if "No space left on device" in text:
            raise UserError(f"cannot push to {remote}: the remote's disk is full; free space there, then reconcile "
                            "again")
        raise RemoteUnreachable(f"cannot push to {remote}: {text.strip()[:300]}")
    return False


def tree_entries(repo: Repo, commit: str, paths: list[str]) -> dict[str, str]:
    """path -> blob id at `commit` for those of `paths` that exist there."""
    if not paths:
        return {}
    out = repo.git("-c", "core.quotePath=false", "ls-tree", "-z", "--full-tree", commit, "--", *paths)
    found = {}
    for item in out.split(b"\0"):
        if item:
            meta, _, path = item.partition(b"\t")
            found[path.decode("utf-8", "surrogateescape")] = meta.decode().split()[2]
    return found


def changed_paths(repo: Repo, old: str, new: str) -> list[str]:
    out = repo.git("-c", "core.quotePath=false", "diff", "--name-only", "-z", "--no-renames", old, new)
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def commits_in(repo: Repo, base: str, tip: str) -> list[tuple[str, bool]]:
    """(commit, made by the reconciler) for commits in base..tip, oldest first."""
    out = repo.git("log", "--reverse", "--format=%x1e%H%n%B", f"{base}..{tip}")
    found = []
    for chunk in out.decode("utf-8", "replace").split("\x1e"):
        if chunk.strip():
            sha, _, body = chunk.partition("\n")
            found.append((sha.strip(), any(line.startswith(TRAILER) for line in body.splitlines())))
    return found


def claim_order(repo: Repo, tip: str, paths: list[str]) -> dict[str, int]:
    """path -> position of the commit that added it, counted from the oldest of them (0), for the ledger records
    `paths`: the order their claims became durable, whatever their timestamps say. A path not found is left out."""
    out = repo.git("log", f"-{max(1, len(paths))}", "--format=%x1e", "--diff-filter=A", "--name-only", tip, "--",
                   *paths, check=False)
    newest_first = [chunk.split() for chunk in out.decode("utf-8", "replace").split("\x1e") if chunk.strip()]
    found: dict[str, int] = {}
    for position, names in enumerate(reversed(newest_first)):
        for name in names:
            if name in paths:
                found[name] = position  # a record added again later (never, by the reconciler) counts from then
    return found


def recent_activity(repo: Repo, tip: str, window: int, now: float, depth: int = 60) -> tuple[int, int | None]:
    """(commits of the last `window` seconds, committer time of the newest commit without the reconciler's
    trailer) among the newest `depth` commits reachable from `tip`."""
    out = repo.git("log", f"-{depth}", "--format=%x1e%ct%n%B", tip, check=False)
    recent, human = 0, None
    for chunk in out.decode("utf-8", "replace").split("\x1e"):
        if not chunk.strip():
            continue
        when, _, body = chunk.partition("\n")
        try:
            stamp = int(when.strip())
        except ValueError:
            continue
        recent += stamp >= now - window
        if human is None and not any(line.startswith(TRAILER) for line in body.splitlines()):
            human = stamp
    return recent, human


def merge_base(repo: Repo, a: str, b: str) -> str | None:
    out = repo.git("merge-base", a, b, check=False).decode().strip()
    return out or None


def index_entries(repo: Repo, paths: list[str]) -> dict[str, str]:
    """path -> blob id in the index (stage 0) for those of `paths` it holds."""
    out = repo.git("-c", "core.quotePath=false", "ls-files", "-s", "-z", "--", *paths) if paths else b""
    found = {}
    for item in out.split(b"\0"):
        if item:
            meta, _, path = item.partition(b"\t")
            found[path.decode("utf-8", "surrogateescape")] = meta.decode().split()[1]
    return found


def worktree_blobs(repo: Repo, paths: list[str]) -> dict[str, str]:
    """path -> blob id of the file in the working tree, for those of `paths` that are regular files."""
    found: dict[str, str] = {}
    if repo.top is None:
        return found
    for path in paths:
        full = repo.top / path
        try:
            if full.is_file() and not full.is_symlink():
                found[path] = blob_id(full.read_bytes())
        except OSError:
            continue
    return found


def remove_paths(repo: Repo, paths: list[str]) -> None:
    """Remove files from the index and the working tree (a move to a commit that deleted them)."""
    repo.git("rm", "-q", "--cached", "--ignore-unmatch", "--", *paths)
    if repo.top is not None:
        for path in paths:
            with contextlib.suppress(OSError):
                (repo.top / path).unlink()


def advance_worktree(repo: Repo, old: str, new: str) -> bool:
    """Fast-forward the checked-out index and working tree from `old` to `new` (like `merge --ff-only`).

    False when local uncommitted changes are in the way; nothing is overwritten then.
    """
    if repo.top is None:
        return True
    return _returncode_wt(repo, "read-tree", "-m", "-u", old, new) == 0


def _returncode_wt(repo: Repo, *args: str) -> int:
    assert repo.top is not None
    proc = subprocess.run(["git", "--git-dir", str(repo.git_dir), "--work-tree", str(repo.top), *args],
                          capture_output=True, env={**os.environ, **_BASE_ENV}, cwd=repo.top, check=False,
                          start_new_session=True)
    return proc.returncode


def read_path(repo: Repo, rev: str, path: str) -> bytes | None:
    """The bytes of `path` at `rev` (one process), or None when it is not there."""
    out = repo.git("cat-file", "--batch", input=f"{rev}:{path}\n".encode())
    header, _, rest = out.partition(b"\n")
    parts = header.split()
    if len(parts) < 3 or parts[-1] == b"missing" or parts[1] != b"blob":
        return None
    return rest[: int(parts[2])]


# -- triggers (push hook, watch daemon) --------------------------------------------------------------

ZERO = "0" * 40


def ls_remote(repo: Repo, remote: str, branch: str) -> str | None:
    """The remote branch's tip without fetching; None when the remote has no such branch."""
    try:
        out = repo.git("ls-remote", "--heads", remote, f"refs/heads/{branch}").decode()
    except GitError as exc:
        raise RemoteUnreachable(f"cannot reach {remote}: {exc.stderr.strip()[:300]}") from None
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


def clone(source: Path, dest: Path, branch: str) -> Repo:
    run(["clone", "--quiet", "--branch", branch, "--origin", "origin", str(source), str(dest)])
    return open_repo(dest)


def hooks_dir(repo: Repo) -> Path:
    """Where git looks for this repository's hooks (honours core.hooksPath)."""
    out = repo.git("rev-parse", "--git-path", "hooks").decode().strip()
    path = Path(out)
    return path if path.is_absolute() else repo.git_dir / path


def status_only(repo: Repo, old: str, new: str, ledger_dir: str) -> bool:
    """True when every commit in old..new is a reconciler status commit touching only the ledger."""
    if old == ZERO:
        return False
    prefix = ledger_dir + "/"
    files: dict[str, list[str]] = {}
    for change in changes(repo, new, (), since=old):
        files.setdefault(change.commit, []).append(change.path)
    commits = commits_in(repo, old, new)
    return bool(commits) and all(ours and all(p.startswith(prefix) for p in files.get(sha, []))
                                 for sha, ours in commits)


def linear_since(repo: Repo, older: str, newer: str) -> bool:
    """True when `older..newer` holds no merge commit (so a walk from `older` can simply be continued)."""
    out = repo.git("rev-list", "--count", "--merges", f"{older}..{newer}", check=False).decode().strip()
    return out == "0"


# -- reading objects in bulk, and where they are written (ledger/objects.py writes them) ------------

def read_objects(repo: Repo, specs: list[str]) -> dict[str, tuple[str, bytes, str]]:
    """`git cat-file --batch` over object names (`<commit>:<path>`, `<commit>^{tree}`, ids): spec ->
    (type, content, id) for those that exist."""
    unique = list(dict.fromkeys(specs))
    if not unique:
        return {}
    out = repo.git("cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
    found: dict[str, tuple[str, bytes, str]] = {}
    pos = 0
    for spec in unique:
        end = out.index(b"\n", pos)
        parts = out[pos:end].split()
        pos = end + 1
        if len(parts) < 3 or parts[-1] == b"missing" or parts[1] == b"ambiguous":
            continue
        size = int(parts[2])
        found[spec] = (parts[1].decode(), out[pos:pos + size], parts[0].decode())
        pos += size + 1
    return found


def object_store(repo: Repo) -> tuple[Path, str]:
    """(objects folder, object format) of the repository (a linked worktree shares its main repo's)."""
    lines = repo.git("rev-parse", "--git-path", "objects", "--show-object-format").decode().split()
    path = Path(lines[0])
    return (path if path.is_absolute() else (repo.top or repo.git_dir) / path), (lines[1] if len(lines) > 1 else "sha1")


# -- the history walk (reconciler.ledger.history) ------------------------------------------------------

@dataclass(frozen=True)
class TreeChange:
    """One path that differs between two trees: its blob before and after ('' when absent)."""

    path: str
    old: str
    new: str


def _blob(sha: str) -> str:
    return "" if not sha.strip("0") else sha


def _diff_blocks(out: bytes) -> list[tuple[str, list[TreeChange]]]:
    """Parse `diff-tree --stdin -z -r` output: (header id, changes) per block, in output order."""
    blocks: list[tuple[str, list[TreeChange]]] = []
    tokens = out.decode("utf-8", "surrogateescape").split("\0")
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith(":"):
            _, _, old, new, _status = token[1:].split(" ")[:5]
            if blocks and i + 1 < len(tokens):
                blocks[-1][1].append(TreeChange(tokens[i + 1], _blob(old), _blob(new)))
            i += 2
            continue
        if token.strip():
            blocks.append((token.strip(), []))
        i += 1
    return blocks


def additions(repo: Repo, head: str, folder: str, since: str | None = None) -> list[tuple[str, int, str]]:
    """(commit, commit time, path) of every file added under `folder`, oldest first (topological), reachable
    from head and not from `since`. Merge commits are not diffed: what a merge brings was added on a side."""
    rev = f"{since}..{head}" if since else head
    out = repo.git("-c", "core.quotePath=false", "log", "--reverse", "--topo-order", "--no-renames",
                   "--diff-filter=A", "--format=%x1e%H %ct", "--name-only", "-z", rev, "--", folder)
    found: list[tuple[str, int, str]] = []
    for chunk in out.decode("utf-8", "surrogateescape").split("\x1e"):
        if not chunk.strip():
            continue
        head_line, *names = chunk.split("\0")  # "<sha> <time>\0\n<path>\0<path>\0"
        sha, _, when = head_line.strip().partition(" ")
        found += [(sha, int(when), name.lstrip("\n")) for name in names if name.strip("\n")]
    return found


def commits_without_trailer(repo: Repo, head: str, since: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """(commit, parents) of every commit reachable from head (not from `since`) whose message has no
    `Reconciler-Build:` line: the commits the reconciler did not make. Oldest first."""
    rev = f"{since}..{head}" if since else head
    out = repo.git("rev-list", "--reverse", "--topo-order", "--parents", "--basic-regexp", "--invert-grep",
                   f"--grep=^{TRAILER}", rev)
    found = []
    for line in out.decode().splitlines():
        sha, *parents = line.split()
        found.append((sha, tuple(parents)))
    return found


def ledger_changes(repo: Repo, commits: list[str], folder: str) -> dict[str, list[TreeChange]]:
    """Per commit, the paths under `folder` it changes against its parent(s) (a root commit: against
    nothing; a merge: against each parent, all together). One `diff-tree --stdin` for all of them."""
    if not commits:
        return {}
    out = repo.git("diff-tree", "--stdin", "-z", "-r", "-m", "--root", "--no-renames", "--", folder,
                   input=("\n".join(commits) + "\n").encode())
    found: dict[str, list[TreeChange]] = {}
    for sha, changes in _diff_blocks(out):
        if changes:
            found.setdefault(sha, []).extend(changes)
    return found


def diffs_against(repo: Repo, pairs: list[tuple[str, str]], folder: str) -> list[dict[str, TreeChange]]:
    """For each (other, commit): the paths under `folder` whose blob differs, `old` being the commit's blob
    and `new` the other's. In input order; one `diff-tree --stdin` for all pairs."""
    if not pairs:
        return []
    lines = "".join(f"{other} {commit}\n" for other, commit in pairs)  # "<commit> <parent>": diff parent -> commit
    out = repo.git("diff-tree", "--stdin", "-z", "-r", "--always", "--no-renames", "--", folder,
                   input=lines.encode())
    blocks = _diff_blocks(out)
    if len(blocks) != len(pairs):
        raise GitError(["diff-tree", "--stdin"], 0, f"expected {len(pairs)} diffs, got {len(blocks)}")
    return [{c.path: c for c in changes} for _, changes in blocks]


def merge_base_of(repo: Repo, parents: tuple[str, ...]) -> str | None:
    """The base a three-way (or octopus) merge of `parents` starts from; None without common history."""
    args = ["merge-base", *(["--octopus"] if len(parents) > 2 else []), *parents]
    out = repo.git(*args, check=False).decode().split()
    return out[0] if out else None


# -- fleet workers' mirrors (SPEC 9.3; used by reconciler.run.fleet) -------------------------------------
# A worker reads the claimed commit from the deployment repo's remote into a bare mirror of its own.

def remote_url(repo: Repo, remote: str) -> str | None:
    """The fetch URL of `remote` (what fleet workers read the claimed commit from); a local path is made
    absolute (workers run elsewhere)."""
    out = repo.git("remote", "get-url", remote, check=False).decode().strip()
    if not out:
        return None
    scp_like = ":" in out.split("/", 1)[0]  # host:path
    if "://" in out or scp_like or Path(out).is_absolute():
        return out
    return str(((repo.top or repo.git_dir) / out).resolve())


def init_bare(path: Path) -> Repo:
    """An empty bare repository at `path` (kept as is when it exists)."""
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run(["init", "-q", "--bare", str(path)])
    return Repo(git_dir=path, top=None)


def has_commit(repo: Repo, commit: str) -> bool:
    return _returncode(repo, "cat-file", "-e", f"{commit}^{{commit}}") == 0


def fetch_commit(repo: Repo, url: str, commit: str) -> None:
    """Bring `commit` (and its history) from `url` into `repo`, kept under refs/fleet/; by id first, else
    every branch (a server that refuses wants of unadvertised ids). RemoteUnreachable when it cannot."""
    repo.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", url, f"+{commit}:refs/fleet/{commit}",
             check=False)
    if has_commit(repo, commit):
        return
    try:
        repo.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", url, "+refs/heads/*:refs/fleet/heads/*")
    except GitError as exc:
        raise RemoteUnreachable(f"cannot fetch from {url}: {exc.stderr.strip()[:300]}") from None
    if not has_commit(repo, commit):
        raise RemoteUnreachable(f"commit {commit[:12]} is not on any branch of {url}")


# -- the working tree, for notices (`plan`, `reconcile`) ---------------------------------------------

def uncommitted(repo: Repo, folder: str) -> list[tuple[str, str]]:
    """(state, path) of files under `folder` that differ from HEAD: new (untracked or only staged),
    modified, deleted. Empty for a bare repository. One `git status`, using the index's stat cache."""
    if repo.top is None:
        return []
    out = repo.git("-c", "core.quotePath=false", "status", "--porcelain=v1", "-z", "--untracked-files=all",
                   "--no-renames", "--", folder, check=False)
    found = []
    for item in out.decode("utf-8", "surrogateescape").split("\0"):
        if len(item) < 4:
            continue
        code, path = item[:2], item[3:]
        state = "new" if "?" in code or "A" in code else "deleted" if "D" in code else "modified"
        found.append((state, path))
    return found


def remotes(repo: Repo) -> list[str]:
    """The names of the repository's remotes (`git remote`), e.g. ["origin"]."""
    return [line for line in repo.git("remote", check=False).decode().splitlines() if line]
