"""Peak memory of a test's child process, measured so that it means what the child itself used.

ru_maxrss is a poor measure in a child: on Linux it is kept across fork and exec, so a child of a large
pytest process reports the parent's size. VmHWM (in /proc/self/status) belongs to the memory map exec
created and starts afresh. PEAK_MB is source code for a child script; peak_mb() there returns megabytes.
"""

PEAK_MB = """
def peak_mb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource, sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
"""
