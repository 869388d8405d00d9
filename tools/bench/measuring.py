"""How tools.bench measures: medians of interleaved runs, a command's wall time and peak memory, the machine.

Standard library only (and tools.measure): the driver imports this module, and what it holds counts in the memory
of every stage process it starts."""
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from tools.measure import timed

REPO = Path(__file__).resolve().parents[2]


def interleaved_medians(contenders: dict, repeats: int, warmup: bool = True) -> dict:
    """{name: median seconds} of zero-argument callables run round-robin, so load on the machine hits all alike."""
    if warmup:
        for function in contenders.values():
            function()
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            runs[name].append(timed(function)[0])
    return {name: {"median_s": median(seconds), "runs_s": [round(s, 4) for s in seconds]}
            for name, seconds in runs.items()}


def run_measured(command, env=None, capture: bool = True) -> dict:
    """Run a command; its wall seconds, exit code, stdout, stderr (capture=False: shown, not kept) and peak memory
    in MiB (the largest of it and its children; it counts what this process held when it started, so keep this
    one small)."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out_file if capture else None,
                                   stderr=err_file if capture else None)
        _, status, usage = os.wait4(process.pid, 0)  # wait4, unlike communicate(), reports this child's rusage
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        return {"seconds": wall, "returncode": process.returncode, "peak_rss_mib": usage.ru_maxrss / 1024.0,
                "stdout": out_file.read().decode(errors="replace"), "stderr": err_file.read().decode(errors="replace")}


def fresh_process_peak(code: str, what: str) -> float:
    """Peak resident memory (MiB) of a fresh Python process (the repo on its path) that runs code, read from inside
    it (ru_maxrss of a child counts this process's size at the fork)."""
    run = run_measured([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                        f"from tools.measure import peak_rss_mib; {code}; print(peak_rss_mib())"])
    if run["returncode"] != 0:
        raise RuntimeError(f"{what} failed: {run['stderr'].strip()[-400:]}")
    return float(run["stdout"].split()[-1])


def machine_info() -> dict:
    """What the numbers were measured on."""
    import av
    import torch
    import transformers
    model_name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model_name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "av": av.__version__, "platform": platform.platform()}


def load_average():
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
