"""The one JSON form of every record, byte for byte what the Swift `Records` module writes (RecordCoding):
pretty-printed with two-space indents and `" : "`, keys sorted, `/` and non-ASCII unescaped, a trailing newline;
times ISO-8601 UTC with milliseconds. Integral floats are written as integers, as Swift does."""
import datetime
import math

SCHEMA_VERSION = 1
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_INT64 = 2 ** 63


def encode(value) -> bytes:
    """A record as Swift's RecordCoding.encode writes it."""
    parts = []
    _write(value, 0, parts)
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def _write(value, depth, out):
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[\n\n" + "  " * depth + "]")
            return
        out.append("[\n")
        for i, item in enumerate(value):
            out.append("  " * (depth + 1))
            _write(item, depth + 1, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append("  " * depth + "]")
    elif isinstance(value, dict):
        if not value:
            out.append("{\n\n" + "  " * depth + "}")
            return
        out.append("{\n")
        keys = sorted(value)
        for i, key in enumerate(keys):
            if not isinstance(key, str):
                raise TypeError(f"record keys must be strings, not {type(key).__name__}")
            out.append("  " * (depth + 1) + _string(key) + " : ")
            _write(value[key], depth + 1, out)
            out.append(",\n" if i < len(keys) - 1 else "\n")
        out.append("  " * depth + "}")
    else:
        raise TypeError(f"not JSON: {type(value).__name__}")


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("records hold finite numbers only")
    if value.is_integer() and -_INT64 <= value < _INT64:
        return str(int(value))
    return repr(value)


def _string(text: str) -> str:
    out = ['"']
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def format_time(moment: datetime.datetime) -> str:
    """`2025-01-31T12:00:00.123Z` (UTC, milliseconds)."""
    moment = moment.astimezone(datetime.timezone.utc)
    ms = round(moment.microsecond / 1000)
    base = moment.replace(microsecond=0)
    if ms == 1000:
        base, ms = base + datetime.timedelta(seconds=1), 0
    return base.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % ms


def now() -> str:
    moment = datetime.datetime.now(datetime.timezone.utc)
    return format_time(moment.replace(microsecond=moment.microsecond // 1000 * 1000))


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
