"""The one exception type for failures a user can cause (bad file, unsupported op, bad shape...).

The CLI prints ``error: <message>`` for it and exits with status 2; anything else is a bug in ctac.
"""


class CtacError(Exception):
    """A problem with the user's input; the message names the place and the fix."""
