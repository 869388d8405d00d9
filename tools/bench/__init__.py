"""The speed of every stage beside its floor, printed as a table (docs/performance.md): python -m tools.bench

    workspace.py   the clips, X-CLIPs, tokenizer and checkpoints the stages read, made once under --work_dir
    sampling.py    1. frame sampling        encoding.py   2. encoding into the cache
    training.py    3. training from the cache
    captioning.py  4. inference.py from the command line
    evaluation.py  5. evaluation's batched beam search
    report.py      the table and the targets       measuring.py  medians, a command's time and memory, the machine
    cli.py         the flags; runs each stage in its own process

Each stage module has run(workspace, plan, work_dir) -> its results and targets(results, add). Importing the
package loads nothing heavy: the driver's memory counts in every stage's.
"""
