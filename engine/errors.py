"""The engine's error for bad input: a file, an option or an argument that cannot be used, named in the message.

``InputError`` is a ``ValueError`` (code that catches ValueError keeps working); the command line turns it into
``engine: error: <message>`` and exit status 2.  Raise it with a message that names the file or option and the
problem, and what to do where that is not obvious::

    raise InputError(f"{path}: not a NIfTI file (no NIfTI-1/2 header)")
"""


class InputError(ValueError):
    """Bad input (file, option, argument), named in the message."""
