"""What the training tools share on their command lines."""


def output_error(tool: str, out: str, error: OSError) -> SystemExit:
    """Return the exit for an output (``--out``) that cannot be written, naming both paths.

    ``error`` names the path that failed, which may be a parent of ``out`` (a file where a
    folder should be, a folder without write permission); the message gives ``out`` as the
    user typed it, then that path and the reason, on one line and without a traceback.
    """
    where = f'{error.filename}: ' if error.filename else ''
    return SystemExit(f'{tool}: --out {out}: {where}{error.strerror or error}')
