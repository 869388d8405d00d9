"""List the functions of the top-level scripts and modules that run over 60 lines or take more than 8 parameters.

    python tools/check_layout.py            (prints file:line name: what; exit 1 when there is any, else 0)
    python tools/check_layout.py --max_lines 40 --max_params 6

Scans the .py files at the repo root and in readers/ (not tools/ or tests/, where a table of values can read
better long). Lines count from the `def` to the function's last line, docstring and comments included;
parameters count every name a call can pass (self and cls left out, *args and **kwargs counted once each).
"""
import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parameter_count(function) -> int:
    arguments = function.args
    names = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    count = len([name for name in names if name.arg not in ("self", "cls")])
    return count + (arguments.vararg is not None) + (arguments.kwarg is not None)


def long_functions(path, max_lines: int = 60, max_params: int = 8) -> list:
    """[(line, name, problem)] of the functions and methods in one file over either limit."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
            lines, params = node.end_lineno - first + 1, parameter_count(node)
            problems = ([f"{lines} lines"] if lines > max_lines else []) + \
                       ([f"{params} parameters"] if params > max_params else [])
            if problems:
                found.append((node.lineno, node.name, ", ".join(problems)))
    return sorted(found)


def scanned_files(root) -> list:
    root = Path(root)
    return sorted([*root.glob("*.py"), *(root / "readers").glob("*.py")])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_lines", type=int, default=60, help="longest a function may be, in lines")
    parser.add_argument("--max_params", type=int, default=8, help="most parameters a function may take")
    parser.add_argument("--root", default=str(REPO), help="the repo to scan (default: this one)")
    return parser.parse_args(argv)


def main(args) -> int:
    found = 0
    for path in scanned_files(args.root):
        for line, name, problem in long_functions(path, args.max_lines, args.max_params):
            print(f"{path.relative_to(args.root)}:{line} {name}: {problem}")
            found += 1
    print(f"{found} function{'s' * (found != 1)} over {args.max_lines} lines or {args.max_params} parameters",
          file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
