/**
 * The Python side of the E2B code interpreter: ironcage's own driver, run as one long-lived `python3` process
 * per execution context inside the sandbox. No file is written into the sandbox: the process starts with a
 * one-line bootstrap (DRIVER_BOOTSTRAP) that reads the driver source as the first line of its stdin.
 *
 * Protocol, JSON lines. Requests on stdin: `{"id", "code", "env"}`. Messages on the original stdout, each with
 * the request id: `ready` (once, id null), `stdout`/`stderr` `{text}`, `result` `{data: {text, html?, ...}}`,
 * `error` `{name, value, traceback}`, then `end` `{execution_count}`. Globals live in a fresh `__main__`
 * module and persist between requests. fd 1 and fd 2 are pipes the driver reads back, so output of
 * subprocesses and C code is captured too and can never corrupt the protocol; stdin is /dev/null for the code.
 * SIGINT raises KeyboardInterrupt only while user code runs (the interrupt the server sends when a client
 * leaves mid-execution); between executions it is ignored.
 */

/** Marks the driver's processes (in argv and in the process list's tag). */
export const DRIVER_TAG = 'ironcage-code-interpreter';

/** `python3 -c` program: reads one JSON string (the driver source) from stdin and runs it. */
export const DRIVER_BOOTSTRAP = `import sys,json;exec(compile(json.loads(sys.stdin.readline()),'<${DRIVER_TAG}>','exec'))`;

// String.raw keeps the Python backslashes; the source must contain no backtick and no
// dollar-brace other than the tag below.
export const DRIVER_SOURCE = String.raw`
import ast, base64, builtins, codecs, json, linecache, os, queue, select, signal, sys, threading, traceback, types

DRIVER_FILE = '<${DRIVER_TAG}>'
CHUNK = 65536
TEXT_CAP = 2 * 1024 * 1024
CELLS_KEPT = 1000

# The protocol streams: private copies of the original fds. fd 0 becomes /dev/null for user code.
proto_out = os.dup(1)
proto_in = os.fdopen(os.dup(0), 'rb')
null_fd = os.open(os.devnull, os.O_RDONLY)
os.dup2(null_fd, 0)
os.close(null_fd)
sys.stdin = open(os.devnull, 'r')

# Every message goes through one writer thread: signal handlers run only in the main thread, so a
# KeyboardInterrupt can never cut a protocol line in half.
outbox = queue.SimpleQueue()


def writer():
    while True:
        data = outbox.get()
        if data is None:
            return
        view = memoryview(data)
        while view:
            written = os.write(proto_out, view)
            view = view[written:]


def emit(message):
    outbox.put((json.dumps(message) + '\n').encode('ascii'))


state = {'current': None, 'running': False}
marker = ('\x00' + os.urandom(16).hex() + '\x00').encode('ascii')


def pump(read_fd, name, synced):
    decoder = codecs.getincrementaldecoder('utf-8')('replace')
    pending = b''

    def forward(raw, final=False):
        text = decoder.decode(raw, final)
        if text:
            emit({'id': state['current'], 'type': name, 'text': text})

    while True:
        chunk = os.read(read_fd, CHUNK)
        if not chunk:
            forward(pending, True)
            return
        pending += chunk
        # Whatever is already waiting goes out in the same message.
        while len(pending) < CHUNK and select.select([read_fd], [], [], 0)[0]:
            more = os.read(read_fd, CHUNK)
            if not more:
                break
            pending += more
        while True:
            at = pending.find(marker)
            if at < 0:
                break
            forward(pending[:at])
            pending = pending[at + len(marker):]
            synced.set()
        # Hold back a tail that may be the start of a marker split across reads.
        keep = 0
        for size in range(min(len(marker) - 1, len(pending)), 0, -1):
            if marker.startswith(pending[-size:]):
                keep = size
                break
        forward(pending[:len(pending) - keep])
        pending = pending[len(pending) - keep:]


synced = {}
for fd, name in ((1, 'stdout'), (2, 'stderr')):
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, fd)
    os.close(write_fd)
    synced[fd] = threading.Event()
    threading.Thread(target=pump, args=(read_fd, name, synced[fd]), daemon=True).start()
# Line-buffered like a terminal: a print arrives as one chunk, and partial lines at the latest at the end.
sys.stdout = open(1, 'w', buffering=1, encoding='utf-8', errors='backslashreplace', closefd=False)
sys.stderr = open(2, 'w', buffering=1, encoding='utf-8', errors='backslashreplace', closefd=False)
writer_thread = threading.Thread(target=writer, daemon=True)
writer_thread.start()


def sync_output():
    """Waits until everything written to fd 1 and 2 so far has been forwarded."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    for fd, event in synced.items():
        event.clear()
        try:
            os.write(fd, marker)
        except OSError:
            continue
        event.wait(5)


def on_sigint(signum, frame):
    if state['running']:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, on_sigint)

user_main = types.ModuleType('__main__')
user_main.__dict__['__builtins__'] = builtins
driver_main = sys.modules.get('__main__')
sys.modules['__main__'] = user_main
namespace = user_main.__dict__


def capped(text):
    if len(text) <= TEXT_CAP:
        return text
    return text[:TEXT_CAP] + '\n[... %d more characters not shown]' % (len(text) - TEXT_CAP)


REPR_METHODS = (
    ('html', '_repr_html_'), ('markdown', '_repr_markdown_'), ('svg', '_repr_svg_'),
    ('png', '_repr_png_'), ('jpeg', '_repr_jpeg_'), ('latex', '_repr_latex_'),
    ('json', '_repr_json_'), ('javascript', '_repr_javascript_'),
)


def display_data(value):
    data = {'text': capped(repr(value))}
    for key, method_name in REPR_METHODS:
        try:
            method = getattr(value, method_name, None)
            if not callable(method):
                continue
            rendered = method()
            if isinstance(rendered, tuple) and rendered:
                rendered = rendered[0]
            if rendered is None:
                continue
            if key in ('png', 'jpeg') and isinstance(rendered, bytes):
                rendered = base64.b64encode(rendered).decode('ascii')
            if key == 'json':
                json.dumps(rendered)
            elif not isinstance(rendered, str):
                continue
            data[key] = rendered
        except Exception:
            continue
    return data


def run_cell(code, cell_name):
    """Runs a cell like a notebook: all statements, then the value of a trailing expression (or None)."""
    linecache.cache[cell_name] = (len(code), None, code.splitlines(True), cell_name)
    tree = ast.parse(code, cell_name)
    trailing = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        trailing = ast.Expression(tree.body.pop().value)
    body = compile(tree, cell_name, 'exec', dont_inherit=True)
    tail = None if trailing is None else compile(trailing, cell_name, 'eval', dont_inherit=True)
    exec(body, namespace)
    if tail is None:
        return None
    value = eval(tail, namespace)
    if value is None:
        return None
    namespace['_'] = value
    return display_data(value)


def error_message(error):
    tb = error.__traceback__
    # The driver's own frames (and, for a syntax error, the parser's) are not the user's business.
    if isinstance(error, SyntaxError):
        tb = None
    while tb is not None and tb.tb_frame.f_code.co_filename == DRIVER_FILE:
        tb = tb.tb_next
    try:
        text = ''.join(traceback.format_exception(type(error), error, tb))
    except Exception:
        text = ''
    try:
        value = str(error)
    except Exception:
        value = '<unprintable %s>' % type(error).__name__
    return {'type': 'error', 'name': type(error).__name__, 'value': capped(value), 'traceback': capped(text)}


def apply_env(env):
    saved = {}
    for key, value in env.items():
        if isinstance(key, str) and isinstance(value, str) and key and '=' not in key and '\x00' not in key + value:
            saved[key] = os.environ.get(key)
            os.environ[key] = value
    return saved


def restore_env(saved):
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def execute(request, count):
    request_id = request.get('id')
    code = request.get('code')
    env = request.get('env')
    state['current'] = request_id
    outcome = None
    saved = apply_env(env if isinstance(env, dict) else {})
    try:
        state['running'] = True
        try:
            outcome = run_cell(code if isinstance(code, str) else '', '<cell-%d>' % count)
        finally:
            state['running'] = False
    except BaseException as error:
        outcome = error_message(error)
    finally:
        restore_env(saved)
    sync_output()
    if isinstance(outcome, dict) and outcome.get('type') == 'error':
        outcome['id'] = request_id
        emit(outcome)
    elif outcome is not None:
        emit({'id': request_id, 'type': 'result', 'data': outcome})
    state['current'] = None
    stale = '<cell-%d>' % (count - CELLS_KEPT)
    linecache.cache.pop(stale, None)


def main():
    emit({'id': None, 'type': 'ready', 'pid': os.getpid()})
    count = 0
    while True:
        try:
            line = proto_in.readline()
        except KeyboardInterrupt:
            continue
        if not line:
            return
        try:
            request = json.loads(line)
        except ValueError:
            continue
        if not isinstance(request, dict):
            continue
        count += 1
        try:
            execute(request, count)
        except KeyboardInterrupt:
            pass
        emit({'id': request.get('id'), 'type': 'end', 'execution_count': count})


main()
# stdin closed: let the writer drain, then leave without waiting for threads the user code started.
outbox.put(None)
writer_thread.join(5)
os._exit(0)
`;
