"""Text, JSON and table rendering of the result objects (problems, plans, job lists)."""

from __future__ import annotations

import json
import sys
from typing import Any

from reconciler.core.problems import Problem, printable
from reconciler.core.shown import short_build_id, shown_time

JOB_COLUMNS = ("job", "build id", "environment", "organization", "module type", "module name", "action",
               "status", "created", "last run")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_problems(problems: list[Problem], stream: Any = None) -> None:
    stream = stream or sys.stdout
    for problem in problems:
        stream.write(problem.as_text() + "\n")


def _joined(blocks: list[dict[str, Any]], key: str) -> str:
    values = [str(b.get(key)) for b in blocks if b.get(key) is not None]
    return ",".join(dict.fromkeys(values)) or "-"


def job_cells(row: dict[str, Any]) -> list[str]:
    blocks = row["blocks"]
    return [row["job"], row["build_id"] or "-", _joined(blocks, "environment"), _joined(blocks, "organization"),
            _joined(blocks, "module_type"), _joined(blocks, "definition"), _joined(blocks, "action"),
            row["status"], row["created_at"] or "-", row["last_run_at"] or "-"]


STATUS_STYLE = {"SUCCESS": "green", "FAILURE": "red", "WORKING": "yellow", "IN-PROGRESS": "yellow",
                "INVALID": "red", "MODIFIED": "magenta", "PENDING": "cyan", "SCHEDULED": "blue",
                "SUSPENDED": "dim", "DELETED": "dim", "BLOCKED": "red", "WAITING": "cyan", "FROZEN": "blue"}


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def print_job_lines(rows: list[dict[str, Any]]) -> None:
    """On a terminal: one line per job that fits its width (job, status, environment, last run, short build).
    The job name gets what the fixed columns leave; long names and environments end in an ellipsis."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    cells = [(printable(r["job"]), r["status"], printable(_joined(r["blocks"], "environment")),
              shown_time(r["last_run_at"]), short_build_id(r["build_id"])) for r in rows]
    heads = ("JOB", "STATUS", "ENVIRONMENT", "LAST RUN", "BUILD")
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(heads)]
    widths[2] = min(widths[2], 24)
    fixed = widths[1] + widths[2] + widths[3] + widths[4] + 2 * 4
    if console.width - fixed < min(12, widths[0]):  # too narrow for the job names: the environment goes first
        widths[2] = 0
        fixed = widths[1] + widths[3] + widths[4] + 2 * 3
    widths[0] = max(3, min(widths[0], console.width - fixed))

    def line(values: tuple[str, ...], style: str | None = None, status_style: str = "") -> Text:
        out = Text(no_wrap=True, overflow="crop")
        for i, value in enumerate(values):
            if widths[i] == 0:
                continue
            if out:
                out.append("  ")
            cell = _fit(value, widths[i]).ljust(widths[i]) if i < 4 else _fit(value, widths[i])
            out.append(cell, style=status_style if i == 1 and status_style else style)
        return out

    console.print(line(heads, style="bold"), crop=True)
    for values in cells:
        console.print(line(values, status_style=STATUS_STYLE.get(values[1], "")), crop=True)
    console.print(Text(_fit(f"{len(rows)} job(s); `reconciler status JOB` for one job, `-o wide` for every "
                            "column", console.width), style="dim"), crop=True)


def print_job_table(rows: list[dict[str, Any]]) -> None:
    """Every column: a table on a terminal (`-o wide`); otherwise one tab-separated line per job, never
    truncated, full build ids."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_lines=False, header_style="bold")
        for column in JOB_COLUMNS:
            table.add_column(column.upper(), overflow="fold")
        for row in rows:
            cells = [escape(printable(c)) for c in job_cells(row)]
            cells[7] = _styled(row["status"])
            if row.get("reason"):  # WAITING, BLOCKED, FROZEN: why, under the state
                cells[7] += f"\n[dim]{escape(row['reason'])}[/dim]"
            table.add_row(*cells)
        Console().print(table)
        return
    sys.stdout.write("\t".join(c.upper().replace(" ", "_") for c in JOB_COLUMNS) + "\n")
    for row in rows:  # one line per job even when a hostile file name holds a newline or a tab
        sys.stdout.write("\t".join(printable(c) for c in job_cells(row)) + "\n")


def print_job_detail(detail: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"job:         {detail['job']}\n")
    out.write(f"status:      {detail['status']}\n")
    out.write(f"build id:    {detail['build_id'] or '-'}\n")
    out.write(f"created:     {detail['created_at'] or '-'}\n")
    out.write(f"last run:    {detail['last_run_at'] or '-'}\n")
    if detail.get("reason"):
        out.write(f"reason:      {detail['reason']}\n")
    if detail.get("runs_at"):
        out.write(f"runs at:     {detail['runs_at']}\n")
    if detail.get("description"):
        out.write(f"description: {detail['description']}\n")
    if detail.get("retry_of"):
        out.write(f"retry of:    {detail['retry_of']}\n")
    if detail.get("retried_by"):
        out.write(f"retried by:  {', '.join(detail['retried_by'])}\n")
    record = detail.get("record")
    if record and record.get("error"):
        out.write(f"error:       {record['error']}\n")
    rollout = detail.get("rollout") or []
    for index, block in enumerate(detail["blocks"]):
        out.write(f"\nblock {index}: {block['action']} {block['definition']} ({block['module_type']}) on "
                  f"{block['server']} [{block['environment']} / {block['organization']}]\n")
        if index < len(rollout) and rollout[index]:
            out.write(f"  rollout: {rollout[index]['summary']}\n")
        reasons = {}
        if record and index < len(record["blocks"]):
            reasons = record["blocks"][index]["users"]
        for uid, status in block["users"].items():
            reason = reasons.get(uid, {}).get("reason", "")
            out.write(f"  {uid:<24} {status:<10} {reason}\n")
        if not block["users"]:
            out.write("  (no results yet)\n")
    for problem in detail.get("problems", []):
        out.write(f"problem: {problem['path']}:{problem['line']}: {problem['message']} [{problem['code']}]\n")


def print_user_details(job: str, uid: str, status: str, build_id: str | None, details: list[Any]) -> None:
    """`status JOB --user ID`: block by block, the user's tokens, rendered files and result."""
    out = sys.stdout
    out.write(f"job:      {job} ({status}{', build ' + build_id if build_id else ''})\n")
    out.write(f"user:     {printable(uid)}\n")
    for d in details:
        result = f"{d.status}: {d.reason}" if d.status else "no result yet"
        out.write(f"\nblock {d.block}: {d.action} {d.definition} on {d.server}\n")
        out.write(f"  result: {printable(result)}\n")
        out.write("  tokens:\n")
        for name, value in d.tokens.items():
            shown = f"{{secret: {value['secret']}}}" if isinstance(value, dict) else json.dumps(value,
                                                                                              ensure_ascii=False)
            out.write(f"    {name} = {printable(shown)}\n")
        if not d.tokens:
            out.write("    (none)\n")
        note = " (a secret it uses was left empty: the deployed files differ)" if d.secrets_left_empty else ""
        out.write(f"  files: content {d.content_digest}{note}\n")
        for rel, digest in d.files.items():
            out.write(f"    {printable(rel)}  {digest}\n")
        for reason in d.broken:
            out.write(f"  broken: {printable(reason)}\n")
