"""The one exception type for failures a user can cause (bad file, unsupported op, bad shape...).

The CLI prints ``error: <message>`` for it and exits with status 2; anything else is a bug in ctac.
"""


class CtacError(Exception):
    """A problem with the user's input; the message names the place and the fix."""


def shorten(text: object, limit: int = 80) -> str:
    """`text` as it may be quoted in an error message: at most `limit` characters, cut in the
    middle with '...' (a megabyte-long token from a hostile file must not fill the terminal)."""
    text = str(text)
    if len(text) <= limit:
        return text
    keep = max(limit - 3, 2)
    return f"{text[: keep - keep // 3]}...{text[len(text) - keep // 3 :]}"


def brief(message: object, token_limit: int = 200, limit: int = 2000) -> str:
    """An error message as the CLI prints it: every unbroken run of text longer than
    `token_limit` (a quoted token, a name from a file) shortened, and the whole at most `limit`
    characters, whatever the code that raised it quoted."""
    import re

    text = re.sub(
        rf"\S{{{token_limit + 1},}}",
        lambda match: shorten(match.group(), token_limit),
        str(message),
    )
    return shorten(text, limit)
