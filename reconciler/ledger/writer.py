"""Writing the ledger: fenced, batched status commits on the deployment branch (SPEC 5, 9.1, 9.2).

One writer per pass owns the branch tip. Builds stage their records and logs here; a writer thread
gathers everything staged into one commit and makes it durable with one compare-and-swap: a push
without force when there is a remote (the remote's ref update is the arbiter between
reconcilers), else moving the local branch from the tip it read. What a save needs to be durable
before anything else happens (a claim, a takeover, a wave of started markers) is waited for;
checkpoints are coalesced into at most one commit every `checkpoint_seconds`; final records are
committed as soon as the writer is free.

Every write of a build is fenced: it counts only while the record on the arbiter still has the
build id, epoch and owner this writer last made durable (for a claim: no record at all, and the
job file unchanged). A rejected compare-and-swap is answered by reading the new tip and checking
each fence; a build whose fence fails is lost: its changes are dropped, never written over the
winner's, and the engine stops it. Nothing is ever committed locally ahead of the arbiter, so there
is nothing to replay after a reconnect. Human commits are never lost: we always build on top.

The writer stamps each record's lease when it builds the commit; `lease_age` tells the engine how
old the newest durable lease of a build is (self-fencing, SPEC 9.1 rule 3).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from reconciler import faults
from reconciler.core.records import LedgerRecord, Owner
from reconciler.core.redact import Redactor
from reconciler.core.timeutil import utcnow
from reconciler.errors import UserError
from reconciler.ledger import git, statefile
from reconciler.ledger.checkout import Checkout
from reconciler.ledger.objects import (
    MODE_BLOB,
    MODE_TREE,
    ObjectsUnwritable,
    ObjectWriter,
    TreeEntry,
    TreeIndex,
    parse_tree,
)

Events = Callable[[str, dict[str, object]], None]
MAX_REJECTIONS = 60  # compare-and-swaps lost in a row before the pass gives up (the branch keeps moving)
HUMAN_ACTIVE_SECONDS = 30  # a human commit this recent on the branch: our pushes are spaced out
PACE_FILE = "pace.json"
BUSY_COMMITS = 10  # commits in HUMAN_ACTIVE_SECONDS that make a branch busy (several writers)
HUMAN_PACE_SECONDS = 12.0  # then at most one push of ours every so many seconds (8 reconcilers: ~0.7 pushes/s)


class BuildLost(Exception):
    """The build's record on the arbiter is no longer ours: another owner took it over, or a human removed it."""


class LedgerUnavailable(UserError):
    """The ledger cannot be made durable now (remote unreachable, disk full, a stale lock): exit 2."""


@dataclass(frozen=True)
class Fence:
    """What the arbiter's record must still say for our next write of a build to count."""

    build_id: str | None  # None: no record may exist (a claim)
    epoch: int = 0
    owner: Owner | None = None
    job_path: str | None = None  # a claim: the job file must still be this blob
    job_blob: str | None = None
    record_blob: str | None = None  # a takeover: the record must still be exactly the version read

    def holds(self, found: dict[str, object] | None, job_blob: str | None, record_blob: str | None = None
              ) -> str | None:
        """None when the fence holds against the record found; else why it does not."""
        if self.build_id is None:
            if found is not None:
                return f"claimed meanwhile (build {found.get('build_id')})"
            if self.job_path is not None and job_blob != self.job_blob:
                return "its job file changed on the branch meanwhile; the next pass re-plans it"
            return None
        if found is None:
            return "its ledger record was removed on the branch"
        if found.get("build_id") != self.build_id:
            return f"its record now belongs to build {found.get('build_id')}"
        if found.get("status") in ("SUCCESS", "FAILURE"):  # a final record is never replaced, also not by its owner
            return f"build {self.build_id} already ended {found.get('status')}"
        epoch = found.get("epoch", 1)
        owner = found.get("owner")
        mine = self.owner.model_dump(mode="json") if self.owner is not None else None
        if epoch != self.epoch or owner != mine:
            host = owner.get("host") if isinstance(owner, dict) else "?"
            return f"build {self.build_id} was taken over (epoch {epoch}, owner on {host})"
        if self.record_blob is not None and record_blob != self.record_blob:
            # the old owner saved again after we read its record (its last push landed late): taking over
            # the stale version would erase what it recorded (started markers, results). The next pass re-reads.
            return f"build {self.build_id} changed since it was read"
        return None


@dataclass
class _Build:
    job: str
    record: LedgerRecord
    log: str
    fence: Fence  # what the arbiter has now (or, before a claim is durable: what it must not have)
    version: int = 0  # bumped at every stage
    durable: int = -1  # the version the arbiter has
    final: bool = False
    renewed: float | None = None  # monotonic time the newest durable lease was computed
    lost: str | None = None
    kind: str = "save"  # claim | takeover | save (for messages)
    expedite: bool = False  # a final record someone waits for: commit it without waiting for the tick
    checked: str | None = None  # the base its fence was last verified against (None: never yet)


@dataclass
class _Waiter:
    builds: dict[str, int]  # build id -> version that must be durable
    done: threading.Event = field(default_factory=threading.Event)


class LedgerWriter:
    def __init__(self, repo: git.Repo, branch: str, tip: str, ledger_dir: str, author: tuple[str, str],
                 redactor: Redactor, remote: str | None = None, events: Events | None = None,
                 lease_seconds: float = 600, checkpoint_seconds: float = 2.0, checkout: Checkout | None = None) -> None:
        self.repo = repo
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        self.base = tip  # the arbiter's tip as we last knew it: every commit builds on it
        self.ledger_dir = ledger_dir
        self.author = author
        self.redactor = redactor
        self.remote = remote
        self.events = events or (lambda event, data: None)
        self.lease_seconds = lease_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self.checkout = checkout
        self.objects = ObjectWriter(*git.object_store(repo))
        self.commits = 0
        self.pushes = 0
        self.rejections: list[float] = []  # monotonic times of recent lost compare-and-swaps
        self._builds: dict[str, _Build] = {}
        self._waiters: list[_Waiter] = []
        self._cond = threading.Condition()
        self._closing = False
        self._broken: str | None = None  # an environment error: nothing more can be written
        self._unreachable: str | None = None  # the remote did not answer the last push
        self._last_commit = 0.0
        self._last_follow = 0.0
        self._unsynced: set[str] = set()  # ledger paths committed but not yet written to the checkout
        self._human_at: int | None = None  # committer time of the newest human commit on the branch
        self._recent = 0  # commits on the branch in the last HUMAN_ACTIVE_SECONDS (as last seen)
        self._noted = 0.0
        self._jitter = random.uniform(0.75, 1.25)
        self._pace_file = repo.state_dir / PACE_FILE
        self._remember_pace(load=True)
        if remote is not None:
            self._note_humans(tip)
        self._trees: tuple[TreeIndex, TreeIndex, TreeIndex] | None = None
        self._job_blobs: dict[bytes, str] = {}
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
        self._thread.start()

    # -- what builds call --------------------------------------------------------------------------
    def claim(self, items: list[tuple[LedgerRecord, str, str]]) -> dict[str, str | None]:
        """Claim jobs together (record, log, job file path): one commit. Per build id: None if it is ours now,
        else why not. Waits until the claims are durable; raises LedgerUnavailable when they cannot be."""
        with self._cond:
            for record, log, job_path in items:
                self._builds[record.build_id] = _Build(record.job, record, log, Fence(None, job_path=job_path,
                                                                                     job_blob=record.job_blob),
                                                       kind="claim")
        self._settle({record.build_id for record, _, _ in items})
        with self._cond:
            return {r.build_id: self._builds[r.build_id].lost for r, _, _ in items}

    def takeover(self, record: LedgerRecord, previous: LedgerRecord, log: str, previous_blob: str | None = None
                 ) -> str | None:
        """Recover an interrupted build: the same build id with epoch + 1 and us as owner, valid only if the
        arbiter still has the epoch and owner we read. None when it is ours now, else why not."""
        fence = Fence(previous.build_id, previous.epoch, previous.owner, record_blob=previous_blob)
        with self._cond:
            self._builds[record.build_id] = _Build(record.job, record, log, fence, kind="takeover")
        self._settle({record.build_id})
        with self._cond:
            return self._builds[record.build_id].lost

    def _settle(self, build_ids: set[str]) -> None:
        """Wait for claims or takeovers; those not durable when the ledger fails are dropped, never written
        later (the pass stops: LedgerUnavailable)."""
        try:
            self._wait(dict.fromkeys(build_ids, 0))
        except LedgerUnavailable:
            with self._cond:
                for bid in build_ids:
                    build = self._builds[bid]
                    if build.durable < 0 and not build.lost:
                        build.lost = f"job {build.job}: not claimed: {self._broken or self._unreachable}"
            raise

    def save(self, record: LedgerRecord, log: str, *, durable: bool = False) -> None:
        """Stage the build's record and log (a final record when its status is final). With `durable`, wait
        until the arbiter has it. Raises BuildLost once the build is not ours, LedgerUnavailable when the
        ledger cannot be written."""
        with self._cond:
            build = self._builds.get(record.build_id)
            if build is None:
                raise BuildLost(f"build {record.build_id} is not owned by this pass")
            if build.lost:
                raise BuildLost(build.lost)
            if self._broken:
                raise LedgerUnavailable(self._broken)
            build.record, build.log = record, log
            build.version += 1
            build.final = record.finished
            version = build.version
            self._cond.notify_all()
        if durable:
            self._wait({record.build_id: version})
            with self._cond:
                if build.lost:
                    raise BuildLost(build.lost)

    def lost(self, build_id: str) -> str | None:
        with self._cond:
            build = self._builds.get(build_id)
            return build.lost if build is not None else None

    def settled(self, build_id: str) -> bool:
        """True once nothing of the build is left to write: its final record is durable, or it is lost."""
        with self._cond:
            return self._is_settled(build_id)

    def expedite(self, build_id: str) -> None:
        """Someone waits for this build's final record (a build on the same target): commit it now, not at the
        next tick."""
        with self._cond:
            build = self._builds.get(build_id)
            if build is not None and build.lost is None and not build.expedite:
                build.expedite = True
                self._cond.notify_all()

    def wait_settled(self, build_ids: list[str], timeout: float) -> None:
        """Until one of these builds is settled (see `settled`), or `timeout` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: any(self._is_settled(b) for b in build_ids), timeout)

    def _is_settled(self, build_id: str) -> bool:
        build = self._builds.get(build_id)
        return build is None or build.lost is not None

    def lease_age(self, build_id: str) -> float:
        """Seconds since the newest durable lease of the build was computed (infinite before any)."""
        with self._cond:
            build = self._builds.get(build_id)
            if build is None or build.renewed is None:
                return float("inf")
            return time.monotonic() - build.renewed

    @property
    def problem(self) -> str | None:
        """Why the ledger cannot be written now (an environment error, or the remote did not answer)."""
        with self._cond:
            return self._broken or self._unreachable

    def flush(self, patience: float = 60.0) -> bool:
        """Wait until everything staged is durable (or lost), retrying a remote that does not answer for up
        to `patience` seconds. False when it could not be (see `problem`)."""
        deadline = time.monotonic() + patience
        while True:
            with self._cond:
                wanted = {bid: b.version for bid, b in self._builds.items() if not b.lost and b.durable < b.version}
                if not wanted:
                    return True
                if self._broken:
                    return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._wait(wanted, left)
            except LedgerUnavailable:
                if self._broken or time.monotonic() >= deadline:
                    return False
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    # -- waiting -----------------------------------------------------------------------------------
    def _wait(self, builds: dict[str, int], timeout: float | None = None) -> None:
        waiter = _Waiter(builds)
        with self._cond:
            if self._satisfied(waiter):
                return
            self._waiters.append(waiter)
            self._cond.notify_all()
        if not waiter.done.wait(timeout):
            with self._cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise LedgerUnavailable(self.problem or "the ledger writer did not answer in time")
        with self._cond:
            if self._broken or (self._unreachable and not self._satisfied(waiter)):
                raise LedgerUnavailable(self._broken or self._unreachable or "")

    def _satisfied(self, waiter: _Waiter) -> bool:
        for bid, version in waiter.builds.items():
            build = self._builds.get(bid)  # gone: its final record is durable
            if build is not None and not build.lost and build.durable < version:
                return False
        return True

    def _wake_waiters(self, fail_all: bool = False) -> None:
        for waiter in list(self._waiters):
            if fail_all or self._satisfied(waiter):
                self._waiters.remove(waiter)
                waiter.done.set()

    # -- the writer thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        retry_at = 0.0
        while True:
            finished = False
            with self._cond:
                batch = self._next_batch(retry_at)
                while batch is None:
                    if self._closing and (not self._dirty() or self._unreachable or self._broken):
                        finished = True
                        break
                    if self._unsynced and time.monotonic() - self._last_follow >= self.checkpoint_seconds:
                        batch = []  # nothing to commit, but the clone is behind our commits: bring it along
                        break
                    self._cond.wait(timeout=0.05)
                    batch = self._next_batch(retry_at)
            if finished:
                self._follow(force=True)
                return
            if not batch:
                self._follow(force=False)
                continue
            try:
                outcome = self._commit(batch)
            except Exception as exc:  # a bug or an unforeseen environment error: stop writing, say why
                outcome = "broken"
                with self._cond:
                    self._broken = self._broken or f"cannot write the ledger: {type(exc).__name__}: {exc}"
            with self._cond:
                if outcome == "unreachable":
                    retry_at = time.monotonic() + 1.0 + random.random()
                    self._wake_waiters(fail_all=bool(self._waiting_for_unpushed()))
                elif outcome == "broken":
                    self._wake_waiters(fail_all=True)
                    if self._closing:
                        return
                else:
                    retry_at = 0.0
                    self._wake_waiters()
                self._cond.notify_all()

    def _dirty(self) -> bool:
        return not self._broken and any(not b.lost and b.durable < b.version for b in self._builds.values())

    def _waiting_for_unpushed(self) -> list[_Waiter]:
        return [w for w in self._waiters if not self._satisfied(w)]

    def _next_batch(self, retry_at: float) -> list[_Build] | None:
        """The builds to write now, or None to keep waiting."""
        if self._broken:
            if self._waiters:
                self._wake_waiters(fail_all=True)
            return None
        now = time.monotonic()
        if now < retry_at and not (self._closing and self._unreachable is None):
            return None
        if self.remote is not None and now - self._last_commit < self._pace and not self._lease_pressed(now):
            return None  # humans are pushing to this branch: every push of ours waits its turn (SPEC 9.2)
        dirty = [b for b in self._builds.values() if not b.lost and b.durable < b.version]
        renew = [b for b in self._builds.values() if not b.lost and not b.final and b.durable >= 0
                 and b.durable == b.version and b.renewed is not None
                 and now - b.renewed > self.lease_seconds / 4]
        # claims, takeovers and started markers are waited for; final records are committed with the next
        # tick (checkpoint_seconds) unless a build on the same target waits for them
        urgent = bool(self._waiting_for_unpushed()) or any(b.final and b.expedite for b in dirty)
        due = now - self._last_commit >= self._interval(now)
        if dirty and (urgent or due or self._closing):
            return dirty + [b for b in renew if b not in dirty]
        if renew:
            return renew
        return None

    def _interval(self, now: float) -> float:
        """Seconds between checkpoint commits: `checkpoint_seconds`, stretched (up to 5 times) while pushes are
        being rejected, so that several reconcilers on one remote leave room for each other and for humans."""
        recent = sum(1 for t in self.rejections if now - t < 30)
        stretch = min(5.0, 1.0 + recent / 2)
        if self._humans_active():  # people are pushing to this branch: leave them room (SPEC 9.2)
            stretch = max(stretch, 3.0)
        return self.checkpoint_seconds * stretch

    @property
    def _pace(self) -> float:
        """The least time between two of our pushes: none; or, while humans and other writers push to the
        branch, a few seconds (at most a fifth of the lease, so leases are still renewed in time), jittered so
        that reconcilers spread out. Rejected pushes do not count: only a ref that moves costs a human a try."""
        now = time.monotonic()
        contended = self._recent >= BUSY_COMMITS or any(now - t < HUMAN_ACTIVE_SECONDS for t in self.rejections)
        if not (contended and self._humans_active()):
            return 0.0
        return min(HUMAN_PACE_SECONDS, self.lease_seconds / 5) * self._jitter

    def _lease_pressed(self, now: float) -> bool:
        """A build of ours whose durable lease is older than lease/3: it is renewed now, pace or not."""
        return any(not b.lost and b.renewed is not None and now - b.renewed > self.lease_seconds / 3
                   for b in self._builds.values())

    def _remember_pace(self, load: bool = False) -> None:
        """Contention outlives a pass (passes are short and follow each other): keep when we last pushed and
        were last rejected, in wall-clock seconds, under .git/reconciler/ (disposable: junk reads as nothing)."""
        if self.remote is None:
            return
        wall, mono = time.time(), time.monotonic()
        if load:
            try:
                data = json.loads(statefile.read_sealed(self._pace_file, 1 << 16) or b"{}")
                self._last_commit = max(self._last_commit, mono - (wall - float(data.get("pushed", 0))))
                self.rejections = [mono - (wall - float(r)) for r in data.get("rejected", []) if wall - float(r) < 60]
            except (ValueError, TypeError, AttributeError):
                pass
            return
        body = {"pushed": wall - (mono - self._last_commit), "rejected": [wall - (mono - r) for r in self.rejections]}
        statefile.write_sealed(self._pace_file, json.dumps(body).encode())

    def _humans_active(self) -> bool:
        return self._human_at is not None and time.time() - self._human_at < HUMAN_ACTIVE_SECONDS

    def _note_humans(self, tip: str) -> None:
        """What the branch shows of other writers: the newest human commit, and how busy it was lately."""
        self._noted = time.monotonic()
        try:
            self._recent, self._human_at = git.recent_activity(self.repo, tip, HUMAN_ACTIVE_SECONDS, time.time())
        except git.GitError:
            self._recent, self._human_at = 0, None

    def _commit(self, batch: list[_Build]) -> str:
        """Make the batch durable: 'ok', 'unreachable' (retry later) or 'broken' (environment error)."""
        for _ in range(MAX_REJECTIONS):
            with self._cond:
                unchecked = [b for b in batch if not b.lost and b.checked != self.base]
            if unchecked:  # staged after the base moved (or never checked): its fence must hold on this base
                self._verify(unchecked, self.base)
            with self._cond:
                live = [b for b in batch if not b.lost]
                snapshot = [(b, b.version, b.record, b.log) for b in live]
            if not snapshot:
                return "ok"
            built = time.monotonic()
            lease = utcnow() + timedelta(seconds=self.lease_seconds)
            files: dict[str, bytes] = {}
            stamped: dict[str, LedgerRecord] = {}
            for _build, _, record, log in snapshot:
                if not record.finished:
                    record = record.model_copy(update={"lease_expires_at": lease})
                stamped[record.build_id] = record
                files[f"{self.ledger_dir}/{record.job}.json"] = self.redactor(record.to_json()).encode("utf-8")
                files[record.log] = self.redactor(log).encode("utf-8")
            point = "claim" if any(b.kind == "claim" for b, *_ in snapshot) else "save"  # failpoint names
            try:
                faults.point(f"{point}.before-commit", " ".join(b.job for b, *_ in snapshot))
                commit = self._build_commit(files, [(b.kind, stamped[b.record.build_id]) for b, *_ in snapshot])
            except (ObjectsUnwritable, git.GitError) as exc:
                self._trees = None
                with self._cond:
                    self._broken = str(exc)
                return "broken"
            result = self._compare_and_swap(commit, point)
            if result != "ok":
                self._trees = None  # built in place for a commit that did not land
            if result == "ok":
                previous = self.base
                self._advance(commit, list(files))
                with self._cond:
                    self._unreachable = None
                    for other in self._builds.values():  # our commit changed only the batch's records
                        if other.checked == previous:
                            other.checked = commit
                    for build, version, _, _ in snapshot:
                        record = stamped[build.record.build_id]
                        build.durable = max(build.durable, version)
                        build.fence = Fence(record.build_id, record.epoch, record.owner)
                        build.renewed = None if record.finished else built
                        build.kind = "save"
                        build.checked = commit
                    self._last_commit = time.monotonic()
                    for build, _, record, _ in snapshot:  # a durable final record is never written again
                        if record.finished and build.durable >= build.version:
                            self._builds.pop(record.build_id, None)
                self._remember_pace()
                if self.remote is not None and time.monotonic() - self._noted > 5:
                    self._note_humans(commit)
                faults.point(f"{point}.after-commit", " ".join(b.job for b, *_ in snapshot))
                return "ok"
            if result in ("unreachable", "broken"):
                return result
            # rejected: someone else moved the branch. Read it, keep what is still ours, try again on top.
            self.rejections = [t for t in self.rejections if time.monotonic() - t < 60] + [time.monotonic()]
            self._remember_pace()
            self.events("push.rejected", {"attempt": len(self.rejections), "jobs": [b.job for b, *_ in snapshot]})
            time.sleep(random.uniform(0, min(2.0, 0.02 * 2 ** min(len(self.rejections), 7))))
            if not self._rebase():
                return "unreachable" if self._unreachable else "broken"
        with self._cond:
            self._broken = (f"could not write the ledger: the branch {self.branch} moved under {MAX_REJECTIONS} "
                            "attempts in a row; reconcile again")
        return "broken"

    # -- commits -----------------------------------------------------------------------------------
    def _load_trees(self) -> tuple[TreeIndex, TreeIndex, TreeIndex]:
        """The root, ledger and logs trees of `base`, kept up to date by our own commits."""
        if self._trees is None:
            specs = [f"{self.base}^{{tree}}", f"{self.base}:{self.ledger_dir}", f"{self.base}:{self.ledger_dir}/logs",
                     f"{self.base}:jobs"]
            found = git.read_objects(self.repo, specs)
            width = self.objects.width
            parsed = [parse_tree(found[s][1], width) if found.get(s) and found[s][0] == "tree" else {} for s in specs]
            self._trees = (TreeIndex(parsed[0]), TreeIndex(parsed[1]), TreeIndex(parsed[2]))
            # our commits never change jobs/: what a claim's fence needs of it holds for every commit of ours
            self._job_blobs = {b"jobs/" + name: entry.oid.hex() for name, entry in parsed[3].items()
                               if not entry.is_tree}
        return self._trees

    def _claims_known_here(self, tip: str, builds: list[_Build]
                           ) -> dict[str, tuple[dict[str, object] | None, str | None, str | None]]:
        """What `_records_at` would read from git for claims at our own base, answered from the trees we keep
        (no record file: nothing to read; the job file's blob from jobs/): claims need no git process each."""
        if self._trees is None or tip != self.base:  # the kept trees are always those of `base`
            return {}
        ledger = self._trees[1]
        return {b.record.build_id: (None, self._job_blobs.get(b.fence.job_path.encode()), None) for b in builds
                if b.fence.build_id is None and b.fence.job_path is not None and b.fence.job_path.startswith("jobs/")
                and "/" not in b.fence.job_path[5:] and f"{b.job}.json".encode() not in ledger.names}

    def _build_commit(self, files: dict[str, bytes], records: list[tuple[str, LedgerRecord]]) -> str:
        """One commit on `base` with `files` (ledger paths) set. Updates the kept trees in place: a commit
        that does not land (rejected, unreachable) drops them, and they are read again from the new base."""
        root, ledger, logs = self._load_trees()
        prefix, logs_prefix = self.ledger_dir + "/", self.ledger_dir + "/logs/"
        for path, data in files.items():
            oid = self.objects.blob(data)
            if path.startswith(logs_prefix):
                logs.set(TreeEntry(MODE_BLOB, path[len(logs_prefix):].encode(), oid))
            else:
                ledger.set(TreeEntry(MODE_BLOB, path[len(prefix):].encode(), oid))
        ledger.set(TreeEntry(MODE_TREE, b"logs", self.objects.tree(logs)))
        root.set(TreeEntry(MODE_TREE, self.ledger_dir.encode(), self.objects.tree(ledger)))
        return self.objects.commit(self.objects.tree(root), self.base, _message(records), self.author,
                                   int(time.time()))

    def _compare_and_swap(self, commit: str, point: str) -> str:
        """'ok', 'rejected' (someone moved the branch first), 'unreachable' or 'broken'."""
        if self.remote is None:
            try:
                return "ok" if git.update_ref(self.repo, self.ref, commit, self.base) else "rejected"
            except git.GitError as exc:
                with self._cond:
                    self._broken = f"cannot move {self.ref}: {exc.stderr.strip()[:300]}"
                return "broken"
        faults.point(f"{point}.before-push")
        try:
            pushed = git.push(self.repo, self.remote, commit, self.branch)
        except git.RemoteLocked as exc:
            with self._cond:
                self._broken = str(exc)
            return "broken"
        except git.RemoteUnreachable as exc:
            with self._cond:
                self._unreachable = str(exc)
            self.events("push.unreachable", {"remote": self.remote, "reason": str(exc)[:300]})
            return "unreachable"
        self.pushes += 1
        return "ok" if pushed else "rejected"

    def _advance(self, commit: str, paths: list[str]) -> None:
        self.base = commit
        self.commits += 1
        self._unsynced.update(paths)
        self._follow(force=False)

    def _follow(self, force: bool) -> None:
        """Bring the clone along (local branch, ledger files): at most every checkpoint_seconds, and at the end."""
        if self.checkout is None or not self._unsynced or self.commits == 0:
            return
        if not force and time.monotonic() - self._last_follow < self.checkpoint_seconds:
            return
        paths, self._unsynced = sorted(self._unsynced), set()
        try:
            self.checkout.follow(self.base, paths, current=self.base if self.remote is None else None)
        except (git.GitError, OSError) as exc:  # the commit is durable; the clone catches up at the next pass
            self.events("local.behind", {"branch": self.branch, "reason": str(exc)[:300]})
        self._last_follow = time.monotonic()

    def _rebase(self) -> bool:
        """Read the arbiter's tip and check every fence against it; lost builds are dropped."""
        try:
            tip = git.fetch(self.repo, self.remote, self.branch) if self.remote else git.resolve(self.repo, self.ref)
        except git.RemoteUnreachable as exc:
            with self._cond:
                self._unreachable = str(exc)
            return False
        if tip is None:
            with self._cond:
                self._broken = f"branch {self.branch} disappeared during the pass"
            return False
        self._note_humans(tip)
        with self._cond:
            builds = [b for b in self._builds.values() if not b.lost]
        self._verify(builds, tip)
        with self._cond:
            self.base = tip
            self._trees = None
            self._wake_waiters()
        return True

    def _verify(self, builds: list[_Build], tip: str) -> None:
        """Check the builds' fences against the records at `tip`; a build whose fence fails is lost."""
        records = self._records_at(tip, builds)
        with self._cond:
            for build in builds:
                if build.lost:
                    continue
                found, job_blob, record_blob = records[build.record.build_id]
                reason = build.fence.holds(found, job_blob, record_blob)
                if reason is not None:
                    build.lost = f"job {build.job}: {reason}"
                    self.events("job.lost", {"job": build.job, "build_id": build.record.build_id, "reason": reason})
                else:
                    build.checked = tip
            self._wake_waiters()

    def _records_at(self, tip: str, builds: list[_Build]
                    ) -> dict[str, tuple[dict[str, object] | None, str | None, str | None]]:
        out = self._claims_known_here(tip, builds)
        builds = [b for b in builds if b.record.build_id not in out]
        if not builds:
            return out
        specs = []
        for build in builds:
            specs.append(f"{tip}:{self.ledger_dir}/{build.job}.json")
            if build.fence.job_path:
                specs.append(f"{tip}:{build.fence.job_path}")
        found = git.read_objects(self.repo, specs)
        for build in builds:
            raw = found.get(f"{tip}:{self.ledger_dir}/{build.job}.json")
            data: dict[str, object] | None = None
            if raw is not None:
                try:
                    parsed = json.loads(raw[1])
                    data = parsed if isinstance(parsed, dict) else {"build_id": None}
                except ValueError:
                    data = {"build_id": None}
            job = found.get(f"{tip}:{build.fence.job_path}") if build.fence.job_path else None
            out[build.record.build_id] = (data, job[2] if job is not None else None,
                                          raw[2] if raw is not None else None)
        return out


def _message(records: list[tuple[str, LedgerRecord]]) -> str:
    """`status: ...` plus one Reconciler-Build trailer per build in the commit."""
    parts = []
    for kind, record in records[:5]:
        if kind == "claim":
            parts.append(f"claim {record.job}")
        elif kind == "takeover":
            parts.append(f"take over {record.job} (epoch {record.epoch})")
        elif record.finished:
            parts.append(f"{record.job} {record.status}")
        else:
            parts.append(f"{record.job} {record.status.lower()}")
    more = f" (+{len(records) - 5} more)" if len(records) > 5 else ""
    trailers = "".join(f"{git.TRAILER} {record.build_id}\n" for _, record in records)
    return f"status: {', '.join(parts)}{more}\n\n{trailers}"
