"""The scratch folders of the measurement scripts: made by the tool, reused by its next run, and refused when they
hold anyone else's files.

    from tools.scratch import check_scratch_folder, make_scratch_folder

A tool marks a folder it makes with a `.made_by_<tool>` file; a folder is the tool's own when it is missing,
empty, marked, or holds one of the names the tool's earlier versions wrote there before the marker existed.
Standard library and common.py only: tools.bench's driver imports this, and what it imports counts in what it
measures.
"""
from pathlib import Path

from common import UserError, check_output_folder, one_line


def marker(folder, tool: str) -> Path:
    return Path(folder) / f".made_by_{tool}"


def check_scratch_folder(folder, flag: str, tool: str, earlier_names=(), overwrite: bool = False) -> None:
    """UserError, before any work, when folder holds files that tool did not write, unless overwrite. earlier_names:
    what the tool wrote there before it marked its folders (any one of them makes the folder the tool's own)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder}: not a folder; pass a new folder")
    if marker(folder, tool).is_file() or any((folder / name).exists() for name in earlier_names):
        return
    check_output_folder(folder, flag, lambda entry: False, overwrite)


def make_scratch_folder(folder, flag: str, tool: str) -> Path:
    """folder, made when missing and marked as tool's own; UserError when it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not marker(folder, tool).is_file():
            marker(folder, tool).write_text(f"{tool} made this folder and reuses what it holds\n")
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot create it ({one_line(error)}); pass a writable folder") from None
    return folder
