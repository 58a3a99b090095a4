"""The `nxrun` entry point.

The command line is defined with click in cli.py. Importing click costs more start-up time than a
whole cached run of a few hundred tasks, so the commonest invocations, `nxrun run TASKS` with the
usual flags and `nxrun --version`, are recognised here and go straight to run_command.py. Anything
else (help, a typo, another command, a flag this parser does not know) goes to click, which also
gives the error messages. tests/core/test_launch.py checks that this parser and click agree on
every form it accepts.
"""

from __future__ import annotations

import gc
import sys

from . import __version__

_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--keep-going": "keep_going", "--skip-cache": "skip_cache",
          "--only": "only", "--dry-run": "dry_run", "--json": "as_json"}
_VALUED = {"-p": "parallel", "--parallel": "parallel", "--remote": "remote_mode", "--namespace": "namespace",
           "--executor": "executor"}
_REMOTE_MODES = ("auto", "off", "required")
_EXECUTORS = ("local", "ray")


def parse_run(argv: list[str]) -> tuple[str | None, list[str], list[str], dict] | None:
    """(directory, task names, args after `--`, run options) for a plain `[-C DIR] run ...`;
    None for anything click should handle."""
    from .run_command import RUN_DEFAULTS

    directory = None
    i = 0
    if argv[:1] in (["-C"], ["--directory"]) and len(argv) > 1 and argv[1] != "--":
        directory, i = argv[1], 2
    elif argv and argv[0].startswith("--directory="):
        directory, i = argv[0].split("=", 1)[1], 1
    if argv[i:i + 1] != ["run"]:
        return None
    options = dict(RUN_DEFAULTS)
    seen: set[str] = set()
    names: list[str] = []
    args: list[str] = []
    rest = argv[i + 1:]
    j = 0
    while j < len(rest):
        token = rest[j]
        j += 1
        if token == "--":
            args = rest[j:]
            break
        if not token.startswith("-") or token == "-":
            names.append(token)
            continue
        if token in _FLAGS:
            options[_FLAGS[token]] = True
            continue
        flag, eq, value = token.partition("=")
        if flag not in _VALUED or (eq and not flag.startswith("--")):
            return None                      # unknown, combined short flags, -p4: click decides
        if not eq:
            if j >= len(rest) or rest[j] == "--":
                return None                  # missing value, or `--` taken as one: click decides
            value = rest[j]
            j += 1
        key = _VALUED[flag]
        if key in seen:
            return None                      # repeated: click's rule (the last wins) is not worth copying
        seen.add(key)
        if key == "parallel":
            try:
                options[key] = int(value, 10)
            except ValueError:
                return None
        elif key in ("remote_mode", "executor"):
            if value not in (_REMOTE_MODES if key == "remote_mode" else _EXECUTORS):
                return None
            options[key] = value
        else:
            options[key] = value
    if not names:
        return None                          # click says which argument is missing
    return directory, names, args, options


def main() -> None:
    # a run allocates many small, short-lived objects and creates few reference cycles: collecting
    # less often saves about a tenth of a cached run's time, for a little more memory at most
    gc.set_threshold(20_000, 20, 20)
    argv = sys.argv[1:]
    if argv == ["--version"]:
        print(f"nxrun, version {__version__}")
        return
    parsed = parse_run(argv)
    if parsed is None:
        from .cli import main as click_main

        click_main()
        return
    from .errors import NxrunError
    from .run_command import Context, print_error, run_tasks

    directory, names, args, options = parsed
    try:
        run_tasks(Context(directory), names, args, **options)
    except NxrunError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    except KeyboardInterrupt:
        print_error("aborted")
        sys.exit(1)


if __name__ == "__main__":
    main()
