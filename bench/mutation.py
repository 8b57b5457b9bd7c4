"""Mutation check of the security paths: one small plausible bug at a time, then the fast tests that guard
that code; a mutant the tests do not fail on (a survivor) is a rule no test holds.

    scripts/mutation [--sample N] [--seed S] [--only PATH_FRAGMENT] [--list] [--report FILE]

Scope: `authz/` (the production paths: the dev issuer and its browser login are left out), `gateway/relay/`,
and the persistence of agents, sessions, revocations and worker keys. Mutations: comparison flips (`<` and
`<=`, `==` and `!=`, `is` and `is not`, `in` and `not in`), `and`/`or`, a dropped `not`, `True`/`False`,
an integer off by one, a `raise` replaced by `pass`, and one condition dropped from a query's `.where()`.

Each mutant runs in a copy of the tracked files (the working tree is never changed) against the test
files listed for its module in TESTS, without the slow (real-server, browser) tests and on SQLite only;
it is killed when they fail (or hang past a bound). The tests' imports are loaded once and every mutant
runs in a fork of that process, so a mutant costs its tests, not pytest's start-up.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_AUTHZ_TESTS = (
    "tests/authz",
    "tests/gateway/test_attacks.py",
    "tests/gateway/test_session_start.py",
    "tests/gateway/test_agent_register.py",
    "tests/gateway/test_admin.py",
    "tests/gateway/test_preauthorization.py",
)
_PERSISTENCE_TESTS = (
    "tests/gateway/persistence",
    "tests/gateway/test_admin.py",
    "tests/gateway/test_agent_register.py",
    "tests/gateway/test_session_start.py",
    "tests/gateway/test_end_session.py",
    "tests/gateway/test_ended_stays_ended.py",
    "tests/relay/test_relay_protocol.py",
)
_RELAY_TESTS = (
    "tests/relay/test_relay_protocol.py",
    "tests/relay/test_credentials.py",
    "tests/relay/test_frames.py",
    "tests/gateway/test_agent_register.py",
)

# The modules in scope, each with the fast tests that guard it.
TESTS: dict[str, tuple[str, ...]] = {
    "authz/bearer.py": _AUTHZ_TESTS,
    "authz/caller.py": _AUTHZ_TESTS,
    "authz/entra.py": _AUTHZ_TESTS,
    "authz/graph.py": _AUTHZ_TESTS,
    "authz/jwks.py": _AUTHZ_TESTS,
    "authz/jws.py": _AUTHZ_TESTS,
    "authz/policy.py": _AUTHZ_TESTS,
    "authz/preauth.py": _AUTHZ_TESTS,
    "authz/token_cache.py": _AUTHZ_TESTS,
    "gateway/relay/credentials.py": _RELAY_TESTS,
    "gateway/relay/frames.py": _RELAY_TESTS,
    "gateway/relay/relay.py": _RELAY_TESTS,
    "gateway/persistence/agents.py": _PERSISTENCE_TESTS,
    "gateway/persistence/revocations.py": _PERSISTENCE_TESTS,
    "gateway/persistence/sessions.py": _PERSISTENCE_TESTS,
    "gateway/persistence/lifecycle.py": _PERSISTENCE_TESTS,
    "gateway/persistence/workers.py": _PERSISTENCE_TESTS,
}

# Loaded once before the forks: what every test run would import anyway (never lkps's own modules, which
# each mutant must import afresh from its mutated copy).
_PRELOAD = (
    "pytest",
    "anyio",
    "httpx",
    "jwt",
    "cryptography.x509",
    "msal",
    "msgspec",
    "orjson",
    "structlog",
    "prometheus_client",
    "sqlalchemy.ext.asyncio",
    "aiosqlite",
    "alembic.command",
    "litestar",
    "litestar.testing",
    "livekit.api",
    "livekit.protocol.agent",
    "aiohttp",
    "requests",
)
_FLIPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
_WORDS = {"and": "or", "or": "and", "True": "False", "False": "True"}
# A mutant whose tests run longer than this is counted as killed (it hangs where the original does not).
_HANG_FACTOR, _HANG_FLOOR_SECONDS = 5, 120


@dataclass(frozen=True)
class Mutant:
    path: str
    line: int
    description: str
    start: int  # character offsets into the file's text
    end: int
    replacement: str

    def apply(self, source: str) -> str:
        return source[: self.start] + self.replacement + source[self.end :]


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, timeout
    seconds: float


def _offsets(source: str) -> list[int]:
    """The character offset of each line's start (1-based lines, as ast and tokenize count them)."""
    starts = [0, 0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _token_mutants(path: str, source: str) -> list[Mutant]:
    lines = _offsets(source)
    kinds = {tokenize.OP, tokenize.NAME, tokenize.NUMBER, tokenize.NEWLINE}
    tokens = [
        token for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type in kinds
    ]
    mutants = []
    loops = 0  # `for` keywords on this logical line still waiting for their `in`
    for index, token in enumerate(tokens):
        start = lines[token.start[0]] + token.start[1]
        end = lines[token.end[0]] + token.end[1]
        before = tokens[index - 1].string if index else ""
        after = tokens[index + 1] if index + 1 < len(tokens) else token
        new: str | None = None
        if token.type == tokenize.NEWLINE:
            loops = 0
        elif token.type == tokenize.OP:
            new = _FLIPS.get(token.string)
        elif token.type == tokenize.NUMBER:
            new = str(int(token.string) + 1) if token.string.isdigit() else None
        elif token.string in _WORDS:
            new = _WORDS[token.string]
        elif token.string == "for":
            loops += 1
        elif token.string == "is":
            if after.string == "not":  # `is not` -> `is`
                end, new = lines[after.end[0]] + after.end[1], "is"
            else:
                new = "is not"
        elif token.string == "in" and before != "not":
            if loops:
                loops -= 1
            else:
                new = "not in"
        elif token.string == "not" and before != "is":
            if after.string == "in":  # `not in` -> `in`
                end, new = lines[after.end[0]] + after.end[1], "in"
            else:
                new = ""
        if new is not None:
            what = f"{source[start:end]!r} -> {new!r}" if new else f"{token.string!r} dropped"
            mutants.append(Mutant(path, token.start[0], what, start, end, new))
    return mutants


def _tree_mutants(path: str, source: str) -> list[Mutant]:
    lines = _offsets(source)

    def at(line: int, column: int) -> int:
        return lines[line] + len(source[lines[line] :].encode()[:column].decode())

    mutants = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.end_lineno is not None and node.end_col_offset is not None:
            mutants.append(
                Mutant(
                    path,
                    node.lineno,
                    "raise -> pass",
                    at(node.lineno, node.col_offset),
                    at(node.end_lineno, node.end_col_offset),
                    "pass",
                )
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "where"
            and len(node.args) >= 2
        ):
            args = node.args
            for index, arg in enumerate(args):
                if index + 1 < len(args):  # from this condition to the next one
                    start, end = (
                        at(arg.lineno, arg.col_offset),
                        at(args[index + 1].lineno, args[index + 1].col_offset),
                    )
                else:  # from the previous condition's end to this one's
                    previous = args[index - 1]
                    start = at(previous.end_lineno or 0, previous.end_col_offset or 0)
                    end = at(arg.end_lineno or 0, arg.end_col_offset or 0)
                mutants.append(
                    Mutant(path, arg.lineno, f"where() condition {index + 1} dropped", start, end, "")
                )
    return mutants


def mutants_of(path: str) -> list[Mutant]:
    source = (ROOT / path).read_text()
    lines = source.splitlines()
    found = []
    for mutant in _token_mutants(path, source) + _tree_mutants(path, source):
        if lines[mutant.line - 1].lstrip().startswith("@"):
            continue  # a decorator's arguments (dataclass options, route metadata): no behaviour to break
        try:
            compile(mutant.apply(source), path, "exec")
        except SyntaxError:
            continue
        found.append(mutant)
    return found


def _copy_tree(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    # The official Node SDK the tests verify tokens with is installed, not tracked: the copy uses the same.
    modules = ROOT / "tests" / "node" / "node_modules"
    if modules.is_dir():
        (target / "tests" / "node" / "node_modules").symlink_to(modules)


def _run_tests(copy: Path, tests: tuple[str, ...], log: Path, bound: float) -> tuple[int | None, float]:
    """The exit status of pytest over `tests` in a fork (None when it ran past `bound` seconds)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: the copy's modules come first on the path, output to the log
        try:
            os.chdir(copy)
            sys.path[:0] = [str(copy), str(copy / "client")]
            with log.open("w") as out:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
            import pytest  # noqa: PLC0415 - preloaded by the parent

            # Preloaded plugins (anyio) cannot be assertion-rewritten, which the suite's warning filter
            # would turn into an error: their asserts are not the tests'.
            warning = "ignore::pytest.PytestAssertRewriteWarning"
            status = pytest.main(
                [*tests, "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-W", warning]
            )
            os._exit(int(status))
        except BaseException:
            import traceback  # noqa: PLC0415

            traceback.print_exc()
            os._exit(99)
    deadline = started + bound
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - started
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sample", type=int, default=0, help="run this many mutants, drawn at random (0: all)"
    )
    parser.add_argument(
        "--seed", type=int, default=23, help="the draw's seed (the same seed, the same mutants)"
    )
    parser.add_argument("--only", default="", help="only modules whose path contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--report", type=Path, help="also write the outcomes to this JSON file")
    args = parser.parse_args()

    mutants = [mutant for path in TESTS if args.only in path for mutant in mutants_of(path)]
    if args.sample and args.sample < len(mutants):
        mutants = sorted(
            random.Random(args.seed).sample(mutants, args.sample), key=lambda m: (m.path, m.start)
        )
    if args.list:
        for mutant in mutants:
            print(f"{mutant.path}:{mutant.line}: {mutant.description}")
        return 0
    # The fast tests only: no PostgreSQL, no real LiveKit server (their tests skip), whatever is configured.
    for variable in ("LKPS_TEST_POSTGRES_URL", "LKPS_LIVEKIT_SERVER_BIN", "LKPS_TEST_REQUIRE"):
        os.environ.pop(variable, None)
    for module in _PRELOAD:
        __import__(module)

    with tempfile.TemporaryDirectory(prefix="lkps-mutation-") as scratch:
        copy, log = Path(scratch) / "tree", Path(scratch) / "pytest.log"
        _copy_tree(copy)
        baselines: dict[tuple[str, ...], float] = {}
        for tests in sorted({TESTS[mutant.path] for mutant in mutants}):
            status, seconds = _run_tests(copy, tests, log, 3600)
            if status != 0:
                print(f"the unmutated tests fail ({' '.join(tests)}):\n{log.read_text()[-3000:]}")
                return 1
            baselines[tests] = seconds
        print(
            f"{len(mutants)} mutants; unmutated test runs: "
            + ", ".join(f"{s:.0f} s" for s in baselines.values())
        )
        outcomes = []
        for number, mutant in enumerate(mutants, 1):
            target = copy / mutant.path
            original = target.read_text()
            target.write_text(mutant.apply(original))
            shutil.rmtree(target.parent / "__pycache__", ignore_errors=True)  # never a stale compiled copy
            tests = TESTS[mutant.path]
            bound = max(_HANG_FLOOR_SECONDS, _HANG_FACTOR * baselines[tests])
            try:
                status, seconds = _run_tests(copy, tests, log, bound)
            finally:
                target.write_text(original)
                shutil.rmtree(target.parent / "__pycache__", ignore_errors=True)
            outcome = Outcome(
                mutant, "timeout" if status is None else "survived" if status == 0 else "killed", seconds
            )
            outcomes.append(outcome)
            print(
                f"[{number}/{len(mutants)}] {outcome.status:8} {mutant.path}:{mutant.line}: {mutant.description}"
            )

    killed = sum(outcome.status != "survived" for outcome in outcomes)
    print(f"\nkilled {killed} of {len(outcomes)} ({100 * killed / max(len(outcomes), 1):.1f} %)")
    for outcome in outcomes:
        if outcome.status == "survived":
            print(f"  survived: {outcome.mutant.path}:{outcome.mutant.line}: {outcome.mutant.description}")
    if args.report:
        args.report.write_text(json.dumps([asdict(outcome) for outcome in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
