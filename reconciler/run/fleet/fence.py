"""The per-user fence (SPEC 9.3): at most one driver call per (build, block, user), whatever Celery redelivers.

Celery over Redis with late acks is at least once: a task still running when the visibility timeout passes,
or held by a worker that died, is delivered again. So before a worker calls the driver it takes the user's
fence, a Redis string key per (build id, block, user), epoch-independent:

- absent: `SET key STARTED(W) NX` takes it; the driver is called; `finish` turns it DONE with the outcome
  (secrets masked) and pushes the user onto the build's outcome list in the same script;
- DONE: the stored outcome is the answer; nothing runs;
- STARTED by a live worker (its heartbeat key exists): somebody is running it; wait;
- STARTED by a dead worker: an idempotent driver may take the fence over and run again; a non-idempotent one
  records FAILED "worker lost while running" and never runs it again.

Every change after the first SET is one Lua script, so two deliveries never both decide to run. The fence
Redis must run with `appendonly yes` and `appendfsync always`: a fence acknowledged and then lost in a crash
would let a redelivered task run a second time (docs/fleet.md).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.drivers.base import Outcome
from reconciler.run.fleet import keys

LOST_REASON = "worker lost while running"
MAX_LOG_LINES = 200
MAX_LINE = 1000

Verdict = Literal["run", "done", "running", "absent", "dead"]

# KEYS: fence, done list, metrics. ARGV: mode (worker|observer), me, idempotent (1|0), heartbeat prefix,
# STARTED value to set when taking, lost reason, ttl, task key, now, this delivery's token.
_DECIDE = """
local v = redis.call('GET', KEYS[1])
if not v then
  if ARGV[1] == 'worker' then
    redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[7])
    return {'run', ARGV[5]}
  end
  return {'absent', ''}
end
local f = cjson.decode(v)
if f.state == 'DONE' then return {'done', v} end
if ARGV[1] == 'worker' and (f.token or '') == ARGV[10] and ARGV[10] ~= '' then return {'run', v} end
if f.worker == ARGV[2] or redis.call('EXISTS', ARGV[4] .. f.worker) == 1 then return {'running', v} end
if ARGV[3] == '1' then
  if ARGV[1] == 'worker' then
    redis.call('SET', KEYS[1], ARGV[5], 'EX', ARGV[7])
    redis.call('HINCRBY', KEYS[3], 'takeovers', 1)
    return {'run', ARGV[5]}
  end
  return {'dead', v}
end
local lost = cjson.encode({state='DONE', status='FAILED', worker=f.worker, epoch=f.epoch, at=tonumber(ARGV[9]),
  reason=ARGV[6] .. ': worker ' .. f.worker .. ' stopped during the call, which may have been applied; ' ..
         'it is not run again (see `reconciler retry`)', log={}})
redis.call('SET', KEYS[1], lost, 'EX', ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('HINCRBY', KEYS[3], 'lost', 1)
redis.call('HINCRBY', KEYS[3], 'completed', 1)
redis.call('HINCRBY', KEYS[3], 'completed:FAILED', 1)
return {'done', lost}
"""

# KEYS: fence, done list, metrics, per-worker counts. ARGV: me, DONE value, ttl, task key, status, token.
_FINISH = """
local v = redis.call('GET', KEYS[1])
if v then
  local f = cjson.decode(v)
  if f.state == 'DONE' or f.worker ~= ARGV[1] or (f.token or '') ~= ARGV[6] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], 'completed', 1)
redis.call('HINCRBY', KEYS[3], 'completed:' .. ARGV[5], 1)
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return 1
"""


@dataclass(frozen=True)
class FenceState:
    state: str  # STARTED | DONE
    worker: str
    epoch: int
    status: str = ""
    reason: str = ""
    log: tuple[str, ...] = ()
    token: str = ""  # the delivery that took a STARTED fence

    @property
    def done(self) -> bool:
        return self.state == "DONE"

    def outcome(self) -> Outcome:
        return Outcome(self.status or "FAILED", self.reason)


def parse(raw: bytes | str | None) -> FenceState | None:
    if not raw:
        return None
    data: dict[str, Any] = json.loads(raw)
    return FenceState(state=str(data["state"]), worker=str(data.get("worker", "")), epoch=int(data.get("epoch") or 0),
                      status=str(data.get("status") or ""), reason=str(data.get("reason") or ""),
                      log=tuple(str(line) for line in data.get("log") or ()), token=str(data.get("token") or ""))


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    fence: FenceState | None


def build_of(task_key: str) -> str:
    return task_key.split("/", 1)[0]


class Fences:
    """The fences of one Redis (a `redis.Redis` client; thread-safe)."""

    def __init__(self, client: Any, heartbeat_prefix: str = keys.HEARTBEAT_PREFIX, ttl: int = keys.FENCE_TTL) -> None:
        self.client = client
        self.heartbeat_prefix = heartbeat_prefix
        self.ttl = ttl
        self._decide = client.register_script(_DECIDE)
        self._finish = client.register_script(_FINISH)

    @staticmethod
    def _started(worker: str, epoch: int, token: str) -> str:
        return json.dumps({"state": "STARTED", "worker": worker, "epoch": epoch, "at": time.time(), "token": token})

    def peek(self, task_key: str) -> FenceState | None:
        return parse(self.client.get(keys.fence(task_key)))

    def take(self, task_key: str, worker: str, epoch: int, idempotent: bool, token: str = "") -> Decision:
        """A worker about to call the driver: 'run' (the fence is ours), 'done' or 'running' (someone else's).
        `token` names this delivery: a retry after a lost reply finds its own fence and still runs, once."""
        token = token or secrets.token_hex(8)
        started = self._started(worker, epoch, token)
        if self.client.set(keys.fence(task_key), started, nx=True, ex=self.ttl):
            return Decision("run", parse(started))
        return self._call_decide(task_key, "worker", worker, idempotent, started, token)

    def observe(self, task_key: str, idempotent: bool) -> Decision:
        """The reconciler's look: 'absent', 'done', 'running' or 'dead' (an idempotent user whose worker died:
        re-dispatch it). A non-idempotent user whose worker died is turned DONE "worker lost" here."""
        return self._call_decide(task_key, "observer", "", idempotent, "")

    def observe_many(self, tasks: Sequence[tuple[str, bool]]) -> list[Decision]:
        """`observe` for many (task key, idempotent) pairs in one round trip."""
        if not tasks:
            return []
        pipe = self.client.pipeline(transaction=False)
        for task_key, idempotent in tasks:
            self._decide(keys=self._keys(task_key), args=self._args(task_key, "observer", "", idempotent, ""),
                         client=pipe)
        return [self._decision(reply) for reply in pipe.execute()]

    def finish(self, task_key: str, worker: str, epoch: int, outcome: Outcome, log: Sequence[str] = (),
               token: str | None = None) -> bool:
        """Store the outcome (already masked); False when the fence is no longer ours (decided meanwhile).
        `token`: the delivery that took the fence (default: whatever delivery of `worker` holds it)."""
        lines = [line[:MAX_LINE] for line in log[-MAX_LOG_LINES:]]
        done = json.dumps({"state": "DONE", "status": outcome.status, "reason": outcome.reason, "worker": worker,
                           "epoch": epoch, "at": time.time(), "log": lines})
        if token is None:
            held = self.peek(task_key)
            token = held.token if held is not None else ""
        result = self._finish(keys=[keys.fence(task_key), keys.done_list(build_of(task_key)), keys.METRICS,
                                    keys.WORKER_COMPLETED],
                              args=[worker, done, self.ttl, task_key, outcome.status, token])
        return bool(result)

    # -- script plumbing ---------------------------------------------------------------------------
    def _keys(self, task_key: str) -> list[str]:
        return [keys.fence(task_key), keys.done_list(build_of(task_key)), keys.METRICS]

    def _args(self, task_key: str, mode: str, worker: str, idempotent: bool, started: str,
              token: str = "") -> list[Any]:
        return [mode, worker, "1" if idempotent else "0", self.heartbeat_prefix, started, LOST_REASON, self.ttl,
                task_key, time.time(), token]

    def _call_decide(self, task_key: str, mode: str, worker: str, idempotent: bool, started: str,
                     token: str = "") -> Decision:
        reply = self._decide(keys=self._keys(task_key),
                             args=self._args(task_key, mode, worker, idempotent, started, token))
        return self._decision(reply)

    @staticmethod
    def _decision(reply: Sequence[bytes | str]) -> Decision:
        verdict = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return Decision(verdict, parse(reply[1]))  # type: ignore[arg-type]  # one of the script's verdicts
