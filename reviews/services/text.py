"""What text a database column can hold: neither PostgreSQL nor SQLite stores a NUL character
or a lone surrogate (JSON's "\\ud800" decodes to one), and the driver's error would be a 500."""


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None
