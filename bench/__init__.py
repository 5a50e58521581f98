"""Benchmarks: ``python -m bench`` (see ``bench/__main__.py``)."""


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM), in bytes.

    Not ``ru_maxrss``: a child started by fork and exec keeps its parent's peak there.
    """
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
