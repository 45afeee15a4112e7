# What the Python client scripts share: each step becomes one printed line,
# so PythonClientTests can compare a script's output on ours and on the
# real etcd line by line.
import threading

lines = []


def log(*parts):
    lines.append(" ".join(str(p) for p in parts))


def described(e):
    # An error as the client reports it: a gRPC status code and message,
    # or the exception's type and text.
    if hasattr(e, 'code') and hasattr(e, 'details'):
        return '%s %s' % (e.code(), e.details())
    return '%s %s' % (type(e).__name__, e)


def error(f):
    # The error `f` raises.
    try:
        f()
        return 'no error'
    except Exception as e:
        return described(e)


def step(name, f):
    # One line: what `f` returns, or the error it raises.
    try:
        log(name, f())
    except Exception as e:
        log(name, described(e))


def collect(events, count, describe):
    # `count` events, each described by `describe`, read on a thread, so a
    # missing one ends the script after 10 s instead of hanging it.
    got = []

    def read():
        for event in events:
            got.append(describe(event))
            if len(got) == count:
                break
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    return got


def finish():
    print("\n".join(lines))
