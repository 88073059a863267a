"""Writing the command's tables: CSV or JSON, to a file or stdout."""

import contextlib
import csv
import json
import os
import sys

import numpy as np

from .._atomic import WriteError, atomic_write


class CommandError(Exception):
    """An error the command reports in one line on stderr, exiting with status 1."""


FORMATS = ("csv", "json")


def output_format(path, fmt):
    """The format of output ``path``: its extension (.json or .csv) when it has one, else ``fmt``, else CSV.

    For stdout (``path`` None) it is ``fmt`` or CSV.
    """
    ext = os.path.splitext(path)[1].lower().lstrip(".") if path else ""
    return ext if ext in FORMATS else (fmt or "csv")


def format_conflict(path, fmt, option="--out"):
    """A message when ``--format fmt`` contradicts the extension of ``path``, or when ``path`` has an
    extension other than .csv and .json (or none) and no ``--format`` says what to write; else None."""
    if not path:
        return None
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt and ext in FORMATS and ext != fmt:
        return f"--format {fmt} contradicts the file name {path} (drop --format, or name it .{fmt})"
    if ext not in FORMATS and not fmt:
        found = f"'.{ext}' is not one of them" if ext else "it has none"
        return (f"{option} {path}: output files are .csv or .json ({found}); name the file .csv or .json, or "
                "say the format with --format csv|json")
    return None


@contextlib.contextmanager
def opened(path, mode="w"):
    """A file replacing ``path`` atomically once the block completes (``_atomic.atomic_write``: on an
    error or Ctrl-C the previous file is intact and nothing else is left), or stdout when ``path`` is None.
    Write errors (disk full included) become a CommandError naming ``path``."""
    if path is None:
        yield sys.stdout
        return
    text = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
    try:
        with atomic_write(path, mode, **text) as f:
            yield f
    except WriteError as exc:
        raise CommandError(str(exc)) from None


def write(path, fmt, header, rows, to_json=None):
    """Write ``rows`` (an iterable of lists) to ``path``, or stdout when None.

    CSV: ``header``, then the rows. JSON: ``to_json(rows)``, by default a list of one object per row.
    """
    with opened(path) as f:
        if fmt == "csv":
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        else:
            records = to_json(rows) if to_json else [dict(zip(header, row, strict=True)) for row in rows]
            json.dump(records, f, indent=2)
            f.write("\n")


def label_value(v):
    """A label for output: an int for integer-valued numbers, else the text as it was."""
    if isinstance(v, (str, np.str_)):
        return str(v)
    return int(v) if float(v).is_integer() else float(v)


def top_header(test_ids, train_ids):
    """Columns of the top-k table; the ID columns only when the files have row IDs."""
    return (["test_index"] + (["test_id"] if test_ids is not None else []) + ["test_label", "test_loss", "kind",
            "rank", "train_index"] + (["train_id"] if train_ids is not None else []) + ["influence", "loo_change"])


def top_rows(top, loo, y_test, losses, test_ids=None, train_ids=None):
    """The rows of the top-k table, one per (test point, kind, rank), helpful first.

    Slots of ``top`` without a training point of the right sign (index -1, or a value that is not
    strictly negative for helpful / strictly positive for harmful) are left out, so a list can be
    shorter than k.
    """
    kinds = (("helpful", top.helpful_idx, top.helpful, loo[0], -1.0),
             ("harmful", top.harmful_idx, top.harmful, loo[1], 1.0))
    for t in range(top.helpful_idx.shape[0]):
        head = [t] + ([test_ids[t]] if test_ids is not None else []) + [label_value(y_test[t]), float(losses[t])]
        for kind, idx, infl, change, sign in kinds:
            rank = 0
            for j in range(idx.shape[1]):
                i, v = int(idx[t, j]), float(infl[t, j])
                if i < 0 or not sign * v > 0:
                    continue
                rank += 1
                yield head + [kind, rank, i] + ([train_ids[i]] if train_ids is not None else []) + [
                    v, float(change[t, j])]


def top_records(header, rows, y_test, losses, test_ids=None):
    """The top-k table as JSON: one object per test point (``test_index``, ``test_id`` when the file
    has row IDs, ``label``, ``loss``) with its ``helpful`` and ``harmful`` lists (possibly empty)."""
    records = []
    for t, (y, loss) in enumerate(zip(y_test, losses, strict=True)):
        record = {"test_index": t} | ({"test_id": test_ids[t]} if test_ids is not None else {})
        records.append(record | {"label": label_value(y), "loss": float(loss), "helpful": [], "harmful": []})
    split = header.index("kind")
    for row in rows:
        entry = dict(zip(header[split:], row[split:], strict=True))
        records[row[0]][entry.pop("kind")].append(entry)
    return records
