"""Text, JSON and table rendering of the result objects (problems, plans, job lists)."""

from __future__ import annotations

import json
import sys
from typing import Any

from reconciler.core.problems import Problem, printable

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
                "SUSPENDED": "dim", "DELETED": "dim", "WAITING": "cyan", "BLOCKED": "red", "FROZEN": "blue"}


def print_job_table(rows: list[dict[str, Any]]) -> None:
    """A table on a terminal; otherwise one tab-separated line per job, never truncated."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_lines=False, header_style="bold")
        for column in JOB_COLUMNS:
            table.add_column(column.upper(), overflow="fold")
        for row in rows:
            cells = job_cells(row)
            style = STATUS_STYLE.get(row["status"], "")
            cells[7] = f"[{style}]{cells[7]}[/{style}]" if style else cells[7]
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
