"""Tamper detection: is the machinery the test cells use intact while they run?

A test cell reloads `autograder.checks`, imports what it needs and raises an error when an
answer is wrong; nbgrader scores the cell by its error outputs. Student code runs in the
same kernel and can patch every piece of that: `importlib.reload`, `builtins.__import__`,
import hooks, a module in `sys.modules`, IPython's transformers and hooks, the traceback
display, `AssertionError`. The grader checks from outside the student's code:

1. Before the first cell runs, `KernelGuard.install` sends (as a silent request the student's
   hooks do not see) `GUARD_SOURCE`: it takes a snapshot of that machinery (the objects
   themselves, compared later with `is`, and fingerprints of the checking helpers' code), a
   secret key, an audit hook (which sees every `sys.settrace`/`sys.setprofile` and every
   audit hook added later, which could act at the start of each test cell and undo itself
   before each probe; it cannot be removed) and stores one function under a random name in
   `builtins`. The notebook's namespace and its `__builtins__` (which decides what `import`
   returns in a test cell) are part of the snapshot, and so are the kernel's receivers (its
   shell and control streams, the shell channel thread, the event loops), whose callbacks see
   every request before it runs.
2. Just before and just after each test cell, `KernelGuard.probe` asks that function, again
   by a silent request, to compare the machinery with the snapshot. Its answer is signed with
   the key (HMAC-SHA256), so a patched kernel cannot answer "intact" in its place.
3. Each test cell is sent with a last line that reports to the guard that the cell reached
   its end. A cell with no error output that never reached its end was stopped by something
   that hid the error.

A test cell for which any of that fails (a change found, no valid answer, the end not
reached) gets its points withheld: `withheld_output` is an error output, so nbgrader scores
the cell 0, and the reason goes to the grading record.

What this does not guarantee: the guard lives in the student's process. Code written to
defeat it specifically (finding its function or key through `gc` or `builtins`, wrapping it,
undoing its patches around each probe, or rewriting the snapshot in its closure) can hide
its tampering; the cell is then scored as stock nbgrader scores it, from its outputs (tried:
a wrong answer that rewrites the snapshot after adding an AST transformer earns full
points). Machinery outside the snapshot (SQLAlchemy modules other than the session, state,
scoping and inspection ones, for example) is not watched. Tools that legitimately install
hooks (`%load_ext autoreload`, `%matplotlib`, a debugger's `sys.settrace`) are flagged too.
The guard must start before any student code: the kernel's folder gets the submission's
files only after the kernel started, so a submitted `ipython_config.py` is never read.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import secrets
import sys
import time
from collections.abc import Callable

import nbformat
from jupyter_client.client import KernelClient
from jupyter_core.utils import run_sync
from nbformat.notebooknode import NotebookNode

WITHHELD_ENAME = "TamperingDetected"
WITHHELD_MESSAGE = (
    "points withheld: the machinery this test relies on was changed while it ran "
    "(your instructor has the details)"
)
WATCHED_MODULES = (
    "builtins",
    "sys",
    "importlib",
    "importlib._bootstrap",
    "importlib._bootstrap_external",
    "importlib.machinery",
    "importlib.util",
    "sqlite3",
    "sqlite3.dbapi2",
    "contextlib",
    "pathlib",
    "traceback",
    "autograder",
    "sqlalchemy",
    "sqlalchemy.exc",
    "sqlalchemy.inspection",
    "sqlalchemy.orm",
    "sqlalchemy.orm.exc",
    "sqlalchemy.orm.session",
    "sqlalchemy.orm.scoping",
    "sqlalchemy.orm.state",
    "IPython.core.interactiveshell",
    "ipykernel.zmqshell",
    "ipykernel.ipkernel",
    "ipykernel.kernelbase",
)
REPLY_SECONDS = 10

GUARD_SOURCE = r'''
def _course_grade_install(name, key, watched, expected_files):
    import builtins, hashlib, hmac, importlib, inspect, json, sys, types
    # the builtins the checks use, bound here so that patching builtins cannot blind them
    vars, list, dict, zip, callable, getattr, hasattr, repr, sorted, set = (
        builtins.vars, builtins.list, builtins.dict, builtins.zip, builtins.callable,
        builtins.getattr, builtins.hasattr, builtins.repr, builtins.sorted, builtins.set,
    )
    sha256 = hashlib.sha256
    for module in watched:
        importlib.import_module(module)
    import autograder.checks
    shell = get_ipython()
    new_hmac, dumps = hmac.new, json.dumps
    is_function, is_class, is_module = inspect.isfunction, inspect.isclass, inspect.ismodule
    source_loader = importlib.machinery.SourceFileLoader
    modules, meta_path, path_hooks = dict(sys.modules), list(sys.meta_path), list(sys.path_hooks)
    audited, hooked, finished = [], [], set()
    method = types.MethodType

    function = types.FunctionType

    def same(a, b):
        """The very object, or one made anew from the same parts: ipykernel binds a few methods
        again for each request, and IPython wraps `sys.stdout.write` in a new closure."""
        if a is b:
            return True
        if type(a) is method and type(b) is method:
            return a.__func__ is b.__func__ and a.__self__ is b.__self__
        if type(a) is function and type(b) is function and a.__code__ is b.__code__:
            cells = zip(a.__closure__ or (), b.__closure__ or ())
            return all(
                same(x.cell_contents, y.cell_contents)
                or (type(x.cell_contents) is int and type(y.cell_contents) is int)
                for x, y in cells
            )
        return False

    def audit(event, _args):
        if event in ("sys.settrace", "sys.setprofile"):
            audited.append(event)
        elif event == "sys.addaudithook":  # a hook stays: it can act in every later cell
            hooked.append(event)

    def code_print(code):
        parts = [code.co_code, code.co_names, code.co_varnames]
        parts += [code_print(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
        return sha256(repr(parts).encode()).hexdigest()

    checks = autograder.checks
    checks_code = {
        key: code_print(value.__code__)
        for key, value in vars(checks).items()
        if is_function(value) and value.__module__ == checks.__name__
    }
    checks_other = {
        key: value
        for key, value in vars(checks).items()
        if not (is_function(value) or is_class(value)) or value.__module__ != checks.__name__
    }
    classes = {}
    for module in watched:
        for value in list(vars(sys.modules[module]).values()):
            if is_class(value) and value.__module__ == module:
                classes[f"{module}.{value.__qualname__}"] = value
    objects = {
        "shell": shell,
        "kernel": shell.kernel,
        "displayhook": shell.displayhook,
        "display_pub": shell.display_pub,
        "compile": shell.compile,
        "events": shell.events,
        "input_transformer_manager": shell.input_transformer_manager,
        "session": shell.kernel.session,
        "stdout": sys.stdout,
        "stderr": sys.stderr,
    }
    # what receives each request before any cell runs (a wrapper there sees every test cell)
    kernel, thread = shell.kernel, getattr(shell.kernel, "shell_channel_thread", None)
    receivers = {
        "shell_stream": kernel.shell_stream,
        "control_stream": getattr(kernel, "control_stream", None),
        "shell_channel_thread": thread,
        "shell_channel_manager": getattr(thread, "manager", None),
        "io_loop": kernel.io_loop,
        "asyncio_loop": getattr(kernel.io_loop, "asyncio_loop", None),
    }
    objects.update({label: value for label, value in receivers.items() if value is not None})
    for value in objects.values():
        for base in type(value).__mro__[:-1]:
            classes[f"{base.__module__}.{base.__qualname__}"] = base
    namespace = (shell.user_ns, shell.user_module, shell.user_ns.get("__builtins__"))
    lists = {
        "input_transformers_cleanup": lambda: shell.input_transformers_cleanup,
        "input_transformers_post": lambda: shell.input_transformers_post,
        "ast_transformers": lambda: shell.ast_transformers,
        "line_transforms": lambda: shell.input_transformer_manager.line_transforms,
        "token_transformers": lambda: shell.input_transformer_manager.token_transformers,
        "custom_exceptions": lambda: shell.custom_exceptions,
        "sys.meta_path": lambda: sys.meta_path,
        "sys.path_hooks": lambda: sys.path_hooks,
    }
    for event in shell.events.callbacks:
        lists[f"events.{event}"] = lambda event=event: shell.events.callbacks[event]

    def findings():
        found = []
        for label, getter in lists.items():
            if list(getter()) != list(saved_lists[label]) or any(
                not same(a, b) for a, b in zip(getter(), saved_lists[label])
            ):
                found.append(f"{label} changed")
        for module, (owner, saved) in saved_modules.items():
            now = vars(owner)
            found += [
                f"{module}.{key} changed"
                for key, value in saved.items()
                if key not in volatile and (key not in now or not same(now[key], value))
            ]
        for label, (owner, saved) in saved_classes.items():
            now = vars(owner)
            if now.keys() != saved.keys() or any(not same(now[k], v) for k, v in saved.items()):
                found.append(f"class {label} changed")
        for label, (owner, saved) in saved_objects.items():
            now = vars(owner)
            found += [
                f"{label}.{key} replaced"
                for key, value in now.items()
                if callable(value) and not same(saved.get(key), value)
            ]
        for module, value in modules.items():
            if sys.modules.get(module) is not value:
                found.append(f"sys.modules[{module!r}] replaced")
        for module, path in expected_files.items():
            if getattr(sys.modules.get(module), "__file__", None) != path:
                found.append(f"{module} is not loaded from {path}")
        now = vars(checks)
        for key, value in now.items():
            if key in checks_code:
                if not is_function(value) or value.__globals__ is not now or code_print(
                    value.__code__
                ) != checks_code[key]:
                    found.append(f"autograder.checks.{key} is not the course's code")
            elif key in ("__spec__", "__loader__"):
                spec = now.get("__spec__")
                loader = getattr(spec, "loader", None)
                origin = getattr(spec, "origin", None)
                if type(loader) is not source_loader or now.get("__loader__") is not loader or (
                    origin != expected_files["autograder.checks"]
                ):
                    found.append("autograder.checks is not loaded by Python's own file loader")
            elif key in checks_other:
                saved = checks_other[key]
                if value is not saved and (
                    callable(saved) or is_module(saved) or type(value) is not type(saved)
                    or value != saved
                ):
                    found.append(f"autograder.checks.{key} changed")
            elif key != "__warningregistry__" and not (
                is_class(value) and value.__module__ == checks.__name__
            ):  # (Python records there a warning that the code a check calls raises)
                found.append(f"autograder.checks.{key} added")
        now = (shell.user_ns, shell.user_module, namespace[0].get("__builtins__"))
        if any(a is not b for a, b in zip(now, namespace)):
            found.append("the notebook's namespace or its __builtins__ replaced")
        found += [f"{event} called" for event in audited + hooked[:1]]
        audited.clear()
        return list(dict.fromkeys(found))

    reports = {}

    def guard(command, nonce):
        """'done': a test cell reached its end; 'probe': compare now (during a request, as the
        snapshot was taken); 'report': the signed result of that probe."""
        if command == "done":
            finished.add(nonce)
        elif command == "probe":
            result = {"nonce": nonce, "findings": findings(), "finished": sorted(finished)}
            reports[nonce] = dumps(result)
        elif command == "report":
            report = reports.pop(nonce, "")
            return report + "|" + new_hmac(key, report.encode(), "sha256").hexdigest()

    setattr(builtins, name, guard)
    volatile = {"_", "__", "___", "last_type", "last_value", "last_traceback", "last_exc"}
    saved_modules = {
        module: (sys.modules[module], vars(sys.modules[module]).copy()) for module in watched
    }
    saved_classes = {label: (owner, dict(vars(owner))) for label, owner in classes.items()}
    saved_objects = {label: (value, vars(value).copy()) for label, value in objects.items()}
    saved_lists = {label: list(getter()) for label, getter in lists.items()}
    sys.addaudithook(audit)
'''


def withheld_output(reasons: list[str]) -> NotebookNode:
    """The error output that makes nbgrader score a tampered test cell 0."""
    return nbformat.v4.new_output(
        "error",
        ename=WITHHELD_ENAME,
        evalue=WITHHELD_MESSAGE,
        traceback=[f"{WITHHELD_ENAME}: {WITHHELD_MESSAGE}", *reasons],
    )


def expected_files() -> dict[str, str]:
    """Where the grader's own Python finds the modules the tests use (the kernel's must match)."""
    import autograder.checks  # noqa: F401 - imported for its file

    return {
        name: sys.modules[name].__file__
        for name in ("autograder", "autograder.checks", "sqlite3", "importlib", "sqlalchemy")
        if name in sys.modules
    }


class KernelGuard:
    """The grader's side of the guard: install it in a kernel, probe it, read its answers."""

    def __init__(self, kc: KernelClient) -> None:
        self.kc = kc
        self.name = f"_course_grade_{secrets.token_hex(8)}"
        self.key = secrets.token_bytes(32)
        self.broken = ""

    def install(self) -> None:
        """Send the guard; a kernel that refuses it leaves the guard broken."""
        arguments = (self.name, self.key, WATCHED_MODULES, expected_files())
        code = f"{GUARD_SOURCE}\n_course_grade_install(*{arguments!r})\ndel _course_grade_install"
        reply = self._request(code, {})
        if reply.get("status") != "ok":
            self.broken = f"the integrity guard could not start: {reply.get('evalue', reply)}"

    def probe(self) -> tuple[list[str], set[str]]:
        """What the guard found changed since its snapshot, and the cells that ran to their end."""
        if self.broken:
            return [self.broken], set()
        nonce = secrets.token_hex(8)
        call = f"{self.name}('probe', {nonce!r})"
        reply = self._request(call, {"r": f"{self.name}('report', {nonce!r})"})
        try:
            text = ast.literal_eval(reply["user_expressions"]["r"]["data"]["text/plain"])
            report, _, mac = text.rpartition("|")
            expected = hmac.new(self.key, report.encode(), hashlib.sha256).hexdigest()
            answer = json.loads(report)
            if not hmac.compare_digest(mac, expected) or answer["nonce"] != nonce:
                raise ValueError("a wrong signature")
            return answer["findings"], set(answer["finished"])
        except Exception:  # any malformed or unsigned answer: the guard was defeated
            self.broken = "the integrity guard gave no valid answer"
            return [self.broken], set()

    def run_test_cell(self, cell: NotebookNode, execute: Callable[[], object]) -> list[str]:
        """Execute a test cell between two probes, with the line that reports its end;
        return what was found wrong (nothing for an intact kernel)."""
        before, _ = self.probe()
        nonce = secrets.token_hex(8)
        source = cell.source
        cell.source = f"{source}\n{self.name}('done', {nonce!r})\n"
        try:
            execute()
        finally:
            cell.source = source
        after, finished = self.probe()
        found = before + [finding for finding in after if finding not in before]
        if self.broken:  # nothing it says can be trusted, not even which cells ended
            return found
        failed = any(output.get("output_type") == "error" for output in cell.get("outputs", []))
        if nonce not in finished and not failed:
            found.append("the cell stopped before its end, yet showed no error")
        return found

    def _request(self, code: str, expressions: dict[str, str]) -> dict:
        msg_id = self.kc.execute(
            code, silent=True, store_history=False, user_expressions=expressions
        )
        deadline = time.monotonic() + REPLY_SECONDS
        while time.monotonic() < deadline:
            try:
                reply = run_sync(self.kc.get_shell_msg)(timeout=deadline - time.monotonic())
            except Exception:
                break
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]
        return {"status": "error", "evalue": "no reply"}
